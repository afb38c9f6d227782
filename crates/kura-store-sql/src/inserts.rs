//! Rows several capabilities insert inside their own transactions: organisations, grants and
//! notifications (with a webhook delivery queued for each of an organisation's webhooks).

use kura_core::time::Timestamp;
use kura_store::StoreError;
use kura_store::model::*;
use sqlx::AnyConnection;

use crate::rows::{self, get};
use crate::store_error;

/// Inserts an organisation; with `if_absent`, an existing one with the same id is kept.
pub(crate) async fn insert_org_row(conn: &mut AnyConnection, org: &Org, if_absent: bool) -> Result<(), StoreError> {
    let sql = if if_absent {
        "INSERT INTO orgs (id, name, kind, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING"
    } else {
        "INSERT INTO orgs (id, name, kind, created_at) VALUES ($1, $2, $3, $4)"
    };
    sqlx::query(sql)
        .bind(org.id.as_str())
        .bind(&org.name)
        .bind(org.kind.as_str())
        .bind(org.created_at.as_millis())
        .execute(conn)
        .await
        .map_err(store_error)?;
    Ok(())
}

pub(crate) async fn insert_grant_row(conn: &mut AnyConnection, row: &GrantRow) -> Result<(), StoreError> {
    let grant = &row.grant;
    let (selector_kind, selector) = rows::selector_to_text(grant.terms.selector());
    sqlx::query(
        "INSERT INTO grants (id, owner, grantee, selector_kind, selector, scope, actions, anonymization, not_before, \
         expires_at, revoked_at, purpose, created_by, created_at, study_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(grant.id.as_str())
    .bind(grant.owner.to_text())
    .bind(grant.grantee.to_text())
    .bind(selector_kind)
    .bind(selector)
    .bind(grant.terms.scope().to_text())
    .bind(grant.terms.actions().to_text())
    .bind(grant.terms.anonymization().as_str())
    .bind(grant.terms.period().not_before().as_millis())
    .bind(grant.terms.period().expires_at().map(Timestamp::as_millis))
    .bind(grant.revoked_at.map(Timestamp::as_millis))
    .bind(&row.purpose)
    .bind(&row.created_by)
    .bind(row.created_at.as_millis())
    .bind(row.study.as_deref())
    .execute(&mut *conn)
    .await
    .map_err(store_error)?;
    Ok(())
}

/// Inserts notifications and queues a webhook delivery for each webhook of an organisation
/// recipient, inside the caller's transaction.
pub(crate) async fn insert_notifications(
    conn: &mut AnyConnection,
    notifications: &[Notification],
) -> Result<(), StoreError> {
    for n in notifications {
        sqlx::query(
            "INSERT INTO notifications (id, recipient, kind, subject_ref, message, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&n.id)
        .bind(&n.recipient)
        .bind(&n.kind)
        .bind(&n.subject_ref)
        .bind(&n.message)
        .bind(n.created_at.as_millis())
        .execute(&mut *conn)
        .await
        .map_err(store_error)?;
        let Some(org) = n.recipient.strip_prefix("org:") else { continue };
        let hooks = sqlx::query("SELECT id FROM webhooks WHERE org_id = $1 AND revoked_at IS NULL")
            .bind(org.to_owned())
            .fetch_all(&mut *conn)
            .await
            .map_err(store_error)?;
        for hook in hooks {
            let hook: String = get(&hook, "id")?;
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, webhook_id, notification_id, attempts, state, next_attempt_at, \
                 created_at, updated_at) VALUES ($1, $2, $3, 0, 'pending', $4, $4, $4)",
            )
            .bind(format!("{hook}-{}", n.id))
            .bind(&hook)
            .bind(&n.id)
            .bind(n.created_at.as_millis())
            .execute(&mut *conn)
            .await
            .map_err(store_error)?;
        }
    }
    Ok(())
}
