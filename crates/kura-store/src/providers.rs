//! External providers (issue 5): a patient's links to FHIR endpoints and what the syncs of
//! each pulled. Records pulled are ordinary patient-owned records; these tables map each
//! external resource `(link, resourceType, id)` to its record.

use async_trait::async_trait;
use kura_core::ids::AccountId;
use kura_core::time::Timestamp;

use crate::StoreError;
use crate::model::*;

#[async_trait]
pub trait ProviderStore: Send + Sync {
    /// `Conflict` if the id is taken.
    async fn insert_provider_link(&self, link: &ProviderLink, audit: NewAudit) -> Result<(), StoreError>;
    /// Also a removed link (`removed_at` set).
    async fn provider_link(&self, id: &str) -> Result<Option<ProviderLink>, StoreError>;
    /// The patient's links that are not removed, oldest first.
    async fn provider_links_of(&self, patient: &AccountId) -> Result<Vec<ProviderLink>, StoreError>;
    /// Links not removed whose last sync attempt was before `before` (or that never synced),
    /// least recently tried first, at most `limit`.
    async fn provider_links_due(&self, before: Timestamp, limit: i64) -> Result<Vec<ProviderLink>, StoreError>;
    /// Marks the link removed; the records pulled stay the patient's. `NotFound` if unknown or
    /// already removed.
    async fn remove_provider_link(&self, id: &str, at: Timestamp, audit: NewAudit) -> Result<(), StoreError>;
    /// What earlier syncs of the link stored.
    async fn provider_resources(&self, link: &str) -> Result<Vec<ProviderResource>, StoreError>;
    /// Applies a sync in one transaction: new records (with their ledger entries and mapping),
    /// replaced content of changed ones (ledger entries, mapping hashes), the link's status and
    /// the audit entries. `NotFound` if the link was removed meanwhile, `Conflict` if a record or
    /// mapping changed concurrently; then nothing is written. Returns the blob keys that no
    /// longer hold live content.
    async fn apply_provider_sync(&self, sync: &ProviderSyncCommit) -> Result<Vec<String>, StoreError>;
    /// Records a failed sync attempt on the link (nothing else is written), with the
    /// notifications telling the patient and the audit entry.
    async fn record_provider_failure(
        &self,
        link: &str,
        at: Timestamp,
        error: &str,
        notifications: &[Notification],
        audit: NewAudit,
    ) -> Result<(), StoreError>;
}
