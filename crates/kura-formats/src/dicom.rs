//! DICOM Part 10 files, through dicom-object. A file is one part of category `image`.

use std::panic::{AssertUnwindSafe, catch_unwind};

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use kura_core::policy::Anonymization;
use kura_core::record::PartCategory;

use crate::labels::{Date, LabelSet, age_band};
use crate::pseudonym::Pseudonymizer;
use crate::{FormatError, IngestContext, PartInfo};

fn read(bytes: &[u8]) -> Result<DefaultDicomObject, FormatError> {
    if bytes.get(128..132) != Some(b"DICM".as_slice()) {
        return Err(FormatError::Malformed("not a DICOM Part 10 file: no DICM marker at byte 128".into()));
    }
    let body = bytes.get(132..).unwrap_or_default();
    let mut with_magic = b"DICM".to_vec();
    with_magic.extend_from_slice(body);
    // The parser is third-party code facing untrusted bytes: a panic in it must not take the
    // request down with it.
    catch_unwind(AssertUnwindSafe(|| dicom_object::from_reader(with_magic.as_slice())))
        .map_err(|_| FormatError::Malformed("the DICOM file could not be parsed".into()))?
        .map_err(|e| FormatError::Malformed(format!("the DICOM file could not be parsed: {}", short(&e.to_string()))))
}

/// Parser messages name structure (tags, lengths); they are cut short all the same.
fn short(message: &str) -> String {
    message.chars().take(120).collect()
}

fn text(obj: &DefaultDicomObject, tag: Tag) -> Option<String> {
    let element = obj.element_opt(tag).ok()??;
    let value = element.to_str().ok()?;
    let trimmed = value.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

fn write(obj: &DefaultDicomObject) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    obj.write_all(&mut out).map_err(|e| {
        FormatError::Malformed(format!("the DICOM file could not be written: {}", short(&e.to_string())))
    })?;
    Ok(out)
}

pub fn parse(bytes: &[u8], ctx: &IngestContext, labels: &mut LabelSet) -> Result<Vec<PartInfo>, FormatError> {
    let obj = read(bytes)?;
    if let Some(modality) = text(&obj, tags::MODALITY) {
        labels.add("modality", &modality.to_uppercase());
    }
    if let Some(body_part) = text(&obj, tags::BODY_PART_EXAMINED) {
        labels.add("bodypart", &body_part.to_uppercase().replace(' ', "_"));
    }
    if let Some(sop_class) = text(&obj, tags::SOP_CLASS_UID) {
        labels.add("sopclass", &sop_class);
    }
    match text(&obj, tags::PATIENT_SEX).as_deref() {
        Some("M") => labels.add("sex", "male"),
        Some("F") => labels.add("sex", "female"),
        Some("O") => labels.add("sex", "other"),
        _ => {}
    }
    let study_date = text(&obj, tags::STUDY_DATE)
        .and_then(|d| Date::parse(&d))
        .unwrap_or_else(|| Date::from_millis(ctx.now.as_millis()));
    let age = text(&obj, tags::PATIENT_BIRTH_DATE)
        .and_then(|d| Date::parse(&d))
        .and_then(|birth| birth.age_at(study_date))
        .or_else(|| text(&obj, tags::PATIENT_AGE).and_then(|a| a.strip_suffix('Y').and_then(|y| y.parse().ok())));
    if let Some(age) = age {
        labels.add("ageband", &age_band(age));
    }
    Ok(vec![PartInfo { index: 0, category: PartCategory::Image, resource_type: "ImagingStudy".into() }])
}

