//! Research (Fig. 8): studies, search by labels with handles and disclosure control, usage
//! requests with rewards, owners' answers (which create grants bound to the study), and the
//! reward's life. Researchers never see who is behind a handle.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use kura_api_types as api;
use kura_core::ids::{GrantId, OrgId};
use kura_core::party::{AccountKind, OrgKind, Party};
use kura_core::policy::{ActionSet, Grant, GrantTerms, RecordSelector, may_manage_grants_of};
use kura_core::time::Timestamp;
use kura_store::StoreError;
use kura_store::model::{GrantRow, Reward, Study, StudyReview, StudyState, UsageRequest};
use serde::Deserialize;

use super::ApiJson;
use super::convert;
use super::{AuditExt, audit_entry, new_id};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::{disclosure, notify, research};
use crate::state::AppState;
use crate::time;

/// The research organisation a researcher (or its machine client) acts for.
pub(super) async fn research_org(state: &AppState, caller: &Caller) -> ApiResult<OrgId> {
    caller.require(&[AccountKind::Researcher, AccountKind::Machine], "research")?;
    let org = caller.org().ok_or_else(|| ApiError::forbidden("your account does not act for an organisation"))?;
    let org = state.store.org(org).await?.ok_or_else(ApiError::internal)?;
    if org.kind != OrgKind::Research {
        return Err(ApiError::forbidden("research is open to research organisations"));
    }
    Ok(org.id)
}

