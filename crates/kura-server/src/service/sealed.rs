//! Sealed copies (issue 5): a grantee takes a copy out of Kura as a package whose key stays on
//! the server, and the key is released to the grantee only while the grant stands. Every
//! release and refusal is audited in the owner's timeline.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kura_api_types as api;
use kura_core::ids::GrantId;
use kura_core::party::Party;
use kura_core::policy::{Basis, Permit};
use kura_store::model::{RecordRow, SealedCopyRow};
use kura_store::package;

use super::audit::{AuditExt, audit_entry, audited_action};
use super::error::{Refusal, ServiceError, ServiceResult};
use super::{content, ids};
use crate::auth::Caller;
use crate::state::AppState;
use crate::time;

/// A sealed copy taken out.
pub struct TakenOut {
    pub copy_id: String,
    /// When it stops opening (RFC 3339).
    pub expires_at: String,
    /// The package.
    pub package: Vec<u8>,
}

/// Takes a copy of `record` out under the grant `permit` stands on, as a sealed package
/// (obligations applied); the grant must have an end date, when the package stops opening.
pub async fn take_out(
    state: &AppState,
    caller: &Caller,
    record: &RecordRow,
    permit: &Permit,
) -> ServiceResult<TakenOut> {
    let Basis::Grant(grant_id) = permit.basis() else {
        return Err(ServiceError::Invalid(
            "a sealed copy is taken out under a grant; as the owner, download the record or export your records".into(),
        ));
    };
    let grant = state.store.grant(grant_id).await?.ok_or(ServiceError::Internal)?;
    let Some(expires_at) = grant.grant.terms.period().expires_at() else {
        return Err(ServiceError::Invalid(
            "a sealed copy needs a grant with an end date (expires_at); ask the owner for a grant that ends".into(),
        ));
    };
    let bytes = content::copyable(state, record, permit).await?;
    let now = state.clock.now();
    let copy_id = ids::new_id();
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
        ServiceError::Internal
    })?;
    let wrapped = state.master.wrap_key(&key_context(&copy_id), key.as_bytes()).map_err(|e| {
        tracing::error!(error = %e, "wrapping a package key failed");
        ServiceError::Internal
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
    let audit = audited_action(state, caller, now, permit, "sealed_copy", format!("sealed copy {copy_id}")).await?;
    state.store.insert_sealed_copy(&row, audit).await?;
    tracing::info!(record = %record.id, sealed_copy = %copy_id, "sealed copy taken out");
    Ok(TakenOut { copy_id, expires_at: expires_text, package: package_bytes })
}

/// Releases the key of sealed copy `id` to the caller, its grantee, while the grant is in
/// force. A missing copy and someone else's copy look the same.
pub async fn release_key(state: &AppState, caller: &Caller, id: &str) -> ServiceResult<api::SealedCopyKey> {
    let now = state.clock.now();
    // A missing copy and someone else's copy must not be told apart, by the answer or by its
    // time: both paths look up a copy and a grant, write one audit entry of the same shape
    // (without the record or grant id, which the caller could read back as its actor) and answer
    // the same 404.
    let copy = state.store.sealed_copy(id).await?;
    let grant_id = match &copy {
        Some(copy) => copy.grant.clone(),
        None => unknown_grant_id()?,
    };
    let grant = state.store.grant(&grant_id).await?;
    let copy = match copy {
        Some(copy) if caller.actor.identities.contains(&copy.grantee) => copy,
        other => {
            let mut entry = audit_entry(caller, now, "sealed_copy_key", "denied").detail(format!(
                "sealed copy {}: not found, or not the caller's",
                id.chars().take(64).collect::<String>()
            ));
            // The owner still sees the attempt in their timeline.
            if let Some(Party::Account(owner)) = other.as_ref().map(|c| &c.owner) {
                entry = entry.subject(owner);
            }
            state.store.append_audit(entry).await?;
            return Err(ServiceError::NotFound("sealed copy"));
        }
    };
    let refuse = |outcome: &str, why: String| {
        audit_entry(caller, now, "sealed_copy_key", outcome)
            .record(&copy.record)
            .grant(&copy.grant)
            .detail(format!("sealed copy {}: {why}", copy.id))
    };
    let grant = grant.ok_or(ServiceError::Internal)?;
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
        return Err(ServiceError::Refused {
            why: Refusal::Gone,
            code: "sealed_copy_closed",
            message: format!("this sealed copy no longer opens: {why}"),
        });
    }
    let Some(wrapped) = &copy.wrapped_key else { return Err(ServiceError::Internal) };
    let key = state.master.unwrap_key(&key_context(&copy.id), wrapped).map_err(|e| {
        tracing::error!(sealed_copy = %copy.id, error = %e, "a package key does not unwrap");
        ServiceError::Internal
    })?;
    // Durable before the key leaves: the owner sees every opening.
    state.store.append_audit(refuse("allowed", "key released".into())).await?;
    Ok(api::SealedCopyKey {
        sealed_copy: copy.id.clone(),
        key: URL_SAFE_NO_PAD.encode(key),
        expires_at: time::format(copy.expires_at),
    })
}

/// A grant id no grant has, looked up for a missing sealed copy so that its path does the same
/// work as a denied one.
fn unknown_grant_id() -> ServiceResult<GrantId> {
    GrantId::parse("00000000-0000-0000-0000-000000000000").map_err(|_| ServiceError::Internal)
}

fn key_context(copy_id: &str) -> String {
    format!("sealed-copy/{copy_id}")
}