fn put_text(obj: &mut DefaultDicomObject, tag: Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

pub fn deidentify(bytes: &[u8], level: Anonymization, keyed: &Pseudonymizer) -> Result<Vec<u8>, FormatError> {
    let mut obj = read(bytes)?;
    let patient_id = text(&obj, tags::PATIENT_ID).unwrap_or_default();
    for tag in [
        // Other Patient IDs (0010,1000): retired from the standard, still found in old files.
        Tag(0x0010, 0x1000),
        tags::OTHER_PATIENT_I_DS_SEQUENCE,
        tags::PATIENT_ADDRESS,
        tags::PATIENT_TELEPHONE_NUMBERS,
        tags::PATIENT_BIRTH_NAME,
        tags::PATIENT_MOTHER_BIRTH_NAME,
        tags::PATIENT_BIRTH_TIME,
    ] {
        obj.remove_element(tag);
    }
    let pseudonym = keyed.name("PATIENT", &patient_id);
    put_text(&mut obj, tags::PATIENT_NAME, VR::PN, &pseudonym);
    match level {
        Anonymization::Anonymized => {
            put_text(&mut obj, tags::PATIENT_ID, VR::LO, "");
            obj.remove_element(tags::PATIENT_BIRTH_DATE);
        }
        _ => {
            put_text(&mut obj, tags::PATIENT_ID, VR::LO, &keyed.token("patient-id", &patient_id));
            if let Some(year) = text(&obj, tags::PATIENT_BIRTH_DATE).and_then(|d| d.get(..4).map(str::to_owned)) {
                put_text(&mut obj, tags::PATIENT_BIRTH_DATE, VR::DA, &format!("{year}0101"));
            }
        }
    }
    put_text(&mut obj, tags::PATIENT_IDENTITY_REMOVED, VR::CS, "YES");
    put_text(&mut obj, tags::DEIDENTIFICATION_METHOD, VR::LO, "Kura minimal patient identifier removal");
    write(&obj)
}

const STAFF_TAGS: [(Tag, VR, &str); 9] = [
    (tags::REFERRING_PHYSICIAN_NAME, VR::PN, "Practitioner"),
    (tags::PERFORMING_PHYSICIAN_NAME, VR::PN, "Practitioner"),
    (tags::OPERATORS_NAME, VR::PN, "Practitioner"),
    (tags::NAME_OF_PHYSICIANS_READING_STUDY, VR::PN, "Practitioner"),
    (tags::PHYSICIANS_OF_RECORD, VR::PN, "Practitioner"),
    (tags::INSTITUTION_NAME, VR::LO, "Organization"),
    (tags::INSTITUTION_ADDRESS, VR::ST, "Address"),
    (tags::INSTITUTIONAL_DEPARTMENT_NAME, VR::LO, "Department"),
    (tags::STATION_NAME, VR::SH, "Station"),
];

pub fn anonymize_staff(bytes: &[u8], keyed: &Pseudonymizer) -> Result<Vec<u8>, FormatError> {
    let mut obj = read(bytes)?;
    for (tag, vr, prefix) in STAFF_TAGS {
        if let Some(value) = text(&obj, tag) {
            let pseudonym = keyed.name(prefix, &value.to_lowercase());
            // SH holds at most 16 characters.
            let pseudonym: String = if vr == VR::SH { pseudonym.chars().take(16).collect() } else { pseudonym };
            put_text(&mut obj, tag, vr, &pseudonym);
        }
    }
    write(&obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_core::time::Timestamp;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/../../fixtures/dicom/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn labels_of(bytes: &[u8]) -> Vec<String> {
        let ctx = IngestContext { institution: "h", now: Timestamp::from_millis(0), document_category: None };
        let mut labels = LabelSet::default();
        parse(bytes, &ctx, &mut labels).unwrap();
        labels.into_sorted().iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn fixtures_parse_with_labels() {
        let ct = labels_of(&fixture("CT_small.dcm"));
        assert!(ct.contains(&"modality:CT".to_owned()), "{ct:?}");
        assert!(ct.iter().any(|l| l.starts_with("sopclass:1.2.840.10008.5.1.4.1.1.2")), "{ct:?}");
        let mr = labels_of(&fixture("MR_small.dcm"));
        assert!(mr.contains(&"modality:MR".to_owned()), "{mr:?}");
    }

    #[test]
    fn broken_files_are_refused() {
        let ctx = IngestContext { institution: "h", now: Timestamp::from_millis(0), document_category: None };
        let mut labels = LabelSet::default();
        assert!(parse(b"DICM", &ctx, &mut labels).is_err());
        let truncated: Vec<u8> = fixture("MR_small.dcm").into_iter().take(400).collect();
        assert!(parse(&truncated, &ctx, &mut labels).is_err());
        let mut garbage = vec![0u8; 128];
        garbage.extend_from_slice(b"DICM");
        garbage.extend_from_slice(&[0xff; 64]);
        assert!(parse(&garbage, &ctx, &mut labels).is_err());
    }

    #[test]
    fn deidentified_files_lose_the_patients_identity() {
        for name in ["CT_small.dcm", "MR_small.dcm"] {
            let bytes = fixture(name);
            let original = read(&bytes).unwrap();
            let patient_name = text(&original, tags::PATIENT_NAME).unwrap();
            let keyed = Pseudonymizer::new(b"context-key-0123");
            for level in [Anonymization::Pseudonymized, Anonymization::Anonymized] {
                let out = deidentify(&bytes, level, &keyed).unwrap();
                let obj = read(&out).unwrap();
                assert_ne!(text(&obj, tags::PATIENT_NAME), Some(patient_name.clone()), "{name}");
                assert_eq!(text(&obj, tags::PATIENT_IDENTITY_REMOVED).as_deref(), Some("YES"));
                let birth = text(&obj, tags::PATIENT_BIRTH_DATE);
                match level {
                    Anonymization::Anonymized => assert_eq!(birth, None),
                    _ => assert!(birth.is_none_or(|b| b.ends_with("0101")), "{name}"),
                }
                assert_eq!(deidentify(&bytes, level, &keyed).unwrap(), out, "deterministic");
            }
        }
    }

    #[test]
    fn staff_tags_are_pseudonymized() {
        let bytes = fixture("CT_small.dcm");
        let original = read(&bytes).unwrap();
        let out = read(&anonymize_staff(&bytes, &Pseudonymizer::new(b"institution-key!")).unwrap()).unwrap();
        for (tag, _, _) in STAFF_TAGS {
            if let Some(before) = text(&original, tag) {
                assert_ne!(text(&out, tag), Some(before));
            }
        }
    }
}
