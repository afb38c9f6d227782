//! Sealed copies (issue 5): a grantee takes a copy out of Kura as a package whose key stays on
//! the server. The key is released only to the grantee, only inside the grant's period and while
//! the grant stands; at expiry (the sweeper) or revocation (in its transaction) the key is
//! destroyed and a deletion receipt goes into the owner's timeline (the audit log).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kura_api_types as api;
use kura_core::ids::GrantId;
use kura_core::party::Party;
use kura_core::policy::{Action, Basis, Decision};
use kura_store::model::SealedCopyRow;
use kura_store::package;

use super::{AuditExt, audit_entry, decide_on, new_id, refuse};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::audit::audited_action;
use crate::service::content;
use crate::state::AppState;
use crate::time;

/// The media type of a sealed copy's package.
pub const PACKAGE_MEDIA_TYPE: &str = "application/vnd.kura.sealed-copy";

/// Takes a copy out under the caller's grant as a sealed package (obligations applied). The grant
/// must have an end date: that is when the package stops opening.
#[utoipa::path(post, path = "/api/v1/records/{id}/sealed-copy", tag = "records", operation_id = "create_sealed_copy", params(("id" = String, Path)),
    responses((status = 201, description = "the package", content_type = "application/vnd.kura.sealed-copy", body = Vec<u8>),
        (status = 404, body = api::ErrorEnvelope), (status = 422, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn create(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let decided = decide_on(&state, &caller, &id, Action::Copy, None).await?;
    let permit = match decided.decision.clone() {
        Decision::Allow(permit) => permit,
        Decision::Deny(reason) => return Err(refuse(&state, &caller, Action::Copy, &decided, reason).await),
    };
    let record = decided.record;
    let Basis::Grant(grant_id) = permit.basis() else {
        return Err(ApiError::invalid(
            "a sealed copy is taken out under a grant; as the owner, download the record or export your records",
        ));
    };
    let grant = state.store.grant(grant_id).await?.ok_or_else(ApiError::internal)?;
    let Some(expires_at) = grant.grant.terms.period().expires_at() else {
        return Err(ApiError::invalid(
            "a sealed copy needs a grant with an end date (expires_at); ask the owner for a grant that ends",
        ));
    };
    let bytes = content::copyable(&state, &record, &permit).await?;
    let now = state.clock.now();
    let copy_id = new_id();
    let key_url = format!("{}/api/v1/sealed-copies/{copy_id}/key", state.config.public_url.trim_end_matches('/'));
    let (expires_text, created_text) = (time::format(expires_at), time::format(now));
    // The package names the record as the grantee may know it (`names.rs`).
    let record_name = match grant.grant.terms.anonymization() {
        kura_core::policy::Anonymization::None => record.id.to_string(),
        _ => crate::pseudonyms::Pseudonyms::new(&state.master).record(grant_id, &record.id),
    };
    let fields = [
        ("sealed-copy", copy_id.as_str()),
        ("record", record_name.as_str()),
        ("format", record.format.as_str()),
        ("server", state.config.server_name.as_str()),
        ("key-url", key_url.as_str()),
        ("created-at", created_text.as_str()),
        ("expires-at", expires_text.as_str()),
    ];
    let (package_bytes, key) = package::seal(&fields, &bytes).map_err(|e| {
        tracing::error!(error = %e, "sealing a package failed");
        ApiError::internal()
    })?;
    let wrapped = state.master.wrap_key(&key_context(&copy_id), key.as_bytes()).map_err(|e| {
        tracing::error!(error = %e, "wrapping a package key failed");
        ApiError::internal()
    })?;
    drop(key);
    let row = SealedCopyRow {
        id: copy_id.clone(),
        record: record.id.clone(),
        grant: grant_id.clone(),
        grantee: grant.grant.grantee.clone(),
        owner: record.owner.clone(),
        wrapped_key: Some(wrapped),
        created_by: caller.audit_actor(),
        created_at: now,
        expires_at,
        destroyed_at: None,
        destroy_reason: None,
    };
    let audit = audited_action(&state, &caller, now, &permit, "sealed_copy", format!("sealed copy {copy_id}")).await?;
    state.store.insert_sealed_copy(&row, audit).await?;
    tracing::info!(record = %record.id, sealed_copy = %copy_id, "sealed copy taken out");
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, PACKAGE_MEDIA_TYPE.to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{copy_id}.kura-sealed\"")),
            (header::HeaderName::from_static("kura-sealed-copy"), copy_id),
            (header::HeaderName::from_static("kura-expires-at"), expires_text),
        ],
        package_bytes,
    )
        .into_response())
}

/// A grant id no grant has, looked up for a missing sealed copy so that its path does the same
/// work as a denied one.
fn unknown_grant_id() -> Result<GrantId, ApiError> {
    GrantId::parse("00000000-0000-0000-0000-000000000000").map_err(|_| ApiError::internal())
}

fn key_context(copy_id: &str) -> String {
    format!("sealed-copy/{copy_id}")
}

