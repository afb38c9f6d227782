//! Removable media (issue 5): exporting a patient's records as an encrypted, signed archive,
//! ending them here once the archive holds them, and importing an archive. The format is
//! `crate::archive` (docs/portability-archive.md); the handlers (`routes/archive.rs`) decide
//! which records the caller may export or move, and hand over the permits.

use kura_api_types as api;
use kura_core::custody::CustodyEvent;
use kura_core::ids::OrgId;
use kura_core::party::{OrgKind, Party};
use kura_core::policy::Permit;
use kura_core::record::{PartCategory, RecordFormat};
use kura_store::StoreError;
use kura_store::model::*;
use serde_json::json;

use super::audit::{AuditExt, audit_entry};
use super::error::{Refusal, ServiceError, ServiceResult};
use super::records::check_local_id;
use super::{content, ids, ingest};
use crate::archive::{self as format, ArchiveError, Entry, category_from_api, category_to_api};
use crate::auth::Caller;
use crate::state::AppState;
use crate::time;

/// An archive made for export.
pub struct ExportedArchive {
    /// The archive file.
    pub archive: Vec<u8>,
    pub manifest_sha256: String,
    /// How many records it holds.
    pub count: usize,
    /// When it was made (RFC 3339).
    pub exported_at: String,
}

/// Exports `records` (each with the permit that opens it) of `owner` as an archive encrypted
/// to `passphrase` and signed by this server, and remembers the export (to move its records
/// later, if unchanged).
pub async fn export(
    state: &AppState,
    caller: &Caller,
    owner: Party,
    records: &[(RecordRow, Permit)],
    passphrase: String,
) -> ServiceResult<ExportedArchive> {
    if records.is_empty() {
        return Err(ServiceError::Invalid("there is nothing to export: no active record of yours is here".into()));
    }
    let total: i64 = records.iter().map(|(r, _)| r.size).sum();
    if total > i64::try_from(state.config.max_upload_bytes).unwrap_or(i64::MAX) {
        return Err(ServiceError::Refused {
            why: Refusal::TooLarge,
            code: "archive_too_large",
            message: format!(
                "these records hold {total} bytes, more than one archive may ({} bytes); export them in parts with `records`",
                state.config.max_upload_bytes
            ),
        });
    }
    let now = state.clock.now();
    let exported_at = time::format(now);
    let mut entries = Vec::with_capacity(records.len() + 3);
    let mut listed = Vec::with_capacity(records.len());
    let mut fhir = Vec::new();
    let mut exported = Vec::with_capacity(records.len());
    for (record, permit) in records {
        let bytes = content::open(state, permit).await?;
        let institution = state.store.org(&record.institution).await?.ok_or(ServiceError::Internal)?;
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
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).map_err(|_| ServiceError::Internal)?;
    let manifest_sha256 = content::sha256_hex(&manifest_bytes);
    let signature = state.identity.sign(&manifest_bytes);
    entries.insert(0, Entry { name: format::BUNDLE_ENTRY.to_owned(), data: bundle });
    entries.push(Entry { name: format::MANIFEST_ENTRY.to_owned(), data: manifest_bytes });
    entries.push(Entry { name: format::SIGNATURE_ENTRY.to_owned(), data: signature.into_bytes() });
    let archive = tokio::task::spawn_blocking(move || format::seal(&entries, &passphrase))
        .await
        .map_err(|_| ServiceError::Internal)?
        .map_err(|e| {
            tracing::error!(error = %e, "sealing an archive failed");
            ServiceError::Internal
        })?;
    // The bundle repeats the FHIR content: the whole file must still fit an import elsewhere.
    if archive.len() > state.config.max_upload_bytes {
        return Err(ServiceError::Refused {
            why: Refusal::TooLarge,
            code: "archive_too_large",
            message: format!(
                "the archive would have {} bytes, more than one import may ({} bytes); export the records in parts with `records`",
                archive.len(),
                state.config.max_upload_bytes
            ),
        });
    }
    let audit: Vec<NewAudit> = records
        .iter()
        .map(|(record, _)| {
            audit_entry(caller, now, "export", "done").record(&record.id).detail(format!("archive {manifest_sha256}"))
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
    Ok(ExportedArchive { archive, manifest_sha256, count, exported_at })
}

/// Ends the records of `export` here (each with the permit to move it, checked unchanged by
/// the handler) with the locator "held by the patient offline since <export time>", in one
/// transaction; returns the locator.
pub async fn end_at_archive(
    state: &AppState,
    caller: &Caller,
    hash: &str,
    export: &ArchiveExport,
    permits: &[(RecordRow, Permit)],
) -> ServiceResult<Locator> {
    let now = state.clock.now();
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
            audit: audit_entry(caller, now, "move", "done").record(&record.id).detail(format!("to archive {hash}")),
        })
        .collect();
    let blobs = state.store.move_to_archive(hash, &ends, &locator).await.map_err(|e| match e {
        StoreError::Conflict(why) => ServiceError::Conflict(format!("{why}; nothing was moved")),
        other => other.into(),
    })?;
    content::discard_blobs(state, blobs).await;
    tracing::info!(archive = %hash, records = ends.len(), "records moved to an archive");
    Ok(locator)
}

