//! External providers: a patient's links to FHIR endpoints (with the bearer token sealed), and
//! the mapping from each external resource `(link, resourceType, id)` to the record holding it.
//! A sync writes its new records, replaced contents, mapping rows, the link's status and the
//! audit entries in one transaction.

use async_trait::async_trait;
use kura_core::ids::{AccountId, RecordId};
use kura_core::time::Timestamp;
use kura_store::model::*;
use kura_store::{ProviderStore, StoreError};
use sqlx::any::AnyRow;

use crate::audit_chain::append_audit;
use crate::index_changes::note_change_of_record;
use crate::inserts::insert_notifications;
use crate::ledger::insert_ledger;
use crate::record_rows::{insert_record_rows, replace_parts_and_labels, replace_values};
use crate::rows::{self, get, ts};
use crate::{SqlStore, store_error};

const LINK_COLUMNS: &str = "id, patient, name, base_url, provider_patient_id, resource_types, token_wrapped_key, \
     token_ciphertext, created_by, created_at, last_sync_at, last_success_at, last_outcome, last_error, removed_at";

fn link_row(row: &AnyRow) -> Result<ProviderLink, StoreError> {
    let types: String = get(row, "resource_types")?;
    Ok(ProviderLink {
        id: get(row, "id")?,
        patient: rows::parse_id(&get::<String>(row, "patient")?, AccountId::parse)?,
        name: get(row, "name")?,
        base_url: get(row, "base_url")?,
        provider_patient_id: get(row, "provider_patient_id")?,
        resource_types: types.split(',').filter(|t| !t.is_empty()).map(str::to_owned).collect(),
        token: SealedSecret { wrapped_key: get(row, "token_wrapped_key")?, ciphertext: get(row, "token_ciphertext")? },
        created_by: get(row, "created_by")?,
        created_at: ts(get(row, "created_at")?),
        last_sync_at: get::<Option<i64>>(row, "last_sync_at")?.map(ts),
        last_success_at: get::<Option<i64>>(row, "last_success_at")?.map(ts),
        last_outcome: get(row, "last_outcome")?,
        last_error: get(row, "last_error")?,
        removed_at: get::<Option<i64>>(row, "removed_at")?.map(ts),
    })
}

#[async_trait]
impl ProviderStore for SqlStore {
    async fn insert_provider_link(&self, link: &ProviderLink, audit: NewAudit) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(&format!(
            "INSERT INTO provider_links ({LINK_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, NULL, NULL, NULL, NULL)"
        ))
        .bind(&link.id)
        .bind(link.patient.as_str())
        .bind(&link.name)
        .bind(&link.base_url)
        .bind(&link.provider_patient_id)
        .bind(link.resource_types.join(","))
        .bind(link.token.wrapped_key.clone())
        .bind(link.token.ciphertext.clone())
        .bind(&link.created_by)
        .bind(link.created_at.as_millis())
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn provider_link(&self, id: &str) -> Result<Option<ProviderLink>, StoreError> {
        let sql = format!("SELECT {LINK_COLUMNS} FROM provider_links WHERE id = $1");
        let rows = self.fetch_all(sqlx::query(&sql).bind(id)).await?;
        rows.first().map(link_row).transpose()
    }

    async fn provider_links_of(&self, patient: &AccountId) -> Result<Vec<ProviderLink>, StoreError> {
        let sql = format!(
            "SELECT {LINK_COLUMNS} FROM provider_links WHERE patient = $1 AND removed_at IS NULL ORDER BY created_at, id"
        );
        let rows = self.fetch_all(sqlx::query(&sql).bind(patient.as_str())).await?;
        rows.iter().map(link_row).collect()
    }

    async fn provider_links_due(&self, before: Timestamp, limit: i64) -> Result<Vec<ProviderLink>, StoreError> {
        let sql = format!(
            "SELECT {LINK_COLUMNS} FROM provider_links WHERE removed_at IS NULL \
             AND (last_sync_at IS NULL OR last_sync_at < $1) ORDER BY COALESCE(last_sync_at, 0), id LIMIT $2"
        );
        let rows = self.fetch_all(sqlx::query(&sql).bind(before.as_millis()).bind(limit)).await?;
        rows.iter().map(link_row).collect()
    }

    async fn remove_provider_link(&self, id: &str, at: Timestamp, audit: NewAudit) -> Result<(), StoreError> {
        let update = sqlx::query("UPDATE provider_links SET removed_at = $1 WHERE id = $2 AND removed_at IS NULL")
            .bind(at.as_millis())
            .bind(id);
        self.update_with_audit(update, StoreError::NotFound, &audit).await
    }

