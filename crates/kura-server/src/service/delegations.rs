//! Delegations: registering one (a patient's agent, or a guardian an operator or institution
//! registers) with the start DESIGN.md I9 gives it, and telling the patient and their agents.
//! The handlers (`routes/delegations.rs`) check who registers whom.

use kura_core::ids::{AccountId, DelegationId};
use kura_core::party::Party;
use kura_core::policy::{ActionSet, Delegation, DelegationStart, delegation_start};
use kura_core::time::{Period, Timestamp};
use kura_store::model::{Account, DelegationKind, DelegationRow};

use super::audit::{AuditExt, audit_entry};
use super::error::{ServiceError, ServiceResult};
use super::{ids, notify};
use crate::auth::Caller;
use crate::state::AppState;
use crate::time;

/// Registers `agent` for `patient` with `powers` until `requested_end` at the latest: in force
/// now, until majority over a minor, or awaiting the patient's acceptance (a guardian over an
/// adult or a patient of unknown age).
pub async fn register(
    state: &AppState,
    caller: &Caller,
    patient: AccountId,
    agent: &Account,
    kind: DelegationKind,
    powers: ActionSet,
    requested_end: Option<Timestamp>,
) -> ServiceResult<DelegationRow> {
    let now = state.clock.now();
    let appointed_by_patient = kind == DelegationKind::Appointed;
    let birth_day = if appointed_by_patient { None } else { birth_day_of(state, &patient).await? };
    let start = delegation_start(appointed_by_patient, birth_day, now);
    let (expires_at, accepted_at, over_minor) = match start {
        DelegationStart::Now => (requested_end, Some(now), false),
        DelegationStart::MinorGuardianship { ends_at } => {
            (Some(requested_end.map_or(ends_at, |end: Timestamp| end.min(ends_at))), Some(now), true)
        }
        DelegationStart::AwaitsPatient => (requested_end, None, false),
    };
    let period =
        Period::new(now, expires_at).map_err(|_| ServiceError::Invalid("expires_at must be in the future".into()))?;
    let id = DelegationId::parse(&ids::new_id()).map_err(|_| ServiceError::Internal)?;
    let row = DelegationRow {
        delegation: Delegation {
            id: id.clone(),
            agent: agent.id.clone(),
            patient: patient.clone(),
            powers,
            period,
            revoked_at: None,
            accepted_at,
        },
        kind,
        created_by: caller.audit_actor(),
        created_at: now,
        over_minor,
    };
    let audit = audit_entry(caller, now, "delegation_create", "done").subject(&patient).detail(format!(
        "{} agent account:{} powers={}{}",
        kind.as_str(),
        agent.id,
        powers.to_text(),
        match start {
            DelegationStart::Now => "",
            DelegationStart::MinorGuardianship { .. } => " (guardian of a minor, until majority)",
            DelegationStart::AwaitsPatient => " (awaiting the patient's acceptance)",
        }
    ));
    let message = match start {
        DelegationStart::Now => format!("{} can now act for you: {}.", agent.username, powers.to_text()),
        DelegationStart::MinorGuardianship { ends_at } => format!(
            "{} was registered as your guardian ({}) until {} at the latest.",
            agent.username,
            powers.to_text(),
            time::format(expires_at.unwrap_or(ends_at))
        ),
        DelegationStart::AwaitsPatient => format!(
            "{} asks to act for you ({}). Nothing happens unless you accept it; you can decline it.",
            agent.username,
            powers.to_text()
        ),
    };
    let notifications = notify::to_owner_and_agents(
        state,
        &Party::Account(patient.clone()),
        "delegation_created",
        id.as_str(),
        &message,
        now,
    )
    .await?;
    state.store.insert_delegation(&row, audit, &notifications).await?;
    notify::publish(state, notifications);
    Ok(row)
}

/// The patient's birth day (days since 1970-01-01), from the records about them: theirs, and
/// those the institutions they are linked to hold under their local id. When records disagree
/// the earliest day counts, so that a single record claiming a later birth (an institution's
/// error, or its attempt to make an adult look a minor) cannot put a guardian in force without
/// the patient's acceptance.
async fn birth_day_of(state: &AppState, patient: &AccountId) -> ServiceResult<Option<i64>> {
    let mut subjects = vec![format!("account:{patient}")];
    for (institution, mrn) in state.store.links_of(patient).await? {
        subjects.push(format!("local:{institution}:{mrn}"));
    }
    let mut earliest: Option<i64> = None;
    for subject in subjects {
        for record in state.store.subject_records(&subject).await? {
            if let Some(day) = record.birth_day.map(i64::from) {
                earliest = Some(earliest.map_or(day, |e| e.min(day)));
            }
        }
    }
    Ok(earliest)
}
