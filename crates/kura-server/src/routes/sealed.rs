//! Sealed copies (issue 5): a grantee takes a copy out of Kura as a package whose key stays on
//! the server. The key is released only to the grantee, only inside the grant's period and while
//! the grant stands; at expiry (the sweeper) or revocation (in its transaction) the key is
//! destroyed and a deletion receipt goes into the owner's timeline (the audit log).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kura_api_types as api;
use kura_core::policy::{Action, Decision};
use kura_store::model::SealedCopyRow;

use super::{AuditExt, audit_entry, decide_on, refuse};
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::service::sealed;
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
    let taken = sealed::take_out(&state, &caller, &decided.record, &permit).await?;
    let (copy_id, expires_text, package_bytes) = (taken.copy_id, taken.expires_at, taken.package);
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
    Ok(Json(sealed::release_key(&state, &caller, &id).await?))
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
