//! Everything that knows the bytes of FHIR R4 JSON, DICOM Part 10 and PDF: validating uploads,
//! cutting them into parts with categories, extracting labels (DESIGN.md section 2), selecting
//! parts for a grant's scope, and the transforms that grants and transfers oblige
//! (de-identification of the patient, pseudonyms for the institution's staff).
//!
//! This crate must never do IO and never log. Record content is health data: errors name
//! positions, field names and limits but never quote content, and no type here prints content in
//! its `Debug` output. No input, however malformed, may make it panic or exhaust memory.

mod dates;
mod dicom;
mod error;
mod fhir;
mod labels;
mod pdf;
mod pdf_text;
mod pseudonym;
mod scrub;
mod terms;

use kura_core::labels::Label;
use kura_core::policy::Anonymization;
use kura_core::record::{CategorySet, PartCategory, RecordFormat};
use kura_core::time::Timestamp;

pub use dicom::profile as dicom_profile;
pub use error::FormatError;
pub use fhir::category_of_resource_type;
pub use pseudonym::MIN_KEY_BYTES;

/// The format an upload's `Content-Type` names. Parameters (`; charset=utf-8`) and case are
/// ignored.
///
/// | media type | format |
/// | --- | --- |
/// | `application/fhir+json`, `application/json` | FHIR |
/// | `application/dicom` | DICOM |
/// | `application/pdf` | PDF |
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
#[derive(Debug, Clone, Copy)]
pub struct IngestContext<'a> {
    /// The uploading institution's id; it becomes the label `institution:<id>`.
    pub institution: &'a str,
    /// The date age bands are computed at when the content carries no date of its own.
    pub now: Timestamp,
    /// The category of a PDF: `Certificate` or `Document` (the default when `None`);
    /// `PatientEntered` is accepted too. Ignored for FHIR and DICOM, whose content says what
    /// it is.
    pub document_category: Option<PartCategory>,
}

/// One part of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// The part's position in the record: the n-th resource of a Bundle (entries without a
    /// resource are not counted), 0 for single-part records.
    pub index: u32,
    pub category: PartCategory,
    /// The FHIR resource type, or `DICOM` / `PDF` for those formats.
    pub resource_type: String,
}

/// An upload, validated: its parts, labels and numeric observation values.
#[derive(Clone, PartialEq)]
pub struct Parsed {
    pub format: RecordFormat,
    pub parts: Vec<PartInfo>,
    /// Sorted and without duplicates.
    pub labels: Vec<Label>,
    /// The numeric results the content carries, in the order they appear, for range filters
    /// (`loinc:4548-4 > 7.0`). Only FHIR has them.
    pub values: Vec<ObservedValue>,
    /// The birth date of the person the content is about (days since 1970-01-01), for age
    /// ranges in research search.
    pub birth_day: Option<i32>,
}

/// Labels and values are health data (`icd10:E11`, `sex:female`), so `Debug` counts them
/// instead of printing them.
impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parsed")
            .field("format", &self.format)
            .field("parts", &self.parts)
            .field("labels", &format_args!("<{} labels>", self.labels.len()))
            .field("values", &format_args!("<{} values>", self.values.len()))
            .finish()
    }
}

/// One numeric result: an Observation's `valueQuantity`, or a component's (the systolic and
/// diastolic parts of a blood pressure panel).
#[derive(Clone, PartialEq)]
pub struct ObservedValue {
    /// What was measured: the first LOINC coding of the observation's (or component's) code,
    /// else its first SNOMED CT one (`loinc:4548-4`).
    pub code: Label,
    /// Always finite.
    pub value: f64,
    /// The Quantity's `code` (UCUM, `mm[Hg]`), else its `unit`, else empty.
    pub unit: String,
}

/// The value is the health data here; `Debug` shows only what was measured.
impl std::fmt::Debug for ObservedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedValue").field("code", &self.code.as_str()).finish_non_exhaustive()
    }
}

