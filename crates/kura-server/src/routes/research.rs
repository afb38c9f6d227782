//! Research (Fig. 8): studies, search by labels with handles and disclosure control, usage
//! requests with rewards, owners' answers (which create grants bound to the study), and the
//! reward's life. Researchers never see who is behind a handle.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use kura_api_types as api;
use kura_core::ids::OrgId;
use kura_core::party::{AccountKind, OrgKind, Party};
use kura_core::policy::may_manage_grants_of;
use kura_core::time::Timestamp;
use kura_store::StoreError;
use kura_store::model::{Reward, Study, StudyReview, StudyState, UsageRequest};
use serde::Deserialize;

use super::ApiJson;
use super::convert;
use super::{AuditExt, audit_entry, new_id};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::{disclosure, notify, research, usage};
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
    let ask = usage::Ask {
        handles: &request.handles,
        scope,
        actions,
        anonymization: convert::anonymization_from_api(request.anonymization),
        days: request.days,
        message: &request.message,
        reward,
        answer_within_days: request.answer_within_days,
    };
    let requests = usage::ask_owners(&state, &caller, &study, ask).await?;
    let now = state.clock.now();
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
    let given = usage::Answer {
        accept: answer.accept,
        scope: answer.scope.as_deref().map(convert::categories_from_api),
        actions: answer.actions.as_deref().map(convert::actions_from_api),
        anonymization: answer.anonymization.map(convert::anonymization_from_api),
        days: answer.days,
    };
    let (updated, study) = usage::answer(&state, &caller, &request, given).await?;
    Ok(Json(request_view(&updated, Some(&study), state.clock.now())))
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
    let updated =
        usage::move_reward(&state, &caller, &request, &study, ("accepted", "paid"), &request.owner.to_text()).await?;
    Ok(Json(request_view(&updated, Some(&study), state.clock.now())))
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
    let updated = usage::move_reward(&state, &caller, &request, &study, ("paid", "confirmed"), &researchers).await?;
    Ok(Json(request_view(&updated, Some(&study), state.clock.now())))
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
    let updated = usage::withdraw(&state, &caller, &request, &study).await?;
    Ok(Json(request_view(&updated, Some(&study), state.clock.now())))
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
