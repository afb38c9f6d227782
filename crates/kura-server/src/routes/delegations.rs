//! Delegations: a patient appoints an agent; an operator or an institution registers a guardian.
//! The agent then acts as the patient within the powers given, by sending the `kura-act-as`
//! header; the audit log names both.
//!
//! DESIGN.md I9: a guardian registered for an adult (or a patient of unknown age) does nothing
//! until the patient accepts it; one registered for a minor (age from a record about them) is in
//! force at once and ends at majority at the latest. Every delegation over a patient is in their
//! list and inbox, and they end any of them but a minor's guardianship, which the operator ends.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kura_api_types as api;
use kura_core::ids::{AccountId, DelegationId};
use kura_core::party::AccountKind;
use kura_core::policy::{ActionSet, DelegationEnder, may_end_delegation};
use kura_store::model::DelegationKind;

use super::ApiJson;
use super::{AuditExt, audit_entry, convert};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::delegations;
use crate::state::AppState;
use crate::time;

/// Whether a staff member's institution holds a link to `patient`.
async fn institution_knows(state: &AppState, caller: &Caller, patient: &AccountId) -> ApiResult<bool> {
    let Some(org) = caller.org() else { return Ok(false) };
    Ok(state.store.links_of(patient).await?.iter().any(|(institution, _)| institution == org))
}

