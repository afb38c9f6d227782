//! Everything that knows the bytes of FHIR R4 JSON, DICOM Part 10 and PDF: validating uploads,
//! cutting them into parts with categories, extracting labels (DESIGN.md section 2), selecting
//! parts, and the de-identification transforms that grants and transfers oblige.
//!
//! This crate does no IO and never logs. Its errors name positions and fields, never the content
//! they were found in.

mod dicom;
mod fhir;
mod labels;
mod pdf;
mod pseudonym;

use kura_core::labels::Label;
use kura_core::policy::Anonymization;
use kura_core::record::{CategorySet, PartCategory, RecordFormat};
use kura_core::time::Timestamp;

pub use fhir::category_of_resource_type;

/// Why content was refused. Messages never quote content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("malformed content: {0}")]
    Malformed(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// The format an upload's `Content-Type` names (parameters and case are ignored).
pub fn format_for_content_type(content_type: &str) -> Option<RecordFormat> {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/fhir+json" | "application/json" => Some(RecordFormat::Fhir),
        "application/dicom" => Some(RecordFormat::Dicom),
        "application/pdf" => Some(RecordFormat::Pdf),
        _ => None,
    }
}

/// What ingest knows besides the bytes.
pub struct IngestContext<'a> {
    /// The uploading institution's id, for the `institution:` label.
    pub institution: &'a str,
    /// Used for age bands when the content carries no date of its own.
    pub now: Timestamp,
    /// For PDF: `Certificate` or `Document` (the default).
    pub document_category: Option<PartCategory>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub index: u32,
    pub category: PartCategory,
    pub resource_type: String,
}

/// An upload, validated: its parts and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub format: RecordFormat,
    pub parts: Vec<PartInfo>,
    /// Sorted and without duplicates.
    pub labels: Vec<Label>,
}

/// Validates and parses an upload.
pub fn parse_upload(format: RecordFormat, bytes: &[u8], ctx: &IngestContext) -> Result<Parsed, FormatError> {
    let mut labels = labels::LabelSet::default();
    labels.add("format", format.as_str());
    labels.add("institution", ctx.institution);
    let parts = match format {
        RecordFormat::Fhir => fhir::parse(bytes, ctx, &mut labels)?,
        RecordFormat::Dicom => dicom::parse(bytes, ctx, &mut labels)?,
        RecordFormat::Pdf => pdf::parse(bytes, ctx, &mut labels)?,
    };
    for part in &parts {
        labels.add("category", part.category.as_str());
        labels.add("type", &part.resource_type);
    }
    Ok(Parsed { format, parts, labels: labels.into_sorted() })
}

/// The content restricted to the parts whose category is in `keep`, in the same format; `None`
/// when no part is kept.
pub fn select_parts(
    format: RecordFormat,
    bytes: &[u8],
    keep: CategorySet,
    document_category: Option<PartCategory>,
) -> Result<Option<Vec<u8>>, FormatError> {
    let single = |category: PartCategory| Ok(keep.contains(category).then(|| bytes.to_vec()));
    match format {
        RecordFormat::Fhir => fhir::select(bytes, keep),
        RecordFormat::Dicom => single(PartCategory::Image),
        RecordFormat::Pdf => single(document_category.unwrap_or(PartCategory::Document)),
    }
}

/// Content after an anonymization obligation, or the reason it cannot be given out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deidentified {
    Content(Vec<u8>),
    Withheld { reason: &'static str },
}

/// Applies an anonymization level. `context_key` keys every pseudonym and date shift, so the same
/// input under the same key gives the same output, and different keys give unlinkable ones.
///
/// This is the minimal unit of the foundation: direct identifiers of the patient removed or
/// pseudonymized and the birth date reduced to the year. Documents are withheld below `None`
/// because their content cannot be checked.
pub fn deidentify(
    format: RecordFormat,
    bytes: &[u8],
    level: Anonymization,
    context_key: &[u8],
) -> Result<Deidentified, FormatError> {
    if level == Anonymization::None {
        return Ok(Deidentified::Content(bytes.to_vec()));
    }
    let keyed = pseudonym::Pseudonymizer::new(context_key);
    match format {
        RecordFormat::Fhir => fhir::deidentify(bytes, level, &keyed).map(Deidentified::Content),
        RecordFormat::Dicom => dicom::deidentify(bytes, level, &keyed).map(Deidentified::Content),
        RecordFormat::Pdf => Ok(Deidentified::Withheld {
            reason: "documents cannot be proven free of identifiers; they are delivered only without anonymization",
        }),
    }
}

/// Replaces the names of the institution and its staff with stable pseudonyms (transfer
/// agreement `anonymize_staff`).
pub fn anonymize_staff(
    format: RecordFormat,
    bytes: &[u8],
    institution_name: &str,
    key: &[u8],
) -> Result<Vec<u8>, FormatError> {
    let keyed = pseudonym::Pseudonymizer::new(key);
    match format {
        RecordFormat::Fhir => fhir::anonymize_staff(bytes, institution_name, &keyed),
        RecordFormat::Dicom => dicom::anonymize_staff(bytes, &keyed),
        RecordFormat::Pdf => Err(FormatError::Unsupported(
            "staff names cannot be found in PDF documents; transfer documents without anonymize_staff".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let check =
            |ct: &str, expected: Option<RecordFormat>| assert_eq!(format_for_content_type(ct), expected, "{ct}");
        check("application/fhir+json", Some(RecordFormat::Fhir));
        check("Application/FHIR+JSON; charset=utf-8", Some(RecordFormat::Fhir));
        check("application/json", Some(RecordFormat::Fhir));
        check("application/dicom", Some(RecordFormat::Dicom));
        check("application/pdf", Some(RecordFormat::Pdf));
        check("text/plain", None);
        check("", None);
    }
}
