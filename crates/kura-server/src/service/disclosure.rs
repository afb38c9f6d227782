//! Disclosure control of research (docs/research-disclosure.md) that searches and analyses
//! share: each research organisation's ledger of what it was told, the refusals for
//! differencing that count towards suspending its research, and the answers they give.

use kura_core::party::Party;
use kura_stats::Partition;
use kura_store::StoreError;
use kura_store::model::Study;

use super::audit::{AuditExt, audit_entry};
use super::error::{Refusal, ServiceError, ServiceResult};
use super::{ids, notify};
use crate::auth::Caller;
use crate::state::AppState;

/// How often a release is retried when another release of the same organisation was stored
/// first.
pub const ATTEMPTS: usize = 3;

/// An organisation's disclosure ledger as stored: the version a release must still find (`None`
/// when it has none yet) and the partition (empty then).
pub async fn org_ledger(state: &AppState, org: &kura_core::ids::OrgId) -> Result<(Option<i64>, Partition), StoreError> {
    match state.store.org_partition(org).await? {
        Some(stored) => Ok((
            Some(stored.version),
            Partition::from_bytes(&stored.bytes).map_err(|_| StoreError::Corrupt("org partition".into()))?,
        )),
        None => Ok((None, Partition::default())),
    }
}

/// The refusal of anything a suspended organisation's research asks.
pub fn suspended(refusals: i64) -> ServiceError {
    ServiceError::Refused {
        why: Refusal::Forbidden,
        code: "research_suspended",
        message: format!(
            "your organisation's research is suspended: {refusals} searches or analyses were refused because \
             they would have singled people out; an operator must review and resume it"
        ),
    }
}

/// Notes a refusal for differencing (audited) and returns `answer`, the refusal to give; the
/// refusal that reaches the organisation's limit tells the organisation its research is now
/// suspended.
pub async fn refuse_differencing(
    state: &AppState,
    caller: &Caller,
    study: &Study,
    action: &str,
    what: &str,
    answer: ServiceError,
) -> ServiceResult<ServiceError> {
    let now = state.clock.now();
    let audit = audit_entry(caller, now, action, "refused").detail(format!("study {}: differencing: {what}", study.id));
    let limit = state.config.max_differencing_refusals;
    let message = "Research of this organisation is suspended after searches or analyses were refused for \
                   differencing; an operator must review and resume it.";
    let organisation = Party::Organisation(study.org.clone()).to_text();
    let notices = vec![notify::new(&organisation, "research_suspended", &study.id, message, now)];
    if state.store.record_refusal(&study.org, &study.id, &ids::new_id(), limit, &notices, audit).await? == limit {
        notify::publish(state, notices);
    }
    Ok(answer)
}

/// The answer to a search whose count reached k but which the organisation's disclosure ledger
/// refuses: set against what it was told before, it would single out fewer than k people.
pub fn differencing_refusal(k: u64) -> ServiceError {
    ServiceError::Refused {
        why: Refusal::Conflict,
        code: "differencing",
        message: format!(
            "together with what your organisation was told before, in any of its studies, this answer would \
             single out fewer than {k} people; it is refused"
        ),
    }
}
