//! Grants (S201–S202): creating one an owner (or their agent) decided on, and revoking one,
//! which destroys the in-server copies made under it in the same transaction.

use kura_core::ids::RecordId;
use kura_core::party::Party;
use kura_core::policy::{Grant, GrantTerms, RecordSelector};
use kura_store::model::GrantRow;

use super::audit::{AuditExt, audit_entry};
use super::error::ServiceResult;
use super::{content, ids, notify};
use crate::auth::Caller;
use crate::state::AppState;

/// Stores a grant of `owner` to `grantee` on `terms`, the handler having checked that the
/// caller may make it.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    owner: Party,
    grantee: Party,
    terms: GrantTerms,
    purpose: String,
) -> ServiceResult<GrantRow> {
    let now = state.clock.now();
    let id = ids::new_grant_id()?;
    let row = GrantRow {
        grant: Grant { id: id.clone(), owner, grantee, terms, revoked_at: None },
        study: None,
        purpose,
        created_by: caller.audit_actor(),
        created_at: now,
    };
    let first_record = match row.grant.terms.selector() {
        RecordSelector::Records(ids) => ids.first().cloned(),
        RecordSelector::Labels(_) => None,
    };
    let mut audit = audit_entry(caller, now, "grant_create", "done").grant(&id).detail(format!(
        "to {} actions={} scope={}",
        row.grant.grantee.to_text(),
        row.grant.terms.actions().to_text(),
        row.grant.terms.scope().to_text()
    ));
    if let Some(record) = first_record {
        audit = audit.record(&record);
    }
    state.store.insert_grant(&row, audit).await?;
    Ok(row)
}

/// Revokes `grant` (the handler having checked that the caller manages its owner's grants):
/// it allows nothing from now on, its copies are destroyed, and the owner hears of them.
pub async fn revoke(state: &AppState, caller: &Caller, grant: &GrantRow) -> ServiceResult<()> {
    let now = state.clock.now();
    let record: Option<RecordId> = match grant.grant.terms.selector() {
        RecordSelector::Records(ids) => ids.first().cloned(),
        RecordSelector::Labels(_) => None,
    };
    let mut audit = audit_entry(caller, now, "grant_revoke", "done").grant(&grant.grant.id);
    if let Some(record) = record {
        audit = audit.record(&record);
    }
    // The owner hears of destroyed copies in the revocation's own transaction.
    let message = format!(
        "The copies {} made under grant {} were destroyed with it.",
        grant.grant.grantee.to_text(),
        grant.grant.id
    );
    let about = grant.grant.id.to_string();
    let notices =
        notify::to_owner_and_agents(state, &grant.grant.owner, "copy_destroyed", &about, &message, now).await?;
    let blobs = state.store.revoke_grant(&grant.grant.id, now, audit, &notices).await?;
    let copies_destroyed = !blobs.is_empty();
    content::discard_blobs(state, blobs).await;
    if copies_destroyed {
        notify::publish(state, notices);
    }
    Ok(())
}
