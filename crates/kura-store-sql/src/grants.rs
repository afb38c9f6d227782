//! Grants and delegations (`kura_store::GrantStore`): revoking a grant destroys the in-server
//! copies and the sealed copies' keys made under it, in the revocation's transaction.

use async_trait::async_trait;
use kura_core::ids::{AccountId, DelegationId, GrantId, RecordId};
use kura_core::party::Party;
use kura_core::time::Timestamp;
use kura_store::model::*;
use kura_store::{GrantStore, StoreError};
use sqlx::AnyConnection;

use crate::audit_chain::append_audit;
use crate::dialect::placeholders;
use crate::inserts::{insert_grant_row, insert_notifications};
use crate::record_rows::destroy_copy;
use crate::rows::{self, get};
use crate::{SqlStore, sealed_keys, store_error};

/// Deletes the in-server copies held under `grant` (inside the caller's transaction), with a
/// ledger and an audit entry each.
async fn destroy_copies_under(
    conn: &mut AnyConnection,
    grant: &GrantId,
    at: Timestamp,
    why: &str,
) -> Result<Vec<String>, StoreError> {
    let copies = sqlx::query("SELECT id, owner FROM records WHERE held_under = $1 AND state = 'active'")
        .bind(grant.as_str())
        .fetch_all(&mut *conn)
        .await
        .map_err(store_error)?;
    let mut blob_keys = Vec::new();
    for copy in copies {
        let id = rows::parse_id(&get::<String>(&copy, "id")?, RecordId::parse)?;
        let owner = rows::party(&get::<String>(&copy, "owner")?)?;
        blob_keys.extend(destroy_copy(conn, &id, owner, Some(grant), at, why).await?);
    }
    Ok(blob_keys)
}

#[async_trait]
impl GrantStore for SqlStore {
    async fn insert_grant(&self, grant: &GrantRow, audit: NewAudit) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        insert_grant_row(tx.conn(), grant).await?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn grant(&self, id: &GrantId) -> Result<Option<GrantRow>, StoreError> {
        let sql = format!("SELECT {} FROM grants WHERE id = $1", rows::GRANT_COLUMNS);
        Ok(self.read(&sql, &[id.as_str()], |r| rows::grant(r)).await?.pop())
    }

    async fn grants_involving(&self, parties: &[Party]) -> Result<Vec<GrantRow>, StoreError> {
        if parties.is_empty() {
            return Ok(Vec::new());
        }
        let n = parties.len();
        let sql = format!(
            "SELECT {} FROM grants WHERE owner IN ({}) OR grantee IN ({}) ORDER BY created_at, id",
            rows::GRANT_COLUMNS,
            placeholders(1, n),
            placeholders(n + 1, n)
        );
        let texts: Vec<String> = parties.iter().map(Party::to_text).collect();
        let mut query = sqlx::query(&sql);
        for text in texts.iter().chain(texts.iter()) {
            query = query.bind(text.as_str());
        }
        let rows = self.fetch_all(query).await?;
        rows.iter().map(rows::grant).collect()
    }

    async fn revoke_grant(
        &self,
        id: &GrantId,
        at: Timestamp,
        audit: NewAudit,
        notices_if_copies_destroyed: &[Notification],
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT revoked_at FROM grants WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(tx.conn())
            .await
            .map_err(store_error)?
            .ok_or(StoreError::NotFound)?;
        if get::<Option<i64>>(&row, "revoked_at")?.is_some() {
            return Err(StoreError::Conflict("the grant is already revoked"));
        }
        sqlx::query("UPDATE grants SET revoked_at = $1 WHERE id = $2")
            .bind(at.as_millis())
            .bind(id.as_str())
            .execute(tx.conn())
            .await
            .map_err(store_error)?;
        append_audit(tx.conn(), &audit).await?;
        let blobs = destroy_copies_under(tx.conn(), id, at, "the grant it was made under was revoked").await?;
        sealed_keys::destroy_under(tx.conn(), id, at).await?;
        if !blobs.is_empty() {
            insert_notifications(tx.conn(), notices_if_copies_destroyed).await?;
        }
        tx.commit().await?;
        Ok(blobs)
    }