/// Validates and parses an upload into parts and labels.
///
/// - FHIR: a single resource (one part) or a Bundle (one part per entry that has a resource; a
///   Bundle without any is an error). Categories follow [`category_of_resource_type`].
/// - DICOM: one part, category `Image`, resource type `DICOM`.
/// - PDF: one part, category `ctx.document_category` (default `Document`), resource type `PDF`.
///
/// Labels: `format:`, `institution:`, `category:` of every part, `type:` of every resource type
/// (DICOM gives `type:ImagingStudy`, PDF `type:DocumentReference`), the codings the content
/// carries (`snomed:`, `loinc:`, `rxnorm:`, `icd10:` at every level, `cvx:`, `atc:`), the
/// patient's `sex:` and `ageband:`. FHIR ImagingStudies add `modality:` and `bodypart:` of
/// their series. DICOM adds `modality:`, `bodypart:`, `sopclass:` and `studyterm:` (words of
/// the study and series descriptions). PDF adds, for the conditions its text names in English
/// or Japanese, `term:` (`term:hypertension`) and their SNOMED CT and ICD-10 codes.
///
/// Values: one [`ObservedValue`] per FHIR Observation `valueQuantity` (and per component's)
/// whose code has a LOINC or SNOMED CT coding; none for DICOM and PDF.
pub fn parse_upload(format: RecordFormat, bytes: &[u8], ctx: &IngestContext) -> Result<Parsed, FormatError> {
    let mut labels = labels::LabelSet::default();
    if !labels.add("institution", ctx.institution) {
        return Err(FormatError::InvalidInstitution);
    }
    labels.add("format", format.as_str());
    let mut values = Vec::new();
    let mut birth_date = None;
    let parts = match format {
        RecordFormat::Fhir => fhir::parse(bytes, ctx, &mut labels, &mut values, &mut birth_date)?,
        RecordFormat::Dicom => dicom::parse(bytes, ctx, &mut labels, &mut birth_date)?,
        RecordFormat::Pdf => pdf::parse(bytes, ctx, &mut labels)?,
    };
    for part in &parts {
        labels.add("category", part.category.as_str());
    }
    let birth_day = birth_date.map(dates::days_from_civil).and_then(|d| i32::try_from(d).ok());
    Ok(Parsed { format, parts, labels: labels.into_sorted(), values, birth_day })
}

/// The content restricted to the parts whose category is in `keep`, in the same format, or
/// `None` when no part is kept.
///
/// A FHIR Bundle becomes a new Bundle with the same `resourceType`, `id`, `type`, `meta`,
/// `identifier` and `timestamp` and only the kept entries, in their order (its `total`, `link`
/// and `signature` described the original and are dropped). A single-part record is returned
/// unchanged if its category is kept. `document_category` is the PDF's category as given at
/// ingest.
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

/// Content after an anonymization obligation, or why it cannot be given out.
#[derive(Clone, PartialEq, Eq)]
pub enum Deidentified {
    Content(Vec<u8>),
    Withheld { reason: &'static str },
}

/// The content stays out of `Debug`, even de-identified.
impl std::fmt::Debug for Deidentified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Deidentified::Content(bytes) => write!(f, "Content(<{} bytes>)", bytes.len()),
            Deidentified::Withheld { reason } => f.debug_struct("Withheld").field("reason", reason).finish(),
        }
    }
}

/// Why PDFs are withheld from anonymized releases.
pub const DOCUMENTS_WITHHELD: &str =
    "documents cannot be proven free of identifiers; they are delivered only without anonymization";

