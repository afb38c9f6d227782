//! Removable-media archives (issue 5): exports, moving records to an archive, imports.

use async_trait::async_trait;
use kura_core::ids::RecordId;
use kura_core::party::Party;

use crate::StoreError;
use crate::model::*;

#[async_trait]
pub trait ArchiveStore: Send + Sync {
    /// Remembers an export (its manifest hash and each record's version and content hash) with
    /// its audit entries, in one transaction.
    async fn insert_archive_export(&self, export: &ArchiveExport, audit: &[NewAudit]) -> Result<(), StoreError>;
    async fn archive_export(&self, manifest_sha256: &str) -> Result<Option<ArchiveExport>, StoreError>;
    /// Ends every record in `ends` as moved to `locator` (data keys destroyed, ledger and audit
    /// entries written) and marks the export moved, in one transaction. `Conflict` and nothing
    /// applied if the export was already moved or any record changed since its expected version.
    /// Returns the blob keys to remove.
    async fn move_to_archive(
        &self,
        manifest_sha256: &str,
        ends: &[ArchiveEnd<'_>],
        locator: &Locator,
    ) -> Result<Vec<String>, StoreError>;
    /// Which of `originals` (record ids on the server with key `origin_key`) `owner` imported
    /// already, each with the record it became here.
    async fn imported_originals(
        &self,
        owner: &Party,
        origin_key: &str,
        originals: &[String],
    ) -> Result<Vec<(String, RecordId)>, StoreError>;
    /// Inserts the imported records (unknown institutions first), each with its ledger and audit
    /// entry and its import row, in one transaction. `Conflict` and nothing written if one of
    /// the originals was imported by the owner meanwhile.
    async fn import_archive(&self, import: &ArchiveImport) -> Result<(), StoreError>;
}
