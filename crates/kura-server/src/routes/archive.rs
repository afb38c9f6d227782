//! Removable media (issue 5): export a patient's records as an encrypted, signed archive, move
//! them to it (they end here with a locator), and import an archive into any Kura server.
//! The format is in `crate::archive` and docs/portability-archive.md.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kura_api_types as api;
use kura_core::custody::CustodyEvent;
use kura_core::ids::OrgId;
use kura_core::party::{OrgKind, Party};
use kura_core::policy::{Action, Basis, Decision, Permit};
use kura_core::record::{PartCategory, RecordFormat, RecordState};
use kura_store::StoreError;
use kura_store::model::*;
use serde_json::json;

use super::ApiJson;
use super::convert::{category_from_api, category_to_api};
use super::records::check_local_id;
use super::{AuditExt, audit_entry, decide_on, deny};
use crate::archive::{self as format, ArchiveError, Entry};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::error::ServiceError;
use crate::service::{content, ids, ingest};
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

fn archive_error(e: ArchiveError) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string())
}

fn is_owner_basis(permit: &Permit) -> bool {
    matches!(permit.basis(), Basis::Owner | Basis::Delegation(_))
}

fn extension(format: RecordFormat) -> &'static str {
    match format {
        RecordFormat::Fhir => "json",
        RecordFormat::Dicom => "dcm",
        RecordFormat::Pdf => "pdf",
    }
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

