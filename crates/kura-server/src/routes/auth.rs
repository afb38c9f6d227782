//! Logging in (people), obtaining tokens (machines), registering as a patient, and TOTP.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Form, Json};
use kura_api_types as api;
use kura_core::party::AccountKind;
use serde::Deserialize;

use super::ApiJson;
use super::accounts::account_view;
use super::{AuditExt, audit_entry};
use crate::auth::{self, Caller, ClientAddress};
use crate::error::{ApiError, ApiResult};
use crate::service::accounts::new_person;
use crate::state::AppState;
use crate::time;

/// Logs a person in. Failures never say whether the account exists. Every attempt is counted
/// before it is evaluated, per account and per client address, in the database (so several
/// servers share the counts); while a count backs off, attempts are refused with 429 and
/// `Retry-After` without being evaluated. A TOTP code opens one login only.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = api::LoginRequest,
    responses((status = 200, body = api::LoginResponse), (status = 401, body = api::ErrorEnvelope),
        (status = 429, body = api::ErrorEnvelope)))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(request): ApiJson<api::LoginRequest>,
) -> ApiResult<Json<api::LoginResponse>> {
    let rules = auth::login_throttle_rules(&request.username, address.as_deref());
    auth::reserve_login_attempt(&state, &rules).await?;
    let now = state.clock.now();
    let account = state.store.account_by_username(&request.username).await?;
    // Argon2 is deliberately slow: keep it off the async workers.
    let totp_use = {
        let account = account.clone();
        let password = request.password.clone();
        let totp = request.totp.clone();
        let master = Arc::clone(&state.master);
        tokio::task::spawn_blocking(move || {
            auth::verify_login(account.as_ref(), &password, totp.as_deref(), &master, now)
        })
        .await
        .map_err(|_| ApiError::internal())??
    };
    let account = account.ok_or_else(ApiError::internal)?;
    if let Some(totp_use) = totp_use
        && !state.store.use_totp_step(&account.id, totp_use.step, totp_use.resealed.as_deref()).await?
    {
        // The code was right but has opened a login already (a replay, or a code seen over a
        // shoulder): refused like a wrong one.
        return Err(auth::invalid_credentials());
    }
    let address_key = rules.get(1).map(|rule| rule.key.as_str());
    state.store.login_succeeded(&rules[0].key, address_key).await?;
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

/// Creates a patient account. One client address may register ten accounts an hour, then one
/// after a growing wait (429 with `Retry-After`).
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = api::RegisterPatientRequest,
    responses((status = 201, body = api::AccountView), (status = 409, body = api::ErrorEnvelope),
        (status = 422, body = api::ErrorEnvelope), (status = 429, body = api::ErrorEnvelope)))]
pub async fn register_patient(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(request): ApiJson<api::RegisterPatientRequest>,
) -> ApiResult<(StatusCode, Json<api::AccountView>)> {
    let rules = auth::registration_throttle_rules(address.as_deref());
    if !rules.is_empty() {
        auth::reserve_login_attempt(&state, &rules).await?;
    }
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

/// Starts TOTP enrolment: the server generates a fresh secret to load into an authenticator and
/// keeps it (sealed) as pending. Nothing changes for logins until a code for it is confirmed.
#[utoipa::path(post, path = "/api/v1/auth/totp/enroll", tag = "auth",
    responses((status = 200, body = api::TotpEnrollment)), security(("bearer" = [])))]
pub async fn totp_enroll(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<api::TotpEnrollment>> {
    let secret = auth::new_totp_secret()?;
    let sealed = auth::seal_totp_secret(&state.master, &caller.account.id, &secret)?;
    let audit = audit_entry(&caller, state.clock.now(), "totp_enroll", "done").subject(&caller.account.id);
    state.store.set_totp_pending(&caller.account.id, &sealed, audit).await?;
    let otpauth_url = format!(
        "otpauth://totp/Kura:{}?secret={secret}&issuer=Kura&algorithm=SHA1&digits=6&period=30",
        caller.account.username
    );
    Ok(Json(api::TotpEnrollment { secret, otpauth_url }))
}

/// Turns the second factor on for the secret the server generated at enrolment, once the
/// account's password and a current code for that secret are shown. A secret chosen by the
/// client is refused. The password check counts against the account's login throttle.
#[utoipa::path(post, path = "/api/v1/auth/totp/confirm", tag = "auth", request_body = api::TotpConfirmRequest,
    responses((status = 204), (status = 401, body = api::ErrorEnvelope), (status = 422, body = api::ErrorEnvelope),
        (status = 429, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn totp_confirm(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<api::TotpConfirmRequest>,
) -> ApiResult<StatusCode> {
    let rules = auth::login_throttle_rules(&caller.account.username, None);
    auth::reserve_login_attempt(&state, &rules).await?;
    let Some(pending) = state.store.totp_pending(&caller.account.id).await? else {
        return Err(ApiError::invalid("no enrolment is pending; start with POST /api/v1/auth/totp/enroll"));
    };
    let secret = auth::open_totp_secret(&state.master, &caller.account.id, &pending).ok_or_else(|| {
        tracing::error!(account = %caller.account.id, "a pending TOTP secret does not open");
        ApiError::internal()
    })?;
    if request.secret.as_deref().is_some_and(|chosen| chosen.trim() != secret.base32) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "totp_secret_refused",
            "the server chooses the TOTP secret; confirm the one enrolment returned, or leave secret out",
        ));
    }
    let password_ok = {
        let (account, password) = (caller.account.clone(), request.password.clone());
        tokio::task::spawn_blocking(move || auth::password_matches(&account, &password))
            .await
            .map_err(|_| ApiError::internal())?
    };
    if !password_ok {
        return Err(ApiError::unauthorized("invalid_credentials", "the password is wrong"));
    }
    let now = state.clock.now();
    let Some(step) = auth::totp_step_matching(&secret.base32, &request.code, now) else {
        return Err(ApiError::invalid("the code does not match the secret; check the authenticator's clock"));
    };
    let audit = audit_entry(&caller, now, "totp_enable", "done").subject(&caller.account.id);
    state.store.confirm_totp(&caller.account.id, &pending, step, audit).await?;
    state.store.login_succeeded(&rules[0].key, None).await?;
    Ok(StatusCode::NO_CONTENT)
}
