//! Usage requests (Fig. 8): a study asks the owners behind the handles it was given to use
//! their records; owners (or their agents) answer, accepting with a grant bound to the study
//! that may narrow what was asked but never widen it; the reward's life; withdrawal. The
//! handlers (`routes/research.rs`) check who may ask, answer or move a reward.

use kura_core::party::Party;
use kura_core::policy::{ActionSet, Anonymization, Grant, GrantTerms, RecordSelector};
use kura_core::record::CategorySet;
use kura_store::model::{GrantRow, Reward, Study, UsageRequest};

use super::audit::{AuditExt, audit_entry};
use super::error::{ServiceError, ServiceResult};
use super::{ids, notify};
use crate::auth::Caller;
use crate::state::AppState;

/// What a study asks of the owners behind `handles`, checked by the handler.
pub struct Ask<'a> {
    pub handles: &'a [String],
    pub scope: CategorySet,
    pub actions: ActionSet,
    pub anonymization: Anonymization,
    /// How long the grant would run.
    pub days: i64,
    pub message: &'a str,
    pub reward: Option<Reward>,
    pub answer_within_days: Option<i64>,
}

/// Sends `study`'s request to each owner behind the handles (one per person), telling them and
/// their agents; returns the requests.
pub async fn ask_owners(
    state: &AppState,
    caller: &Caller,
    study: &Study,
    ask: Ask<'_>,
) -> ServiceResult<Vec<UsageRequest>> {
    let now = state.clock.now();
    let answer_by = now.plus_days(ask.answer_within_days.unwrap_or(30).clamp(1, 365));
    let mut subjects = Vec::new();
    for handle in ask.handles {
        let subject = state
            .store
            .subject_of_handle(&study.id, handle)
            .await?
            .ok_or_else(|| ServiceError::Invalid(format!("handle {handle} was not given to this study")))?;
        if !subjects.iter().any(|(_, s)| s == &subject) {
            subjects.push((handle.clone(), subject));
        }
    }
    let mut requests = Vec::new();
    let mut notifications = Vec::new();
    for (handle, subject) in subjects {
        let owner = kura_core::research::owner_of_subject(&subject).ok_or(ServiceError::Internal)?;
        let usage = UsageRequest {
            id: ids::new_id(),
            study: study.id.clone(),
            requested_by: caller.audit_actor(),
            owner: owner.clone(),
            subject,
            handle,
            scope: ask.scope,
            actions: ask.actions,
            anonymization: ask.anonymization,
            grant_days: ask.days,
            message: ask.message.to_owned(),
            reward: ask.reward.clone(),
            reward_state: ask.reward.as_ref().map(|_| "offered".to_owned()),
            state: "pending".into(),
            grant: None,
            answer_by,
            created_at: now,
            updated_at: now,
        };
        let message = format!("The study \"{}\" asks to use your records.", study.title);
        notifications
            .extend(notify::to_owner_and_agents(state, &owner, "usage_request", &usage.id, &message, now).await?);
        requests.push(usage);
    }
    let audit = vec![audit_entry(caller, now, "research_request", "done").detail(format!(
        "study {}: {} requests",
        study.id,
        requests.len()
    ))];
    state.store.insert_usage_requests(&requests, &notifications, audit).await?;
    notify::publish(state, notifications);
    Ok(requests)
}

/// An owner's answer; what it leaves out is as asked.
pub struct Answer {
    pub accept: bool,
    pub scope: Option<CategorySet>,
    pub actions: Option<ActionSet>,
    pub anonymization: Option<Anonymization>,
    pub days: Option<i64>,
}

