//! Organisations, accounts and machine clients (operators), and `me`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use kura_api_types as api;
use kura_core::ids::{AccountId, OrgId};
use kura_core::party::{AccountKind, OrgKind};
use kura_store::model::{Account, MachineClient, Org};

use super::ApiJson;
use super::{AuditExt, audit_entry, new_id};
use crate::auth::{self, Caller};
use crate::error::{ApiError, ApiResult};
use crate::service::accounts::new_person;
use crate::state::AppState;

pub fn account_view(account: &Account) -> api::AccountView {
    api::AccountView {
        id: account.id.to_string(),
        username: account.username.clone(),
        kind: account.kind.as_str().to_owned(),
        org: account.org.as_ref().map(|o| o.to_string()),
        totp_enabled: account.totp_secret.is_some(),
    }
}

/// The caller's account.
#[utoipa::path(get, path = "/api/v1/me", tag = "accounts",
    responses((status = 200, body = api::AccountView)), security(("bearer" = [])))]
pub async fn me(caller: Caller) -> Json<api::AccountView> {
    Json(account_view(&caller.account))
}

/// Registers an institution or a research organisation (operators).
#[utoipa::path(post, path = "/api/v1/orgs", tag = "accounts", request_body = api::CreateOrgRequest,
    responses((status = 201, body = api::OrgView)), security(("bearer" = [])))]
pub async fn create_org(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<api::CreateOrgRequest>,
) -> ApiResult<(StatusCode, Json<api::OrgView>)> {
    caller.require(&[AccountKind::Operator], "registering organisations")?;
    let kind =
        OrgKind::parse(&request.kind).ok_or_else(|| ApiError::invalid("kind must be institution or research"))?;
    let name = request.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::invalid("name must have 1 to 200 characters"));
    }
    let now = state.clock.now();
    let org = Org {
        id: OrgId::parse(&new_id()).map_err(|_| ApiError::internal())?,
        name: name.to_owned(),
        kind,
        created_at: now,
    };
    let audit = audit_entry(&caller, now, "org_create", "done").detail(format!("org:{}", org.id));
    state.store.create_org(&org, audit).await?;
    Ok((
        StatusCode::CREATED,
        Json(api::OrgView { id: org.id.to_string(), name: org.name, kind: kind.as_str().to_owned() }),
    ))
}

/// The organisations on this server (to address grants).
#[utoipa::path(get, path = "/api/v1/orgs", tag = "accounts",
    responses((status = 200, body = Vec<api::OrgView>)), security(("bearer" = [])))]
pub async fn list_orgs(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<Vec<api::OrgView>>> {
    let orgs = state.store.orgs().await?;
    Ok(Json(
        orgs.into_iter()
            .map(|o| api::OrgView { id: o.id.to_string(), name: o.name, kind: o.kind.as_str().to_owned() })
            .collect(),
    ))
}

/// Creates a staff, researcher or operator account (operators).
#[utoipa::path(post, path = "/api/v1/accounts", tag = "accounts", request_body = api::CreateAccountRequest,
    responses((status = 201, body = api::AccountView), (status = 409, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn create_account(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<api::CreateAccountRequest>,
) -> ApiResult<(StatusCode, Json<api::AccountView>)> {
    caller.require(&[AccountKind::Operator], "creating accounts")?;
    let kind = match request.kind.as_str() {
        "staff" => AccountKind::Staff,
        "researcher" => AccountKind::Researcher,
        "operator" => AccountKind::Operator,
        "reviewer" => AccountKind::Reviewer,
        _ => {
            return Err(ApiError::invalid(
                "kind must be staff, researcher, operator or reviewer; patients register themselves",
            ));
        }
    };
    let org = match (kind, &request.org) {
        (AccountKind::Operator | AccountKind::Reviewer, None) => None,
        (AccountKind::Operator | AccountKind::Reviewer, Some(_)) => {
            return Err(ApiError::invalid("operators and study reviewers do not act for an organisation"));
        }
        (_, None) => return Err(ApiError::invalid("staff and researchers act for an organisation: give org")),
        (_, Some(raw)) => {
            let id = OrgId::parse(raw).map_err(|_| ApiError::invalid("org is not an organisation id"))?;
            let org =
                state.store.org(&id).await?.ok_or_else(|| ApiError::invalid("the organisation does not exist"))?;
            let fits = matches!(
                (kind, org.kind),
                (AccountKind::Staff, OrgKind::Institution) | (AccountKind::Researcher, OrgKind::Research)
            );
            if !fits {
                return Err(ApiError::invalid(
                    "staff belong to institutions and researchers to research organisations",
                ));
            }
            Some(id)
        }
    };
    let now = state.clock.now();
    let account = new_person(&request.username, &request.password, kind, org, now)?;
    let audit =
        audit_entry(&caller, now, "account_create", "done").detail(format!("account:{} {}", account.id, kind.as_str()));
    state.store.create_account(&account, audit).await?;
    Ok((StatusCode::CREATED, Json(account_view(&account))))
}

/// Registers a machine client of an organisation with its public key (operators). The client
/// then obtains tokens at `/api/v1/auth/token` with a signed assertion.
#[utoipa::path(post, path = "/api/v1/clients", tag = "accounts", request_body = api::RegisterClientRequest,
    responses((status = 201, body = api::ClientView), (status = 422, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn register_client(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<api::RegisterClientRequest>,
) -> ApiResult<(StatusCode, Json<api::ClientView>)> {
    caller.require(&[AccountKind::Operator], "registering machine clients")?;
    let org_id = OrgId::parse(&request.org).map_err(|_| ApiError::invalid("org is not an organisation id"))?;
    state.store.org(&org_id).await?.ok_or_else(|| ApiError::invalid("the organisation does not exist"))?;
    let algorithm = auth::parse_algorithm(&request.algorithm)?;
    auth::decoding_key(algorithm, &request.public_key_pem)?;
    let now = state.clock.now();
    let client_id = format!("kura-client-{}", uuid::Uuid::now_v7().simple());
    let account = Account {
        id: AccountId::parse(&new_id()).map_err(|_| ApiError::internal())?,
        username: client_id.clone(),
        password_hash: String::new(),
        kind: AccountKind::Machine,
        org: Some(org_id.clone()),
        totp_secret: None,
        created_at: now,
    };
    let client = MachineClient {
        client_id: client_id.clone(),
        account: account.id.clone(),
        org: org_id.clone(),
        public_key_pem: request.public_key_pem,
        algorithm: request.algorithm.clone(),
        created_at: now,
    };
    let audit = audit_entry(&caller, now, "client_register", "done").detail(format!("{client_id} for org:{org_id}"));
    state.store.register_client(&account, &client, audit).await?;
    Ok((
        StatusCode::CREATED,
        Json(api::ClientView {
            client_id,
            org: org_id.to_string(),
            algorithm: request.algorithm,
            token_endpoint: state.config.token_endpoint(),
        }),
    ))
}