/// Applies an anonymization obligation: the anonymization unit.
///
/// `context_key` (at least [`MIN_KEY_BYTES`] bytes) keys every pseudonym and date shift: the same
/// input under the same key gives the same output, and pseudonyms under different keys (a
/// grant's, a study's) cannot be linked.
///
/// - FHIR `Pseudonymized`: the patient's direct identifiers become keyed pseudonyms (names,
///   identifiers anywhere, ids and every reference), telecom, photo, contacts and address lines
///   go, the birth date keeps its year, narrative and attachments' documents go, and free text is
///   scrubbed of the patient's names and identifiers and of anything shaped like an e-mail
///   address, URL, IP address or phone / record number.
/// - FHIR `Anonymized`: an allow-list per resource type (see the `fhir::deid` module); everything
///   else goes, including narrative, notes, free text and unknown extensions; dates move by a
///   per-patient, per-context number of days; birth dates keep the year (none over 89); postal
///   codes keep three digits; staff and organisation names become pseudonyms.
/// - DICOM: the PS3.15 Basic Application Level Confidentiality Profile (`Anonymized`), or the
///   profile with the full-dates and patient-characteristics options and keyed patient
///   pseudonyms (`Pseudonymized`); UIDs are remapped per context; an image with burned-in
///   annotation is withheld when anonymized.
/// - PDF: withheld, see [`DOCUMENTS_WITHHELD`].
///
/// At `None` the content is returned unchanged (and the key is not used).
pub fn deidentify(
    format: RecordFormat,
    bytes: &[u8],
    level: Anonymization,
    context_key: &[u8],
) -> Result<Deidentified, FormatError> {
    if level == Anonymization::None {
        return Ok(Deidentified::Content(bytes.to_vec()));
    }
    let keyed = pseudonym::Pseudonymizer::new(context_key)?;
    match format {
        RecordFormat::Fhir => fhir::deid::deidentify(bytes, level, &keyed).map(Deidentified::Content),
        RecordFormat::Dicom => dicom::deid::deidentify(bytes, level, &keyed),
        RecordFormat::Pdf => Ok(Deidentified::Withheld { reason: DOCUMENTS_WITHHELD }),
    }
}

/// Where identifiers remain in FHIR or DICOM content, as `(path or attribute, what)` pairs that
/// never quote the values: what `kura deid check` reports.
pub fn residual_identifiers(format: RecordFormat, bytes: &[u8]) -> Result<Vec<(String, &'static str)>, FormatError> {
    match format {
        RecordFormat::Fhir => fhir::deid::residual_identifiers(bytes),
        RecordFormat::Dicom => dicom::deid::residual_identifiers(bytes),
        RecordFormat::Pdf => Ok(vec![("document".to_owned(), "a document cannot be checked; it is withheld")]),
    }
}

/// Rare quasi-identifiers in a released set of FHIR content (one element per patient, already
/// de-identified): a coding held by fewer than `k` patients is generalised (ICD-10 to its
/// three-character category, when that is held by `k` or more) or removed. Returns how many
/// codings were removed.
pub fn suppress_rare_codes(released: &mut [Vec<u8>], k: usize) -> Result<usize, FormatError> {
    fhir::deid::suppress_rare_codes(released, k)
}

