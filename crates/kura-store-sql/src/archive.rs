//! Removable-media archives (issue 5): the exports a server made (to move their records to the
//! archive later) and the original records each patient imported (to skip a second import).

use async_trait::async_trait;
use kura_core::ids::RecordId;
use kura_core::party::Party;
use kura_store::model::*;
use kura_store::{ArchiveStore, StoreError};

use crate::audit_chain::append_audit;
use crate::dialect::{IN_LIST_CHUNK, placeholders};
use crate::inserts::insert_org_row;
use crate::ledger::insert_ledger;
use crate::record_rows::{end_record_rows, insert_record_rows};
use crate::rows::{self, get, ts};
use crate::{SqlStore, store_error};

#[async_trait]
impl ArchiveStore for SqlStore {
    async fn insert_archive_export(&self, export: &ArchiveExport, audit: &[NewAudit]) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO archive_exports (manifest_sha256, owner, exported_by, exported_at, moved_at) \
             VALUES ($1, $2, $3, $4, NULL)",
        )
        .bind(&export.manifest_sha256)
        .bind(export.owner.to_text())
        .bind(&export.exported_by)
        .bind(export.exported_at.as_millis())
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        for record in &export.records {
            sqlx::query(
                "INSERT INTO archive_export_records (manifest_sha256, record_id, version, content_hash) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&export.manifest_sha256)
            .bind(record.record.as_str())
            .bind(record.version)
            .bind(&record.content_hash)
            .execute(tx.conn())
            .await
            .map_err(store_error)?;
        }
        for entry in audit {
            append_audit(tx.conn(), entry).await?;
        }
        tx.commit().await
    }

    async fn archive_export(&self, manifest_sha256: &str) -> Result<Option<ArchiveExport>, StoreError> {
        let rows = self
            .fetch_all(
                sqlx::query(
                    "SELECT manifest_sha256, owner, exported_by, exported_at, moved_at FROM archive_exports \
                     WHERE manifest_sha256 = $1",
                )
                .bind(manifest_sha256),
            )
            .await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let records = self
            .fetch_all(
                sqlx::query(
                    "SELECT record_id, version, content_hash FROM archive_export_records WHERE manifest_sha256 = $1 \
                     ORDER BY record_id",
                )
                .bind(manifest_sha256),
            )
            .await?
            .iter()
            .map(|r| {
                Ok(ExportedRecord {
                    record: rows::parse_id(&get::<String>(r, "record_id")?, RecordId::parse)?,
                    version: get(r, "version")?,
                    content_hash: get(r, "content_hash")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Some(ArchiveExport {
            manifest_sha256: get(row, "manifest_sha256")?,
            owner: rows::party(&get::<String>(row, "owner")?)?,
            exported_by: get(row, "exported_by")?,
            exported_at: ts(get(row, "exported_at")?),
            moved_at: get::<Option<i64>>(row, "moved_at")?.map(ts),
            records,
        }))
    }

    async fn move_to_archive(
        &self,
        manifest_sha256: &str,
        ends: &[ArchiveEnd<'_>],
        locator: &Locator,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        let marked =
            sqlx::query("UPDATE archive_exports SET moved_at = $1 WHERE manifest_sha256 = $2 AND moved_at IS NULL")
                .bind(locator.moved_at.as_millis())
                .bind(manifest_sha256)
                .execute(tx.conn())
                .await
                .map_err(store_error)?;
        if marked.rows_affected() != 1 {
            return Err(StoreError::Conflict("the records of this archive were already moved to it"));
        }
        let end = RecordEnd::Moved(locator.clone());
        let mut blobs = Vec::new();
        for item in ends {
            let record = item.permit.record();
            // `end_record_rows` refuses a record that is no longer active at the expected version;
            // returning early drops the transaction, so nothing of the move is applied.
            blobs
                .extend(end_record_rows(tx.conn(), record, Some(item.expected_version), &end, locator.moved_at).await?);
            insert_ledger(tx.conn(), record, &item.ledger).await?;
            append_audit(tx.conn(), &item.audit).await?;
        }
        tx.commit().await?;
        Ok(blobs)
    }

    async fn imported_originals(
        &self,
        owner: &Party,
        origin_key: &str,
        originals: &[String],
    ) -> Result<Vec<(String, RecordId)>, StoreError> {
        let mut found = Vec::new();
        for chunk in originals.chunks(IN_LIST_CHUNK) {
            let sql = format!(
                "SELECT original_record, record_id FROM archive_imports WHERE owner = $1 AND origin_key = $2 \
                 AND original_record IN ({}) ORDER BY original_record",
                placeholders(3, chunk.len())
            );
            let query = chunk
                .iter()
                .fold(sqlx::query(&sql).bind(owner.to_text()).bind(origin_key.to_owned()), |q, id| q.bind(id.as_str()));
            for row in &self.fetch_all(query).await? {
                found.push((
                    get::<String>(row, "original_record")?,
                    rows::parse_id(&get::<String>(row, "record_id")?, RecordId::parse)?,
                ));
            }
        }
        Ok(found)
    }

    async fn import_archive(&self, import: &ArchiveImport) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for org in &import.institutions {
            insert_org_row(tx.conn(), org, true).await?;
        }
        for item in &import.records {
            let inserted = sqlx::query(
                "INSERT INTO archive_imports (owner, origin_key, original_record, record_id, manifest_sha256, imported_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(import.owner.to_text())
            .bind(&import.origin_key)
            .bind(&item.original_id)
            .bind(item.record.id.as_str())
            .bind(&import.manifest_sha256)
            .bind(import.at.as_millis());
            // The import row refers to the record, so the record goes first.
            insert_record_rows(tx.conn(), &item.record).await?;
            if inserted.execute(tx.conn()).await.map_err(store_error)?.rows_affected() != 1 {
                return Err(StoreError::Conflict(
                    "a record of this archive was imported meanwhile; nothing was imported",
                ));
            }
            insert_ledger(tx.conn(), &item.record.id, &item.ledger).await?;
            append_audit(tx.conn(), &item.audit).await?;
        }
        tx.commit().await
    }
}