    async fn sweep_copies(&self, now: Timestamp) -> Result<SweptCopies, StoreError> {
        let expired = self
            .fetch_all(
                sqlx::query(
                    "SELECT DISTINCT g.id, g.owner FROM records r JOIN grants g ON g.id = r.held_under \
                     WHERE r.state = 'active' \
                     AND (g.revoked_at IS NOT NULL OR (g.expires_at IS NOT NULL AND g.expires_at <= $1))",
                )
                .bind(now.as_millis()),
            )
            .await?;
        let mut swept = SweptCopies::default();
        for row in expired {
            let grant = rows::parse_id(&get::<String>(&row, "id")?, GrantId::parse)?;
            let owner = rows::party(&get::<String>(&row, "owner")?)?;
            let mut tx = self.begin_write().await?;
            swept
                .blobs
                .extend(destroy_copies_under(tx.conn(), &grant, now, "the grant it was made under ended").await?);
            tx.commit().await?;
            if !swept.grant_owners.contains(&owner) {
                swept.grant_owners.push(owner);
            }
        }
        Ok(swept)
    }

    async fn insert_delegation(
        &self,
        row: &DelegationRow,
        audit: NewAudit,
        notifications: &[Notification],
    ) -> Result<(), StoreError> {
        let d = &row.delegation;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO delegations (id, agent, patient, kind, powers, not_before, expires_at, revoked_at, created_by, \
             created_at, accepted_at, over_minor) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $10, $11)",
        )
        .bind(d.id.as_str())
        .bind(d.agent.as_str())
        .bind(d.patient.as_str())
        .bind(row.kind.as_str())
        .bind(d.powers.to_text())
        .bind(d.period.not_before().as_millis())
        .bind(d.period.expires_at().map(Timestamp::as_millis))
        .bind(&row.created_by)
        .bind(row.created_at.as_millis())
        .bind(d.accepted_at.map(Timestamp::as_millis))
        .bind(i64::from(row.over_minor))
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        append_audit(tx.conn(), &audit).await?;
        insert_notifications(tx.conn(), notifications).await?;
        tx.commit().await
    }

    async fn accept_delegation(&self, id: &DelegationId, at: Timestamp, audit: NewAudit) -> Result<(), StoreError> {
        let update = sqlx::query(
            "UPDATE delegations SET accepted_at = $1 WHERE id = $2 AND accepted_at IS NULL AND revoked_at IS NULL",
        )
        .bind(at.as_millis())
        .bind(id.as_str());
        self.update_with_audit(update, StoreError::NotFound, &audit).await
    }

    async fn delegation(&self, id: &DelegationId) -> Result<Option<DelegationRow>, StoreError> {
        let sql = format!("SELECT {} FROM delegations WHERE id = $1", rows::DELEGATION_COLUMNS);
        let rows = self.fetch_all(sqlx::query(&sql).bind(id.as_str())).await?;
        rows.first().map(rows::delegation).transpose()
    }

    async fn delegations_involving(&self, account: &AccountId) -> Result<Vec<DelegationRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM delegations WHERE agent = $1 OR patient = $1 ORDER BY created_at, id",
            rows::DELEGATION_COLUMNS
        );
        let rows = self.fetch_all(sqlx::query(&sql).bind(account.as_str())).await?;
        rows.iter().map(rows::delegation).collect()
    }

    async fn revoke_delegation(&self, id: &DelegationId, at: Timestamp, audit: NewAudit) -> Result<(), StoreError> {
        let update = sqlx::query("UPDATE delegations SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(at.as_millis())
            .bind(id.as_str());
        self.update_with_audit(update, StoreError::NotFound, &audit).await
    }
}
