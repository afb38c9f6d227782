//! Sealed copies: packages taken out under a grant, whose key the server keeps.

use async_trait::async_trait;
use kura_core::party::Party;
use kura_core::time::Timestamp;

use crate::StoreError;
use crate::model::*;

#[async_trait]
pub trait SealedStore: Send + Sync {
    async fn insert_sealed_copy(&self, copy: &SealedCopyRow, audit: NewAudit) -> Result<(), StoreError>;
    async fn sealed_copy(&self, id: &str) -> Result<Option<SealedCopyRow>, StoreError>;
    /// Sealed copies whose owner or grantee is any of `parties`, newest first.
    async fn sealed_copies_involving(&self, parties: &[Party]) -> Result<Vec<SealedCopyRow>, StoreError>;
    /// Destroys the keys of sealed copies whose grant ended by `now` (expired or revoked), each
    /// with its receipt in the audit log, in one transaction; returns the destroyed copies.
    /// (Revoking a grant destroys its sealed copies' keys in the revocation's transaction.)
    async fn sweep_sealed_copies(&self, now: Timestamp) -> Result<Vec<SealedCopyRow>, StoreError>;
}
