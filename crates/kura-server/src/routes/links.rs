//! Patient links: an institution issues a one-time code for a local patient id; the patient
//! redeems it, and from then on that institution's records for the id are linked to them.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use kura_api_types as api;
use kura_core::party::{AccountKind, OrgKind};
use kura_store::StoreError;
use kura_store::model::LinkCode;

use super::ApiJson;
use super::audit_entry;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::content::sha256_hex;
use crate::state::AppState;
use crate::time;

const LINK_CODE_DAYS: i64 = 14;
/// Crockford-like alphabet without look-alikes, for codes read over a counter.
const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTVWXYZ23456789";

fn new_code() -> ApiResult<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| ApiError::internal())?;
    let chars: String = bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect();
    Ok(format!("{}-{}-{}-{}", &chars[0..4], &chars[4..8], &chars[8..12], &chars[12..16]))
}

fn normalise(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).collect()
}

/// Issues a one-time link code for a local patient id (valid 14 days).
#[utoipa::path(post, path = "/api/v1/links", tag = "links", request_body = api::CreateLinkCodeRequest,
    responses((status = 201, body = api::LinkCodeView)), security(("bearer" = [])))]
pub async fn create_link_code(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<api::CreateLinkCodeRequest>,
) -> ApiResult<(StatusCode, Json<api::LinkCodeView>)> {
    caller.require(&[AccountKind::Staff, AccountKind::Machine], "issuing link codes")?;
    let org = caller.org().ok_or_else(|| ApiError::forbidden("your account does not act for an institution"))?;
    let org = state.store.org(org).await?.ok_or_else(ApiError::internal)?;
    if org.kind != OrgKind::Institution {
        return Err(ApiError::forbidden("only institutions issue link codes"));
    }
    let mrn = request.mrn.trim();
    if mrn.is_empty() || mrn.len() > 128 || !mrn.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ApiError::invalid("mrn must be 1 to 128 visible ASCII characters"));
    }
    let now = state.clock.now();
    let code = new_code()?;
    let expires_at = now.plus_days(LINK_CODE_DAYS);
    let link = LinkCode {
        code_hash: sha256_hex(normalise(&code).as_bytes()),
        institution: org.id.clone(),
        mrn: mrn.to_owned(),
        expires_at,
        created_at: now,
    };
    state.store.create_link_code(&link, audit_entry(&caller, now, "link_code_issue", "done")).await?;
    Ok((
        StatusCode::CREATED,
        Json(api::LinkCodeView { code, mrn: mrn.to_owned(), expires_at: time::format(expires_at) }),
    ))
}

/// Redeems a link code: the patient's account is linked to the institution's local id.
#[utoipa::path(post, path = "/api/v1/links/redeem", tag = "links", request_body = api::RedeemLinkCodeRequest,
    responses((status = 200, body = api::LinkView), (status = 404, body = api::ErrorEnvelope),
        (status = 409, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn redeem_link_code(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<api::RedeemLinkCodeRequest>,
) -> ApiResult<Json<api::LinkView>> {
    caller.require(&[AccountKind::Patient], "redeeming link codes")?;
    let now = state.clock.now();
    let hash = sha256_hex(normalise(&request.code).as_bytes());
    let (institution, mrn) = state
        .store
        .redeem_link_code(&hash, &caller.account.id, now, audit_entry(&caller, now, "link_redeem", "done"))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("link code (unknown, used or expired)"),
            other => other.into(),
        })?;
    let name = state.store.org(&institution).await?.map(|o| o.name).unwrap_or_default();
    Ok(Json(api::LinkView { institution: institution.to_string(), institution_name: name, mrn }))
}

/// The caller's links (patients).
#[utoipa::path(get, path = "/api/v1/links", tag = "links",
    responses((status = 200, body = Vec<api::LinkView>)), security(("bearer" = [])))]
pub async fn list_links(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<api::LinkView>>> {
    let patient = match &caller.delegation {
        Some(d) => d.delegation.patient.clone(),
        None => caller.account.id.clone(),
    };
    let mut links = Vec::new();
    for (institution, mrn) in state.store.links_of(&patient).await? {
        let name = state.store.org(&institution).await?.map(|o| o.name).unwrap_or_default();
        links.push(api::LinkView { institution: institution.to_string(), institution_name: name, mrn });
    }
    Ok(Json(links))
}
