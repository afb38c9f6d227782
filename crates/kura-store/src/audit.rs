//! The audit log: a linear hash chain every state change appends to in its own transaction,
//! and the appends of reads, which may come in groups (also from a thread of its own).

use async_trait::async_trait;
use kura_core::ids::AccountId;

use crate::StoreError;
use crate::model::*;

/// See [`AuditStore::blocking_audit_writer`].
pub type BlockingAuditWriter = Box<dyn FnMut(&[NewAudit]) -> Result<(), StoreError> + Send>;

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// `sqlite` or `postgres`, for logs, metrics and the health check (which reads the audit
    /// head to see that the database answers).
    fn backend_name(&self) -> &'static str;

    async fn append_audit(&self, audit: NewAudit) -> Result<(), StoreError>;
    /// Appends the entries, in order, in one transaction: all or none.
    async fn append_audits(&self, audits: &[NewAudit]) -> Result<(), StoreError>;
    /// Where the backend can write without the async runtime: a function that does what
    /// [`AuditStore::append_audits`] does, blocking until the commit. A thread of its own that calls it
    /// commits the audit entries of reads with fewer thread wake-ups per read than a task that
    /// hands each commit to the blocking pool. It must not be called on an async runtime's thread.
    fn blocking_audit_writer(&self) -> Option<BlockingAuditWriter> {
        None
    }
    /// Entries after `after_seq` in order, at most `limit`; only those about or by `patient` if given.
    async fn audit_entries(
        &self,
        patient: Option<&AccountId>,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError>;
    /// The last sequence number and hash.
    async fn audit_head(&self) -> Result<(i64, Vec<u8>), StoreError>;
}
