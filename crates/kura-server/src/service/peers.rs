//! Moves between Kura servers (issue 5): signed requests between peers and the origin's side of
//! the two-phase move, with its recovery.
//!
//! A request from one server to another carries `Kura-Peer` (the sender's public key),
//! `Kura-Date` (RFC 3339) and `Kura-Signature`, the sender's Ed25519 signature of
//! [`request_message`]; every answer of a peer endpoint (errors too) carries `Kura-Signature`,
//! the answering server's signature of [`response_message`], bound to the request's signature.
//!
//! The move (`docs/portability-peers.md`): phase 0 records the move and marks the record
//! `moving`; phase 1 sends it to the peer, which stores it `pending` and answers with its id and
//! the content hash; phase 2 ends the record here with a locator; phase 3 tells the peer to
//! activate it. Recovery resolves moves left half-way: `preparing` ones are committed when the
//! peer holds the same content and undone (after the peer promised to refuse them) otherwise;
//! `committed` ones are confirmed again. Logs carry move and record ids, never content or tokens.

use std::time::Duration;

use base64::Engine;
use kura_api_types as api;
use kura_core::custody::CustodyEvent;
use kura_core::ids::RecordId;
use kura_core::party::Party;
use kura_core::record::{PartCategory, RecordFormat};
use kura_store::StoreError;
use kura_store::model::{
    IncomingMove, IncomingMoveState, Locator, NewAudit, NewLedger, OutgoingMove, OutgoingMoveState, PeerRow,
};

use super::content::sha256_hex;
use super::error::{Refusal, ServiceError, ServiceResult};
use super::{ids, ingest};
use crate::state::AppState;

pub const HEADER_PEER: &str = "kura-peer";
pub const HEADER_DATE: &str = "kura-date";
pub const HEADER_SIGNATURE: &str = "kura-signature";
/// How far a request's date may be from the receiver's clock.
pub const MAX_CLOCK_SKEW_MILLIS: i64 = 5 * 60 * 1000;
/// How old a half-finished move must be before the background task resolves it (an in-flight
/// request may still be working on a younger one). Start-up and tests resolve every one.
pub const RECOVERY_GRACE_MILLIS: i64 = 2 * 60 * 1000;
const PEER_TIMEOUT: Duration = Duration::from_secs(60);

/// What a request's signature covers: method, path (with query), date and the body's SHA-256.
pub fn request_message(method: &str, path: &str, date: &str, body: &[u8]) -> Vec<u8> {
    format!("kura-peer-request-v1\n{method}\n{path}\n{date}\n{}", sha256_hex(body)).into_bytes()
}

/// What an answer's signature covers: its status, the request's signature and the body's SHA-256.
pub fn response_message(status: u16, request_signature: &str, body: &[u8]) -> Vec<u8> {
    format!("kura-peer-response-v1\n{status}\n{request_signature}\n{}", sha256_hex(body)).into_bytes()
}

/// A peer's answer whose signature checked out.
#[derive(Debug)]
pub struct PeerReply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl PeerReply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A refusal: the peer looked at the request and did nothing.
    pub fn is_refusal(&self) -> bool {
        (400..500).contains(&self.status)
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The message of the peer's error envelope.
    pub fn error_message(&self) -> String {
        self.json::<api::ErrorEnvelope>()
            .map(|e| e.error.message)
            .unwrap_or_else(|| format!("the peer answered status {}", self.status))
    }
}

/// Why a peer gave no usable answer: the outcome of the request is unknown.
#[derive(Debug)]
pub enum PeerCallError {
    Unreachable(String),
    /// An answer without a valid signature of the peer's key.
    Unsigned,
}

impl std::fmt::Display for PeerCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerCallError::Unreachable(why) => write!(f, "unreachable: {why}"),
            PeerCallError::Unsigned => f.write_str("the answer is not signed by the peer's key"),
        }
    }
}

