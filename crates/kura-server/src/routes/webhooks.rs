//! Webhooks: machine clients of an organisation receive its notifications by HTTP POST, signed
//! with HMAC-SHA256; failed deliveries are retried with backoff and logged.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kura_api_types as api;
use kura_core::party::AccountKind;
use kura_store::model::Webhook;

use super::ApiJson;
use super::{AuditExt, audit_entry, new_id};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::time;

fn members_org(caller: &Caller) -> ApiResult<kura_core::ids::OrgId> {
    caller.require(&[AccountKind::Staff, AccountKind::Researcher, AccountKind::Machine], "webhooks")?;
    caller.org().cloned().ok_or_else(|| ApiError::forbidden("your account does not act for an organisation"))
}

/// Registers a webhook for the caller's organisation. Its signing secret is shown only now.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "inbox", operation_id = "create_webhook", request_body = api::CreateWebhookRequest,
    responses((status = 201, body = api::WebhookView), (status = 422, body = api::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<api::CreateWebhookRequest>,
) -> ApiResult<(StatusCode, Json<api::WebhookView>)> {
    let org = members_org(&caller)?;
    let url = request.url.trim();
    let parsed = reqwest::Url::parse(url).ok().filter(|u| matches!(u.scheme(), "http" | "https"));
    let Some(parsed) = parsed.filter(|_| url.len() <= 2000) else {
        return Err(ApiError::invalid("url must be an http:// or https:// URL of at most 2000 characters"));
    };
    state.http.policy().check_registered_url(&parsed, "url").map_err(ApiError::invalid)?;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|_| ApiError::internal())?;
    let now = state.clock.now();
    let webhook = Webhook {
        id: new_id(),
        org,
        url: url.to_owned(),
        secret: secret.iter().map(|b| format!("{b:02x}")).collect(),
        created_by: caller.audit_actor(),
        created_at: now,
        revoked_at: None,
    };
    let audit = audit_entry(&caller, now, "webhook_create", "done").detail(format!("webhook {}", webhook.id));
    state.store.insert_webhook(&webhook, audit).await?;
    Ok((StatusCode::CREATED, Json(api::WebhookView { id: webhook.id, url: webhook.url, secret: Some(webhook.secret) })))
}

/// The delivery log of one of the organisation's webhooks.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "inbox", operation_id = "list_webhook_deliveries", params(("id" = String, Path)),
    responses((status = 200, body = api::DeliveryList), (status = 404, body = api::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::DeliveryList>> {
    let org = members_org(&caller)?;
    let webhook =
        state.store.webhook(&id).await?.filter(|w| w.org == org).ok_or_else(|| ApiError::not_found("webhook"))?;
    let deliveries = state.store.deliveries_of(&webhook.id).await?;
    Ok(Json(api::DeliveryList {
        deliveries: deliveries
            .into_iter()
            .map(|d| api::DeliveryView {
                id: d.id,
                notification: d.notification,
                attempts: d.attempts,
                state: d.state,
                last_status: d.last_status,
                last_error: d.last_error,
                next_attempt_at: time::format(d.next_attempt_at),
            })
            .collect(),
    }))
}
