//! Liveness, metrics and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use kura_api_types as api;

use kura_core::party::AccountKind;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::state::AppState;

/// Liveness: the process answers and the database responds.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, body = api::Health), (status = 503, body = api::Health)))]
pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let database_ok = state.store.audit_head().await.is_ok();
    let status = if database_ok { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE };
    (
        status,
        Json(api::Health {
            status: if database_ok { "ok" } else { "degraded" }.into(),
            database: format!("{} {}", state.store.backend_name(), if database_ok { "ok" } else { "unreachable" }),
            version: env!("CARGO_PKG_VERSION").into(),
        }),
    )
}

/// Prometheus metrics (text exposition format), for operators: scrape with an operator's
/// bearer token. Route counts and latencies say how the server is used, which is the operator's
/// business only.
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, content_type = "text/plain", body = String), (status = 401, body = api::ErrorEnvelope),
        (status = 403, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn metrics(State(state): State<AppState>, caller: Caller) -> ApiResult<impl IntoResponse> {
    caller.require(&[AccountKind::Operator], "the metrics")?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()))
}

/// This document: every route of the API.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "system", responses((status = 200, content_type = "application/json", body = Object)))]
pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::openapi_json())
}

/// This server's name, URL and public signing key (to register it as a peer elsewhere).
#[utoipa::path(get, path = "/api/v1/server", tag = "system", responses((status = 200, body = api::ServerInfo)))]
pub async fn server_info(State(state): State<AppState>) -> Json<api::ServerInfo> {
    Json(api::ServerInfo {
        name: state.config.server_name.clone(),
        public_url: state.config.public_url.clone(),
        public_key: state.identity.public_key().to_owned(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}
