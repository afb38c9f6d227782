//! Peer servers (issue 5): the operator's registry, patients' move-in tokens, and the signed
//! endpoints other Kura servers call during a move (`/api/v1/peer/...`). Every answer of a
//! signed endpoint, errors included, is signed with this server's key.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use kura_api_types as api;
use kura_core::party::{AccountKind, OrgKind};
use kura_store::StoreError;
use kura_store::model::*;

use super::ApiJson;
use super::{AuditExt, audit_entry};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::content::sha256_hex;
use crate::service::ids;
use crate::service::peers::{self, HEADER_DATE, HEADER_PEER, HEADER_SIGNATURE, MAX_CLOCK_SKEW_MILLIS};
use crate::state::AppState;
use crate::time;

/// How long a move-in token stays valid.
const PEER_TOKEN_MINUTES: i64 = 60;

fn peer_view(peer: &PeerRow) -> api::PeerView {
    api::PeerView {
        name: peer.name.clone(),
        base_url: peer.base_url.clone(),
        public_key: peer.public_key.clone(),
        created_at: time::format(peer.created_at),
    }
}

fn check_peer_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok { Ok(()) } else { Err(ApiError::invalid("name must be 1 to 64 characters of a-z, 0-9 and -")) }
}

fn check_base_url(state: &AppState, url: &str) -> ApiResult<()> {
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    let host = url.split_once("://").map(|(_, rest)| rest).unwrap_or("");
    if !scheme_ok || host.is_empty() || url.len() > 500 || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "base_url must be an http:// or https:// URL of at most 500 characters, such as https://kura.example.org",
        ));
    }
    if url.contains('?') || url.contains('#') {
        return Err(ApiError::invalid("base_url must not carry a query or a fragment"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|_| ApiError::invalid("base_url must be an absolute URL"))?;
    state.http.policy().check_registered_url(&parsed, "base_url").map_err(ApiError::invalid)
}

/// Registers a peer server (operator only): requests signed with its key are accepted, and
/// owners can move records to it. Its public key is the one its `GET /api/v1/server` shows.
#[utoipa::path(post, path = "/api/v1/peers", tag = "peers", request_body = api::PeerRequest,
    responses((status = 201, body = api::PeerView), (status = 409, body = api::ErrorEnvelope),
        (status = 422, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn register(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<api::PeerRequest>,
) -> ApiResult<(StatusCode, Json<api::PeerView>)> {
    caller.require(&[AccountKind::Operator], "registering peer servers")?;
    check_peer_name(&request.name)?;
    let base_url = request.base_url.trim_end_matches('/').to_owned();
    check_base_url(&state, &base_url)?;
    if !crate::identity::is_public_key(&request.public_key) {
        return Err(ApiError::invalid(
            "public_key must be an Ed25519 public key in base64url, as the peer's GET /api/v1/server shows it",
        ));
    }
    if request.public_key == state.identity.public_key() {
        return Err(ApiError::invalid("public_key is this server's own key"));
    }
    let now = state.clock.now();
    let org = Org {
        id: ids::new_org_id()?,
        name: format!("peer server {}", request.name),
        kind: OrgKind::Institution,
        created_at: now,
    };
    let peer = PeerRow {
        name: request.name.clone(),
        base_url,
        public_key: request.public_key.clone(),
        org: org.id.clone(),
        created_by: caller.audit_actor(),
        created_at: now,
    };
    let audit = audit_entry(&caller, now, "peer_register", "done").detail(format!("peer {}", peer.name));
    state.store.insert_peer(&peer, &org, audit).await.map_err(|e| match e {
        StoreError::Conflict(why) => ApiError::conflict(why),
        other => other.into(),
    })?;
    tracing::info!(peer = %peer.name, "peer registered");
    Ok((StatusCode::CREATED, Json(peer_view(&peer))))
}

/// The registered peer servers (operator only).
#[utoipa::path(get, path = "/api/v1/peers", tag = "peers",
    responses((status = 200, body = api::PeerList)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<api::PeerList>> {
    caller.require(&[AccountKind::Operator], "listing peer servers")?;
    let peers = state.store.peers().await?;
    Ok(Json(api::PeerList { peers: peers.iter().map(peer_view).collect() }))
}

/// Deregisters a peer server (operator only); refused while a move to or from it is unfinished.
#[utoipa::path(delete, path = "/api/v1/peers/{name}", tag = "peers", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = api::ErrorEnvelope), (status = 409, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn remove(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    caller.require(&[AccountKind::Operator], "deregistering peer servers")?;
    let now = state.clock.now();
    let audit = audit_entry(&caller, now, "peer_remove", "done").detail(format!("peer {name}"));
    state.store.delete_peer(&name, audit).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("peer"),
        StoreError::Conflict(why) => ApiError::conflict(why),
        other => other.into(),
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// A one-time token (valid one hour) with which the caller, a patient, receives a record moved
/// from a peer server into their account here: they give it to the origin's move order.
#[utoipa::path(post, path = "/api/v1/peer-tokens", tag = "peers",
    responses((status = 201, body = api::PeerTokenResponse), (status = 403, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<(StatusCode, Json<api::PeerTokenResponse>)> {
    caller.require(&[AccountKind::Patient], "receiving records from peer servers")?;
    if caller.delegation.is_some() {
        return Err(ApiError::forbidden("agents cannot obtain move tokens; the patient does"));
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| ApiError::internal())?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let now = state.clock.now();
    let expires_at = now.plus_millis(PEER_TOKEN_MINUTES * 60_000);
    let row = PeerToken {
        token_hash: sha256_hex(token.as_bytes()),
        account: caller.account.id.clone(),
        expires_at,
        used_at: None,
        created_at: now,
    };
    let audit = audit_entry(&caller, now, "peer_token_issue", "done").subject(&caller.account.id);
    state.store.insert_peer_token(&row, audit).await?;
    Ok((StatusCode::CREATED, Json(api::PeerTokenResponse { token, expires_at: time::format(expires_at) })))
}

// ---------------------------------------------------------------------------------------------
// Signed endpoints for peer servers

/// A verified request from a registered peer.
struct PeerCall {
    peer: PeerRow,
    body: Vec<u8>,
}

fn peer_auth_error(message: impl Into<String>) -> ApiError {
    ApiError::unauthorized("peer_unauthenticated", message)
}

/// Checks the signature headers against the registry: a known key, a fresh date, a valid
/// signature over method, path, date and body.
async fn authenticate(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> ApiResult<PeerCall> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (Some(key), Some(date), Some(signature)) = (header(HEADER_PEER), header(HEADER_DATE), header(HEADER_SIGNATURE))
    else {
        return Err(peer_auth_error("peer requests carry the Kura-Peer, Kura-Date and Kura-Signature headers"));
    };
    let sent_at = time::parse("Kura-Date", &date).map_err(|_| peer_auth_error("Kura-Date must be an RFC 3339 time"))?;
    let now = state.clock.now();
    if (now.as_millis() - sent_at.as_millis()).abs() > MAX_CLOCK_SKEW_MILLIS {
        return Err(peer_auth_error(format!(
            "Kura-Date is more than five minutes from this server's clock ({}); check both servers' clocks",
            time::format(now)
        )));
    }
    let Some(peer) = state.store.peer_by_key(&key).await? else {
        tracing::warn!("peer request from an unregistered key");
        return Err(peer_auth_error(
            "this server does not know the key in Kura-Peer; its operator registers your server with POST /api/v1/peers",
        ));
    };
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("peer requests are limited to {limit} bytes"),
        )
    })?;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or(uri.path());
    let message = crate::service::peers::request_message(method.as_str(), path, &date, &body);
    if !crate::identity::verify(&peer.public_key, &message, &signature) {
        tracing::warn!(peer = %peer.name, "peer request with a bad signature");
        return Err(peer_auth_error("the Kura-Signature does not verify with the registered key"));
    }
    Ok(PeerCall { peer, body: body.to_vec() })
}

/// An answer signed with this server's key over its status, the request's signature and body.
fn signed<T: serde::Serialize>(state: &AppState, headers: &HeaderMap, result: ApiResult<T>) -> Response {
    let request_signature = headers.get(HEADER_SIGNATURE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let (status, body) = match result {
        Ok(value) => (StatusCode::OK, serde_json::to_vec(&value)),
        Err(e) => {
            if e.status().is_server_error() {
                tracing::error!(status = %e.status(), "peer request failed");
            }
            (e.status(), serde_json::to_vec(&e.envelope()))
        }
    };
    let Ok(body) = body else {
        return ApiError::internal().into_response();
    };
    let signature =
        state.identity.sign(&crate::service::peers::response_message(status.as_u16(), request_signature, &body));
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let (Ok(key), Ok(signature)) =
        (HeaderValue::from_str(state.identity.public_key()), HeaderValue::from_str(&signature))
    {
        headers.insert(HEADER_PEER, key);
        headers.insert(HEADER_SIGNATURE, signature);
    }
    response
}

/// Phase 1 of a move into this server (signed, for peers): stores the record `pending` in the
/// account the token names, once per origin and move id, and answers with its id here and the
/// content hash.
#[utoipa::path(post, path = "/api/v1/peer/moves", tag = "peers", request_body = api::PeerMoveOffer,
    params(("kura-peer" = String, Header, description = "the sending server's public key"),
        ("kura-date" = String, Header, description = "RFC 3339; within five minutes of the receiver's clock"),
        ("kura-signature" = String, Header, description = "Ed25519 signature, see docs/portability-peers.md")),
    responses((status = 200, body = api::PeerMoveStatus), (status = 401, body = api::ErrorEnvelope),
        (status = 403, body = api::ErrorEnvelope), (status = 409, body = api::ErrorEnvelope),
        (status = 422, body = api::ErrorEnvelope)))]
pub async fn receive(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let limit = state.config.max_upload_bytes.saturating_mul(4) / 3 + 64 * 1024;
    let result = async {
        let call = authenticate(&state, &method, &uri, &headers, body, limit).await?;
        receive_offer(&state, &call).await
    }
    .await;
    signed(&state, &headers, result)
}

async fn receive_offer(state: &AppState, call: &PeerCall) -> ApiResult<api::PeerMoveStatus> {
    let offer: api::PeerMoveOffer = serde_json::from_slice(&call.body).map_err(|e| {
        // serde's own message may quote a value of the offer; the position is enough.
        ApiError::bad_request(format!(
            "the move offer is malformed (not a PeerMoveOffer; line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    Ok(peers::receive_offer(state, &call.peer, &offer).await?)
}

/// What this server holds of a move from the calling peer (signed, for peers): `pending`,
/// `active`, `discarded` or `unknown`.
#[utoipa::path(get, path = "/api/v1/peer/moves/{move_id}", tag = "peers",
    params(("move_id" = String, Path), ("kura-peer" = String, Header, description = "the sending server's public key"),
        ("kura-date" = String, Header, description = "RFC 3339; within five minutes of the receiver's clock"),
        ("kura-signature" = String, Header, description = "Ed25519 signature, see docs/portability-peers.md")),
    responses((status = 200, body = api::PeerMoveStatus), (status = 401, body = api::ErrorEnvelope)))]
pub async fn status(
    State(state): State<AppState>,
    Path(move_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let call = authenticate(&state, &method, &uri, &headers, body, 64 * 1024).await?;
        let known = state.store.move_in(&call.peer.public_key, &move_id).await?;
        Ok(peers::status_of(&move_id, known.as_ref()))
    }
    .await;
    signed(&state, &headers, result)
}

/// Phase 3 (signed, for peers): the origin ended the record there; the pending record becomes
/// active here, owned by the patient, with a custody ledger entry for the move-in.
#[utoipa::path(post, path = "/api/v1/peer/moves/{move_id}/confirm", tag = "peers",
    params(("move_id" = String, Path), ("kura-peer" = String, Header, description = "the sending server's public key"),
        ("kura-date" = String, Header, description = "RFC 3339; within five minutes of the receiver's clock"),
        ("kura-signature" = String, Header, description = "Ed25519 signature, see docs/portability-peers.md")),
    responses((status = 200, body = api::PeerMoveStatus), (status = 401, body = api::ErrorEnvelope),
        (status = 404, body = api::ErrorEnvelope), (status = 409, body = api::ErrorEnvelope)))]
pub async fn confirm(
    State(state): State<AppState>,
    Path(move_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let call = authenticate(&state, &method, &uri, &headers, body, 64 * 1024).await?;
        state.faults.check("peer.drop_confirm")?;
        let known =
            state.store.move_in(&call.peer.public_key, &move_id).await?.ok_or_else(|| ApiError::not_found("move"))?;
        peers::activate(&state, &call.peer, &known).await?;
        let known = state.store.move_in(&call.peer.public_key, &move_id).await?;
        Ok(peers::status_of(&move_id, known.as_ref()))
    }
    .await;
    signed(&state, &headers, result)
}

/// The origin abandons a move (signed, for peers): a pending record is deleted, and a move not
/// seen yet is remembered so that its late arrival is refused. Refused once the record is active.
#[utoipa::path(post, path = "/api/v1/peer/moves/{move_id}/abort", tag = "peers",
    params(("move_id" = String, Path), ("kura-peer" = String, Header, description = "the sending server's public key"),
        ("kura-date" = String, Header, description = "RFC 3339; within five minutes of the receiver's clock"),
        ("kura-signature" = String, Header, description = "Ed25519 signature, see docs/portability-peers.md")),
    responses((status = 200, body = api::PeerMoveStatus), (status = 401, body = api::ErrorEnvelope),
        (status = 409, body = api::ErrorEnvelope)))]