/// Imports an archive for `owner`: decrypts it, verifies the manifest's signature and every
/// entry's SHA-256, then creates its records owned by `owner`, content byte for byte, with the
/// archive as provenance, in one transaction. Original records `owner` imported before are
/// skipped and listed as such.
pub async fn import(
    state: &AppState,
    caller: &Caller,
    owner: Party,
    bytes: impl AsRef<[u8]> + Send + 'static,
    passphrase: String,
) -> ServiceResult<api::ImportResponse> {
    let verified =
        tokio::task::spawn_blocking(move || format::open(bytes.as_ref(), &passphrase).and_then(format::verify))
            .await
            .map_err(|_| ServiceError::Internal)?
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
    let result: ServiceResult<()> = async {
        for p in prepared {
            let (format, institution, category) = (p.format, p.institution.to_string(), p.document_category);
            let parsed = ingest::parse_off_thread(format, p.bytes.clone(), institution, now, category).await.map_err(
                |e| match e {
                    ServiceError::Invalid(why) => {
                        ServiceError::Invalid(format!("the archive's record {} does not read: {why}", p.original.id))
                    }
                    other => other,
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
                ingest::prepare(state, &mut blobs, id.clone(), draft, ingest::Ingested::of(parsed), &p.bytes).await?;
            let ledger = NewLedger {
                event: CustodyEvent::Imported,
                from_owner: None,
                to_owner: owner.clone(),
                transfer: None,
                actor: caller.audit_actor(),
                at: now,
                note: provenance,
            };
            let audit = audit_entry(caller, now, "import", "done").record(&id).detail(format!(
                "original record {} of {}; archive {}",
                p.original.id, manifest.server.name, verified.manifest_sha256
            ));
            items.push(ImportedRecord { original_id: p.original.id, record, ledger, audit });
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        blobs.discard(state).await;
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
        if let Err(e) = blobs.commit(state, state.store.import_archive(&import)).await {
            return Err(match e {
                StoreError::Conflict(why) => ServiceError::Conflict(why.into()),
                other => other.into(),
            });
        }
    }
    tracing::info!(archive = %verified.manifest_sha256, imported = imported.len(), skipped = skipped.len(), "archive imported");
    Ok(api::ImportResponse {
        manifest_sha256: verified.manifest_sha256.clone(),
        origin_server: manifest.server.name.clone(),
        signed_by_this_server: origin_key == state.identity.public_key(),
        origin_key,
        exported_at: manifest.exported_at.clone(),
        owner: owner.to_text(),
        imported,
        skipped,
    })
}

/// What one record of a verified archive becomes here.
struct Prepared {
    original: api::ArchiveRecord,
    format: RecordFormat,
    document_category: Option<PartCategory>,
    institution: OrgId,
    bytes: Vec<u8>,
}

fn prepare(verified: &format::Verified, record: &api::ArchiveRecord) -> ServiceResult<Prepared> {
    let bad = |what: &str| ServiceError::Invalid(format!("the archive's record {}: {what}", record.id));
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

fn archive_error(e: ArchiveError) -> ServiceError {
    ServiceError::Refused { why: Refusal::Invalid, code: e.code(), message: e.to_string() }
}

fn extension(format: RecordFormat) -> &'static str {
    match format {
        RecordFormat::Fhir => "json",
        RecordFormat::Dicom => "dcm",
        RecordFormat::Pdf => "pdf",
    }
}

/// A FHIR Bundle of type `collection` with the resources of the FHIR records (a stored Bundle
/// contributes its entries' resources).
fn collection_bundle(fhir: &[Vec<u8>], timestamp: &str) -> ServiceResult<Vec<u8>> {
    let mut entries = Vec::new();
    for bytes in fhir {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| ServiceError::Internal)?;
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
    serde_json::to_vec_pretty(&bundle).map_err(|_| ServiceError::Internal)
}
