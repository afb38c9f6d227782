//! Grants (S201–S202): an owner, or an agent with the power, sets who may use which records, for
//! how long and how anonymized; and revokes them, which takes effect at once.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kura_api_types as api;
use kura_core::ids::{GrantId, RecordId};
use kura_core::labels::Label;
use kura_core::party::Party;
use kura_core::policy::{Grant, GrantTerms, RecordSelector, check_agent_grant, may_manage_grants_of};
use kura_store::model::GrantRow;

use super::ApiJson;
use super::convert;
use super::{AuditExt, audit_entry, new_id};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
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
    let id = GrantId::parse(&new_id()).map_err(|_| ApiError::internal())?;
    let row = GrantRow {
        grant: Grant { id: id.clone(), owner, grantee, terms, revoked_at: None },
        study: None,
        purpose: request.purpose,
        created_by: caller.audit_actor(),
        created_at: now,
    };
    let first_record = match row.grant.terms.selector() {
        RecordSelector::Records(ids) => ids.first().cloned(),
        RecordSelector::Labels(_) => None,
    };
    let mut audit = audit_entry(&caller, now, "grant_create", "done").grant(&id).detail(format!(
        "to {} actions={} scope={}",
        row.grant.grantee.to_text(),
        row.grant.terms.actions().to_text(),
        row.grant.terms.scope().to_text()
    ));
    if let Some(record) = first_record {
        audit = audit.record(&record);
    }
    state.store.insert_grant(&row, audit).await?;
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
    let record: Option<RecordId> = match grant.grant.terms.selector() {
        RecordSelector::Records(ids) => ids.first().cloned(),
        RecordSelector::Labels(_) => None,
    };
    let mut audit = audit_entry(&caller, now, "grant_revoke", "done").grant(&grant.grant.id);
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
    let notices = crate::service::notify::to_owner_and_agents(
        &state,
        &grant.grant.owner,
        "copy_destroyed",
        &about,
        &message,
        now,
    )
    .await?;
    let blobs = state.store.revoke_grant(&grant.grant.id, now, audit, &notices).await?;
    let copies_destroyed = !blobs.is_empty();
    crate::service::content::discard_blobs(&state, blobs).await;
    if copies_destroyed {
        crate::service::notify::publish(&state, notices);
    }
    Ok(StatusCode::NO_CONTENT)
}
