//! The inbox: persisted notifications, marked read, and their live stream (SSE).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use kura_api_types as api;
use kura_core::party::Party;
use kura_store::model::Notification;
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::time;

/// Whose notifications the caller reads: its own, its organisation's, and those of the patient an
/// agent acts for.
fn recipients(caller: &Caller) -> Vec<String> {
    let mut out = vec![caller.party().to_text()];
    if let Some(org) = caller.org() {
        out.push(Party::Organisation(org.clone()).to_text());
    }
    if let Some(d) = &caller.delegation {
        out.push(Party::Account(d.delegation.patient.clone()).to_text());
    }
    out
}

fn view(n: &Notification) -> api::NotificationView {
    api::NotificationView {
        seq: n.seq,
        id: n.id.clone(),
        recipient: n.recipient.clone(),
        kind: n.kind.clone(),
        about: n.subject_ref.clone(),
        message: n.message.clone(),
        created_at: time::format(n.created_at),
        read_at: n.read_at.map(time::format),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct InboxQuery {
    /// Only notifications after this sequence number.
    #[serde(default)]
    after: i64,
}

/// The caller's notifications, oldest first.
#[utoipa::path(get, path = "/api/v1/inbox", tag = "inbox", params(InboxQuery),
    responses((status = 200, body = api::Inbox)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<InboxQuery>,
) -> ApiResult<Json<api::Inbox>> {
    let notifications = state.store.notifications_for(&recipients(&caller), query.after, 500).await?;
    Ok(Json(api::Inbox { notifications: notifications.iter().map(view).collect() }))
}

/// Marks a notification read.
#[utoipa::path(post, path = "/api/v1/inbox/{id}/read", tag = "inbox", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = api::ErrorEnvelope)), security(("bearer" = [])))]
pub async fn mark_read(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state
        .store
        .mark_notification_read(&id, &recipients(&caller), state.clock.now())
        .await
        .map_err(|_| ApiError::not_found("notification"))?;
    Ok(StatusCode::NO_CONTENT)
}

fn event(n: &Notification) -> Event {
    Event::default().id(n.seq.to_string()).event(n.kind.clone()).json_data(view(n)).unwrap_or_default()
}

/// The live stream of the caller's notifications (server-sent events). Send `Last-Event-ID` to
/// receive what was missed first.
#[utoipa::path(get, path = "/api/v1/events", tag = "inbox",
    responses((status = 200, content_type = "text/event-stream", body = String)), security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let recipients = recipients(&caller);
    // Subscribe before reading the backlog so that nothing falls between the two.
    let receiver = state.events.subscribe();
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(i64::MAX);
    let backlog =
        if after == i64::MAX { Vec::new() } else { state.store.notifications_for(&recipients, after, 500).await? };
    let last_backlog = backlog.last().map(|n| n.seq).unwrap_or(0);
    let backlog = stream::iter(backlog.iter().map(event).map(Ok).collect::<Vec<_>>());
    let store = state.store.clone();
    let live = stream::unfold((receiver, recipients, store), move |(mut receiver, recipients, store)| async move {
        loop {
            match receiver.recv().await {
                Ok(n) if recipients.contains(&n.recipient) => {
                    // Live notifications carry no sequence number yet; read it back.
                    let stored = store.notification(&n.id).await.ok().flatten().unwrap_or(n);
                    if stored.seq != 0 && stored.seq <= last_backlog {
                        continue;
                    }
                    return Some((Ok(event(&stored)), (receiver, recipients, store)));
                }
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(backlog.chain(live)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