/// A FHIR Bundle of type `collection` with the resources of the FHIR records (a stored Bundle
/// contributes its entries' resources).
fn collection_bundle(fhir: &[Vec<u8>], timestamp: &str) -> ApiResult<Vec<u8>> {
    let mut entries = Vec::new();
    for bytes in fhir {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| ApiError::internal())?;
        if value.get("resourceType").and_then(|t| t.as_str()) == Some("Bundle") {
            for entry in value.get("entry").and_then(|e| e.as_array()).into_iter().flatten() {
                if let Some(resource) = entry.get("resource") {
                    entries.push(json!({ "resource": resource }));
                }
            }
        } else {
            entries.push(json!({ "resource": value }));
        }
    }
    let bundle = json!({ "resourceType": "Bundle", "type": "collection", "timestamp": timestamp, "entry": entries });
    serde_json::to_vec_pretty(&bundle).map_err(|_| ApiError::internal())
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
    if records.is_empty() {
        return Err(ApiError::invalid("there is nothing to export: no active record of yours is here"));
    }
    let total: i64 = records.iter().map(|(r, _)| r.size).sum();
    if total > i64::try_from(state.config.max_upload_bytes).unwrap_or(i64::MAX) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "archive_too_large",
            format!(
                "these records hold {total} bytes, more than one archive may ({} bytes); export them in parts with `records`",
                state.config.max_upload_bytes
            ),
        ));
    }
    let now = state.clock.now();
    let exported_at = time::format(now);
    let mut entries = Vec::with_capacity(records.len() + 3);
    let mut listed = Vec::with_capacity(records.len());
    let mut fhir = Vec::new();
    let mut exported = Vec::with_capacity(records.len());
    for (record, permit) in &records {
        let bytes = content::open(&state, permit).await?;
        let institution = state.store.org(&record.institution).await?.ok_or_else(ApiError::internal)?;
        let entry = format!("records/{}.{}", record.id, extension(record.format));
        let content_sha256 = content::sha256_hex(&bytes);
        listed.push(api::ArchiveRecord {
            id: record.id.to_string(),
            format: record.format.as_str().to_owned(),
            document_category: record.document_category.map(category_to_api),
            parts: record
                .parts
                .iter()
                .map(|p| api::ArchivePart {
                    index: p.index,
                    category: category_to_api(p.category),
                    resource_type: p.resource_type.clone(),
                })
                .collect(),
            labels: record.labels.iter().map(|l| l.to_string()).collect(),
            provenance: record.provenance.clone(),
            institution: api::ArchiveInstitution { id: institution.id.to_string(), name: institution.name },
            local_patient_id: record.mrn.clone(),
            created_at: time::format(record.created_at),
            entry: entry.clone(),
            content_sha256: content_sha256.clone(),
            size: bytes.len() as u64,
        });
        exported.push(ExportedRecord {
            record: record.id.clone(),
            version: record.version,
            content_hash: content_sha256,
        });
        if record.format == RecordFormat::Fhir {
            fhir.push(bytes.clone());
        }
        entries.push(Entry { name: entry, data: bytes });
    }
    let bundle = collection_bundle(&fhir, &exported_at)?;
    let manifest = api::ArchiveManifest {
        format: format::MANIFEST_FORMAT.to_owned(),
        server: api::ArchiveServer {
            name: state.config.server_name.clone(),
            public_url: state.config.public_url.clone(),
            public_key: state.identity.public_key().to_owned(),
        },
        exported_at: exported_at.clone(),
        owner: owner.to_text(),
        bundle: api::ArchiveEntryRef { entry: format::BUNDLE_ENTRY.to_owned(), sha256: content::sha256_hex(&bundle) },
        records: listed,
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).map_err(|_| ApiError::internal())?;
    let manifest_sha256 = content::sha256_hex(&manifest_bytes);
    let signature = state.identity.sign(&manifest_bytes);
    entries.insert(0, Entry { name: format::BUNDLE_ENTRY.to_owned(), data: bundle });
    entries.push(Entry { name: format::MANIFEST_ENTRY.to_owned(), data: manifest_bytes });
    entries.push(Entry { name: format::SIGNATURE_ENTRY.to_owned(), data: signature.into_bytes() });
    let passphrase = request.passphrase;
    let archive = tokio::task::spawn_blocking(move || format::seal(&entries, &passphrase))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|e| {
            tracing::error!(error = %e, "sealing an archive failed");
            ApiError::internal()
        })?;
    // The bundle repeats the FHIR content: the whole file must still fit an import elsewhere.
    if archive.len() > state.config.max_upload_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "archive_too_large",
            format!(
                "the archive would have {} bytes, more than one import may ({} bytes); export the records in parts with `records`",
                archive.len(),
                state.config.max_upload_bytes
            ),
        ));
    }
    let audit: Vec<NewAudit> = records
        .iter()
        .map(|(record, _)| {
            audit_entry(&caller, now, "export", "done").record(&record.id).detail(format!("archive {manifest_sha256}"))
        })
        .collect();
    let count = exported.len();
    let export = ArchiveExport {
        manifest_sha256: manifest_sha256.clone(),
        owner,
        exported_by: caller.audit_actor(),
        exported_at: now,
        moved_at: None,
        records: exported,
    };
    state.store.insert_archive_export(&export, &audit).await?;
    tracing::info!(archive = %manifest_sha256, records = count, "archive exported");
    let filename = format!("kura-export-{}.kura", exported_at.get(..10).unwrap_or("archive"));
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    let disposition = format!("attachment; filename=\"{filename}\"");
    headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).map_err(|_| ApiError::internal())?);
    headers.insert(MANIFEST_HASH_HEADER, HeaderValue::from_str(&manifest_sha256).map_err(|_| ApiError::internal())?);
    headers.insert(RECORD_COUNT_HEADER, HeaderValue::from(count));
    Ok((headers, archive).into_response())
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
    let now = state.clock.now();
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
    let locator = Locator {
        destination: format!("held by the patient offline since {}", time::format(export.exported_at)),
        moved_at: now,
        ordered_by: caller.audit_actor(),
    };
    let ends: Vec<ArchiveEnd<'_>> = permits
        .iter()
        .map(|(record, permit)| ArchiveEnd {
            permit,
            expected_version: record.version,
            ledger: NewLedger {
                event: CustodyEvent::MovedOut,
                from_owner: Some(record.owner.clone()),
                to_owner: record.owner.clone(),
                transfer: None,
                actor: caller.audit_actor(),
                at: now,
                note: format!("{}; archive {hash}", locator.destination),
            },
            audit: audit_entry(&caller, now, "move", "done").record(&record.id).detail(format!("to archive {hash}")),
        })
        .collect();
    let blobs = state.store.move_to_archive(&hash, &ends, &locator).await.map_err(|e| match e {
        StoreError::Conflict(why) => ApiError::conflict(format!("{why}; nothing was moved")),
        other => other.into(),
    })?;
    content::discard_blobs(&state, blobs).await;
    tracing::info!(archive = %hash, records = ends.len(), "records moved to an archive");
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

/// What one record of a verified archive becomes here.
struct Prepared {
    original: api::ArchiveRecord,
    format: RecordFormat,
    document_category: Option<PartCategory>,
    institution: OrgId,
    bytes: Vec<u8>,
}