/// A study of the caller's organisation; others' studies look missing.
pub(super) async fn own_study(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Study> {
    let org = research_org(state, caller).await?;
    state.store.study(id).await?.filter(|s| s.org == org).ok_or_else(|| ApiError::not_found("study"))
}

/// A study of the caller's organisation that an operator approved and nobody closed, while the
/// organisation's research is not suspended: only such a study searches, asks owners and
/// analyses.
pub(super) async fn approved_study(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Study> {
    let study = own_study(state, caller, id).await?;
    let refusals = state.store.refusals_since_resumed(&study.org).await?;
    if refusals >= state.config.max_differencing_refusals {
        return Err(disclosure::suspended(refusals).into());
    }
    let why = match study.review.state {
        StudyState::Approved => return Ok(study),
        StudyState::Pending => "the study waits for an operator's review; it can search, ask and analyse once approved",
        StudyState::Rejected => "the study was not approved",
        StudyState::Closed => "the study is closed",
    };
    Err(ApiError::new(StatusCode::CONFLICT, "study_not_approved", why))
}

fn study_view(s: &Study) -> api::StudyView {
    api::StudyView {
        id: s.id.clone(),
        org: s.org.to_string(),
        title: s.title.clone(),
        purpose: s.purpose.clone(),
        ethics_reference: s.ethics_reference.clone(),
        contact: s.contact.clone(),
        created_at: time::format(s.created_at),
        state: s.review.state.as_str().to_owned(),
        reviewed_at: s.review.at.map(time::format),
        review_note: s.review.note.clone(),
    }
}

fn required(field: &str, value: &str, max: usize) -> ApiResult<String> {
    let value = value.trim();
    if value.is_empty() || value.len() > max {
        return Err(ApiError::invalid(format!("{field} must have 1 to {max} characters")));
    }
    Ok(value.to_owned())
}

/// Registers a study: what it is for and its ethics approval. It waits for an operator's review
/// before it may search, ask or analyse; an organisation has at most a configured number of
/// studies pending or approved at once (409 beyond it).
#[utoipa::path(post, path = "/api/v1/research/studies", tag = "research", request_body = api::CreateStudyRequest,
    responses((status = 201, body = api::StudyView), (status = 403, body = api::ErrorEnvelope),
        (status = 409, body = api::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn create_study(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<api::CreateStudyRequest>,
) -> ApiResult<(StatusCode, Json<api::StudyView>)> {
    let org = research_org(&state, &caller).await?;
    let now = state.clock.now();
    let study = Study {
        id: new_id(),
        org,
        title: required("title", &request.title, 200)?,
        purpose: required("purpose", &request.purpose, 2000)?,
        ethics_reference: required("ethics_reference", &request.ethics_reference, 200)?,
        contact: required("contact", &request.contact, 200)?,
        created_by: caller.audit_actor(),
        created_at: now,
        review: StudyReview::pending(),
    };
    let audit = audit_entry(&caller, now, "study_create", "done").detail(format!("study {}", study.id));
    let limit = state.config.max_open_studies_per_org;
    state.store.insert_study(&study, limit, audit).await.map_err(|e| match e {
        StoreError::Conflict(_) => ApiError::new(
            StatusCode::CONFLICT,
            "study_limit",
            format!("your organisation already has {limit} studies pending review or approved; close one first"),
        ),
        other => other.into(),
    })?;
    Ok((StatusCode::CREATED, Json(study_view(&study))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StudiesQuery {
    /// Operators: only studies in this state (`pending`, `approved`, `rejected`, `closed`).
    state: Option<String>,
}

/// The studies of the caller's research organisation; for an operator or a study reviewer,
/// every organisation's (the review queue with `?state=pending`).
#[utoipa::path(get, path = "/api/v1/research/studies", tag = "research", params(StudiesQuery),
    responses((status = 200, body = api::StudyList), (status = 422, body = api::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn list_studies(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<StudiesQuery>,
) -> ApiResult<Json<api::StudyList>> {
    let wanted = match query.state.as_deref() {
        Some(text) => Some(
            StudyState::parse(text)
                .ok_or_else(|| ApiError::invalid("state must be one of pending, approved, rejected, closed"))?,
        ),
        None => None,
    };
    let studies = if matches!(caller.account.kind, AccountKind::Operator | AccountKind::Reviewer) {
        state.store.studies_in_state(wanted).await?
    } else {
        let org = research_org(&state, &caller).await?;
        let mut studies = state.store.studies_of(&org).await?;
        studies.retain(|s| wanted.is_none_or(|w| s.review.state == w));
        studies
    };
    Ok(Json(api::StudyList { studies: studies.iter().map(study_view).collect() }))
}

/// Moves a study from `from` to `to` with its audit entry and a notice to its organisation.
async fn change_study_state(
    state: &AppState,
    caller: &Caller,
    study: &Study,
    to: StudyState,
    note: Option<String>,
) -> ApiResult<Json<api::StudyView>> {
    let now = state.clock.now();
    let review = StudyReview { state: to, by: Some(caller.audit_actor()), at: Some(now), note };
    let message = format!("The study \"{}\" is now {}.", study.title, to.as_str());
    let notifications =
        vec![notify::new(&Party::Organisation(study.org.clone()).to_text(), "study", &study.id, &message, now)];
    let audit = audit_entry(caller, now, "study_review", "done").detail(format!("study {}: {}", study.id, to.as_str()));
    state.store.review_study(&study.id, study.review.state, &review, &notifications, audit).await.map_err(conflict)?;
    notify::publish(state, notifications);
    let updated = state.store.study(&study.id).await?.ok_or_else(ApiError::internal)?;
    Ok(Json(study_view(&updated)))
}

/// An operator, or a study reviewer an operator appointed, approves or rejects a study waiting
/// for review. Only an approved study searches, asks owners and analyses.
#[utoipa::path(post, path = "/api/v1/research/studies/{id}/review", tag = "research", params(("id" = String, Path)),
    request_body = api::ReviewStudyRequest,
    responses((status = 200, body = api::StudyView), (status = 403, body = api::ErrorEnvelope),
        (status = 404, body = api::ErrorEnvelope), (status = 409, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn review_study(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<api::ReviewStudyRequest>,
) -> ApiResult<Json<api::StudyView>> {
    caller.require(&[AccountKind::Operator, AccountKind::Reviewer], "reviewing studies")?;
    let study = state.store.study(&id).await?.ok_or_else(|| ApiError::not_found("study"))?;
    if study.review.state != StudyState::Pending {
        return Err(ApiError::conflict(format!("the study is {}, not pending review", study.review.state.as_str())));
    }
    let note = match request.note.as_deref().map(str::trim) {
        Some(note) if note.len() > 2000 => return Err(ApiError::invalid("note is at most 2000 characters")),
        Some(note) if !note.is_empty() => Some(note.to_owned()),
        _ => None,
    };
    let to = match request.decision {
        api::StudyDecision::Approve => StudyState::Approved,
        api::StudyDecision::Reject => StudyState::Rejected,
    };
    change_study_state(&state, &caller, &study, to, note).await
}

/// Closes a study (its organisation's researchers, or an operator): it can no longer search,
/// ask or analyse, and it no longer counts against the organisation's limit. What it was told
/// stays in the organisation's disclosure ledger.
#[utoipa::path(post, path = "/api/v1/research/studies/{id}/close", tag = "research", params(("id" = String, Path)),
    responses((status = 200, body = api::StudyView), (status = 404, body = api::ErrorEnvelope),
        (status = 409, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn close_study(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::StudyView>> {
    let study = if caller.account.kind == AccountKind::Operator {
        state.store.study(&id).await?.ok_or_else(|| ApiError::not_found("study"))?
    } else {
        own_study(&state, &caller, &id).await?
    };
    if study.review.state == StudyState::Closed {
        return Err(ApiError::conflict("the study is already closed"));
    }
    change_study_state(&state, &caller, &study, StudyState::Closed, None).await
}

fn parse_query(value: &serde_json::Value) -> ApiResult<kura_index::Query> {
    let parsed = match value {
        serde_json::Value::String(text) => kura_index::parse_text(text),
        other => kura_index::parse_json(other),
    };
    parsed.map_err(|e| ApiError::invalid(format!("query: {e}")))
}

/// The research organisation `id` as the caller may see it: its own researchers, or an operator.
async fn visible_research_org(state: &AppState, caller: &Caller, id: &str) -> ApiResult<OrgId> {
    let org = OrgId::parse(id).map_err(|_| ApiError::not_found("organisation"))?;
    if caller.account.kind == AccountKind::Operator {
        return match state.store.org(&org).await? {
            Some(o) if o.kind == OrgKind::Research => Ok(org),
            _ => Err(ApiError::not_found("organisation")),
        };
    }
    match research_org(state, caller).await {
        Ok(own) if own == org => Ok(org),
        _ => Err(ApiError::not_found("organisation")),
    }
}

async fn disclosure_status(state: &AppState, org: &OrgId) -> ApiResult<api::DisclosureStatus> {
    let people = disclosure::org_ledger(state, org).await?.1.members() as u64;
    let refusals = state.store.refusals_since_resumed(org).await?;
    Ok(api::DisclosureStatus {
        organisation: org.to_string(),
        people_told_about: people,
        refusals_since_review: refusals,
        refusal_limit: state.config.max_differencing_refusals,
        suspended: refusals >= state.config.max_differencing_refusals,
        epsilon_spent: state.store.org_epsilon_spent(org).await?,
        epsilon_budget: state.config.org_epsilon_budget,
    })
}

/// What a research organisation has been told (how many people its disclosure ledger holds),
/// how many of its searches and analyses were refused for differencing since an operator last
/// looked, whether its research is suspended, and its ε. For its researchers and operators.
#[utoipa::path(get, path = "/api/v1/research/organisations/{id}/disclosure", tag = "research", params(("id" = String, Path)),
    responses((status = 200, body = api::DisclosureStatus), (status = 404, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn disclosure(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::DisclosureStatus>> {
    let org = visible_research_org(&state, &caller, &id).await?;
    Ok(Json(disclosure_status(&state, &org).await?))
}

/// An operator resumes a research organisation's research after reviewing the searches and
/// analyses refused for differencing (the audit log holds them); its refusals so far no longer
/// count. What it was told stays in its ledger.
#[utoipa::path(post, path = "/api/v1/research/organisations/{id}/resume", tag = "research", params(("id" = String, Path)),
    responses((status = 200, body = api::DisclosureStatus), (status = 403, body = api::ErrorEnvelope),
        (status = 404, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::DisclosureStatus>> {
    caller.require(&[AccountKind::Operator], "resuming research")?;
    let org = visible_research_org(&state, &caller, &id).await?;
    let now = state.clock.now();
    let audit = audit_entry(&caller, now, "research_resume", "done").detail(format!("organisation {org}"));
    state.store.resume_research(&org, &new_id(), &caller.audit_actor(), audit).await?;
    Ok(Json(disclosure_status(&state, &org).await?))
}

/// Searches the records of people who opted in to being found. The answer is a count and one
/// handle per person, or "fewer than k" with no handles. Every released set goes into the
/// research organisation's disclosure ledger, over all its studies and members: an answer that,
/// set against anything released before, would single out fewer than k people is refused
/// (409 `differencing`). The same query repeated too often in a study is refused too (429).
#[utoipa::path(post, path = "/api/v1/research/search", tag = "research", request_body = api::SearchRequest,
    responses((status = 200, body = api::SearchResponse), (status = 409, body = api::ErrorEnvelope),
        (status = 422, body = api::ErrorEnvelope), (status = 429, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<api::SearchRequest>,
) -> ApiResult<Json<api::SearchResponse>> {
    let study = approved_study(&state, &caller, &request.study).await?;
    let query = parse_query(&request.query)?;
    Ok(Json(research::search(&state, &caller, &study, &query).await?))
}

fn request_view(r: &UsageRequest, study: Option<&Study>, now: Timestamp) -> api::UsageRequestView {
    let state = if r.state == "pending" && r.answer_by <= now { "expired".to_owned() } else { r.state.clone() };
    api::UsageRequestView {
        id: r.id.clone(),
        study: r.study.clone(),
        study_title: study.map(|s| s.title.clone()).unwrap_or_default(),
        study_purpose: study.map(|s| s.purpose.clone()).unwrap_or_default(),
        ethics_reference: study.map(|s| s.ethics_reference.clone()).unwrap_or_default(),
        requested_by_org: study.map(|s| s.org.to_string()).unwrap_or_default(),
        handle: r.handle.clone(),
        scope: convert::categories_to_api(r.scope),
        actions: r.actions.iter().filter_map(convert::grant_action_to_api).collect(),
        anonymization: convert::anonymization_to_api(r.anonymization),
        days: r.grant_days,
        message: r.message.clone(),
        reward: r.reward.as_ref().map(|w| api::RewardBody {
            amount: w.amount.clone(),
            currency: w.currency.clone(),
            description: w.description.clone(),
        }),
        reward_state: r.reward_state.clone(),
        state,
        grant: r.grant.as_ref().map(|g| g.to_string()),
        answer_by: time::format(r.answer_by),
        created_at: time::format(r.created_at),
    }
}

/// Sends a usage request to the owners behind chosen handles, optionally offering a reward. One
/// request goes to each owner; the owners (and their agents) are notified.
#[utoipa::path(post, path = "/api/v1/research/requests", tag = "research", request_body = api::CreateUsageRequests,
    responses((status = 201, body = api::UsageRequestList), (status = 422, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn create_requests(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<api::CreateUsageRequests>,
) -> ApiResult<(StatusCode, Json<api::UsageRequestList>)> {
    let study = approved_study(&state, &caller, &request.study).await?;
    if request.handles.is_empty() || request.handles.len() > 10_000 {
        return Err(ApiError::invalid("give between 1 and 10000 handles"));
    }
    if !(1..=3650).contains(&request.days) {
        return Err(ApiError::invalid("days must be between 1 and 3650"));
    }
    let scope = convert::categories_from_api(&request.scope);
    let actions = convert::actions_from_api(&request.actions);
    if scope.is_empty() || actions.is_empty() {
        return Err(ApiError::invalid("a request asks for at least one category and one action"));
    }
    if request.message.len() > 2000 {
        return Err(ApiError::invalid("message is at most 2000 characters"));
    }
    let reward = match &request.reward {
        Some(w) => Some(Reward {
            amount: required("reward.amount", &w.amount, 40)?,
            currency: required("reward.currency", &w.currency, 10)?,
            description: w.description.chars().take(500).collect(),
        }),
        None => None,
    };
    let now = state.clock.now();
    let answer_by = now.plus_days(request.answer_within_days.unwrap_or(30).clamp(1, 365));
    let mut subjects = Vec::new();
    for handle in &request.handles {
        let subject = state
            .store
            .subject_of_handle(&study.id, handle)
            .await?
            .ok_or_else(|| ApiError::invalid(format!("handle {handle} was not given to this study")))?;
        if !subjects.iter().any(|(_, s)| s == &subject) {
            subjects.push((handle.clone(), subject));
        }
    }
    let mut requests = Vec::new();
    let mut notifications = Vec::new();
    for (handle, subject) in subjects {
        let owner = kura_core::research::owner_of_subject(&subject).ok_or_else(ApiError::internal)?;
        let usage = UsageRequest {
            id: new_id(),
            study: study.id.clone(),
            requested_by: caller.audit_actor(),
            owner: owner.clone(),
            subject,
            handle,
            scope,
            actions,
            anonymization: convert::anonymization_from_api(request.anonymization),
            grant_days: request.days,
            message: request.message.clone(),
            reward: reward.clone(),
            reward_state: reward.as_ref().map(|_| "offered".to_owned()),
            state: "pending".into(),
            grant: None,
            answer_by,
            created_at: now,
            updated_at: now,
        };
        let message = format!("The study \"{}\" asks to use your records.", study.title);
        notifications
            .extend(notify::to_owner_and_agents(&state, &owner, "usage_request", &usage.id, &message, now).await?);
        requests.push(usage);
    }
    let audit = vec![audit_entry(&caller, now, "research_request", "done").detail(format!(
        "study {}: {} requests",
        study.id,
        requests.len()
    ))];
    state.store.insert_usage_requests(&requests, &notifications, audit).await?;
    notify::publish(&state, notifications);
    let views = requests.iter().map(|r| request_view(r, Some(&study), now)).collect();
    Ok((StatusCode::CREATED, Json(api::UsageRequestList { requests: views })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct RequestsQuery {
    /// Researchers: the study whose requests to list.
    study: Option<String>,
}

/// Usage requests: to the caller (an owner, or the patient an agent acts for), or, for a
/// researcher, those of a study.
#[utoipa::path(get, path = "/api/v1/research/requests", tag = "research", params(RequestsQuery),
    responses((status = 200, body = api::UsageRequestList)), security(("bearer" = [])))]
pub async fn list_requests(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<RequestsQuery>,
) -> ApiResult<Json<api::UsageRequestList>> {
    let now = state.clock.now();
    let requests = match &query.study {
        Some(study) => {
            let study = own_study(&state, &caller, study).await?;
            let requests = state.store.usage_requests_of_study(&study.id).await?;
            requests.iter().map(|r| request_view(r, Some(&study), now)).collect()
        }
        None => {
            let mut views = Vec::new();
            for r in state.store.usage_requests_for_owners(&caller.parties()).await? {
                let study = state.store.study(&r.study).await?;
                views.push(request_view(&r, study.as_ref(), now));
            }
            views
        }
    };
    Ok(Json(api::UsageRequestList { requests }))
}

/// A request the caller may answer (owner or agent with the power); others look missing.
async fn answerable(state: &AppState, caller: &Caller, id: &str) -> ApiResult<UsageRequest> {
    let now = state.clock.now();
    state
        .store
        .usage_request(id)
        .await?
        .filter(|r| may_manage_grants_of(&caller.actor, &r.owner, now))
        .ok_or_else(|| ApiError::not_found("usage request"))
}

/// The research organisation's own request; others look missing.
async fn researchers_request(state: &AppState, caller: &Caller, id: &str) -> ApiResult<(UsageRequest, Study)> {
    let request = state.store.usage_request(id).await?.ok_or_else(|| ApiError::not_found("usage request"))?;
    let study = own_study(state, caller, &request.study).await.map_err(|_| ApiError::not_found("usage request"))?;
    Ok((request, study))
}

fn conflict(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(why) => ApiError::conflict(why),
        other => other.into(),
    }
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

async fn apply_change(
    state: &AppState,
    request: &UsageRequest,
    study: &Study,
    change: Change<'_>,
) -> ApiResult<Json<api::UsageRequestView>> {
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
        .map_err(conflict)?;
    notify::publish(state, change.notifications);
    let updated = state.store.usage_request(&request.id).await?.ok_or_else(ApiError::internal)?;
    Ok(Json(request_view(&updated, Some(study), now)))
}

/// The patient linked to the local patient an institution answers a request for, if any.
async fn linked_patient_of(state: &AppState, request: &UsageRequest) -> ApiResult<Option<kura_core::ids::AccountId>> {
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
async fn selector_for(state: &AppState, request: &UsageRequest) -> ApiResult<RecordSelector> {
    match (&request.owner, request.subject.strip_prefix("local:")) {
        (Party::Organisation(org), Some(rest)) => {
            let mrn = rest.split_once(':').map(|(_, m)| m).unwrap_or("");
            let records = state.store.candidate_records(std::slice::from_ref(&request.owner), &[]).await?;
            let ids: Vec<_> =
                records.into_iter().filter(|r| &r.institution == org && r.mrn == mrn).map(|r| r.id).collect();
            if ids.is_empty() {
                return Err(ApiError::conflict("the records this request was about are no longer held here"));
            }
            Ok(RecordSelector::Records(ids))
        }
        _ => Ok(RecordSelector::Labels(Vec::new())),
    }
}

/// Answers a usage request. Accepting creates a grant bound to the study, and may narrow what
/// was asked (fewer categories or actions, stronger anonymization, a shorter period) but never
/// widen it. The researcher is notified either way.
#[utoipa::path(post, path = "/api/v1/research/requests/{id}/answer", tag = "research", params(("id" = String, Path)),
    request_body = api::AnswerRequest,
    responses((status = 200, body = api::UsageRequestView), (status = 404, body = api::ErrorEnvelope),
        (status = 409, body = api::ErrorEnvelope), (status = 422, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn answer(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(answer): ApiJson<api::AnswerRequest>,
) -> ApiResult<Json<api::UsageRequestView>> {
    let request = answerable(&state, &caller, &id).await?;
    let now = state.clock.now();
    if request.state != "pending" {
        return Err(ApiError::conflict(format!("the request is already {}", request.state)));
    }
    if request.answer_by <= now {
        return Err(ApiError::conflict("the request expired before it was answered"));
    }
    let study = state.store.study(&request.study).await?.ok_or_else(ApiError::internal)?;
    let researchers = Party::Organisation(study.org.clone());
    let reward_from = request.reward_state.as_deref();
    let (new_state, reward_to, grant) = if answer.accept {
        let scope = answer.scope.as_deref().map(convert::categories_from_api).unwrap_or(request.scope);
        let actions: ActionSet = answer.actions.as_deref().map(convert::actions_from_api).unwrap_or(request.actions);
        let anonymization = answer.anonymization.map(convert::anonymization_from_api).unwrap_or(request.anonymization);
        let days = answer.days.unwrap_or(request.grant_days);
        if !scope.is_subset_of(request.scope) || scope.is_empty() {
            return Err(ApiError::invalid("the answer may narrow the categories asked for, not widen them"));
        }
        if actions.iter().any(|a| !request.actions.contains(a)) || actions.is_empty() {
            return Err(ApiError::invalid("the answer may drop actions asked for, not add any"));
        }
        if anonymization < request.anonymization {
            return Err(ApiError::invalid("the answer may raise the anonymization asked for, not lower it"));
        }
        if !(1..=request.grant_days).contains(&days) {
            return Err(ApiError::invalid(format!("days must be between 1 and the {} asked for", request.grant_days)));
        }
        let terms = GrantTerms::new(
            selector_for(&state, &request).await?,
            scope,
            actions,
            anonymization,
            now,
            Some(now.plus_days(days)),
        )
        .map_err(|e| ApiError::invalid(e.to_string()))?;
        // An agent answering for the patient grants at most its own powers (DESIGN.md I9).
        if let Some(delegation) = &caller.actor.acting_for {
            kura_core::policy::check_agent_grant(delegation, &caller.actor.identities, &researchers, terms.actions())
                .map_err(|refusal| ApiError::forbidden(refusal.to_string()))?;
        }
        let grant = GrantRow {
            grant: Grant {
                id: GrantId::parse(&new_id()).map_err(|_| ApiError::internal())?,
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
        audit_entry(&caller, now, "research_answer", "done").detail(format!("request {}: {new_state}", request.id));
    if let Some(grant) = &grant {
        audit = audit.grant(&grant.grant.id);
    }
    match linked_patient_of(&state, &request).await? {
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
    apply_change(&state, &request, &study, change).await
}

async fn move_reward(
    state: &AppState,
    caller: &Caller,
    request: &UsageRequest,
    study: &Study,
    (from, to): (&str, &str),
    notify_party: &str,
) -> ApiResult<Json<api::UsageRequestView>> {
    let now = state.clock.now();
    if request.reward_state.as_deref() != Some(from) {
        return Err(ApiError::conflict(format!(
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
    apply_change(state, request, study, change).await
}

/// The researcher marks the reward of an accepted request as paid.
#[utoipa::path(post, path = "/api/v1/research/requests/{id}/reward/paid", tag = "research", params(("id" = String, Path)),
    responses((status = 200, body = api::UsageRequestView), (status = 409, body = api::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn reward_paid(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::UsageRequestView>> {
    let (request, study) = researchers_request(&state, &caller, &id).await?;
    move_reward(&state, &caller, &request, &study, ("accepted", "paid"), &request.owner.to_text()).await
}

/// The owner confirms having received the reward.
#[utoipa::path(post, path = "/api/v1/research/requests/{id}/reward/confirm", tag = "research", params(("id" = String, Path)),
    responses((status = 200, body = api::UsageRequestView), (status = 409, body = api::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn reward_confirm(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::UsageRequestView>> {
    let request = answerable(&state, &caller, &id).await?;
    let study = state.store.study(&request.study).await?.ok_or_else(ApiError::internal)?;
    let researchers = Party::Organisation(study.org.clone()).to_text();
    move_reward(&state, &caller, &request, &study, ("paid", "confirmed"), &researchers).await
}

/// The researcher withdraws a request not yet answered.
#[utoipa::path(post, path = "/api/v1/research/requests/{id}/withdraw", tag = "research", params(("id" = String, Path)),
    responses((status = 200, body = api::UsageRequestView), (status = 409, body = api::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn withdraw(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::UsageRequestView>> {
    let (request, study) = researchers_request(&state, &caller, &id).await?;
    let now = state.clock.now();
    if request.state != "pending" {
        return Err(ApiError::conflict(format!("the request is already {}", request.state)));
    }
    let reward_from = request.reward_state.as_deref();
    let message = format!("The study \"{}\" withdrew its usage request.", study.title);
    let notifications = vec![notify::new(&request.owner.to_text(), "request_withdrawn", &request.id, &message, now)];
    let audit = audit_entry(&caller, now, "research_withdraw", "done").detail(format!("request {}", request.id));
    let change = Change {
        expected: ("pending", reward_from),
        new: ("withdrawn", reward_from.map(|_| "withdrawn")),
        grant: None,
        notifications,
        audit,
    };
    apply_change(&state, &request, &study, change).await
}

/// The caller's opt-ins: findable by research search, counted in statistics (both off unless set).
#[utoipa::path(get, path = "/api/v1/preferences", tag = "research",
    responses((status = 200, body = api::PreferencesBody)), security(("bearer" = [])))]
pub async fn get_preferences(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<api::PreferencesBody>> {
    let party = caller.owner_party("preferences belong to patients and institutions")?;
    let prefs = state.store.preferences(&party).await?;
    Ok(Json(api::PreferencesBody {
        discoverable: prefs.is_some_and(|p| p.discoverable),
        contribute_statistics: prefs.is_some_and(|p| p.contribute_statistics),
        privacy_loss_cap: prefs.and_then(|p| p.privacy_loss_cap),
    }))
}

/// Changes the caller's opt-ins; research search follows at once.
#[utoipa::path(put, path = "/api/v1/preferences", tag = "research", request_body = api::PreferencesBody,
    responses((status = 200, body = api::PreferencesBody)), security(("bearer" = [])))]
pub async fn set_preferences(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<api::PreferencesBody>,
) -> ApiResult<Json<api::PreferencesBody>> {
    let party = caller.owner_party("preferences belong to patients and institutions")?;
    let now = state.clock.now();
    if !may_manage_grants_of(&caller.actor, &party, now) {
        return Err(ApiError::forbidden("your delegation does not include managing the patient's choices"));
    }
    if body.privacy_loss_cap.is_some_and(|cap| !cap.is_finite() || cap < 0.0) {
        return Err(ApiError::invalid("privacy_loss_cap must be a number of 0 or more"));
    }
    let prefs = kura_store::model::Preferences {
        discoverable: body.discoverable,
        contribute_statistics: body.contribute_statistics,
        privacy_loss_cap: body.privacy_loss_cap,
        updated_at: now,
    };
    let mut audit = audit_entry(&caller, now, "preferences", "done")
        .detail(format!("discoverable={} contribute_statistics={}", body.discoverable, body.contribute_statistics));
    if let Party::Account(patient) = &party {
        audit = audit.subject(patient);
    }
    state.store.set_preferences(&party, &prefs, audit).await?;
    state.index.catch_up(state.store.as_ref()).await?;
    state.statistics.catch_up(state.store.as_ref()).await?;
    Ok(Json(body))
}