/// Releases a sealed copy's key to its grantee while the grant is in force. Every release and
/// refusal is audited in the owner's timeline.
#[utoipa::path(post, path = "/api/v1/sealed-copies/{id}/key", tag = "records", operation_id = "release_sealed_copy_key", params(("id" = String, Path)),
    responses((status = 200, body = api::SealedCopyKey), (status = 404, body = api::ErrorEnvelope),
        (status = 410, description = "the grant ended or was revoked; the key is (or is about to be) destroyed", body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::SealedCopyKey>> {
    let now = state.clock.now();
    // A missing copy and someone else's copy must not be told apart, by the answer or by its
    // time: both paths look up a copy and a grant, write one audit entry of the same shape
    // (without the record or grant id, which the caller could read back as its actor) and answer
    // the same 404.
    let copy = state.store.sealed_copy(&id).await?;
    let grant_id = match &copy {
        Some(copy) => copy.grant.clone(),
        None => unknown_grant_id()?,
    };
    let grant = state.store.grant(&grant_id).await?;
    let copy = match copy {
        Some(copy) if caller.actor.identities.contains(&copy.grantee) => copy,
        other => {
            let mut entry = audit_entry(&caller, now, "sealed_copy_key", "denied").detail(format!(
                "sealed copy {}: not found, or not the caller's",
                id.chars().take(64).collect::<String>()
            ));
            // The owner still sees the attempt in their timeline.
            if let Some(Party::Account(owner)) = other.as_ref().map(|c| &c.owner) {
                entry = entry.subject(owner);
            }
            state.store.append_audit(entry).await?;
            return Err(ApiError::not_found("sealed copy"));
        }
    };
    let refuse = |outcome: &str, why: String| {
        audit_entry(&caller, now, "sealed_copy_key", outcome)
            .record(&copy.record)
            .grant(&copy.grant)
            .detail(format!("sealed copy {}: {why}", copy.id))
    };
    let grant = grant.ok_or_else(ApiError::internal)?;
    let ended = match (&copy.wrapped_key, copy.destroyed_at) {
        (None, _) | (_, Some(_)) => Some(format!(
            "its key was destroyed{} ({})",
            copy.destroyed_at.map(|t| format!(" at {}", time::format(t))).unwrap_or_default(),
            copy.destroy_reason.as_deref().unwrap_or("ended")
        )),
        _ if grant.grant.revoked_at.is_some_and(|t| t <= now) => Some("the owner revoked the grant".into()),
        _ if now >= copy.expires_at => Some(format!("the grant ended at {}", time::format(copy.expires_at))),
        _ if !grant.grant.is_active(now) => Some("the grant is not in force yet".into()),
        _ => None,
    };
    if let Some(why) = ended {
        state.store.append_audit(refuse("denied", why.clone())).await?;
        return Err(ApiError::new(
            StatusCode::GONE,
            "sealed_copy_closed",
            format!("this sealed copy no longer opens: {why}"),
        ));
    }
    let Some(wrapped) = &copy.wrapped_key else { return Err(ApiError::internal()) };
    let key = state.master.unwrap_key(&key_context(&copy.id), wrapped).map_err(|e| {
        tracing::error!(sealed_copy = %copy.id, error = %e, "a package key does not unwrap");
        ApiError::internal()
    })?;
    // Durable before the key leaves: the owner sees every opening.
    state.store.append_audit(refuse("allowed", "key released".into())).await?;
    Ok(Json(api::SealedCopyKey {
        sealed_copy: copy.id.clone(),
        key: URL_SAFE_NO_PAD.encode(key),
        expires_at: time::format(copy.expires_at),
    }))
}

/// Sealed copies of the caller's records (as owner, with their deletion receipts) and those the
/// caller took out (as grantee), newest first.
#[utoipa::path(get, path = "/api/v1/sealed-copies", tag = "records", operation_id = "list_sealed_copies",
    responses((status = 200, body = api::SealedCopyList)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<api::SealedCopyList>> {
    let mut parties = caller.parties();
    for identity in &caller.actor.identities {
        if !parties.contains(identity) {
            parties.push(identity.clone());
        }
    }
    let copies = state.store.sealed_copies_involving(&parties).await?;
    // A grantee's list names the owner's records: that is an access the owner's timeline shows.
    let now = state.clock.now();
    for copy in copies.iter().filter(|c| !parties.contains(&c.owner)) {
        let entry = audit_entry(&caller, now, "sealed_copy_list", "allowed")
            .record(&copy.record)
            .grant(&copy.grant)
            .detail(format!("sealed copy {} listed", copy.id));
        state.reads_audit.append(entry).await?;
    }
    let keys = crate::pseudonyms::Pseudonyms::new(&state.master);
    let sealed_copies = copies
        .iter()
        .map(|copy| {
            let mut shown = view(copy);
            // A grantee knows the record and its owner only by the grant's pseudonyms.
            if !caller.parties().contains(&copy.owner) {
                shown.record = keys.record(&copy.grant, &copy.record);
                shown.owner = keys.party(&copy.grant, &copy.owner.to_text());
            }
            shown
        })
        .collect();
    Ok(Json(api::SealedCopyList { sealed_copies }))
}

fn view(copy: &SealedCopyRow) -> api::SealedCopyView {
    api::SealedCopyView {
        id: copy.id.clone(),
        record: copy.record.to_string(),
        grant: copy.grant.to_string(),
        grantee: copy.grantee.to_text(),
        owner: copy.owner.to_text(),
        created_at: time::format(copy.created_at),
        expires_at: time::format(copy.expires_at),
        state: if copy.destroyed_at.is_some() { "destroyed" } else { "live" }.into(),
        receipt: copy.destroyed_at.map(|t| api::DeletionReceipt {
            destroyed_at: time::format(t),
            reason: copy.destroy_reason.clone().unwrap_or_default(),
        }),
    }
}
