//! The destruction of sealed copies' keys, each with its receipt in the audit log, inside the
//! transaction that ends them: a revocation, a deletion, a transfer or the sweep.

use kura_core::ids::{GrantId, RecordId};
use kura_core::party::Party;
use kura_core::time::Timestamp;
use kura_store::StoreError;
use kura_store::model::*;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use crate::audit_chain::append_audit;
use crate::rows::{self, get, ts};
use crate::store_error;

pub(crate) const COLUMNS: &str = "id, record_id, grant_id, grantee, owner, wrapped_key, created_by, created_at, expires_at, \
                       destroyed_at, destroy_reason";

pub(crate) fn sealed_copy(row: &AnyRow) -> Result<SealedCopyRow, StoreError> {
    Ok(SealedCopyRow {
        id: get(row, "id")?,
        record: rows::parse_id(&get::<String>(row, "record_id")?, RecordId::parse)?,
        grant: rows::parse_id(&get::<String>(row, "grant_id")?, GrantId::parse)?,
        grantee: rows::party(&get::<String>(row, "grantee")?)?,
        owner: rows::party(&get::<String>(row, "owner")?)?,
        wrapped_key: get(row, "wrapped_key")?,
        created_by: get(row, "created_by")?,
        created_at: ts(get(row, "created_at")?),
        expires_at: ts(get(row, "expires_at")?),
        destroyed_at: get::<Option<i64>>(row, "destroyed_at")?.map(ts),
        destroy_reason: get(row, "destroy_reason")?,
    })
}

/// Destroys the live keys of the sealed copies selected by `condition` (SQL over `s` and `g`,
/// with `$1` bound to `at`), writing each copy's receipt: `destroyed_at`, the reason (`reason`,
/// else `revoked` or `expired` from the grant), and an audit entry about the copied record (so
/// it shows in its owner's timeline).
pub(crate) async fn destroy_where(
    conn: &mut AnyConnection,
    condition: &str,
    extra: &[&str],
    at: Timestamp,
    reason: Option<&'static str>,
) -> Result<Vec<SealedCopyRow>, StoreError> {
    let sql = format!(
        "SELECT s.id, s.record_id, s.grant_id, s.grantee, s.owner, s.wrapped_key, s.created_by, s.created_at, \
         s.expires_at, s.destroyed_at, s.destroy_reason, g.revoked_at FROM sealed_copies s JOIN grants g ON \
         g.id = s.grant_id WHERE s.destroyed_at IS NULL AND ({condition}) ORDER BY s.created_at, s.id"
    );
    let mut query = sqlx::query(&sql).bind(at.as_millis());
    for extra in extra {
        query = query.bind(*extra);
    }
    let rows = query.fetch_all(&mut *conn).await.map_err(store_error)?;
    let mut destroyed = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut copy = sealed_copy(row)?;
        let reason = match reason {
            Some(reason) => reason,
            None if get::<Option<i64>>(row, "revoked_at")?.is_some() => "revoked",
            None => "expired",
        };
        sqlx::query(
            "UPDATE sealed_copies SET wrapped_key = NULL, destroyed_at = $1, destroy_reason = $2 WHERE id = $3 \
             AND destroyed_at IS NULL",
        )
        .bind(at.as_millis())
        .bind(reason)
        .bind(&copy.id)
        .execute(&mut *conn)
        .await
        .map_err(store_error)?;
        let audit = NewAudit {
            at,
            actor: "system".into(),
            on_behalf_of: String::new(),
            action: "sealed_copy_destroyed".into(),
            record: Some(copy.record.clone()),
            grant: Some(copy.grant.clone()),
            outcome: "done".into(),
            detail: format!(
                "deletion receipt: key of sealed copy {} for {} destroyed ({reason})",
                copy.id,
                copy.grantee.to_text()
            ),
            subject: None,
        };
        append_audit(conn, &audit).await?;
        copy.wrapped_key = None;
        copy.destroyed_at = Some(at);
        copy.destroy_reason = Some(reason.to_owned());
        destroyed.push(copy);
    }
    Ok(destroyed)
}

/// Inside a revocation's transaction: destroys the keys of every sealed copy under `grant`.
pub(crate) async fn destroy_under(
    conn: &mut AnyConnection,
    grant: &GrantId,
    at: Timestamp,
) -> Result<Vec<SealedCopyRow>, StoreError> {
    destroy_where(conn, "s.grant_id = $2 AND g.revoked_at <= $1", &[grant.as_str()], at, None).await
}

/// Inside a deletion's transaction: deleting a record destroys its content everywhere, so the
/// keys of its sealed copies go too: every copy made up to the deletion, which inside its
/// transaction is every copy there is (the bound also gives `$1` a use, which PostgreSQL needs
/// to type it).
pub(crate) async fn destroy_for_deleted(
    conn: &mut AnyConnection,
    record: &RecordId,
    at: Timestamp,
) -> Result<Vec<SealedCopyRow>, StoreError> {
    destroy_where(conn, "s.record_id = $2 AND s.created_at <= $1", &[record.as_str()], at, Some("record deleted")).await
}

/// Inside a transfer's transaction: the sealed copies of the record made under grants of the
/// previous owner (those the agreement carried over were moved to the patient's grants before)
/// stop opening, each with its receipt.
pub(crate) async fn destroy_for_transfer(
    conn: &mut AnyConnection,
    record: &RecordId,
    previous_owner: &Party,
    at: Timestamp,
) -> Result<Vec<SealedCopyRow>, StoreError> {
    let owner = previous_owner.to_text();
    destroy_where(
        conn,
        "s.record_id = $2 AND g.owner = $3 AND s.created_at <= $1",
        &[record.as_str(), owner.as_str()],
        at,
        Some("custody transferred to the patient"),
    )
    .await
}
