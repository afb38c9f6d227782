//! The ingest sequence, written once: parse the content, seal it and store its blob, build the
//! `NewRecord`, insert it, and remove the blob again if the insert fails. Uploads, copies,
//! transfers that split a record, provider pulls, archive imports and moves in from peer
//! servers all go through it; this is the only module that builds a `NewRecord`.
//!
//! A record stored on its own goes through [`insert`]. A workflow that stores several records
//! in one transaction of its own (a transfer, a provider pull, an import, a move in) builds
//! each with [`prepare`] into one [`NewBlobs`] and hands its transaction to
//! [`NewBlobs::commit`].

use std::future::Future;

use kura_core::ids::{GrantId, OrgId, RecordId};
use kura_core::labels::Label;
use kura_core::party::Party;
use kura_core::record::{PartCategory, RecordFormat};
use kura_core::time::Timestamp;
use kura_formats::{IngestContext, Parsed};
use kura_store::StoreError;
use kura_store::model::{ContentRef, NewAudit, NewLedger, NewRecord, StoredPart, StoredValue};

use super::content;
use super::error::{ServiceError, ServiceResult};
use crate::state::AppState;

/// Parses content as an upload does: validated, split into parts, labelled. A format error
/// says what is wrong without quoting the content.
pub fn parse(
    format: RecordFormat,
    bytes: &[u8],
    institution: &str,
    now: Timestamp,
    document_category: Option<PartCategory>,
) -> ServiceResult<Parsed> {
    let ctx = IngestContext { institution, now, document_category };
    kura_formats::parse_upload(format, bytes, &ctx).map_err(content::format_error)
}

/// [`parse`] on a blocking thread, before and outside any store transaction: large content
/// takes a while.
pub async fn parse_off_thread(
    format: RecordFormat,
    bytes: impl AsRef<[u8]> + Send + 'static,
    institution: String,
    now: Timestamp,
    document_category: Option<PartCategory>,
) -> ServiceResult<Parsed> {
    tokio::task::spawn_blocking(move || parse(format, bytes.as_ref(), &institution, now, document_category))
        .await
        .map_err(|_| ServiceError::Internal)?
}

/// What parsed content gives a record: its parts, its labels and its research facts (numeric
/// values and the subject's birth date).
pub struct Ingested {
    pub parts: Vec<StoredPart>,
    pub labels: Vec<Label>,
    pub values: Vec<StoredValue>,
    pub birth_day: Option<i32>,
}

impl Ingested {
    pub fn of(parsed: Parsed) -> Self {
        let parts = parsed
            .parts
            .iter()
            .map(|p| StoredPart { index: p.index, category: p.category, resource_type: p.resource_type.clone() })
            .collect();
        let values = parsed
            .values
            .iter()
            .map(|v| StoredValue { code: v.code.clone(), value: v.value, unit: v.unit.clone() })
            .collect();
        Self { parts, labels: parsed.labels, values, birth_day: parsed.birth_day }
    }

    /// Without research facts: an in-server copy is not counted again in research.
    pub fn without_research_facts(self) -> Self {
        Self { values: Vec::new(), birth_day: None, ..self }
    }

    /// Marked patient-entered: every part's category, and the `category:` label (what an
    /// external provider sent is the patient's own account of it).
    pub fn patient_entered(self) -> ServiceResult<Self> {
        let parts =
            self.parts.into_iter().map(|part| StoredPart { category: PartCategory::PatientEntered, ..part }).collect();
        let patient_entered =
            Label::new("category", PartCategory::PatientEntered.as_str()).map_err(|_| ServiceError::Internal)?;
        let mut labels: Vec<Label> =
            self.labels.into_iter().filter(|l| !l.as_str().starts_with("category:")).chain([patient_entered]).collect();
        labels.sort();
        labels.dedup();
        Ok(Self { parts, labels, ..self })
    }
}

/// Everything a new record is made of besides its content: whose it is, where it comes from.
pub struct Draft {
    pub owner: Party,
    pub institution: OrgId,
    /// The local patient id at the institution (or what stands for it: a provider link, a move).
    pub mrn: String,
    pub format: RecordFormat,
    pub document_category: Option<PartCategory>,
    pub derived_from: Option<RecordId>,
    pub provenance: String,
    pub held_under: Option<GrantId>,
    pub created_at: Timestamp,
}

/// The blobs one operation wrote: they are removed again if the operation fails, so that no
/// sealed content outlives a write that did not happen.
#[derive(Default)]
pub struct NewBlobs(Vec<String>);

impl NewBlobs {
    /// Seals `plaintext` under a fresh data key for `record` and stores the blob.
    pub async fn seal(&mut self, state: &AppState, record: &RecordId, plaintext: &[u8]) -> ServiceResult<ContentRef> {
        let sealed = content::seal_and_store(state, record.as_str(), plaintext).await?;
        self.0.push(sealed.blob_key.clone());
        Ok(sealed)
    }

    /// The operation failed before its write: the blobs go.
    pub async fn discard(self, state: &AppState) {
        content::discard_blobs(state, self.0).await;
    }

    /// Runs the store write that makes the blobs live; if it fails, the blobs are removed and
    /// the store's error returned for the workflow to word.
    pub async fn commit<T>(
        self,
        state: &AppState,
        write: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match write.await {
            Ok(written) => Ok(written),
            Err(e) => {
                self.discard(state).await;
                Err(e)
            }
        }
    }
}

/// Seals `plaintext` as the content of the new record `id` and builds the record.
pub async fn prepare(
    state: &AppState,
    blobs: &mut NewBlobs,
    id: RecordId,
    draft: Draft,
    ingested: Ingested,
    plaintext: &[u8],
) -> ServiceResult<NewRecord> {
    let content = blobs.seal(state, &id, plaintext).await?;
    Ok(NewRecord {
        id,
        owner: draft.owner,
        institution: draft.institution,
        mrn: draft.mrn,
        format: draft.format,
        parts: ingested.parts,
        labels: ingested.labels,
        document_category: draft.document_category,
        content,
        derived_from: draft.derived_from,
        provenance: draft.provenance,
        held_under: draft.held_under,
        values: ingested.values,
        subject_birth_day: ingested.birth_day,
        created_at: draft.created_at,
    })
}

/// The sequence for a record stored on its own: sealed, built, inserted with its custody
/// ledger entry and audit entry in one transaction; the blob is removed if the insert fails.
pub async fn insert(
    state: &AppState,
    id: RecordId,
    draft: Draft,
    ingested: Ingested,
    plaintext: &[u8],
    ledger: NewLedger,
    audit: NewAudit,
) -> ServiceResult<NewRecord> {
    let mut blobs = NewBlobs::default();
    let record = prepare(state, &mut blobs, id, draft, ingested, plaintext).await?;
    blobs.commit(state, state.store.insert_record(&record, ledger, audit)).await?;
    Ok(record)
}