/// Replaces the names of the institution and its staff with stable pseudonyms, for a transfer
/// agreement with `anonymize_staff`. `key` (at least [`MIN_KEY_BYTES`] bytes) keys them: the
/// same name gives the same pseudonym (`Practitioner-3KX9QF2A`, `Organization-7HQ2M1ZP`).
///
/// - FHIR: Practitioner, PractitionerRole, Organization and Location resources get a
///   pseudonym for their `name` and lose `telecom`, `address`, `alias`, `photo`, `contact` and
///   narrative; every Reference to one of them (by `reference` or `type`, including
///   conditional references like `Practitioner?identifier=...`) gets a pseudonym `display`;
///   and `institution_name` (case-insensitive, when at least 3 characters) is replaced inside
///   every string.
/// - DICOM: ReferringPhysicianName, PerformingPhysicianName, OperatorsName,
///   NameOfPhysiciansReadingStudy, PhysiciansOfRecord, InstitutionName, InstitutionAddress,
///   InstitutionalDepartmentName and StationName become pseudonyms, in nested sequences too.
/// - PDF: refused with [`FormatError::Unsupported`]; staff names cannot be found in documents.
pub fn anonymize_staff(
    format: RecordFormat,
    bytes: &[u8],
    institution_name: &str,
    key: &[u8],
) -> Result<Vec<u8>, FormatError> {
    let keyed = pseudonym::Pseudonymizer::new(key)?;
    match format {
        RecordFormat::Fhir => fhir::staff::anonymize_staff(bytes, institution_name, &keyed),
        RecordFormat::Dicom => dicom::staff::anonymize_staff(bytes, &keyed),
        RecordFormat::Pdf => Err(FormatError::Unsupported("staff names cannot be found in PDF documents".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_map_to_formats() {
        let check =
            |ct: &str, expected: Option<RecordFormat>| assert_eq!(format_for_content_type(ct), expected, "{ct}");
        check("application/fhir+json", Some(RecordFormat::Fhir));
        check("Application/FHIR+JSON; charset=utf-8", Some(RecordFormat::Fhir));
        check("application/json;charset=UTF-8", Some(RecordFormat::Fhir));
        check(" application/dicom ", Some(RecordFormat::Dicom));
        check("application/pdf", Some(RecordFormat::Pdf));
        check("APPLICATION/PDF; name=x.pdf", Some(RecordFormat::Pdf));
        check("application/xml", None);
        check("text/plain", None);
        check("application/pdfx", None);
        check("", None);
    }

    #[test]
    fn debug_output_holds_no_content() {
        let check = |debug: String, must_not_contain: &str| {
            assert!(!debug.contains(must_not_contain), "{debug}");
        };
        let parsed = Parsed {
            format: RecordFormat::Fhir,
            parts: vec![PartInfo { index: 0, category: PartCategory::Condition, resource_type: "Condition".into() }],
            labels: vec![Label::parse("icd10:E11").unwrap()],
            values: vec![ObservedValue { code: Label::parse("loinc:4548-4").unwrap(), value: 7.25, unit: "%".into() }],
            birth_day: Some(-3000),
        };
        check(format!("{parsed:?}"), "E11");
        check(format!("{parsed:?}"), "7.25");
        check(format!("{parsed:?}"), "3000");
        check(format!("{:?}", parsed.values), "7.25");
        assert_eq!(format!("{:?}", parsed.values), r#"[ObservedValue { code: "loinc:4548-4", .. }]"#);
        check(format!("{:?}", Deidentified::Content(b"Freda O'Connell".to_vec())), "Freda");
        assert_eq!(format!("{:?}", Deidentified::Content(vec![1, 2, 3])), "Content(<3 bytes>)");
    }

    #[test]
    fn short_keys_are_refused_before_the_content_is_read() {
        let check = |result: Result<(), FormatError>| assert_eq!(result, Err(FormatError::KeyTooShort));
        check(deidentify(RecordFormat::Pdf, b"", Anonymization::Anonymized, b"short").map(drop));
        check(deidentify(RecordFormat::Fhir, b"{}", Anonymization::Pseudonymized, b"short").map(drop));
        check(anonymize_staff(RecordFormat::Fhir, b"{}", "Aoba", b"").map(drop));
        // Without anonymization there is nothing to key.
        let unchanged = deidentify(RecordFormat::Fhir, b"{}", Anonymization::None, b"");
        assert_eq!(unchanged, Ok(Deidentified::Content(b"{}".to_vec())));
    }

    #[test]
    fn an_institution_id_that_is_no_label_is_refused() {
        let ctx = IngestContext { institution: "has space", now: Timestamp::from_millis(0), document_category: None };
        let pdf = b"%PDF-1.4\n%%EOF\n";
        assert_eq!(parse_upload(RecordFormat::Pdf, pdf, &ctx).map(drop), Err(FormatError::InvalidInstitution));
    }
}