    async fn provider_resources(&self, link: &str) -> Result<Vec<ProviderResource>, StoreError> {
        let rows = self
            .fetch_all(
                sqlx::query(
                    "SELECT resource_type, resource_id, record_id, content_hash FROM provider_resources \
                     WHERE link_id = $1 ORDER BY resource_type, resource_id",
                )
                .bind(link),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ProviderResource {
                    resource_type: get(r, "resource_type")?,
                    resource_id: get(r, "resource_id")?,
                    record: rows::parse_id(&get::<String>(r, "record_id")?, RecordId::parse)?,
                    content_hash: get(r, "content_hash")?,
                })
            })
            .collect()
    }

    async fn apply_provider_sync(&self, sync: &ProviderSyncCommit) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        // The link's status first: a link removed meanwhile gets nothing.
        let touched = sqlx::query(
            "UPDATE provider_links SET last_sync_at = $1, last_success_at = $1, last_outcome = 'ok', last_error = NULL \
             WHERE id = $2 AND removed_at IS NULL",
        )
        .bind(sync.at.as_millis())
        .bind(&sync.link)
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        if touched.rows_affected() != 1 {
            return Err(StoreError::NotFound);
        }
        for insert in &sync.inserts {
            insert_record_rows(tx.conn(), &insert.record).await?;
            insert_ledger(tx.conn(), &insert.record.id, &insert.ledger).await?;
            // A concurrent sync that mapped the same resource makes this a unique violation: the
            // whole sync is refused and nothing is written.
            sqlx::query(
                "INSERT INTO provider_resources (link_id, resource_type, resource_id, record_id, content_hash) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&sync.link)
            .bind(&insert.resource_type)
            .bind(&insert.resource_id)
            .bind(insert.record.id.as_str())
            .bind(&insert.record.content.content_hash)
            .execute(tx.conn())
            .await
            .map_err(|e| match store_error(e) {
                StoreError::Conflict(_) => StoreError::Conflict("another sync of this link ran at the same time"),
                other => other,
            })?;
        }
        let mut dead_blobs = Vec::new();
        for update in &sync.updates {
            let row = sqlx::query(
                "SELECT blob_key, owner, institution, mrn FROM records WHERE id = $1 AND version = $2 AND state = 'active'",
            )
            .bind(update.record.as_str())
            .bind(update.expected_version)
            .fetch_optional(tx.conn())
            .await
            .map_err(store_error)?
            .ok_or(StoreError::Conflict("a pulled record changed during the sync"))?;
            let c = &update.content;
            sqlx::query(
                "UPDATE records SET blob_key = $1, wrapped_key = $2, content_hash = $3, size = $4, provenance = $5, \
                 subject_birth_day = $6, version = version + 1, updated_at = $7 WHERE id = $8 AND version = $9",
            )
            .bind(&c.blob_key)
            .bind(c.wrapped_key.clone())
            .bind(&c.content_hash)
            .bind(c.size)
            .bind(&update.provenance)
            .bind(update.subject_birth_day.map(i64::from))
            .bind(sync.at.as_millis())
            .bind(update.record.as_str())
            .bind(update.expected_version)
            .execute(tx.conn())
            .await
            .map_err(store_error)?;
            replace_parts_and_labels(tx.conn(), &update.record, &update.parts, &update.labels).await?;
            replace_values(tx.conn(), &update.record, &update.values).await?;
            note_change_of_record(tx.conn(), &row, sync.at).await?;
            insert_ledger(tx.conn(), &update.record, &update.ledger).await?;
            let mapped = sqlx::query(
                "UPDATE provider_resources SET content_hash = $1 \
                 WHERE link_id = $2 AND resource_type = $3 AND resource_id = $4 AND record_id = $5",
            )
            .bind(&c.content_hash)
            .bind(&sync.link)
            .bind(&update.resource_type)
            .bind(&update.resource_id)
            .bind(update.record.as_str())
            .execute(tx.conn())
            .await
            .map_err(store_error)?;
            if mapped.rows_affected() != 1 {
                return Err(StoreError::Conflict("another sync of this link ran at the same time"));
            }
            dead_blobs.extend(get::<Option<String>>(&row, "blob_key")?);
        }
        for audit in &sync.audit {
            append_audit(tx.conn(), audit).await?;
        }
        tx.commit().await?;
        Ok(dead_blobs)
    }

    async fn record_provider_failure(
        &self,
        link: &str,
        at: Timestamp,
        error: &str,
        notifications: &[Notification],
        audit: NewAudit,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE provider_links SET last_sync_at = $1, last_outcome = 'failed', last_error = $2 WHERE id = $3",
        )
        .bind(at.as_millis())
        .bind(error)
        .bind(link)
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        insert_notifications(tx.conn(), notifications).await?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }
}
