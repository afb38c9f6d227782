//! De-identification of DICOM files by the PS3.15 Basic Application Level Confidentiality
//! Profile (`profile.rs` holds its table).
//!
//! `anonymized` applies the Basic Profile as tabled: every listed attribute is removed (X),
//! emptied (Z), given a dummy value (D) or a remapped UID (U), in nested sequences too; private
//! attributes go; an image marked as having burned-in annotation is withheld, since its pixels
//! can show the patient's name.
//!
//! `pseudonymized` applies the same profile with the Retain Longitudinal Temporal Information
//! with Full Dates Option and the Retain Patient Characteristics Option, and gives the patient a
//! keyed pseudonym instead of an empty name and id: Patient's Name and ID, Accession Number and
//! Study ID become pseudonyms (the ID the same token as a FHIR identifier with that value, so a
//! grantee can link a patient's images and FHIR records within one grant), and the birth date
//! keeps its year.
//!
//! UIDs are remapped as `2.25.<128 bits of a keyed MAC>`, the same within a context and
//! unlinkable across contexts; the file meta's Media Storage SOP Instance UID follows.

use dicom_core::header::Header;
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use kura_core::policy::Anonymization;

use super::profile::{Action, BASIC_PROFILE};
use super::{for_each_data_set_mut, put_text, read, text, write};
use crate::labels::Date;
use crate::pseudonym::Pseudonymizer;
use crate::{Deidentified, FormatError};

/// Why an image with burned-in annotation is not given out anonymized.
pub const BURNED_IN_WITHHELD: &str =
    "the image is marked as having burned-in annotation (0028,0301 = YES); its pixels may show identifiers";

/// Attributes the Retain Patient Characteristics Option keeps.
const PATIENT_CHARACTERISTICS: [Tag; 6] = [
    tags::PATIENT_SEX,
    tags::PATIENT_AGE,
    tags::PATIENT_SIZE,
    tags::PATIENT_WEIGHT,
    tags::SMOKING_STATUS,
    tags::PREGNANCY_STATUS,
];

/// Study identifiers, which sites often derive from the patient's record number (Short Strings).
const STUDY_IDENTIFIERS: [Tag; 2] = [tags::ACCESSION_NUMBER, tags::STUDY_ID];
const SH_MAX_CHARS: usize = 16;

/// The action for `tag` at `level`: the Basic Profile's, with the retain options applied when
/// pseudonymizing. `None` for a tag the profile keeps.
pub fn action_for(tag: Tag, vr: VR, level: Anonymization) -> Option<Action> {
    let (_, _, action, _) = BASIC_PROFILE.iter().find(|(g, e, _, _)| Tag(*g, *e) == tag)?;
    if level == Anonymization::Anonymized {
        return Some(*action);
    }
    let is_date_or_time = matches!(vr, VR::DA | VR::TM | VR::DT) && tag != tags::PATIENT_BIRTH_TIME;
    if is_date_or_time || PATIENT_CHARACTERISTICS.contains(&tag) {
        return Some(Action::K);
    }
    Some(*action)
}

/// `2.25.` and a keyed 128-bit number: a valid UID, the same for the same UID in one context.
fn remap_uid(uid: &str, keyed: &Pseudonymizer) -> String {
    let token = keyed.token("uid", uid.trim_end_matches('\0').trim());
    let number = u128::from_str_radix(&token, 16).unwrap_or_default();
    format!("2.25.{number}")
}

fn dummy(vr: VR) -> Option<&'static str> {
    Some(match vr {
        VR::PN => "ANONYMOUS",
        VR::LO | VR::LT | VR::ST | VR::UT | VR::UC | VR::SH | VR::CS | VR::AE => "ANONYMIZED",
        VR::DA => "19000101",
        VR::TM => "000000",
        VR::DT => "19000101000000",
        VR::AS => "000Y",
        VR::DS | VR::IS => "0",
        _ => return None,
    })
}

fn empty_value(data_set: &mut InMemDicomObject, tag: Tag, vr: VR) {
    if vr == VR::SQ {
        data_set.put(DataElement::new(tag, VR::SQ, DataSetSequence::<InMemDicomObject>::empty()));
    } else {
        data_set.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
    }
}