fn prepare(verified: &format::Verified, record: &api::ArchiveRecord) -> ApiResult<Prepared> {
    let bad = |what: &str| ApiError::invalid(format!("the archive's record {}: {what}", record.id));
    let format = RecordFormat::parse(&record.format).ok_or_else(|| bad("its format is not fhir, dicom or pdf"))?;
    let document_category = match (format, record.document_category.map(category_from_api)) {
        (RecordFormat::Pdf, None) => Some(PartCategory::Document),
        (RecordFormat::Pdf, Some(c @ (PartCategory::Document | PartCategory::Certificate))) => Some(c),
        (RecordFormat::Pdf, Some(_)) => return Err(bad("a PDF is a certificate or a document")),
        (_, Some(_)) => return Err(bad("only PDFs have a document category")),
        (_, None) => None,
    };
    let institution = OrgId::parse(&record.institution.id).map_err(|_| bad("its institution id is not valid"))?;
    if record.institution.name.trim().is_empty() || record.institution.name.len() > 200 {
        return Err(bad("its institution's name must have 1 to 200 characters"));
    }
    check_local_id(&record.local_patient_id).map_err(|_| bad("its local patient id is not valid"))?;
    let bytes = verified.entry(&record.entry).ok_or_else(|| bad("its content entry is missing"))?.to_vec();
    Ok(Prepared { original: record.clone(), format, document_category, institution, bytes })
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
    let verified = tokio::task::spawn_blocking(move || format::open(&bytes, &passphrase).and_then(format::verify))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(archive_error)?;
    let manifest = &verified.manifest;
    let origin_key = manifest.server.public_key.clone();
    let originals: Vec<String> = manifest.records.iter().map(|r| r.id.clone()).collect();
    let done = state.store.imported_originals(&owner, &origin_key, &originals).await?;
    let mut skipped = Vec::new();
    let mut prepared = Vec::new();
    for record in &manifest.records {
        if let Some((_, id)) = done.iter().find(|(original, _)| original == &record.id) {
            skipped.push(api::ImportedRecordView {
                original_id: record.id.clone(),
                id: id.to_string(),
                format: record.format.clone(),
                content_sha256: record.content_sha256.clone(),
            });
        } else if !prepared.iter().any(|p: &Prepared| p.original.id == record.id) {
            prepared.push(prepare(&verified, record)?);
        }
    }
    let now = state.clock.now();
    let exported_date = manifest.exported_at.get(..10).unwrap_or(&manifest.exported_at);
    let mut institutions: Vec<Org> = Vec::new();
    let mut items = Vec::with_capacity(prepared.len());
    let mut blobs = ingest::NewBlobs::default();
    let result: ApiResult<()> = async {
        for p in prepared {
            let (format, institution, category) = (p.format, p.institution.to_string(), p.document_category);
            let parsed = ingest::parse_off_thread(format, p.bytes.clone(), institution, now, category).await.map_err(
                |e| match e {
                    ServiceError::Invalid(why) => {
                        ApiError::invalid(format!("the archive's record {} does not read: {why}", p.original.id))
                    }
                    other => other.into(),
                },
            )?;
            if !institutions.iter().any(|o| o.id == p.institution) {
                institutions.push(Org {
                    id: p.institution.clone(),
                    name: p.original.institution.name.clone(),
                    kind: OrgKind::Institution,
                    created_at: now,
                });
            }
            let id = ids::new_record_id()?;
            let provenance = format!(
                "imported from an archive of {} ({}) exported {}; original record {}",
                manifest.server.name, origin_key, exported_date, p.original.id
            );
            let draft = ingest::Draft {
                owner: owner.clone(),
                institution: p.institution,
                mrn: p.original.local_patient_id.clone(),
                format: p.format,
                document_category: p.document_category,
                derived_from: None,
                provenance: provenance.clone(),
                held_under: None,
                created_at: now,
            };
            let record =
                ingest::prepare(&state, &mut blobs, id.clone(), draft, ingest::Ingested::of(parsed), &p.bytes).await?;
            let ledger = NewLedger {
                event: CustodyEvent::Imported,
                from_owner: None,
                to_owner: owner.clone(),
                transfer: None,
                actor: caller.audit_actor(),
                at: now,
                note: provenance,
            };
            let audit = audit_entry(&caller, now, "import", "done").record(&id).detail(format!(
                "original record {} of {}; archive {}",
                p.original.id, manifest.server.name, verified.manifest_sha256
            ));
            items.push(ImportedRecord { original_id: p.original.id, record, ledger, audit });
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        blobs.discard(&state).await;
        return Err(e);
    }
    let imported: Vec<api::ImportedRecordView> = items
        .iter()
        .map(|i| api::ImportedRecordView {
            original_id: i.original_id.clone(),
            id: i.record.id.to_string(),
            format: i.record.format.as_str().to_owned(),
            content_sha256: i.record.content.content_hash.clone(),
        })
        .collect();
    if !items.is_empty() {
        let import = ArchiveImport {
            owner: owner.clone(),
            origin_key: origin_key.clone(),
            manifest_sha256: verified.manifest_sha256.clone(),
            at: now,
            institutions,
            records: items,
        };
        if let Err(e) = blobs.commit(&state, state.store.import_archive(&import)).await {
            return Err(match e {
                StoreError::Conflict(why) => ApiError::conflict(why),
                other => other.into(),
            });
        }
    }
    tracing::info!(archive = %verified.manifest_sha256, imported = imported.len(), skipped = skipped.len(), "archive imported");
    let status = if imported.is_empty() { StatusCode::OK } else { StatusCode::CREATED };
    Ok((
        status,
        Json(api::ImportResponse {
            manifest_sha256: verified.manifest_sha256.clone(),
            origin_server: manifest.server.name.clone(),
            signed_by_this_server: origin_key == state.identity.public_key(),
            origin_key,
            exported_at: manifest.exported_at.clone(),
            owner: owner.to_text(),
            imported,
            skipped,
        }),
    ))
}
