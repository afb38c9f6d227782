//! Removable media (issue 5): export a patient's records as an encrypted, signed archive, move
//! them to it (they end here with a locator), and import an archive into any Kura server.
//! The format is in `crate::archive` and docs/portability-archive.md.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kura_api_types as api;
use kura_core::party::Party;
use kura_core::policy::{Action, Basis, Decision, Permit};
use kura_core::record::RecordState;
use kura_store::model::*;

use super::ApiJson;
use super::{decide_on, deny};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::archive;
use crate::state::AppState;
use crate::time;

/// The header that carries an archive's passphrase on import. Never logged.
pub const PASSPHRASE_HEADER: &str = "kura-passphrase";
/// The header that carries the SHA-256 of an export's manifest.
pub const MANIFEST_HASH_HEADER: &str = "kura-manifest-sha256";
pub const RECORD_COUNT_HEADER: &str = "kura-record-count";

/// The patient whose archive this is: the caller, or the patient an agent acts for.
fn archive_owner(caller: &Caller, what: &str) -> ApiResult<Party> {
    let refusal = format!("{what} is open to patients and the agents acting for them");
    match caller.owner_party(&refusal) {
        Ok(owner @ Party::Account(_)) => Ok(owner),
        _ => Err(ApiError::forbidden(refusal)),
    }
}

fn check_passphrase(passphrase: &str) -> ApiResult<()> {
    let length = passphrase.chars().count();
    if !(10..=1024).contains(&length) {
        return Err(ApiError::invalid("the passphrase must have between 10 and 1024 characters"));
    }
    Ok(())
}

fn is_owner_basis(permit: &Permit) -> bool {
    matches!(permit.basis(), Basis::Owner | Basis::Delegation(_))
}

/// The records to export, each with the permit that opens it: the ones named, which the caller
/// must own (or manage as an agent), or every active record of the owner that decides to Copy.
async fn records_to_export(
    state: &AppState,
    caller: &Caller,
    owner: &Party,
    named: Option<&[String]>,
) -> ApiResult<Vec<(RecordRow, Permit)>> {
    let mut out: Vec<(RecordRow, Permit)> = Vec::new();
    match named {
        Some(ids) => {
            for id in ids {
                if out.iter().any(|(r, _)| r.id.as_str() == id) {
                    continue;
                }
                let decided = decide_on(state, caller, id, Action::Copy, None).await?;
                match decided.decision {
                    Decision::Allow(permit) if is_owner_basis(&permit) && &decided.record.owner == owner => {
                        out.push((decided.record, permit));
                    }
                    Decision::Allow(_) => {
                        let reason = kura_core::policy::DenyReason::NoBasis;
                        return Err(deny(state, caller, Action::Copy, &decided.record.id, reason).await);
                    }
                    Decision::Deny(reason) => {
                        return Err(deny(state, caller, Action::Copy, &decided.record.id, reason).await);
                    }
                }
            }
        }
        None => {
            let now = state.clock.now();
            for record in state.store.candidate_records(std::slice::from_ref(owner), &[]).await? {
                if &record.owner != owner || record.state != RecordState::Active || record.held_under.is_some() {
                    continue;
                }
                let view = state.store.policy_view(&record).await?;
                if let Decision::Allow(permit) =
                    kura_core::policy::decide(&caller.actor, Action::Copy, &view, None, now)
                    && is_owner_basis(&permit)
                {
                    out.push((record, permit));
                }
            }
        }
    }
    Ok(out)
}

/// Exports the caller's records (or those of the patient an agent acts for) as an archive
/// encrypted to the passphrase and signed by this server: a FHIR Bundle, every record's stored
/// content byte for byte, and a manifest with their SHA-256. Nothing changes here; see
/// `POST /api/v1/export/move` to end the records here once the archive is safe.
#[utoipa::path(post, path = "/api/v1/export", tag = "archives", request_body = api::ExportRequest,
    responses((status = 200, description = "the archive file (kura-export-<date>.kura)",
            content_type = "application/octet-stream", body = Vec<u8>,
            headers(("kura-manifest-sha256" = String, description = "SHA-256 (hex) of the archive's manifest.json"),
                ("kura-record-count" = u64, description = "how many records the archive holds"))),
        (status = 403, body = api::ErrorEnvelope), (status = 404, body = api::ErrorEnvelope),
        (status = 413, body = api::ErrorEnvelope), (status = 422, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<api::ExportRequest>,
) -> ApiResult<Response> {
    let owner = archive_owner(&caller, "exporting an archive")?;
    check_passphrase(&request.passphrase)?;
    let records = records_to_export(&state, &caller, &owner, request.records.as_deref()).await?;
    let exported = archive::export(&state, &caller, owner, &records, request.passphrase).await?;
    let filename = format!("kura-export-{}.kura", exported.exported_at.get(..10).unwrap_or("archive"));
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    let disposition = format!("attachment; filename=\"{filename}\"");
    headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).map_err(|_| ApiError::internal())?);
    headers.insert(
        MANIFEST_HASH_HEADER,
        HeaderValue::from_str(&exported.manifest_sha256).map_err(|_| ApiError::internal())?,
    );
    headers.insert(RECORD_COUNT_HEADER, HeaderValue::from(exported.count));
    Ok((headers, exported.archive).into_response())
}

