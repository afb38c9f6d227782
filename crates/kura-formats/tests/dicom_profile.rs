//! The DICOM de-identification checked tag by tag against the PS3.15 Basic Profile table: a file
//! carrying every attribute of the table (and a private one) goes through `anonymized`, and each
//! attribute must have met its action.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{StandardDataDictionary, tags};
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use kura_core::policy::Anonymization;
use kura_core::record::RecordFormat;
use kura_formats::dicom_profile::{Action, BASIC_PROFILE};
use kura_formats::{Deidentified, deidentify};

const KEY: &[u8] = b"dicom-profile-context-key";
const OTHER_KEY: &[u8] = b"another-context-key-here";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../../fixtures/dicom/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn read(bytes: &[u8]) -> DefaultDicomObject {
    OpenFileOptions::new().read_preamble(ReadPreamble::Always).from_reader(bytes).unwrap()
}

fn write(obj: &DefaultDicomObject) -> Vec<u8> {
    let mut out = Vec::new();
    obj.write_all(&mut out).unwrap();
    out
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = obj.get(tag)?.to_str().ok()?;
    let trimmed = value.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// A value of `vr` that identifies someone, or `None` for VRs the test does not fill.
fn identifying_value(tag: Tag, vr: VR) -> Option<DataElement<InMemDicomObject>> {
    let string = |s: &str| Some(DataElement::new(tag, vr, PrimitiveValue::from(s)));
    match vr {
        VR::PN => string("DOE^JOHN"),
        VR::DA => string("20200102"),
        VR::TM => string("101010"),
        VR::DT => string("20200102101010"),
        VR::UI => string("1.2.826.0.1.3680043.2.1125.777"),
        VR::AS => string("045Y"),
        VR::DS => string("71.5"),
        VR::IS => string("7"),
        VR::CS => string("SECRET_IDENT"),
        VR::LO | VR::SH | VR::LT | VR::ST | VR::UT | VR::UC | VR::AE => string("SECRET-IDENT"),
        VR::SQ => {
            let item = InMemDicomObject::from_element_iter([DataElement::new(
                tags::PERSON_NAME,
                VR::PN,
                PrimitiveValue::from("DOE^JANE"),
            )]);
            Some(DataElement::new(tag, VR::SQ, DataSetSequence::from(vec![item])))
        }
        _ => None,
    }
}

fn vr_of(tag: Tag) -> Option<VR> {
    match StandardDataDictionary.by_tag(tag)?.vr() {
        VirtualVr::Exact(vr) => Some(vr),
        _ => None,
    }
}

/// CT_small with every attribute of the table that has a string or sequence VR, and a private one.
fn file_with_every_attribute() -> (Vec<u8>, Vec<(Tag, Action)>) {
    let mut obj = read(&fixture("CT_small.dcm"));
    let mut planted = Vec::new();
    for (group, element, action, _) in BASIC_PROFILE {
        let tag = Tag(*group, *element);
        let Some(value) = vr_of(tag).and_then(|vr| identifying_value(tag, vr)) else { continue };
        obj.put(value);
        planted.push((tag, *action));
    }
    obj.put(DataElement::new(Tag(0x0019, 0x1010), VR::LO, PrimitiveValue::from("PRIVATE^PATIENT")));
    (write(&obj), planted)
}

fn run(bytes: &[u8], level: Anonymization, key: &[u8]) -> DefaultDicomObject {
    match deidentify(RecordFormat::Dicom, bytes, level, key).unwrap() {
        Deidentified::Content(out) => read(&out),
        Deidentified::Withheld { reason } => panic!("withheld: {reason}"),
    }
}

#[test]
fn every_attribute_of_the_basic_profile_meets_its_action() {
    let (input, planted) = file_with_every_attribute();
    assert!(planted.len() >= 180, "only {} attributes of the table planted", planted.len());
    let before = read(&input);
    let after = run(&input, Anonymization::Anonymized, KEY);
    let again = run(&input, Anonymization::Anonymized, KEY);
    let other = run(&input, Anonymization::Anonymized, OTHER_KEY);
    for (tag, action) in planted {
        let original = text(&before, tag);
        let element = after.get(tag);
        match action {
            Action::X => assert!(element.is_none(), "{tag:?} must be removed"),
            Action::Z => {
                let element = element.unwrap_or_else(|| panic!("{tag:?} must stay, empty"));
                let empty = text(&after, tag).is_none() && element.items().is_none_or(|items| items.is_empty());
                assert!(empty, "{tag:?} must be zero-length");
            }
            Action::D => {
                assert!(element.is_some(), "{tag:?} must stay with a dummy value");
                assert!(text(&after, tag) != original || original.is_none(), "{tag:?} must not keep its value");
            }
            Action::K => assert_eq!(text(&after, tag), original, "{tag:?} must be kept"),
            Action::U => {
                let uid = text(&after, tag).unwrap_or_else(|| panic!("{tag:?} must hold a new UID"));
                assert!(uid.starts_with("2.25.") && uid.len() <= 64, "{tag:?}: {uid}");
                assert_ne!(Some(uid.clone()), original, "{tag:?} must be remapped");
                assert_eq!(text(&again, tag), Some(uid.clone()), "{tag:?}: the same within a context");
                assert_ne!(text(&other, tag), Some(uid), "{tag:?}: different across contexts");
            }
        }
    }
    assert!(after.get(Tag(0x0019, 0x1010)).is_none(), "private attributes go");
    assert_eq!(text(&after, tags::PATIENT_IDENTITY_REMOVED).as_deref(), Some("YES"));
    let codes = after.get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE).and_then(|e| e.items()).unwrap();
    assert_eq!(text(&codes[0], tags::CODE_VALUE).as_deref(), Some("113100"));
}