/// Answers `request` (which the caller may answer): accepting creates the grant bound to the
/// study. Returns the request as it now stands and its study.
pub async fn answer(
    state: &AppState,
    caller: &Caller,
    request: &UsageRequest,
    answer: Answer,
) -> ServiceResult<(UsageRequest, Study)> {
    let now = state.clock.now();
    if request.state != "pending" {
        return Err(ServiceError::Conflict(format!("the request is already {}", request.state)));
    }
    if request.answer_by <= now {
        return Err(ServiceError::Conflict("the request expired before it was answered".into()));
    }
    let study = state.store.study(&request.study).await?.ok_or(ServiceError::Internal)?;
    let researchers = Party::Organisation(study.org.clone());
    let reward_from = request.reward_state.as_deref();
    let (new_state, reward_to, grant) = if answer.accept {
        let scope = answer.scope.unwrap_or(request.scope);
        let actions: ActionSet = answer.actions.unwrap_or(request.actions);
        let anonymization = answer.anonymization.unwrap_or(request.anonymization);
        let days = answer.days.unwrap_or(request.grant_days);
        if !scope.is_subset_of(request.scope) || scope.is_empty() {
            return Err(ServiceError::Invalid("the answer may narrow the categories asked for, not widen them".into()));
        }
        if actions.iter().any(|a| !request.actions.contains(a)) || actions.is_empty() {
            return Err(ServiceError::Invalid("the answer may drop actions asked for, not add any".into()));
        }
        if anonymization < request.anonymization {
            return Err(ServiceError::Invalid("the answer may raise the anonymization asked for, not lower it".into()));
        }
        if !(1..=request.grant_days).contains(&days) {
            return Err(ServiceError::Invalid(format!(
                "days must be between 1 and the {} asked for",
                request.grant_days
            )));
        }
        let terms = GrantTerms::new(
            selector_for(state, request).await?,
            scope,
            actions,
            anonymization,
            now,
            Some(now.plus_days(days)),
        )
        .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        // An agent answering for the patient grants at most its own powers (DESIGN.md I9).
        if let Some(delegation) = &caller.actor.acting_for {
            kura_core::policy::check_agent_grant(delegation, &caller.actor.identities, &researchers, terms.actions())
                .map_err(|refusal| ServiceError::Forbidden(refusal.to_string()))?;
        }
        let grant = GrantRow {
            grant: Grant {
                id: ids::new_grant_id()?,
                owner: request.owner.clone(),
                grantee: researchers.clone(),
                terms,
                revoked_at: None,
            },
            study: Some(study.id.clone()),
            purpose: format!("study \"{}\" ({})", study.title, study.ethics_reference),
            created_by: caller.audit_actor(),
            created_at: now,
        };
        ("accepted", reward_from.map(|_| "accepted"), Some(grant))
    } else {
        ("declined", reward_from.map(|_| "declined"), None)
    };
    let message = format!("A usage request of the study \"{}\" was {new_state}.", study.title);
    let mut notifications = vec![
        notify::new(&researchers.to_text(), "request_answered", &request.id, &message, now),
        notify::new(&request.requested_by, "request_answered", &request.id, &message, now),
    ];
    let mut audit =
        audit_entry(caller, now, "research_answer", "done").detail(format!("request {}: {new_state}", request.id));
    if let Some(grant) = &grant {
        audit = audit.grant(&grant.grant.id);
    }
    match linked_patient_of(state, request).await? {
        Some(patient) => {
            // An institution answered for records it still holds about a linked patient: the
            // patient sees it in their timeline and inbox.
            let name_of = |org: Option<kura_store::model::Org>| org.map(|o| o.name).unwrap_or_default();
            let hospital = match &request.owner {
                Party::Organisation(org) => name_of(state.store.org(org).await?),
                Party::Account(_) => String::new(),
            };
            let researchers = name_of(state.store.org(&study.org).await?);
            let told = format!(
                "{hospital} {new_state} a request of the study \"{}\" ({researchers}) to use the records it holds about you.",
                study.title
            );
            notifications.push(notify::new(
                &Party::Account(patient.clone()).to_text(),
                "request_answered",
                &request.id,
                &told,
                now,
            ));
            audit = audit.subject(&patient);
        }
        None => {
            if let Party::Account(patient) = &request.owner {
                audit = audit.subject(patient);
            }
        }
    }
    let change = Change {
        expected: ("pending", reward_from),
        new: (new_state, reward_to),
        grant: grant.as_ref(),
        notifications,
        audit,
    };
    let updated = apply_change(state, request, change).await?;
    Ok((updated, study))
}

