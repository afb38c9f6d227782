//! External providers (issue 5): a patient, or an agent with the power to manage grants, links
//! an external FHIR endpoint (base URL, the patient's id there, their token), lists and removes
//! links, and pulls now. Pulling itself lives in `crate::service::providers`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kura_api_types as api;
use kura_core::ids::AccountId;
use kura_core::party::{AccountKind, Party};
use kura_core::policy::may_manage_grants_of;
use kura_store::model::ProviderLink;
use reqwest::Url;

use super::ApiJson;
use super::{AuditExt, audit_entry, new_id};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::providers::{self, DEFAULT_RESOURCE_TYPES, SyncActor};
use crate::state::AppState;
use crate::time;

/// The patient whose provider links the caller manages: themself, or the patient an agent acts
/// for under a delegation with the `manage_grants` power.
fn link_owner(state: &AppState, caller: &Caller) -> ApiResult<AccountId> {
    if let Some(d) = &caller.delegation {
        let patient = d.delegation.patient.clone();
        if !may_manage_grants_of(&caller.actor, &Party::Account(patient.clone()), state.clock.now()) {
            return Err(ApiError::forbidden("your delegation does not include managing grants, which linking needs"));
        }
        return Ok(patient);
    }
    if caller.account.kind != AccountKind::Patient {
        return Err(ApiError::forbidden("external providers are linked by patients and their agents"));
    }
    Ok(caller.account.id.clone())
}

fn view(link: &ProviderLink) -> api::ProviderView {
    api::ProviderView {
        id: link.id.clone(),
        name: link.name.clone(),
        base_url: link.base_url.clone(),
        patient_id: link.provider_patient_id.clone(),
        resource_types: link.resource_types.clone(),
        created_at: time::format(link.created_at),
        last_sync_at: link.last_sync_at.map(time::format),
        last_success_at: link.last_success_at.map(time::format),
        last_outcome: link.last_outcome.clone(),
        last_error: link.last_error.clone(),
    }
}

/// The base URL as stored: `http://host[:port][/path]` without a trailing slash, query,
/// fragment or credentials.
fn check_base_url(state: &AppState, raw: &str) -> ApiResult<String> {
    let url = Url::parse(raw.trim())
        .map_err(|_| ApiError::invalid("base_url must be an absolute URL such as http://fhir.example.org/r4"))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(ApiError::invalid(
                "https providers are not supported by this build: its HTTP client has no TLS; use an http URL \
                 (a local gateway, say) or a build with reqwest's TLS feature",
            ));
        }
        _ => return Err(ApiError::invalid("base_url must be an http URL")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::invalid("base_url must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::invalid("base_url must not carry credentials; give the token in token"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ApiError::invalid("base_url must not have a query or a fragment"));
    }
    if raw.len() > 500 {
        return Err(ApiError::invalid("base_url is at most 500 characters"));
    }
    state.http.policy().check_registered_url(&url, "base_url").map_err(ApiError::invalid)?;
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn check_request(request: &api::CreateProviderRequest) -> ApiResult<(String, Vec<String>)> {
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name must be 1 to 200 characters without control characters"));
    }
    if request.token.is_empty() || request.token.len() > 4096 || !request.token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid("token must be 1 to 4096 visible ASCII characters"));
    }
    if !providers::is_fhir_id(&request.patient_id) {
        return Err(ApiError::invalid("patient_id must be a FHIR id: 1 to 64 of A-Z, a-z, 0-9, - and ."));
    }
    let types: Vec<String> = match &request.resource_types {
        None => DEFAULT_RESOURCE_TYPES.iter().map(|t| (*t).to_owned()).collect(),
        Some(types) => {
            let mut out: Vec<String> = Vec::new();
            for t in types {
                if !providers::is_resource_type(t) {
                    return Err(ApiError::invalid(format!("resource type '{t}' is not a FHIR resource type name")));
                }
                if matches!(t.as_str(), "Patient" | "Bundle") {
                    return Err(ApiError::invalid(format!("{t} cannot be pulled with a ?patient= search")));
                }
                if !out.contains(t) {
                    out.push(t.clone());
                }
            }
            if out.is_empty() || out.len() > 30 {
                return Err(ApiError::invalid("resource_types must name 1 to 30 types"));
            }
            out
        }
    };
    Ok((name.to_owned(), types))
}

