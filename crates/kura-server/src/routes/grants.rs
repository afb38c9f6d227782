//! Grants (S201–S202): an owner, or an agent with the power, sets who may use which records, for
//! how long and how anonymized; and revokes them, which takes effect at once.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kura_api_types as api;
use kura_core::ids::GrantId;
use kura_core::labels::Label;
use kura_core::party::Party;
use kura_core::policy::{GrantTerms, RecordSelector, check_agent_grant, may_manage_grants_of};

use super::ApiJson;
use super::convert;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::grants;
use crate::state::AppState;
use crate::time;

async fn grantee_exists(state: &AppState, grantee: &Party) -> ApiResult<bool> {
    Ok(match grantee {
        Party::Organisation(id) => state.store.org(id).await?.is_some(),
        Party::Account(id) => state.store.account(id).await?.is_some(),
    })
}

/// Creates a grant over a list of records, or over every record of the owner carrying the given
/// labels.
#[utoipa::path(post, path = "/api/v1/grants", tag = "grants", request_body = api::CreateGrantRequest,
    responses((status = 201, body = api::GrantView), (status = 404, body = api::ErrorEnvelope),
        (status = 422, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<api::CreateGrantRequest>,
) -> ApiResult<(StatusCode, Json<api::GrantView>)> {
    let now = state.clock.now();
    let owner = caller.owner_party("only record owners and their agents create grants")?;
    if !may_manage_grants_of(&caller.actor, &owner, now) {
        return Err(ApiError::forbidden("your delegation does not include managing grants"));
    }
    let grantee = convert::party_from_api(&request.grantee)?;
    if grantee == owner {
        return Err(ApiError::invalid("an owner cannot grant to itself"));
    }
    if !grantee_exists(&state, &grantee).await? {
        return Err(ApiError::invalid("the grantee does not exist"));
    }
    let selector = match (&request.records, request.labels.is_empty()) {
        (Some(_), false) => return Err(ApiError::invalid("give either records or labels, not both")),
        (Some(ids), true) => {
            let mut records = Vec::with_capacity(ids.len());
            for raw in ids {
                // A record the owner does not own is answered like a missing one.
                let record = super::load_record(&state, raw)
                    .await?
                    .filter(|r| r.owner == owner && r.held_under.is_none())
                    .ok_or_else(|| ApiError::not_found(&format!("record {raw}")))?;
                records.push(record.id);
            }
            RecordSelector::Records(records)
        }
        (None, _) => RecordSelector::Labels(
            request
                .labels
                .iter()
                .map(|l| Label::parse(l).map_err(|e| ApiError::invalid(format!("label '{l}': {e}"))))
                .collect::<Result<_, _>>()?,
        ),
    };
    let not_before = match &request.not_before {
        Some(raw) => time::parse("not_before", raw)?,
        None => now,
    };
    let expires_at = request.expires_at.as_deref().map(|raw| time::parse("expires_at", raw)).transpose()?;
    if expires_at.is_some_and(|end| end <= now) {
        return Err(ApiError::invalid("expires_at is in the past"));
    }
    if request.purpose.len() > 1000 {
        return Err(ApiError::invalid("purpose is at most 1000 characters"));
    }
    let terms = GrantTerms::new(
        selector,
        convert::categories_from_api(&request.scope),
        convert::actions_from_api(&request.actions),
        convert::anonymization_from_api(request.anonymization),
        not_before,
        expires_at,
    )
    .map_err(|e| ApiError::invalid(e.to_string()))?;
    // DESIGN.md I9: an agent's grant carries at most the agent's own powers and never goes to
    // the agent itself, which would let it act beyond its delegation without acting-as.
    if let Some(delegation) = &caller.actor.acting_for {
        check_agent_grant(delegation, &caller.actor.identities, &grantee, terms.actions())
            .map_err(|refusal| ApiError::forbidden(refusal.to_string()))?;
    }
    let row = grants::create(&state, &caller, owner, grantee, terms, request.purpose).await?;
    Ok((StatusCode::CREATED, Json(convert::grant_view(&row, now))))
}

/// Grants given by or to the caller (or the patient an agent acts for).
#[utoipa::path(get, path = "/api/v1/grants", tag = "grants",
    responses((status = 200, body = api::GrantList)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<api::GrantList>> {
    let now = state.clock.now();
    let mut views = Vec::new();
    let mut display = super::names::DisplayNames::default();
    for row in state.store.grants_involving(&caller.parties()).await? {
        let mut view = convert::grant_view(&row, now);
        super::names::name_grant(&state, &caller, &row, &mut view, &mut display).await?;
        views.push(view);
    }
    Ok(Json(api::GrantList { grants: views }))
}

/// Revokes a grant. It allows nothing from this instant, also for tokens already issued, and
/// the in-server copies made under it are destroyed in the same transaction.
#[utoipa::path(delete, path = "/api/v1/grants/{id}", tag = "grants", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = api::ErrorEnvelope), (status = 409, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn revoke(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let now = state.clock.now();
    let grant = match GrantId::parse(&id) {
        Ok(id) => state.store.grant(&id).await?,
        Err(_) => None,
    };
    let grant = grant
        .filter(|g| may_manage_grants_of(&caller.actor, &g.grant.owner, now))
        .ok_or_else(|| ApiError::not_found("grant"))?;
    grants::revoke(&state, &caller, &grant).await?;
    Ok(StatusCode::NO_CONTENT)
}
