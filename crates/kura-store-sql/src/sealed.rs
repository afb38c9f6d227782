//! Sealed copies (`kura_store::SealedStore`): the wrapped package keys the server keeps, and
//! their destruction with a receipt in the audit log when the grant ends (`sealed_keys.rs`).

use async_trait::async_trait;
use kura_core::party::Party;
use kura_core::time::Timestamp;
use kura_store::model::*;
use kura_store::{SealedStore, StoreError};

use crate::audit_chain::append_audit;
use crate::dialect::placeholders;
use crate::sealed_keys::{COLUMNS, destroy_where, sealed_copy};
use crate::{SqlStore, store_error};

#[async_trait]
impl SealedStore for SqlStore {
    async fn insert_sealed_copy(&self, copy: &SealedCopyRow, audit: NewAudit) -> Result<(), StoreError> {
        let Some(wrapped_key) = &copy.wrapped_key else {
            return Err(StoreError::Invalid("a sealed copy needs its wrapped key"));
        };
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO sealed_copies (id, record_id, grant_id, grantee, owner, wrapped_key, created_by, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&copy.id)
        .bind(copy.record.as_str())
        .bind(copy.grant.as_str())
        .bind(copy.grantee.to_text())
        .bind(copy.owner.to_text())
        .bind(wrapped_key.as_slice())
        .bind(&copy.created_by)
        .bind(copy.created_at.as_millis())
        .bind(copy.expires_at.as_millis())
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn sealed_copy(&self, id: &str) -> Result<Option<SealedCopyRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM sealed_copies WHERE id = $1");
        let rows = self.fetch_all(sqlx::query(&sql).bind(id)).await?;
        rows.first().map(sealed_copy).transpose()
    }

    async fn sealed_copies_involving(&self, parties: &[Party]) -> Result<Vec<SealedCopyRow>, StoreError> {
        if parties.is_empty() {
            return Ok(Vec::new());
        }
        let n = parties.len();
        let sql = format!(
            "SELECT {COLUMNS} FROM sealed_copies WHERE owner IN ({}) OR grantee IN ({}) ORDER BY created_at DESC, id DESC",
            placeholders(1, n),
            placeholders(n + 1, n)
        );
        let texts: Vec<String> = parties.iter().map(Party::to_text).collect();
        let mut query = sqlx::query(&sql);
        for text in texts.iter().chain(texts.iter()) {
            query = query.bind(text.as_str());
        }
        self.fetch_all(query).await?.iter().map(sealed_copy).collect()
    }

    async fn sweep_sealed_copies(&self, now: Timestamp) -> Result<Vec<SealedCopyRow>, StoreError> {
        let mut tx = self.begin_write().await?;
        let destroyed = destroy_where(
            tx.conn(),
            "s.expires_at <= $1 OR g.revoked_at IS NOT NULL OR (g.expires_at IS NOT NULL AND g.expires_at <= $1)",
            &[],
            now,
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(destroyed)
    }
}