/// Links an external FHIR endpoint. Nothing is pulled yet: sync it, or wait for the periodic
/// pull. The token is stored sealed and never returned.
#[utoipa::path(post, path = "/api/v1/providers", tag = "providers", request_body = api::CreateProviderRequest,
    responses((status = 201, body = api::ProviderView), (status = 403, body = api::ErrorEnvelope),
        (status = 422, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<api::CreateProviderRequest>,
) -> ApiResult<(StatusCode, Json<api::ProviderView>)> {
    let patient = link_owner(&state, &caller)?;
    let (name, resource_types) = check_request(&request)?;
    let base_url = check_base_url(&state, &request.base_url)?;
    let now = state.clock.now();
    let id = new_id();
    let link = ProviderLink {
        id: id.clone(),
        patient: patient.clone(),
        name,
        base_url,
        provider_patient_id: request.patient_id.clone(),
        resource_types,
        token: providers::seal_token(&state, &id, &request.token)?,
        created_by: caller.audit_actor(),
        created_at: now,
        last_sync_at: None,
        last_success_at: None,
        last_outcome: None,
        last_error: None,
        removed_at: None,
    };
    let audit =
        audit_entry(&caller, now, "provider_link", "done").subject(&patient).detail(format!("provider link {id}"));
    state.store.insert_provider_link(&link, audit).await?;
    tracing::info!(link = %id, "external provider linked");
    Ok((StatusCode::CREATED, Json(view(&link))))
}

/// The patient's linked providers with their last sync's time, outcome and error; never the
/// token.
#[utoipa::path(get, path = "/api/v1/providers", tag = "providers",
    responses((status = 200, body = api::ProviderList), (status = 403, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<api::ProviderList>> {
    let patient = link_owner(&state, &caller)?;
    let links = state.store.provider_links_of(&patient).await?;
    Ok(Json(api::ProviderList { providers: links.iter().map(view).collect() }))
}

/// One of the patient's links that is not removed; anything else is not found.
async fn own_link(state: &AppState, patient: &AccountId, id: &str) -> ApiResult<ProviderLink> {
    state
        .store
        .provider_link(id)
        .await?
        .filter(|l| &l.patient == patient && l.removed_at.is_none())
        .ok_or_else(|| ApiError::not_found("provider link"))
}

/// Removes a link: no more pulls, the token is forgotten with it. The records pulled stay the
/// patient's.
#[utoipa::path(delete, path = "/api/v1/providers/{id}", tag = "providers", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn remove(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let patient = link_owner(&state, &caller)?;
    let link = own_link(&state, &patient, &id).await?;
    let now = state.clock.now();
    let audit = audit_entry(&caller, now, "provider_unlink", "done")
        .subject(&patient)
        .detail(format!("provider link {}", link.id));
    state.store.remove_provider_link(&link.id, now, audit).await.map_err(|e| match e {
        kura_store::StoreError::NotFound => ApiError::not_found("provider link"),
        other => other.into(),
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pulls the provider now. Everything is fetched first; if any request fails (HTTP error,
/// timeout, broken connection, malformed Bundle) nothing is written, the error is kept on the
/// link and the answer is 502.
#[utoipa::path(post, path = "/api/v1/providers/{id}/sync", tag = "providers", params(("id" = String, Path)),
    responses((status = 200, body = api::SyncReport), (status = 404, body = api::ErrorEnvelope),
        (status = 409, body = api::ErrorEnvelope), (status = 502, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn sync(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::SyncReport>> {
    let patient = link_owner(&state, &caller)?;
    let link = own_link(&state, &patient, &id).await?;
    let by = SyncActor { actor: caller.audit_actor(), on_behalf_of: caller.on_behalf_of() };
    Ok(Json(providers::sync_link(&state, &link, &by).await?))
}
