//! Webhook delivery: POSTs due notifications to organisations' webhooks, signs them, and retries
//! failures with exponential backoff (1 s, 2 s, 4 s, ... up to six attempts), logging each try.

use std::time::Duration;

use hmac::{Hmac, Mac};
use kura_core::time::Timestamp;
use kura_store::model::WebhookDelivery;
use sha2::Sha256;

use crate::outbound;
use crate::service::error::{ServiceError, ServiceResult};
use crate::state::AppState;

const MAX_ATTEMPTS: i64 = 6;

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, the `kura-signature` header.
pub fn signature(secret: &str, at: Timestamp, body: &[u8]) -> String {
    let t = at.as_millis() / 1000;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// Attempts every delivery that is due; returns how many were attempted.
pub async fn deliver_due(state: &AppState) -> ServiceResult<usize> {
    let now = state.clock.now();
    let due = state.store.due_deliveries(now, 50).await?;
    for delivery in &due {
        attempt(state, delivery, now).await?;
    }
    Ok(due.len())
}

async fn attempt(state: &AppState, delivery: &WebhookDelivery, now: Timestamp) -> ServiceResult<()> {
    let mut next = delivery.clone();
    next.attempts += 1;
    next.updated_at = now;
    let webhook = state.store.webhook(&delivery.webhook).await?;
    let notification = state.store.notification(&delivery.notification).await?;
    let (Some(webhook), Some(notification)) = (webhook.filter(|w| w.revoked_at.is_none()), notification) else {
        next.state = "failed".into();
        next.last_error = Some("the webhook or the notification is gone".into());
        state.store.update_delivery(&next).await?;
        return Ok(());
    };
    let body = serde_json::to_vec(&serde_json::json!({
        "id": notification.id,
        "kind": notification.kind,
        "about": notification.subject_ref,
        "message": notification.message,
        "recipient": notification.recipient,
        "created_at": crate::time::format(notification.created_at),
    }))
    .map_err(|_| ServiceError::Internal)?;
    let sent = match state.http.request(reqwest::Method::POST, &webhook.url) {
        Ok(request) => request
            .header("content-type", "application/json")
            .header("kura-signature", signature(&webhook.secret, now, &body))
            .header("kura-delivery", &delivery.id)
            .body(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| outbound::Failure::of(&e))
            .and_then(|response| {
                let status = response.status();
                if status.is_success() { Ok(status) } else { Err(outbound::Failure::Status(status.as_u16())) }
            }),
        Err(refused) => Err(refused),
    };
    match sent {
        Ok(status) => {
            next.state = "delivered".into();
            next.last_status = Some(i64::from(status.as_u16()));
            next.last_error = None;
        }
        Err(failure) => {
            // The organisation that registered the URL sees one text whatever happened, so the
            // delivery log cannot map what listens where; the reason goes to the log.
            tracing::warn!(delivery = %delivery.id, webhook = %webhook.id, %failure, "a webhook delivery failed");
            next.last_status = None;
            next.last_error = Some(outbound::UNREACHABLE.into());
            if next.attempts >= MAX_ATTEMPTS {
                next.state = "failed".into();
            } else {
                next.next_attempt_at = now.plus_millis(1000 * (1 << (next.attempts - 1)));
            }
        }
    }
    state.store.update_delivery(&next).await?;
    Ok(())
}

pub async fn run(state: AppState) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        interval.tick().await;
        if let Err(e) = deliver_due(&state).await {
            tracing::warn!(error = %e, "webhook delivery round failed");
        }
    }
}