/// Moves the records of an archive to it: once the patient holds the archive (the CLI writes
/// and verifies the file first), every record it holds ends here, with the locator "held by the
/// patient offline since <export time>", in one transaction. Refused (409, nothing moved) if
/// any of them changed since the export, or if the archive was moved already.
#[utoipa::path(post, path = "/api/v1/export/move", tag = "archives", request_body = api::ExportMoveRequest,
    responses((status = 200, body = api::ExportMoveResponse), (status = 404, body = api::ErrorEnvelope),
        (status = 409, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn move_to_archive(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<api::ExportMoveRequest>,
) -> ApiResult<Json<api::ExportMoveResponse>> {
    let owner = archive_owner(&caller, "moving records to an archive")?;
    let hash = request.manifest_sha256.trim().to_ascii_lowercase();
    let export = match state.store.archive_export(&hash).await? {
        Some(export) if export.owner == owner => export,
        _ => return Err(ApiError::not_found("archive")),
    };
    if export.moved_at.is_some() {
        return Err(ApiError::conflict("the records of this archive were already moved to it"));
    }
    let mut permits = Vec::with_capacity(export.records.len());
    for exported in &export.records {
        let decided = decide_on(&state, &caller, exported.record.as_str(), Action::Move, None).await?;
        let unchanged = decided.record.state == RecordState::Active
            && decided.record.version == exported.version
            && decided.record.content_hash.as_deref() == Some(exported.content_hash.as_str());
        if !unchanged {
            return Err(ApiError::conflict(format!(
                "record {} changed or ended since this archive was made; nothing was moved: export again",
                exported.record
            )));
        }
        match decided.decision {
            Decision::Allow(permit) if is_owner_basis(&permit) => permits.push((decided.record, permit)),
            Decision::Allow(_) => {
                let reason = kura_core::policy::DenyReason::NoBasis;
                return Err(deny(&state, &caller, Action::Move, &exported.record, reason).await);
            }
            Decision::Deny(reason) => return Err(deny(&state, &caller, Action::Move, &exported.record, reason).await),
        }
    }
    let locator = archive::end_at_archive(&state, &caller, &hash, &export, &permits).await?;
    Ok(Json(api::ExportMoveResponse {
        manifest_sha256: hash,
        moved: permits.iter().map(|(r, _)| r.id.to_string()).collect(),
        locator: api::LocatorView {
            destination: locator.destination,
            moved_at: time::format(locator.moved_at),
            ordered_by: locator.ordered_by,
        },
    }))
}

/// Imports an archive (the raw file as the body; its passphrase in the `Kura-Passphrase`
/// header): decrypts it, verifies the manifest's signature and every entry's SHA-256, then
/// creates its records owned by the caller (or the patient an agent acts for), content byte
/// for byte, with the archive as provenance, in one transaction. Original records imported
/// before by the same patient are skipped and listed as such.
#[utoipa::path(post, path = "/api/v1/import", tag = "archives",
    params(("kura-passphrase" = String, Header, description = "the passphrase the archive was encrypted to")),
    request_body(content = Vec<u8>, description = "the archive file", content_type = "application/octet-stream"),
    responses((status = 201, body = api::ImportResponse),
        (status = 200, description = "every record was imported before; nothing new", body = api::ImportResponse),
        (status = 403, body = api::ErrorEnvelope), (status = 409, body = api::ErrorEnvelope),
        (status = 413, body = api::ErrorEnvelope), (status = 422, body = api::ErrorEnvelope),
        (status = 503, description = "as many imports as the server takes at once are running; see Retry-After",
            body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<api::ImportResponse>)> {
    let owner = archive_owner(&caller, "importing an archive")?;
    // Each import holds its archive and a key derivation in memory; beyond the cap the caller
    // comes back later instead of the server running out of memory. The permit is held until
    // the import is answered.
    let _permit = std::sync::Arc::clone(&state.imports).try_acquire_owned().map_err(|_| {
        ApiError::busy("the server is importing as many archives as it takes at once; try again shortly", 5)
    })?;
    let passphrase = headers
        .get(PASSPHRASE_HEADER)
        .and_then(|v| String::from_utf8(v.as_bytes().to_vec()).ok())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::bad_request("send the archive's passphrase in the Kura-Passphrase header"))?;
    let bytes = axum::body::to_bytes(body, state.config.max_upload_bytes).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("archives are limited to {} bytes", state.config.max_upload_bytes),
        )
    })?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request("the body is empty: send the archive file"));
    }
    let answer = archive::import(&state, &caller, owner, bytes, passphrase).await?;
    let status = if answer.imported.is_empty() { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(answer)))
}
