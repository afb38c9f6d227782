//! Record content: sealing and storing new content, and opening it in exchange for a permit
//! with the permit's obligations applied.

use kura_core::policy::{Anonymization, Basis, Permit};
use kura_formats::Deidentified;
use kura_store::model::{ContentRef, RecordRow};
use sha2::{Digest, Sha256};

use super::error::{ServiceError, ServiceResult};
use crate::state::AppState;

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Seals `plaintext` under a fresh data key for `record_id` and writes the blob.
pub async fn seal_and_store(state: &AppState, record_id: &str, plaintext: &[u8]) -> ServiceResult<ContentRef> {
    let sealed = state.master.seal(record_id, plaintext).map_err(|e| {
        tracing::error!(error = %e, "sealing failed");
        ServiceError::Internal
    })?;
    let blob_key = uuid::Uuid::now_v7().simple().to_string();
    state.blobs.put(&blob_key, &sealed.ciphertext).await?;
    Ok(ContentRef {
        blob_key,
        wrapped_key: sealed.wrapped_key,
        content_hash: sha256_hex(plaintext),
        size: i64::try_from(plaintext.len()).unwrap_or(i64::MAX),
    })
}

/// Removes blobs that no longer hold live content. Failures are logged, not returned: the
/// content is already unreadable because its key is gone.
pub async fn discard_blobs(state: &AppState, keys: impl IntoIterator<Item = String>) {
    for key in keys {
        if let Err(e) = state.blobs.delete(&key).await {
            tracing::warn!(blob = %key, error = %e, "could not remove a dead blob");
        }
    }
}

/// Opens the full content of the record a permit covers. The AEAD tag already proves the
/// content is what was sealed for this record under this data key, so the stored SHA-256 is not
/// recomputed on every read (it served 4% of a read's CPU); exports and moves carry it.
pub async fn open(state: &AppState, permit: &Permit) -> ServiceResult<Vec<u8>> {
    let content = state.store.content_ref(permit).await?;
    let sealed = state.blobs.get(&content.blob_key).await?;
    let plaintext = state.master.open(permit.record().as_str(), &content.wrapped_key, sealed).map_err(|e| {
        tracing::error!(record = %permit.record(), error = %e, "content does not open");
        ServiceError::Internal
    })?;
    Ok(plaintext)
}

/// Content after a permit's obligations: parts out of scope dropped, anonymization applied.
pub struct Released {
    pub content: Option<Vec<u8>>,
    pub withheld: Option<String>,
}

/// The key that makes pseudonyms stable within one context and unlinkable across contexts: the
/// study, for a grant bound to one (a researcher sees one pseudonym per patient across the
/// study's grants), else the grant.
pub async fn pseudonym_key(state: &AppState, permit: &Permit) -> ServiceResult<[u8; 32]> {
    let context = match permit.basis() {
        Basis::Grant(id) | Basis::CopyHolder(id) => match state.store.grant(id).await?.and_then(|g| g.study) {
            Some(study) => format!("study/{study}"),
            None => format!("grant/{id}"),
        },
        Basis::Owner | Basis::Delegation(_) => "owner".to_owned(),
    };
    Ok(state.master.derive(&format!("pseudonyms/{context}")))
}

pub fn format_error(e: kura_formats::FormatError) -> ServiceError {
    ServiceError::Invalid(e.to_string())
}

/// Applies `permit`'s obligations to `plaintext` of `record`.
pub async fn release(
    state: &AppState,
    record: &RecordRow,
    permit: &Permit,
    plaintext: Vec<u8>,
) -> ServiceResult<Released> {
    let obligations = permit.obligations();
    let kept = if record.categories().is_subset_of(obligations.keep_categories) {
        Some(plaintext)
    } else {
        kura_formats::select_parts(record.format, &plaintext, obligations.keep_categories, record.document_category)
            .map_err(internal_format_error)?
    };
    let Some(kept) = kept else {
        return Ok(Released { content: None, withheld: Some("no part of this record is in the grant's scope".into()) });
    };
    if obligations.anonymization == Anonymization::None {
        return Ok(Released { content: Some(kept), withheld: None });
    }
    let key = pseudonym_key(state, permit).await?;
    match kura_formats::deidentify(record.format, &kept, obligations.anonymization, &key)
        .map_err(internal_format_error)?
    {
        Deidentified::Content(bytes) => Ok(Released { content: Some(bytes), withheld: None }),
        Deidentified::Withheld { reason } => Ok(Released { content: None, withheld: Some(reason.to_owned()) }),
    }
}

/// Opens a permitted record's content and applies the permit's obligations.
pub async fn released(state: &AppState, record: &RecordRow, permit: &Permit) -> ServiceResult<Released> {
    let plaintext = open(state, permit).await?;
    release(state, record, permit, plaintext).await
}

/// The content a copy may hold under `permit` (obligations applied); a clear refusal when the
/// obligations leave nothing.
pub async fn copyable(state: &AppState, record: &RecordRow, permit: &Permit) -> ServiceResult<Vec<u8>> {
    let released = released(state, record, permit).await?;
    released.content.ok_or_else(|| {
        ServiceError::Invalid(format!(
            "nothing can be copied: {}",
            released.withheld.unwrap_or_else(|| "the content is withheld".into())
        ))
    })
}

/// Stored content that no longer parses is our fault, not the caller's.
fn internal_format_error(e: kura_formats::FormatError) -> ServiceError {
    tracing::error!(error = %e, "stored content does not parse");
    ServiceError::Internal
}
