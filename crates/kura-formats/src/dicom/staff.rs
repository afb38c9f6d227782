//! Staff pseudonyms for DICOM files, for transfers under `anonymize_staff`.

use dicom_core::value::C;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::{for_each_data_set_mut, read, write};
use crate::FormatError;
use crate::fhir::staff::normalized_name;
use crate::pseudonym::Pseudonymizer;

/// The attributes naming the institution and its staff, with the pseudonym prefix of each.
/// Prefixes match the FHIR ones, so a name gets the same pseudonym in both formats.
const STAFF_ATTRIBUTES: [(Tag, &str); 9] = [
    (tags::REFERRING_PHYSICIAN_NAME, "Practitioner"),
    (tags::PERFORMING_PHYSICIAN_NAME, "Practitioner"),
    (tags::OPERATORS_NAME, "Practitioner"),
    (tags::NAME_OF_PHYSICIANS_READING_STUDY, "Practitioner"),
    (tags::PHYSICIANS_OF_RECORD, "Practitioner"),
    (tags::INSTITUTION_NAME, "Organization"),
    (tags::INSTITUTION_ADDRESS, "Address"),
    (tags::INSTITUTIONAL_DEPARTMENT_NAME, "Department"),
    (tags::STATION_NAME, "Station"),
];

/// A Short String holds at most 16 characters; `Station-` and 8 pseudonym characters fit.
const SH_MAX_CHARS: usize = 16;

pub fn anonymize_staff(bytes: &[u8], keyed: &Pseudonymizer) -> Result<Vec<u8>, FormatError> {
    let mut obj = read(bytes)?;
    for_each_data_set_mut(&mut obj, &mut |data_set| anonymize_data_set(data_set, keyed));
    write(&obj)
}

fn anonymize_data_set(data_set: &mut InMemDicomObject, keyed: &Pseudonymizer) {
    for (tag, prefix) in STAFF_ATTRIBUTES {
        let Some(element) = data_set.get(tag) else { continue };
        let vr = element.vr();
        let Ok(values) = element.to_multi_str() else {
            // Not text (a damaged element): it cannot be pseudonymized, so it goes.
            data_set.remove_element(tag);
            continue;
        };
        let pseudonyms: C<String> = values
            .iter()
            .map(|value| {
                let value = value.trim_matches(|c: char| c.is_whitespace() || c == '\0');
                if value.is_empty() {
                    return String::new();
                }
                let basis = if vr == VR::PN { person_name_as_written(value) } else { value.to_owned() };
                let pseudonym = keyed.name(prefix, &normalized_name(&basis));
                if vr == VR::SH { pseudonym.chars().take(SH_MAX_CHARS).collect() } else { pseudonym }
            })
            .collect();
        data_set.put(DataElement::new(tag, vr, PrimitiveValue::Strs(pseudonyms)));
    }
}

/// A DICOM person name (`Family^Given^Middle^Prefix^Suffix`) in the order a FHIR display
/// writes it (`Prefix Given Middle Family Suffix`), so that both formats key the same
/// pseudonym. Only the alphabetic representation (before any `=`) is used.
fn person_name_as_written(pn: &str) -> String {
    let alphabetic = pn.split('=').next().unwrap_or("");
    let parts: Vec<&str> = alphabetic.split('^').map(str::trim).collect();
    let part = |i: usize| parts.get(i).copied().unwrap_or("");
    [part(3), part(1), part(2), part(0), part(4)].into_iter().filter(|p| !p.is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::tests::file_with;
    use crate::dicom::text;

    const KEY: &[u8] = b"institution-key!";

    #[test]
    fn staff_attributes_become_pseudonyms() {
        let keyed = Pseudonymizer::new(KEY).unwrap();
        let input = [
            (tags::REFERRING_PHYSICIAN_NAME, VR::PN, "Hettinger^Miquel^^Dr."),
            (tags::PERFORMING_PHYSICIAN_NAME, VR::PN, "DOE^JANE\\ROE^RICHARD"),
            (tags::INSTITUTION_NAME, VR::LO, "Aoba  General Hospital"),
            (tags::STATION_NAME, VR::SH, "CT01"),
            (tags::OPERATORS_NAME, VR::PN, ""),
            (tags::PATIENT_NAME, VR::PN, "O'CONNELL^FREDA"),
        ];
        let out = read(&anonymize_staff(&file_with(&input), &keyed).unwrap()).unwrap();
        let check = |tag: Tag, expected: Option<String>| assert_eq!(text(&out, tag), expected, "{tag}");
        check(tags::REFERRING_PHYSICIAN_NAME, Some(keyed.name("Practitioner", "dr. miquel hettinger")));
        check(
            tags::PERFORMING_PHYSICIAN_NAME,
            Some(format!("{}\\{}", keyed.name("Practitioner", "jane doe"), keyed.name("Practitioner", "richard roe"))),
        );
        check(tags::INSTITUTION_NAME, Some(keyed.name("Organization", "aoba general hospital")));
        check(tags::STATION_NAME, Some(keyed.name("Station", "ct01")));
        check(tags::OPERATORS_NAME, None);
        check(tags::PATIENT_NAME, Some("O'CONNELL^FREDA".into()));
    }

    #[test]
    fn person_names_in_written_order() {
        let check = |pn: &str, expected: &str| assert_eq!(person_name_as_written(pn), expected, "{pn}");
        check("Hettinger^Miquel^^Dr.", "Dr. Miquel Hettinger");
        check("DOE^JANE^Q^^JR", "JANE Q DOE JR");
        check("DOE", "DOE");
        check("Yamada^Tarou=山田^太郎", "Tarou Yamada");
        check("", "");
    }
}