pub async fn abort(
    State(state): State<AppState>,
    Path(move_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let call = authenticate(&state, &method, &uri, &headers, body, 64 * 1024).await?;
        peers::check_move_id(&move_id)?;
        peers::discard(&state, &call.peer, &move_id).await?;
        let known = state.store.move_in(&call.peer.public_key, &move_id).await?;
        Ok(peers::status_of(&move_id, known.as_ref()))
    }
    .await;
    signed(&state, &headers, result)
}

/// The state of a move from this server to the calling peer (signed, for peers), so that a
/// peer holding a pending record can resolve it: `preparing`, `committed`, `confirmed`,
/// `aborted`, or `unknown` for a move that is not the caller's.
#[utoipa::path(get, path = "/api/v1/peer/outgoing/{move_id}", tag = "peers",
    params(("move_id" = String, Path), ("kura-peer" = String, Header, description = "the sending server's public key"),
        ("kura-date" = String, Header, description = "RFC 3339; within five minutes of the receiver's clock"),
        ("kura-signature" = String, Header, description = "Ed25519 signature, see docs/portability-peers.md")),
    responses((status = 200, body = api::OutgoingMoveView), (status = 401, body = api::ErrorEnvelope)))]
pub async fn outgoing(
    State(state): State<AppState>,
    Path(move_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let call = authenticate(&state, &method, &uri, &headers, body, 64 * 1024).await?;
        let found = state.store.move_out(&move_id).await?.filter(|m| m.peer_key == call.peer.public_key);
        Ok(match found {
            Some(m) => api::OutgoingMoveView {
                move_id: m.id,
                record: m.record.to_string(),
                peer: m.peer_name,
                state: m.state.as_str().to_owned(),
                remote_id: m.remote_id,
            },
            None => api::OutgoingMoveView {
                move_id,
                record: String::new(),
                peer: call.peer.name.clone(),
                state: "unknown".into(),
                remote_id: None,
            },
        })
    }
    .await;
    signed(&state, &headers, result)
}