/// Appoints an agent (patient) or registers a guardian (operator, or staff of an institution
/// the patient is linked to). A guardian over an adult awaits the patient's acceptance; over a
/// minor it is in force at once until majority. The patient is told in their inbox.
#[utoipa::path(post, path = "/api/v1/delegations", tag = "delegations", request_body = api::CreateDelegationRequest,
    responses((status = 201, body = api::DelegationView), (status = 403, body = api::ErrorEnvelope),
        (status = 422, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<api::CreateDelegationRequest>,
) -> ApiResult<(StatusCode, Json<api::DelegationView>)> {
    let now = state.clock.now();
    let kind =
        DelegationKind::parse(&request.kind).ok_or_else(|| ApiError::invalid("kind must be appointed or guardian"))?;
    let patient = match (kind, caller.account.kind, &request.patient) {
        (DelegationKind::Appointed, AccountKind::Patient, None) if caller.delegation.is_none() => {
            caller.account.id.clone()
        }
        (DelegationKind::Appointed, _, _) => {
            return Err(ApiError::forbidden("a patient appoints their own agents; omit patient"));
        }
        (DelegationKind::Guardian, AccountKind::Operator | AccountKind::Staff, Some(raw)) => {
            AccountId::parse(raw).map_err(|_| ApiError::invalid("patient is not an account id"))?
        }
        (DelegationKind::Guardian, AccountKind::Operator | AccountKind::Staff, None) => {
            return Err(ApiError::invalid("a guardian is registered for a patient: give patient"));
        }
        (DelegationKind::Guardian, _, _) => {
            return Err(ApiError::forbidden("guardians are registered by operators or institutions"));
        }
    };
    let patient_account = state
        .store
        .account(&patient)
        .await?
        .filter(|a| a.kind == AccountKind::Patient)
        .ok_or_else(|| ApiError::not_found("patient"))?;
    if caller.account.kind == AccountKind::Staff && !institution_knows(&state, &caller, &patient_account.id).await? {
        return Err(ApiError::not_found("patient"));
    }
    let agent = state
        .store
        .account_by_username(&request.agent)
        .await?
        .filter(|a| a.kind == AccountKind::Patient)
        .ok_or_else(|| ApiError::invalid("the agent must be an existing personal account"))?;
    if agent.id == patient_account.id {
        return Err(ApiError::invalid("a patient cannot be their own agent"));
    }
    let powers: ActionSet = request.powers.iter().map(|p| convert::power_from_api(*p)).collect();
    if powers.is_empty() {
        return Err(ApiError::invalid("give the agent at least one power"));
    }
    let requested_end = request.expires_at.as_deref().map(|raw| time::parse("expires_at", raw)).transpose()?;
    let row = delegations::register(&state, &caller, patient, &agent, kind, powers, requested_end).await?;
    Ok((StatusCode::CREATED, Json(convert::delegation_view(&row, now))))
}

/// The patient accepts a delegation registered for them; it takes effect from now.
#[utoipa::path(post, path = "/api/v1/delegations/{id}/accept", tag = "delegations", params(("id" = String, Path)),
    responses((status = 200, body = api::DelegationView), (status = 404, body = api::ErrorEnvelope),
        (status = 409, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn accept(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::DelegationView>> {
    let now = state.clock.now();
    // Only the patient in person accepts: an agent cannot accept another agent for them.
    let row = match DelegationId::parse(&id) {
        Ok(id) => state.store.delegation(&id).await?,
        Err(_) => None,
    }
    .filter(|row| row.delegation.patient == caller.account.id && caller.delegation.is_none())
    .ok_or_else(|| ApiError::not_found("delegation"))?;
    if row.delegation.accepted_at.is_some() || row.delegation.revoked_at.is_some() {
        return Err(ApiError::conflict("this delegation is not waiting for your acceptance"));
    }
    let audit = audit_entry(&caller, now, "delegation_accept", "done")
        .subject(&row.delegation.patient)
        .detail(row.delegation.id.to_string());
    state.store.accept_delegation(&row.delegation.id, now, audit).await.map_err(|e| match e {
        kura_store::StoreError::NotFound => ApiError::conflict("this delegation is not waiting for your acceptance"),
        other => other.into(),
    })?;
    let mut accepted = row;
    accepted.delegation.accepted_at = Some(now);
    Ok(Json(convert::delegation_view(&accepted, now)))
}

/// Delegations where the caller is the agent or the patient.
#[utoipa::path(get, path = "/api/v1/delegations", tag = "delegations",
    responses((status = 200, body = api::DelegationList)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<api::DelegationList>> {
    let now = state.clock.now();
    let rows = state.store.delegations_involving(&caller.account.id).await?;
    Ok(Json(api::DelegationList { delegations: rows.iter().map(|d| convert::delegation_view(d, now)).collect() }))
}

/// Ends a delegation: the patient ends (or declines) any delegation over them but a minor's
/// guardianship, the agent can step down, and operators (or the registering institution's
/// staff) end guardianships.
#[utoipa::path(delete, path = "/api/v1/delegations/{id}", tag = "delegations", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = api::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn revoke(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let now = state.clock.now();
    let row = match DelegationId::parse(&id) {
        Ok(id) => state.store.delegation(&id).await?,
        Err(_) => None,
    }
    .ok_or_else(|| ApiError::not_found("delegation"))?;
    let d = &row.delegation;
    let ender = if d.agent == caller.account.id {
        DelegationEnder::Agent
    } else if d.patient == caller.account.id && caller.delegation.is_none() {
        DelegationEnder::Patient
    } else if caller.account.kind == AccountKind::Operator {
        DelegationEnder::Operator
    } else if row.kind == DelegationKind::Guardian && row.created_by == caller.audit_actor() {
        DelegationEnder::Registrar
    } else {
        DelegationEnder::Other
    };
    if !may_end_delegation(ender, row.over_minor) {
        // The patient sees the delegation in their list, so the refusal says why.
        return Err(match ender {
            DelegationEnder::Patient => ApiError::forbidden(
                "a guardianship registered while you are a minor ends at majority; ask the operator to end it earlier",
            ),
            _ => ApiError::not_found("delegation"),
        });
    }
    let audit = audit_entry(&caller, now, "delegation_revoke", "done").subject(&d.patient).detail(d.id.to_string());
    state.store.revoke_delegation(&d.id, now, audit).await?;
    Ok(StatusCode::NO_CONTENT)
}
