//! Logging in (people), obtaining tokens (machines), registering as a patient, and TOTP.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Form, Json};
use kura_api_types as api;
use kura_core::party::AccountKind;
use serde::Deserialize;

use super::accounts::{account_view, new_person};
use super::{AuditExt, audit_entry};
use crate::app::{ApiJson, AppState};
use crate::auth::{self, Caller, ClientAddress};
use crate::error::{ApiError, ApiResult};
use crate::time;

/// Logs a person in. Failures never say whether the account exists; repeated failures are
/// refused for a while (per username and per address).
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = api::LoginRequest,
    responses((status = 200, body = api::LoginResponse), (status = 401, body = api::ErrorEnvelope),
        (status = 429, body = api::ErrorEnvelope)))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(request): ApiJson<api::LoginRequest>,
) -> ApiResult<Json<api::LoginResponse>> {
    state.limiter.check(&request.username, address.as_deref())?;
    let now = state.clock.now();
    let account = state.store.account_by_username(&request.username).await?;
    // Argon2 is deliberately slow: keep it off the async workers.
    let verdict = {
        let account = account.clone();
        let password = request.password.clone();
        let totp = request.totp.clone();
        tokio::task::spawn_blocking(move || auth::verify_login(account.as_ref(), &password, totp.as_deref(), now))
            .await
            .map_err(|_| ApiError::internal())?
    };
    if let Err(e) = verdict {
        state.limiter.record_failure(&request.username, address.as_deref());
        return Err(e);
    }
    let account = account.ok_or_else(ApiError::internal)?;
    state.limiter.record_success(&request.username);
    let (token, expires_at) = state.tokens.issue(&account.id, now, state.config.session_minutes * 60)?;
    Ok(Json(api::LoginResponse { token, expires_at: time::format(expires_at), account: account_view(&account) }))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct TokenForm {
    grant_type: String,
    client_assertion_type: String,
    client_assertion: String,
    #[serde(default)]
    scope: Option<String>,
}

/// OAuth2 client credentials with a signed JWT assertion (SMART Backend Services): `iss` and
/// `sub` are the client id, `aud` this endpoint's URL, `exp` at most five minutes ahead, and
/// `jti` never reused.
#[utoipa::path(post, path = "/api/v1/auth/token", tag = "auth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = api::TokenResponse), (status = 400, body = api::ErrorEnvelope),
        (status = 401, body = api::ErrorEnvelope)))]
pub async fn token(State(state): State<AppState>, Form(form): Form<TokenForm>) -> ApiResult<Json<api::TokenResponse>> {
    if form.grant_type != "client_credentials" {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        ));
    }
    if form.client_assertion_type != auth::ASSERTION_TYPE {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("client_assertion_type must be {}", auth::ASSERTION_TYPE),
        ));
    }
    let client = auth::verify_client_assertion(&state, &form.client_assertion).await?;
    let (token, _) = state.tokens.issue(&client.account, state.clock.now(), auth::MACHINE_TOKEN_SECS)?;
    Ok(Json(api::TokenResponse {
        access_token: token,
        token_type: "bearer".into(),
        expires_in: auth::MACHINE_TOKEN_SECS as u64,
        scope: form.scope,
    }))
}

/// Creates a patient account.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = api::RegisterPatientRequest,
    responses((status = 201, body = api::AccountView), (status = 409, body = api::ErrorEnvelope),
        (status = 422, body = api::ErrorEnvelope)))]
pub async fn register_patient(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<api::RegisterPatientRequest>,
) -> ApiResult<(StatusCode, Json<api::AccountView>)> {
    let now = state.clock.now();
    let account = {
        let (username, password) = (request.username.clone(), request.password.clone());
        tokio::task::spawn_blocking(move || new_person(&username, &password, AccountKind::Patient, None, now))
            .await
            .map_err(|_| ApiError::internal())??
    };
    let audit = kura_store::model::NewAudit {
        at: now,
        actor: format!("account:{}", account.id),
        on_behalf_of: String::new(),
        action: "register".into(),
        record: None,
        grant: None,
        outcome: "done".into(),
        detail: String::new(),
        subject: Some(account.id.clone()),
    };
    state.store.create_account(&account, audit).await?;
    Ok((StatusCode::CREATED, Json(account_view(&account))))
}

/// Starts TOTP enrolment: a fresh secret to load into an authenticator. Nothing changes until
/// a code for it is confirmed.
#[utoipa::path(post, path = "/api/v1/auth/totp/enroll", tag = "auth",
    responses((status = 200, body = api::TotpEnrollment)), security(("bearer" = [])))]
pub async fn totp_enroll(caller: Caller) -> ApiResult<Json<api::TotpEnrollment>> {
    let secret = auth::new_totp_secret()?;
    let otpauth_url = format!(
        "otpauth://totp/Kura:{}?secret={secret}&issuer=Kura&algorithm=SHA1&digits=6&period=30",
        caller.account.username
    );
    Ok(Json(api::TotpEnrollment { secret, otpauth_url }))
}

/// Turns the second factor on once a current code for the secret is shown.
#[utoipa::path(post, path = "/api/v1/auth/totp/confirm", tag = "auth", request_body = api::TotpConfirmRequest,
    responses((status = 204), (status = 422, body = api::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn totp_confirm(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<api::TotpConfirmRequest>,
) -> ApiResult<StatusCode> {
    let now = state.clock.now();
    if !auth::totp_matches(&request.secret, &request.code, now) {
        return Err(ApiError::invalid("the code does not match the secret; check the authenticator's clock"));
    }
    let audit = audit_entry(&caller, now, "totp_enable", "done").subject(&caller.account.id);
    state.store.set_totp_secret(&caller.account.id, Some(&request.secret), audit).await?;
    Ok(StatusCode::NO_CONTENT)
}