/// Sends a signed request to a peer and checks the answer's signature against `peer_key`.
pub async fn call_peer(
    state: &AppState,
    peer_url: &str,
    peer_key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<PeerReply, PeerCallError> {
    let body = body.unwrap_or_default();
    let date = crate::time::format(state.clock.now());
    let signature = state.identity.sign(&request_message(method.as_str(), path, &date, &body));
    let url = format!("{}{path}", peer_url.trim_end_matches('/'));
    let request = state.http.request(method, &url).map_err(|failure| {
        tracing::warn!(%failure, "a call to a peer was refused before sending");
        PeerCallError::Unreachable(crate::outbound::UNREACHABLE.into())
    })?;
    let mut request = request
        .timeout(PEER_TIMEOUT)
        .header(HEADER_PEER, state.identity.public_key())
        .header(HEADER_DATE, &date)
        .header(HEADER_SIGNATURE, &signature);
    if !body.is_empty() {
        request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
    }
    let response = request.send().await.map_err(|e| PeerCallError::Unreachable(without_url(&e)))?;
    let status = response.status().as_u16();
    let answer_signature =
        response.headers().get(HEADER_SIGNATURE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body = response.bytes().await.map_err(|e| PeerCallError::Unreachable(without_url(&e)))?.to_vec();
    if !crate::identity::verify(peer_key, &response_message(status, &signature, &body), &answer_signature) {
        return Err(PeerCallError::Unsigned);
    }
    Ok(PeerReply { status, body })
}

/// What went wrong, without the URL or anything the peer said; the caller sees one text for
/// every failure (`crate::outbound`), the reason goes to the log.
fn without_url(e: &reqwest::Error) -> String {
    tracing::warn!(failure = %crate::outbound::Failure::of(e), "a call to a peer failed");
    crate::outbound::UNREACHABLE.into()
}

fn system_audit(state: &AppState, outgoing: &OutgoingMove, action: &str, detail: String) -> NewAudit {
    NewAudit {
        at: state.clock.now(),
        actor: outgoing.ordered_by.clone(),
        on_behalf_of: outgoing.on_behalf_of.clone(),
        action: action.to_owned(),
        record: Some(outgoing.record.clone()),
        grant: None,
        outcome: "done".into(),
        detail,
        subject: None,
    }
}

/// Where a record moved to a peer can be found: the peer's URL for it.
pub fn destination(peer_url: &str, remote_id: &str) -> String {
    format!("{}/api/v1/records/{remote_id}", peer_url.trim_end_matches('/'))
}

/// Phase 2: ends the `moving` record here with its locator. A move that recovery (or another
/// request) committed meanwhile with the same remote id is fine.
pub async fn commit(state: &AppState, outgoing: &OutgoingMove, remote_id: &str) -> ServiceResult<Locator> {
    let now = state.clock.now();
    let locator = Locator {
        destination: destination(&outgoing.peer_url, remote_id),
        moved_at: now,
        ordered_by: outgoing.ordered_by.clone(),
    };
    let record = state.store.record(&outgoing.record).await?.ok_or(ServiceError::Internal)?;
    let ledger = NewLedger {
        event: CustodyEvent::MovedOut,
        from_owner: Some(record.owner.clone()),
        to_owner: record.owner.clone(),
        transfer: None,
        actor: outgoing.ordered_by.clone(),
        at: now,
        note: format!("moved to peer {} as record {remote_id} (move {})", outgoing.peer_name, outgoing.id),
    };
    let audit = system_audit(
        state,
        outgoing,
        "move",
        format!("move {} to peer {} as record {remote_id}", outgoing.id, outgoing.peer_name),
    );
    match state.store.commit_move_out(&outgoing.id, remote_id, &locator, ledger, audit).await {
        Ok(blob) => {
            crate::service::content::discard_blobs(state, blob).await;
            tracing::info!(record = %outgoing.record, move_id = %outgoing.id, peer = %outgoing.peer_name, "move committed");
            Ok(locator)
        }
        Err(StoreError::Conflict(why)) => {
            let again = state.store.move_out(&outgoing.id).await?.ok_or(ServiceError::Internal)?;
            let committed = matches!(again.state, OutgoingMoveState::Committed | OutgoingMoveState::Confirmed);
            if committed && again.remote_id.as_deref() == Some(remote_id) {
                let record = state.store.record(&outgoing.record).await?.ok_or(ServiceError::Internal)?;
                return record.locator.ok_or(ServiceError::Internal);
            }
            Err(ServiceError::Conflict(format!("{why}; the move was resolved by another request")))
        }
        Err(e) => Err(e.into()),
    }
}

/// Phase 3: asks the peer to activate the record; `committed` → `confirmed` once it has.
/// Returns whether the move is confirmed now.
pub async fn confirm(state: &AppState, outgoing: &OutgoingMove) -> ServiceResult<bool> {
    let path = format!("/api/v1/peer/moves/{}/confirm", outgoing.id);
    let reply = match call_peer(state, &outgoing.peer_url, &outgoing.peer_key, reqwest::Method::POST, &path, None).await
    {
        Ok(reply) => reply,
        Err(e) => {
            tracing::warn!(move_id = %outgoing.id, peer = %outgoing.peer_name, error = %e, "confirmation not delivered; recovery retries it");
            return Ok(false);
        }
    };
    let active = reply.is_success()
        && reply.json::<api::PeerMoveStatus>().is_some_and(|s| s.state == IncomingMoveState::Active.as_str());
    if !active {
        tracing::warn!(move_id = %outgoing.id, peer = %outgoing.peer_name, status = reply.status, "the peer did not activate the record; recovery retries it");
        return Ok(false);
    }
    let audit = system_audit(
        state,
        outgoing,
        "move_confirmed",
        format!("peer {} activated move {}", outgoing.peer_name, outgoing.id),
    );
    match state.store.confirm_move_out(&outgoing.id, state.clock.now(), audit).await {
        Ok(()) | Err(StoreError::Conflict(_)) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Undoes a `preparing` move once the peer has promised to refuse it (and dropped any copy it
/// held). Returns whether it was undone.
pub async fn abort(state: &AppState, outgoing: &OutgoingMove, why: &str) -> ServiceResult<bool> {
    let path = format!("/api/v1/peer/moves/{}/abort", outgoing.id);
    match call_peer(state, &outgoing.peer_url, &outgoing.peer_key, reqwest::Method::POST, &path, None).await {
        Ok(reply) if reply.is_success() => abort_here(state, outgoing, why).await,
        Ok(reply) => {
            tracing::warn!(move_id = %outgoing.id, status = reply.status, "the peer refused to drop the move; left for recovery");
            Ok(false)
        }
        Err(e) => {
            tracing::warn!(move_id = %outgoing.id, error = %e, "the peer did not answer; left for recovery");
            Ok(false)
        }
    }
}

/// Makes the record active here again. Only when the peer holds nothing of the move: it
/// refused it, or promised to.
pub async fn abort_here(state: &AppState, outgoing: &OutgoingMove, why: &str) -> ServiceResult<bool> {
    let audit = system_audit(
        state,
        outgoing,
        "move_abort",
        format!("move {} to peer {}: {why}", outgoing.id, outgoing.peer_name),
    );
    match state.store.abort_move_out(&outgoing.id, state.clock.now(), audit).await {
        Ok(()) => {
            tracing::info!(record = %outgoing.record, move_id = %outgoing.id, "move undone; the record is active here again");
            Ok(true)
        }
        Err(StoreError::Conflict(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Resolves a `preparing` move by asking the peer what it holds.
pub async fn resolve_preparing(state: &AppState, outgoing: &OutgoingMove) -> ServiceResult<()> {
    let path = format!("/api/v1/peer/moves/{}", outgoing.id);
    let reply = match call_peer(state, &outgoing.peer_url, &outgoing.peer_key, reqwest::Method::GET, &path, None).await
    {
        Ok(reply) if reply.is_success() => reply,
        Ok(reply) => {
            tracing::warn!(move_id = %outgoing.id, status = reply.status, "the peer could not say what it holds; retrying later");
            return Ok(());
        }
        Err(e) => {
            tracing::warn!(move_id = %outgoing.id, error = %e, "the peer did not answer; retrying later");
            return Ok(());
        }
    };
    let status: Option<api::PeerMoveStatus> = reply.json();
    let held = status.as_ref().filter(|s| {
        (s.state == IncomingMoveState::Pending.as_str() || s.state == IncomingMoveState::Active.as_str())
            && s.content_hash.as_deref() == Some(outgoing.content_hash.as_str())
    });
    match held.and_then(|s| s.remote_id.clone()) {
        Some(remote_id) => {
            commit(state, outgoing, &remote_id).await?;
            if let Some(committed) = state.store.move_out(&outgoing.id).await? {
                confirm(state, &committed).await?;
            }
        }
        None => {
            abort(state, outgoing, "the peer does not hold it").await?;
        }
    }
    Ok(())
}

/// Resolves this server's half-finished moves, both ways; returns how many it looked at.
/// Outgoing moves younger than `min_age_millis` are left to the request working on them.
pub async fn recover(state: &AppState, min_age_millis: i64) -> ServiceResult<usize> {
    let now = state.clock.now();
    let mut seen = 0;
    for outgoing in state.store.unfinished_moves_out().await? {
        if now.as_millis() - outgoing.updated_at.as_millis() < min_age_millis {
            continue;
        }
        seen += 1;
        let result = match outgoing.state {
            OutgoingMoveState::Preparing => resolve_preparing(state, &outgoing).await,
            OutgoingMoveState::Committed => confirm(state, &outgoing).await.map(|_| ()),
            OutgoingMoveState::Confirmed | OutgoingMoveState::Aborted => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(move_id = %outgoing.id, error = %e, "recovering a move failed; retrying later");
        }
    }
    for incoming in state.store.pending_moves_in().await? {
        if now.as_millis() - incoming.updated_at.as_millis() < min_age_millis {
            continue;
        }
        seen += 1;
        if let Err(e) = resolve_incoming(state, &incoming).await {
            tracing::warn!(move_id = %incoming.move_id, error = %e, "resolving an incoming move failed; retrying later");
        }
    }
    Ok(seen)
}

/// The background task: resolves every half-finished move at start-up, then old enough ones
/// every interval.
pub async fn run(state: AppState) {
    if let Err(e) = recover(&state, 0).await {
        tracing::warn!(error = %e, "move recovery at start-up failed; retrying later");
    }
    let mut interval = tokio::time::interval(Duration::from_secs(state.config.sweep_interval_secs.max(1)));
    interval.tick().await;
    loop {
        interval.tick().await;
        if let Err(e) = recover(&state, RECOVERY_GRACE_MILLIS).await {
            tracing::warn!(error = %e, "move recovery failed; retrying next interval");
        }
    }
}

/// Phases 0 to 3 for the owner's order to move `record` to `peer` into the account `token`
/// names there. Returns the locator once the record ended here (phase 2); a failed phase 3 is
/// left to recovery.
pub async fn move_to_peer(
    state: &AppState,
    caller: &crate::auth::Caller,
    record: &kura_store::model::RecordRow,
    plaintext: Vec<u8>,
    peer: &PeerRow,
    token: &str,
) -> ServiceResult<Locator> {
    let now = state.clock.now();
    let content_hash = sha256_hex(&plaintext);
    let outgoing = OutgoingMove {
        id: super::ids::new_id(),
        record: record.id.clone(),
        peer_name: peer.name.clone(),
        peer_url: peer.base_url.clone(),
        peer_key: peer.public_key.clone(),
        state: OutgoingMoveState::Preparing,
        content_hash: content_hash.clone(),
        remote_id: None,
        ordered_by: caller.audit_actor(),
        on_behalf_of: caller.on_behalf_of(),
        created_at: now,
        updated_at: now,
    };
    let audit = system_audit(state, &outgoing, "move_prepare", format!("move {} to peer {}", outgoing.id, peer.name));
    state.store.prepare_move_out(&outgoing, record.version, audit).await.map_err(|e| match e {
        StoreError::Conflict(why) => ServiceError::Conflict(why.into()),
        other => other.into(),
    })?;
    state.faults.check("move.after_prepare")?;
    let offer = api::PeerMoveOffer {
        move_id: outgoing.id.clone(),
        token: token.to_owned(),
        origin_record: record.id.to_string(),
        format: record.format.as_str().to_owned(),
        document_category: record.document_category.map(|c| c.as_str().to_owned()),
        provenance: record.provenance.clone(),
        labels: record.labels.iter().map(|l| l.to_string()).collect(),
        created_at: crate::time::format(record.created_at),
        content_base64: base64::engine::general_purpose::STANDARD.encode(&plaintext),
        content_hash: content_hash.clone(),
    };
    let body = serde_json::to_vec(&offer).map_err(|_| ServiceError::Internal)?;
    drop(plaintext);
    let in_doubt = || ServiceError::Upstream {
        code: "peer_unavailable",
        message: format!(
            "the peer did not answer; move {} stays in preparation and is completed or undone once the peer \
                 answers (the record is neither readable nor changeable meanwhile)",
            outgoing.id
        ),
    };
    let reply = match call_peer(
        state,
        &peer.base_url,
        &peer.public_key,
        reqwest::Method::POST,
        "/api/v1/peer/moves",
        Some(body),
    )
    .await
    {
        Ok(reply) => reply,
        Err(e) => {
            tracing::warn!(move_id = %outgoing.id, peer = %peer.name, error = %e, "phase 1 got no answer");
            return Err(in_doubt());
        }
    };
    if reply.is_refusal() {
        let message = reply.error_message();
        abort_here(state, &outgoing, "the peer refused it").await?;
        return Err(ServiceError::Refused {
            why: Refusal::Invalid,
            code: "peer_refused",
            message: format!("the peer refused the move: {message}; the record stays here"),
        });
    }
    if !reply.is_success() {
        tracing::warn!(move_id = %outgoing.id, peer = %peer.name, status = reply.status, "phase 1 failed at the peer");
        return Err(in_doubt());
    }
    let stored = reply.json::<api::PeerMoveStatus>().filter(|s| {
        s.state == IncomingMoveState::Pending.as_str() && s.content_hash.as_deref() == Some(content_hash.as_str())
    });
    let Some(remote_id) = stored.and_then(|s| s.remote_id) else {
        tracing::error!(move_id = %outgoing.id, peer = %peer.name, "the peer acknowledged other content; undoing");
        let undone = abort(state, &outgoing, "the peer acknowledged other content").await?;
        return Err(if undone {
            ServiceError::Upstream {
                code: "peer_mismatch",
                message: "the peer acknowledged content other than what was sent; the move was undone and the record \
                          stays here"
                    .into(),
            }
        } else {
            in_doubt()
        });
    };
    let locator = commit(state, &outgoing, &remote_id).await?;
    state.faults.check("move.after_commit")?;
    let committed = state.store.move_out(&outgoing.id).await?.ok_or(ServiceError::Internal)?;
    if committed.state == OutgoingMoveState::Committed {
        confirm(state, &committed).await?;
    }
    Ok(locator)
}

/// Whether `party` is a patient account (moves to a peer go into a patient's account there).
pub fn is_patient_owner(party: &Party) -> bool {
    matches!(party, Party::Account(_))
}

// ---------------------------------------------------------------------------------------------
// The receiving side of a move, shared by the signed endpoints and recovery

/// An audit entry for what a peer server did here.
pub fn peer_audit(
    peer: &PeerRow,
    at: kura_core::time::Timestamp,
    action: &str,
    record: Option<&RecordId>,
    detail: String,
) -> NewAudit {
    NewAudit {
        at,
        actor: format!("peer:{}", peer.name),
        on_behalf_of: String::new(),
        action: action.to_owned(),
        record: record.cloned(),
        grant: None,
        outcome: "done".into(),
        detail,
        subject: None,
    }
}

/// Phase 3 at the receiver: the pending record becomes active, owned by the patient, with a
/// custody ledger entry for the move-in.
pub async fn activate(state: &AppState, peer: &PeerRow, known: &IncomingMove) -> ServiceResult<()> {
    let (Some(record), Some(account)) = (&known.record, &known.account) else {
        return Err(ServiceError::Conflict("this move was abandoned by its origin".into()));
    };
    let now = state.clock.now();
    let ledger = NewLedger {
        event: CustodyEvent::MovedIn,
        from_owner: None,
        to_owner: Party::Account(account.clone()),
        transfer: None,
        actor: format!("peer:{}", peer.name),
        at: now,
        note: format!("moved in from peer {} (move {})", peer.name, known.move_id),
    };
    let audit =
        peer_audit(peer, now, "move_in", Some(record), format!("move {} from peer {}", known.move_id, peer.name));
    state.store.activate_move_in(&known.origin_key, &known.move_id, ledger, audit).await.map_err(|e| match e {
        StoreError::NotFound => ServiceError::NotFound("move"),
        StoreError::Conflict(why) => ServiceError::Conflict(why.into()),
        other => other.into(),
    })?;
    if known.state == IncomingMoveState::Pending {
        tracing::info!(record = %record, move_id = %known.move_id, peer = %peer.name, "moved-in record activated");
    }
    Ok(())
}

/// The origin abandoned the move: a pending record is deleted, and a move not seen yet is
/// remembered so that its late arrival is refused.
pub async fn discard(state: &AppState, peer: &PeerRow, move_id: &str) -> ServiceResult<()> {
    let now = state.clock.now();
    let audit = peer_audit(peer, now, "move_in_discard", None, format!("move {move_id} from peer {}", peer.name));
    let blob =
        state.store.discard_move_in(&peer.public_key, move_id, &peer.name, now, audit).await.map_err(|e| match e {
            StoreError::Conflict(why) => ServiceError::Conflict(why.into()),
            other => other.into(),
        })?;
    super::content::discard_blobs(state, blob).await;
    Ok(())
}

/// Resolves a pending incoming move by asking its origin: committed there → activate here;
/// aborted or unknown there → discard here; still preparing → wait.
pub async fn resolve_incoming(state: &AppState, incoming: &IncomingMove) -> ServiceResult<()> {
    let Some(peer) = state.store.peer_by_key(&incoming.origin_key).await? else {
        return Ok(());
    };
    let path = format!("/api/v1/peer/outgoing/{}", incoming.move_id);
    let reply = match call_peer(state, &peer.base_url, &peer.public_key, reqwest::Method::GET, &path, None).await {
        Ok(reply) if reply.is_success() => reply,
        Ok(_) | Err(_) => return Ok(()),
    };
    let Some(view) = reply.json::<api::OutgoingMoveView>() else { return Ok(()) };
    let ours = incoming.record.as_ref().map(|r| r.to_string());
    match view.state.as_str() {
        "committed" | "confirmed" if view.remote_id == ours => activate(state, &peer, incoming).await,
        "aborted" | "unknown" => discard(state, &peer, &incoming.move_id).await,
        _ => Ok(()),
    }
}

/// A move id as peers send it.
pub fn check_move_id(move_id: &str) -> ServiceResult<()> {
    if move_id.is_empty() || move_id.len() > 128 || !move_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ServiceError::Invalid("move_id must be 1 to 128 visible ASCII characters".into()));
    }
    Ok(())
}

/// What this server holds of a move from a peer, as the peer endpoints answer it.
pub fn status_of(move_id: &str, incoming: Option<&IncomingMove>) -> api::PeerMoveStatus {
    match incoming {
        Some(m) => api::PeerMoveStatus {
            move_id: move_id.to_owned(),
            state: m.state.as_str().to_owned(),
            remote_id: m.record.as_ref().map(|r| r.to_string()),
            content_hash: Some(m.content_hash.clone()).filter(|h| !h.is_empty()),
        },
        None => api::PeerMoveStatus {
            move_id: move_id.to_owned(),
            state: "unknown".into(),
            remote_id: None,
            content_hash: None,
        },
    }
}

/// Phase 1 of a move into this server: stores the offered record `pending` in the account
/// the offer's token names, once per origin and move id, and answers with its id here and the
/// content hash (a repeated offer gets the first answer).
pub async fn receive_offer(
    state: &AppState,
    peer: &PeerRow,
    offer: &api::PeerMoveOffer,
) -> ServiceResult<api::PeerMoveStatus> {
    check_move_id(&offer.move_id)?;
    let origin_key = peer.public_key.as_str();
    if let Some(known) = state.store.move_in(origin_key, &offer.move_id).await? {
        return answer_known(offer, known);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(offer.content_base64.as_bytes())
        .map_err(|_| ServiceError::Invalid("content_base64 is not base64".into()))?;
    if bytes.is_empty() || sha256_hex(&bytes) != offer.content_hash {
        return Err(ServiceError::Invalid("content_hash is not the SHA-256 of the content".into()));
    }
    let token_hash = sha256_hex(offer.token.as_bytes());
    let now = state.clock.now();
    let invalid_token = || {
        ServiceError::Forbidden(
            "the move token is unknown, used or expired; the patient gets a new one at the destination with \
             POST /api/v1/peer-tokens"
                .into(),
        )
    };
    let token = state.store.peer_token(&token_hash).await?.ok_or_else(invalid_token)?;
    if token.used_at.is_some() || token.expires_at.as_millis() <= now.as_millis() {
        return Err(invalid_token());
    }
    let format = RecordFormat::parse(&offer.format)
        .ok_or_else(|| ServiceError::Invalid("format must be fhir, dicom or pdf".into()))?;
    let document_category = match offer.document_category.as_deref() {
        None => None,
        Some(raw) => match PartCategory::parse(raw) {
            Some(c @ (PartCategory::Document | PartCategory::Certificate)) if format == RecordFormat::Pdf => Some(c),
            _ => {
                return Err(ServiceError::Invalid(
                    "document_category must be certificate or document, for PDF only".into(),
                ));
            }
        },
    };
    let parsed = ingest::parse_off_thread(format, bytes.clone(), peer.org.to_string(), now, document_category).await?;
    let id = ids::new_record_id()?;
    let provenance: String = format!(
        "moved in from peer {} (record {} there, move {}); {}",
        peer.name, offer.origin_record, offer.move_id, offer.provenance
    )
    .chars()
    .take(1000)
    .collect();
    let draft = ingest::Draft {
        owner: Party::Account(token.account.clone()),
        institution: peer.org.clone(),
        mrn: offer.move_id.clone(),
        format,
        document_category,
        derived_from: None,
        provenance,
        held_under: None,
        created_at: now,
    };
    let mut blobs = ingest::NewBlobs::default();
    let record = ingest::prepare(state, &mut blobs, id.clone(), draft, ingest::Ingested::of(parsed), &bytes).await?;
    let incoming = IncomingMove {
        origin_key: origin_key.to_owned(),
        move_id: offer.move_id.clone(),
        peer_name: peer.name.clone(),
        record: Some(id.clone()),
        account: Some(token.account.clone()),
        state: IncomingMoveState::Pending,
        content_hash: offer.content_hash.clone(),
        created_at: now,
        updated_at: now,
    };
    let audit = peer_audit(
        peer,
        now,
        "move_in_receive",
        Some(&id),
        format!("move {} from peer {} (pending)", offer.move_id, peer.name),
    );
    if let Err(e) = blobs.commit(state, state.store.receive_move_in(&incoming, &record, &token_hash, audit)).await {
        return match e {
            StoreError::NotFound => Err(invalid_token()),
            StoreError::Conflict(_) => match state.store.move_in(origin_key, &offer.move_id).await? {
                Some(known) => answer_known(offer, known),
                None => Err(ServiceError::Conflict("the move could not be stored; try again".into())),
            },
            other => Err(other.into()),
        };
    }
    tracing::info!(record = %id, move_id = %offer.move_id, peer = %peer.name, "move received (pending)");
    state.faults.check("move.after_peer_store")?;
    Ok(status_of(&offer.move_id, Some(&incoming)))
}

/// A repeated offer: the same answer as the first time, or a refusal if the move was abandoned.
fn answer_known(offer: &api::PeerMoveOffer, known: IncomingMove) -> ServiceResult<api::PeerMoveStatus> {
    match known.state {
        IncomingMoveState::Discarded => {
            Err(ServiceError::Conflict("this move was abandoned by its origin; start a new one".into()))
        }
        _ if known.content_hash != offer.content_hash => {
            Err(ServiceError::Conflict("this move id was used for other content".into()))
        }
        _ => Ok(status_of(&offer.move_id, Some(&known))),
    }
}
