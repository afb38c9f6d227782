//! De-identification of DICOM files (the minimal unit; a full allow-list, the PS3.15 basic
//! profile, comes later).

use dicom_core::header::Header;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use kura_core::policy::Anonymization;

use super::{for_each_data_set_mut, put_text, read, text, write};
use crate::FormatError;
use crate::labels::Date;
use crate::pseudonym::Pseudonymizer;

/// Patient attributes removed at every level.
const REMOVED_PATIENT_ATTRIBUTES: [Tag; 7] = [
    // Other Patient IDs (0010,1000): retired from the standard, still found in old files.
    Tag(0x0010, 0x1000),
    tags::OTHER_PATIENT_I_DS_SEQUENCE,
    tags::PATIENT_ADDRESS,
    tags::PATIENT_TELEPHONE_NUMBERS,
    tags::PATIENT_BIRTH_NAME,
    tags::PATIENT_MOTHER_BIRTH_NAME,
    tags::PATIENT_BIRTH_TIME,
];

/// Study identifiers, which sites often derive from the patient's record number. Both are Short
/// Strings of at most 16 characters.
const STUDY_IDENTIFIERS: [Tag; 2] = [tags::ACCESSION_NUMBER, tags::STUDY_ID];
const SH_MAX_CHARS: usize = 16;

pub fn deidentify(bytes: &[u8], level: Anonymization, keyed: &Pseudonymizer) -> Result<Vec<u8>, FormatError> {
    let mut obj = read(bytes)?;
    for_each_data_set_mut(&mut obj, &mut |data_set| deidentify_data_set(data_set, level, keyed));
    put_text(&mut obj, tags::PATIENT_IDENTITY_REMOVED, VR::CS, "YES");
    let method = match level {
        Anonymization::Anonymized => "Kura minimal de-identification: anonymized",
        _ => "Kura minimal de-identification: pseudonymized",
    };
    put_text(&mut obj, tags::DEIDENTIFICATION_METHOD, VR::LO, method);
    write(&obj)
}

/// Applied to the data set and to every sequence item, where patient attributes also appear
/// (in referenced-patient and request sequences, say).
fn deidentify_data_set(data_set: &mut InMemDicomObject, level: Anonymization, keyed: &Pseudonymizer) {
    for tag in REMOVED_PATIENT_ATTRIBUTES {
        data_set.remove_element(tag);
    }
    // Private attributes (odd groups) hold whatever a vendor chose, patient names included;
    // like a PDF, they cannot be proven free of identifiers (PS3.15 removes them too).
    data_set.retain(|element| element.tag().group() % 2 == 0);
    for tag in STUDY_IDENTIFIERS {
        if let Some(value) = text(data_set, tag) {
            let replacement: String = match level {
                Anonymization::Anonymized => String::new(),
                _ => keyed.token("study-identifier", &value).chars().take(SH_MAX_CHARS).collect(),
            };
            put_text(data_set, tag, VR::SH, &replacement);
        }
    }
    let patient_id = text(data_set, tags::PATIENT_ID);
    let patient_name = text(data_set, tags::PATIENT_NAME);
    let pseudonymized = level != Anonymization::Anonymized;
    if patient_name.is_some() || data_set.get(tags::PATIENT_NAME).is_some() {
        // The name's pseudonym follows the patient's id when there is one, so that all files of
        // a patient share it.
        let basis = patient_id.clone().or(patient_name).unwrap_or_default();
        let name = if pseudonymized { keyed.name("Patient", &basis) } else { String::new() };
        put_text(data_set, tags::PATIENT_NAME, VR::PN, &name);
    }
    if let Some(id) = patient_id {
        // The same keyed token as a FHIR identifier with the same value, so a grantee can link a
        // patient's images and FHIR records within one grant, and nowhere else.
        let id = if pseudonymized { keyed.token("identifier", &id) } else { String::new() };
        put_text(data_set, tags::PATIENT_ID, VR::LO, &id);
    } else if data_set.get(tags::PATIENT_ID).is_some() {
        put_text(data_set, tags::PATIENT_ID, VR::LO, "");
    }
    if data_set.get(tags::PATIENT_BIRTH_DATE).is_some() {
        let year = text(data_set, tags::PATIENT_BIRTH_DATE).and_then(|d| Date::parse(&d)).map(|d| d.year);
        match year {
            Some(year) if pseudonymized => {
                put_text(data_set, tags::PATIENT_BIRTH_DATE, VR::DA, &format!("{year:04}0101"))
            }
            _ => {
                data_set.remove_element(tags::PATIENT_BIRTH_DATE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::tests::file_with;

    const KEY: &[u8] = b"context-key-0123";

    fn after(elements: &[(Tag, VR, &str)], level: Anonymization) -> Vec<(Tag, Option<String>)> {
        let keyed = Pseudonymizer::new(KEY).unwrap();
        let out = read(&deidentify(&file_with(elements), level, &keyed).unwrap()).unwrap();
        elements.iter().map(|(tag, _, _)| (*tag, text(&out, *tag))).collect()
    }

    #[test]
    fn patient_attributes_at_each_level() {
        let keyed = Pseudonymizer::new(KEY).unwrap();
        let input = [
            (tags::PATIENT_NAME, VR::PN, "DOE^JANE"),
            (tags::PATIENT_ID, VR::LO, "MRN-77"),
            (tags::PATIENT_BIRTH_DATE, VR::DA, "19691206"),
            (tags::PATIENT_ADDRESS, VR::LO, "1 Main St"),
            (tags::PATIENT_TELEPHONE_NUMBERS, VR::SH, "555-1234"),
            (tags::PATIENT_MOTHER_BIRTH_NAME, VR::PN, "ROE^ANN"),
            (Tag(0x0010, 0x1000), VR::LO, "X-1"),
            (tags::PATIENT_SEX, VR::CS, "F"),
            (tags::STUDY_ID, VR::SH, "MRN-77"),
            (Tag(0x0011, 0x1010), VR::LO, "DOE^JANE"),
        ];
        let check = |level: Anonymization, expected: [Option<String>; 10]| {
            let expected: Vec<(Tag, Option<String>)> = input.iter().map(|(t, _, _)| *t).zip(expected).collect();
            assert_eq!(after(&input, level), expected, "{level:?}");
        };
        check(
            Anonymization::Pseudonymized,
            [
                Some(keyed.name("Patient", "MRN-77")),
                Some(keyed.token("identifier", "MRN-77")),
                Some("19690101".into()),
                None,
                None,
                None,
                None,
                Some("F".into()),
                Some(keyed.token("study-identifier", "MRN-77").chars().take(16).collect()),
                None,
            ],
        );
        check(Anonymization::Anonymized, [None, None, None, None, None, None, None, Some("F".into()), None, None]);
    }

    #[test]
    fn unreadable_birth_dates_go() {
        let input = [(tags::PATIENT_BIRTH_DATE, VR::DA, "6 Dec 69")];
        assert_eq!(after(&input, Anonymization::Pseudonymized), [(tags::PATIENT_BIRTH_DATE, None)]);
    }

    #[test]
    fn the_file_says_its_identity_was_removed() {
        let keyed = Pseudonymizer::new(KEY).unwrap();
        let out = read(&deidentify(&file_with(&[]), Anonymization::Anonymized, &keyed).unwrap()).unwrap();
        assert_eq!(text(&out, tags::PATIENT_IDENTITY_REMOVED).as_deref(), Some("YES"));
        assert_eq!(text(&out, tags::PATIENT_NAME), None);
    }
}