fn apply_profile(data_set: &mut InMemDicomObject, level: Anonymization, keyed: &Pseudonymizer) {
    // Private attributes hold whatever a vendor chose, patient names included.
    data_set.retain(|element| element.tag().group() % 2 == 0);
    let present: Vec<(Tag, VR)> = data_set.iter().map(|e| (e.tag(), e.vr())).collect();
    let patient_id = text(data_set, tags::PATIENT_ID);
    let pseudonymized = level != Anonymization::Anonymized;
    for (tag, vr) in present {
        if pseudonymized {
            if tag == tags::PATIENT_NAME {
                let basis = patient_id.clone().or_else(|| text(data_set, tag)).unwrap_or_default();
                put_text(data_set, tag, VR::PN, &keyed.name("Patient", &basis));
                continue;
            }
            if tag == tags::PATIENT_ID {
                let value = patient_id.as_deref().map(|id| keyed.token("identifier", id)).unwrap_or_default();
                put_text(data_set, tag, VR::LO, &value);
                continue;
            }
            if STUDY_IDENTIFIERS.contains(&tag) {
                let value: String = text(data_set, tag)
                    .map(|v| keyed.token("study-identifier", &v).chars().take(SH_MAX_CHARS).collect())
                    .unwrap_or_default();
                put_text(data_set, tag, VR::SH, &value);
                continue;
            }
            if tag == tags::PATIENT_BIRTH_DATE {
                match text(data_set, tag).and_then(|d| Date::parse(&d)) {
                    Some(date) => put_text(data_set, tag, VR::DA, &format!("{:04}0101", date.year)),
                    None => empty_value(data_set, tag, vr),
                }
                continue;
            }
        }
        match action_for(tag, vr, level) {
            None | Some(Action::K) => {}
            Some(Action::X) => {
                data_set.remove_element(tag);
            }
            Some(Action::Z) => empty_value(data_set, tag, vr),
            Some(Action::D) => match dummy(vr) {
                Some(value) => put_text(data_set, tag, vr, value),
                None => empty_value(data_set, tag, vr),
            },
            Some(Action::U) => {
                let remapped: Vec<String> = text(data_set, tag)
                    .unwrap_or_default()
                    .split('\\')
                    .filter(|u| !u.is_empty())
                    .map(|u| remap_uid(u, keyed))
                    .collect();
                put_text(data_set, tag, VR::UI, &remapped.join("\\"));
            }
        }
    }
}

/// The de-identification method codes (DCM, PS3.16 CID 7050).
fn method_codes(level: Anonymization) -> InMemDicomObject {
    let code = |value: &str, meaning: &str| {
        InMemDicomObject::from_element_iter([
            DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(value)),
            DataElement::new(tags::CODING_SCHEME_DESIGNATOR, VR::SH, PrimitiveValue::from("DCM")),
            DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)),
        ])
    };
    let mut items = vec![code("113100", "Basic Application Confidentiality Profile")];
    if level != Anonymization::Anonymized {
        items.push(code("113106", "Retain Longitudinal Temporal Information Full Dates Option"));
        items.push(code("113108", "Retain Patient Characteristics Option"));
    }
    let mut holder = InMemDicomObject::new_empty();
    holder.put(DataElement::new(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE, VR::SQ, DataSetSequence::from(items)));
    holder
}

pub fn deidentify(bytes: &[u8], level: Anonymization, keyed: &Pseudonymizer) -> Result<Deidentified, FormatError> {
    let mut obj = read(bytes)?;
    if level == Anonymization::Anonymized && text(&obj, tags::BURNED_IN_ANNOTATION).as_deref() == Some("YES") {
        return Ok(Deidentified::Withheld { reason: BURNED_IN_WITHHELD });
    }
    for_each_data_set_mut(&mut obj, &mut |data_set| apply_profile(data_set, level, keyed));
    if let Some(sop_instance) = text(&obj, tags::SOP_INSTANCE_UID) {
        obj.update_meta(|meta| meta.media_storage_sop_instance_uid = sop_instance);
    }
    put_text(&mut obj, tags::PATIENT_IDENTITY_REMOVED, VR::CS, "YES");
    let method = match level {
        Anonymization::Anonymized => "DICOM PS3.15 Basic Application Level Confidentiality Profile (Kura)",
        _ => "DICOM PS3.15 Basic Profile, full dates and patient characteristics retained, keyed pseudonyms (Kura)",
    };
    put_text(&mut obj, tags::DEIDENTIFICATION_METHOD, VR::LO, method);
    let codes = method_codes(level);
    if let Some(sequence) = codes.get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE) {
        obj.put(sequence.clone());
    }
    write(&obj).map(Deidentified::Content)
}

/// Where a DICOM file still carries identifiers by the Basic Profile: `(attribute, what)`.
pub fn residual_identifiers(bytes: &[u8]) -> Result<Vec<(String, &'static str)>, FormatError> {
    let obj = read(bytes)?;
    let mut findings = Vec::new();
    for element in obj.iter() {
        let tag = element.tag();
        let label = format!("({:04X},{:04X})", tag.group(), tag.element());
        if tag.group() % 2 == 1 {
            findings.push((label, "private attribute"));
            continue;
        }
        let empty = text(&obj, tag).is_none() && element.items().is_none_or(|items| items.is_empty());
        match action_for(tag, element.vr(), Anonymization::Anonymized) {
            Some(Action::X) => findings.push((label, "attribute the profile removes")),
            Some(Action::Z) if !empty => findings.push((label, "attribute the profile empties")),
            _ => {}
        }
    }
    if text(&obj, tags::PATIENT_IDENTITY_REMOVED).as_deref() != Some("YES") {
        findings.push(("(0012,0062)".to_owned(), "Patient Identity Removed is not YES"));
    }
    Ok(findings)
}
