//! Records and their custody: inserting, reading (what the policy needs, the sealed content a
//! permit opens), the custody ledger, transfers to the patient, and moving or deleting a record.

use async_trait::async_trait;
use kura_core::ids::RecordId;
use kura_core::labels::Label;
use kura_core::party::Party;
use kura_core::policy::{Permit, RecordPolicyView};

use crate::StoreError;
use crate::model::*;

#[async_trait]
pub trait RecordStore: Send + Sync {
    async fn insert_record(&self, record: &NewRecord, ledger: NewLedger, audit: NewAudit) -> Result<(), StoreError>;
    async fn record(&self, id: &RecordId) -> Result<Option<RecordRow>, StoreError>;
    /// What the policy needs about `record`: its owner's grants and, for a copy, its grant.
    async fn policy_view(&self, record: &RecordRow) -> Result<RecordPolicyView, StoreError>;
    /// Active records that `parties` own or that their owners granted to any of `parties`,
    /// carrying every label in `labels`. The caller still decides on each.
    async fn candidate_records(&self, parties: &[Party], labels: &[Label]) -> Result<Vec<RecordRow>, StoreError>;
    /// The sealed content of the record a permit was issued for.
    async fn content_ref(&self, permit: &Permit) -> Result<ContentRef, StoreError>;
    async fn ledger(&self, record: &RecordId) -> Result<Vec<LedgerEntry>, StoreError>;
    /// Applies a transfer. `Conflict` if the record changed since `expected_version`. Returns the
    /// blob keys that no longer hold live content.
    async fn apply_transfer(&self, transfer: &TransferCommit) -> Result<Vec<String>, StoreError>;
    /// Moves or deletes the record a permit covers, destroying its data key, with the
    /// notifications telling those concerned, in one transaction. Returns the blob key to remove.
    async fn end_record(
        &self,
        permit: &Permit,
        expected_version: i64,
        end: RecordEnd,
        ledger: NewLedger,
        audit: NewAudit,
        notifications: &[Notification],
    ) -> Result<Option<String>, StoreError>;
}
