//! Audit entries: what a caller did, and what they did under a permit (naming the grant, and
//! the agent who made it when it went through one an agent made for the patient).

use kura_core::ids::{AccountId, GrantId, RecordId};
use kura_core::party::Party;
use kura_core::policy::{Basis, Permit};
use kura_core::time::Timestamp;
use kura_store::model::NewAudit;

use super::error::ServiceResult;
use crate::auth::Caller;
use crate::state::AppState;

/// An audit entry for what `caller` did.
pub fn audit_entry(caller: &Caller, now: Timestamp, action: &str, outcome: &str) -> NewAudit {
    NewAudit {
        at: now,
        actor: caller.audit_actor(),
        on_behalf_of: caller.on_behalf_of(),
        action: action.to_owned(),
        record: None,
        grant: None,
        outcome: outcome.to_owned(),
        detail: String::new(),
        subject: None,
    }
}

pub trait AuditExt {
    fn record(self, id: &RecordId) -> Self;
    fn grant(self, id: &GrantId) -> Self;
    fn detail(self, detail: impl Into<String>) -> Self;
    fn subject(self, patient: &AccountId) -> Self;
}

impl AuditExt for NewAudit {
    fn record(mut self, id: &RecordId) -> Self {
        self.record = Some(id.clone());
        self
    }
    fn grant(mut self, id: &GrantId) -> Self {
        self.grant = Some(id.clone());
        self
    }
    fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
    fn subject(mut self, patient: &AccountId) -> Self {
        self.subject = Some(patient.clone());
        self
    }
}

fn grant_of(permit: &Permit) -> Option<&GrantId> {
    match permit.basis() {
        Basis::Grant(id) | Basis::CopyHolder(id) => Some(id),
        Basis::Owner | Basis::Delegation(_) => None,
    }
}

/// The audit entry of an action under `permit`, with `detail`. Through a grant an agent made for
/// the patient, the entry also names the agent (DESIGN.md I9): the patient sees whose grant the
/// action went through, and the agent answers for it.
pub async fn audited_action(
    state: &AppState,
    caller: &Caller,
    now: Timestamp,
    permit: &Permit,
    action: &str,
    detail: String,
) -> ServiceResult<NewAudit> {
    let mut detail = detail;
    if let Basis::Grant(id) = permit.basis()
        && let Some(row) = state.store.grant(id).await?
        && matches!(row.grant.owner, Party::Account(_))
        && row.created_by != row.grant.owner.to_text()
    {
        let origin = format!("through a grant made by agent {} for {}", row.created_by, row.grant.owner.to_text());
        detail = if detail.is_empty() { origin } else { format!("{detail}; {origin}") };
    }
    Ok(audited(caller, now, permit, action).detail(detail))
}

pub fn audited(caller: &Caller, now: Timestamp, permit: &Permit, action: &str) -> NewAudit {
    let entry = audit_entry(caller, now, action, "allowed").record(permit.record());
    match grant_of(permit) {
        Some(grant) => entry.grant(grant),
        None => entry,
    }
}