#[test]
fn uids_are_consistent_within_a_context_and_differ_across_contexts() {
    for name in ["CT_small.dcm", "MR_small.dcm"] {
        let bytes = fixture(name);
        for level in [Anonymization::Pseudonymized, Anonymization::Anonymized] {
            let first = run(&bytes, level, KEY);
            let second = run(&bytes, level, KEY);
            let other = run(&bytes, level, OTHER_KEY);
            for tag in [tags::STUDY_INSTANCE_UID, tags::SERIES_INSTANCE_UID, tags::SOP_INSTANCE_UID] {
                let uid = text(&first, tag).unwrap();
                assert_ne!(Some(uid.clone()), text(&read(&bytes), tag), "{name} {tag:?}");
                assert_eq!(text(&second, tag), Some(uid.clone()), "{name} {tag:?}");
                assert_ne!(text(&other, tag), Some(uid), "{name} {tag:?}");
            }
            // The file meta follows the remapped SOP Instance UID.
            assert_eq!(
                first.meta().media_storage_sop_instance_uid().trim_end_matches('\0'),
                text(&first, tags::SOP_INSTANCE_UID).unwrap()
            );
        }
    }
}

#[test]
fn pseudonymized_files_keep_dates_and_patient_characteristics() {
    let bytes = fixture("CT_small.dcm");
    let before = read(&bytes);
    let after = run(&bytes, Anonymization::Pseudonymized, KEY);
    for tag in [tags::STUDY_DATE, tags::PATIENT_SEX] {
        assert_eq!(text(&after, tag), text(&before, tag), "{tag:?}");
    }
    let name = text(&after, tags::PATIENT_NAME).unwrap();
    assert!(name.starts_with("Patient-"), "{name}");
}

#[test]
fn burned_in_annotation_is_withheld_when_anonymizing() {
    let mut obj = read(&fixture("MR_small.dcm"));
    obj.put(DataElement::new(tags::BURNED_IN_ANNOTATION, VR::CS, PrimitiveValue::from("YES")));
    let bytes = write(&obj);
    let anonymized = deidentify(RecordFormat::Dicom, &bytes, Anonymization::Anonymized, KEY).unwrap();
    assert!(matches!(anonymized, Deidentified::Withheld { reason } if reason.contains("burned-in")));
    assert!(matches!(
        deidentify(RecordFormat::Dicom, &bytes, Anonymization::Pseudonymized, KEY).unwrap(),
        Deidentified::Content(_)
    ));
}

#[test]
fn the_checker_reports_what_the_profile_would_remove() {
    let (input, _) = file_with_every_attribute();
    let findings = kura_formats::residual_identifiers(RecordFormat::Dicom, &input).unwrap();
    assert!(findings.iter().any(|(tag, _)| tag == "(0010,1040)"), "Patient's Address");
    assert!(findings.iter().any(|(_, what)| *what == "private attribute"));
    let Deidentified::Content(clean) = deidentify(RecordFormat::Dicom, &input, Anonymization::Anonymized, KEY).unwrap()
    else {
        panic!("withheld");
    };
    assert_eq!(kura_formats::residual_identifiers(RecordFormat::Dicom, &clean).unwrap(), Vec::<(String, &str)>::new());
}