/// Moves the reward of `request` from one state to the next, telling `notify_party`.
pub async fn move_reward(
    state: &AppState,
    caller: &Caller,
    request: &UsageRequest,
    study: &Study,
    (from, to): (&str, &str),
    notify_party: &str,
) -> ServiceResult<UsageRequest> {
    let now = state.clock.now();
    if request.reward_state.as_deref() != Some(from) {
        return Err(ServiceError::Conflict(format!(
            "the reward is {}, not {from}",
            request.reward_state.as_deref().unwrap_or("not offered")
        )));
    }
    let message = format!("The reward of a usage request of the study \"{}\" is {to}.", study.title);
    let notifications = vec![notify::new(notify_party, "reward", &request.id, &message, now)];
    let mut audit =
        audit_entry(caller, now, "research_reward", "done").detail(format!("request {}: reward {to}", request.id));
    if let Party::Account(patient) = &request.owner {
        audit = audit.subject(patient);
    }
    let change = Change {
        expected: (&request.state, Some(from)),
        new: (&request.state, Some(to)),
        grant: None,
        notifications,
        audit,
    };
    apply_change(state, request, change).await
}

/// The researchers withdraw `request`, not yet answered.
pub async fn withdraw(
    state: &AppState,
    caller: &Caller,
    request: &UsageRequest,
    study: &Study,
) -> ServiceResult<UsageRequest> {
    let now = state.clock.now();
    if request.state != "pending" {
        return Err(ServiceError::Conflict(format!("the request is already {}", request.state)));
    }
    let reward_from = request.reward_state.as_deref();
    let message = format!("The study \"{}\" withdrew its usage request.", study.title);
    let notifications = vec![notify::new(&request.owner.to_text(), "request_withdrawn", &request.id, &message, now)];
    let audit = audit_entry(caller, now, "research_withdraw", "done").detail(format!("request {}", request.id));
    let change = Change {
        expected: ("pending", reward_from),
        new: ("withdrawn", reward_from.map(|_| "withdrawn")),
        grant: None,
        notifications,
        audit,
    };
    apply_change(state, request, change).await
}

/// One change of a request's state, its notifications and audit entry, then the request as it
/// now stands: what every answer, reward step and withdrawal does.
struct Change<'a> {
    expected: (&'a str, Option<&'a str>),
    new: (&'a str, Option<&'a str>),
    grant: Option<&'a GrantRow>,
    notifications: Vec<kura_store::model::Notification>,
    audit: kura_store::model::NewAudit,
}

async fn apply_change(state: &AppState, request: &UsageRequest, change: Change<'_>) -> ServiceResult<UsageRequest> {
    let now = state.clock.now();
    state
        .store
        .update_usage_request(
            &request.id,
            change.expected,
            change.new,
            change.grant,
            now,
            &change.notifications,
            change.audit,
        )
        .await
        .map_err(|e| ServiceError::store_conflict(e, ""))?;
    notify::publish(state, change.notifications);
    state.store.usage_request(&request.id).await?.ok_or(ServiceError::Internal)
}

/// The patient linked to the local patient an institution answers a request for, if any.
async fn linked_patient_of(
    state: &AppState,
    request: &UsageRequest,
) -> ServiceResult<Option<kura_core::ids::AccountId>> {
    match (&request.owner, request.subject.strip_prefix("local:")) {
        (Party::Organisation(org), Some(rest)) => {
            let mrn = rest.split_once(':').map(|(_, m)| m).unwrap_or("");
            Ok(state.store.linked_patient(org, mrn).await?)
        }
        _ => Ok(None),
    }
}

/// The records a grant from an answered request covers: all of a patient's, or those of the one
/// local patient an institution answers for.
async fn selector_for(state: &AppState, request: &UsageRequest) -> ServiceResult<RecordSelector> {
    match (&request.owner, request.subject.strip_prefix("local:")) {
        (Party::Organisation(org), Some(rest)) => {
            let mrn = rest.split_once(':').map(|(_, m)| m).unwrap_or("");
            let records = state.store.candidate_records(std::slice::from_ref(&request.owner), &[]).await?;
            let ids: Vec<_> =
                records.into_iter().filter(|r| &r.institution == org && r.mrn == mrn).map(|r| r.id).collect();
            if ids.is_empty() {
                return Err(ServiceError::Conflict(
                    "the records this request was about are no longer held here".into(),
                ));
            }
            Ok(RecordSelector::Records(ids))
        }
        _ => Ok(RecordSelector::Labels(Vec::new())),
    }
}
