//! De-identification of FHIR content (the minimal unit; a full allow-list comes later).
//!
//! The patient's direct identifiers go or become keyed pseudonyms, and references to the
//! patient follow the pseudonym so that the record stays internally consistent.

use std::collections::HashMap;

use kura_core::policy::Anonymization;
use serde_json::{Map, Value};

use super::{Place, for_each_object_mut, for_each_resource_mut, for_each_string_mut, parse_json, resources, serialize};
use crate::FormatError;
use crate::labels::Date;
use crate::pseudonym::Pseudonymizer;

/// Extensions naming a person or a place the patient comes from: removed at every level.
const IDENTIFYING_EXTENSIONS: [&str; 2] = ["mothersmaidenname", "birthplace"];
/// Extensions that are quasi-identifiers: removed when anonymized.
const QUASI_IDENTIFYING_EXTENSIONS: [&str; 2] = ["race", "ethnicity"];

/// Patient elements that identify the patient directly, removed at every level. The
/// underscored ones hold extensions of the dates, such as the birth time.
const PATIENT_IDENTIFYING_ELEMENTS: [&str; 7] =
    ["name", "telecom", "photo", "contact", "link", "_birthDate", "_deceasedDateTime"];
/// Patient elements that go when anonymized; the pseudonymized form keeps a reduced version.
const PATIENT_ELEMENTS_REMOVED_WHEN_ANONYMIZED: [&str; 4] =
    ["identifier", "address", "generalPractitioner", "managingOrganization"];

/// Attachment elements that carry or point to a document; like a PDF record, a document cannot
/// be proven free of identifiers.
const ATTACHMENT_CONTENT_ELEMENTS: [&str; 4] = ["data", "url", "title", "hash"];

/// A Patient resource's id and the pseudonym that replaces it.
struct RenamedPatient {
    id: String,
    /// `Patient/<id>`, the form relative and absolute references take.
    reference: String,
    pseudonym: String,
}

pub fn deidentify(bytes: &[u8], level: Anonymization, keyed: &Pseudonymizer) -> Result<Vec<u8>, FormatError> {
    let mut value = parse_json(bytes)?;
    resources(&value)?;
    let mut renamed = Vec::new();
    let mut renamed_urls = HashMap::new();
    for_each_resource_mut(&mut value, &mut |resource, place| {
        resource.remove("text");
        if resource.get("resourceType").and_then(Value::as_str) != Some("Patient") {
            return;
        }
        deidentify_patient(resource, level, keyed);
        // A contained resource's id is local to its container and names nobody.
        let Place::Entry(full_url) = place else { return };
        let id = resource.get("id").and_then(Value::as_str).map(str::to_owned);
        let Some(basis) = id.clone().or_else(|| full_url.as_ref().map(|u| u.to_string())) else { return };
        let pseudonym = keyed.token("patient", &basis);
        if let Some(id) = id {
            resource.insert("id".into(), Value::String(pseudonym.clone()));
            let reference = format!("Patient/{id}");
            renamed.push(RenamedPatient { id, reference, pseudonym: pseudonym.clone() });
        }
        if let Some(url) = full_url {
            let new_url = format!("urn:uuid:{pseudonym}");
            renamed_urls.insert(std::mem::replace(url, new_url.clone()), new_url);
        }
    });
    for_each_object_mut(&mut value, &mut |object| {
        if object.contains_key("contentType") {
            object.retain(|key, _| !ATTACHMENT_CONTENT_ELEMENTS.contains(&key.as_str()));
        }
        for key in ["extension", "modifierExtension"] {
            if let Some(Value::Array(extensions)) = object.get_mut(key) {
                extensions.retain(|extension| !is_removed_extension(extension, level));
            }
        }
        if level == Anonymization::Anonymized {
            object.remove("note");
            if is_reference(object) {
                object.remove("display");
            }
        }
    });
    for_each_string_mut(&mut value, &mut |s| {
        if let Some(new) = renamed_urls.get(s.as_str()) {
            *s = new.clone();
        }
        for patient in &renamed {
            if let Some(new) = rewrite_patient_reference(s, patient) {
                *s = new;
            }
        }
    });
    serialize(&value)
}

fn deidentify_patient(patient: &mut Map<String, Value>, level: Anonymization, keyed: &Pseudonymizer) {
    patient.retain(|key, _| !PATIENT_IDENTIFYING_ELEMENTS.contains(&key.as_str()));
    if level == Anonymization::Anonymized {
        patient.retain(|key, _| !PATIENT_ELEMENTS_REMOVED_WHEN_ANONYMIZED.contains(&key.as_str()));
    } else {
        if let Some(identifiers) = patient.get_mut("identifier") {
            pseudonymize_identifiers(identifiers, keyed);
        }
        if let Some(addresses) = patient.get_mut("address") {
            reduce_addresses(addresses);
        }
    }
    for element in ["birthDate", "deceasedDateTime"] {
        let year = patient.get(element).and_then(Value::as_str).and_then(Date::parse).map(|d| format!("{:04}", d.year));
        match year {
            Some(year) => {
                patient.insert(element.into(), Value::String(year));
            }
            // A date Kura cannot read cannot be shown to be harmless.
            None => {
                patient.remove(element);
            }
        }
    }
}

/// Identifier values become pseudonyms (so that equal identifiers stay equal); the assigner,
/// which names the institution that issued them, goes.
fn pseudonymize_identifiers(identifiers: &mut Value, keyed: &Pseudonymizer) {
    let Value::Array(list) = identifiers else {
        *identifiers = Value::Array(Vec::new());
        return;
    };
    list.retain(Value::is_object);
    for identifier in list.iter_mut().filter_map(Value::as_object_mut) {
        identifier.remove("assigner");
        if let Some(value) = identifier.get("value").and_then(Value::as_str) {
            let pseudonym = keyed.token("identifier", value);
            identifier.insert("value".into(), Value::String(pseudonym));
        } else {
            identifier.remove("value");
        }
    }
}

/// Addresses keep their state and country only; addresses left empty go.
fn reduce_addresses(addresses: &mut Value) {
    let Value::Array(list) = addresses else {
        *addresses = Value::Array(Vec::new());
        return;
    };
    for address in list.iter_mut() {
        if let Value::Object(fields) = address {
            fields.retain(|key, _| key == "state" || key == "country");
        }
    }
    list.retain(|a| a.as_object().is_some_and(|fields| !fields.is_empty()));
}

fn is_removed_extension(extension: &Value, level: Anonymization) -> bool {
    let url = extension.get("url").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
    IDENTIFYING_EXTENSIONS.iter().any(|name| url.contains(name))
        || (level == Anonymization::Anonymized && QUASI_IDENTIFYING_EXTENSIONS.iter().any(|name| url.contains(name)))
}

/// A FHIR Reference: it has a `reference`, or only Reference elements and a `display` (a
/// logical reference like `{"display": "private"}`). A Coding also has a `display` but also a
/// `code` or `system`, so it never matches.
fn is_reference(object: &Map<String, Value>) -> bool {
    const REFERENCE_ELEMENTS: [&str; 6] = ["reference", "type", "identifier", "display", "id", "extension"];
    object.get("reference").is_some_and(Value::is_string)
        || (object.contains_key("display") && object.keys().all(|k| REFERENCE_ELEMENTS.contains(&k.as_str())))
}

/// `s` with the patient's `Patient/<id>` (relative, absolute, versioned, or inside text) and
/// `urn:uuid:<id>` references pointing to the pseudonym; `None` when `s` does not refer to the
/// patient.
fn rewrite_patient_reference(s: &str, patient: &RenamedPatient) -> Option<String> {
    if let Some(rest) = s.strip_prefix("urn:uuid:")
        && rest == patient.id
    {
        return Some(format!("urn:uuid:{}", patient.pseudonym));
    }
    let target = patient.reference.as_str();
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut changed = false;
    while let Some(at) = rest.find(target) {
        let before = rest.get(..at).unwrap_or("");
        let after = rest.get(at + target.len()..).unwrap_or("");
        // `MyPatient/p1` and `Patient/p10` are other things; `Patient/p1` after a slash, a
        // space or a quote, and before a path, query, fragment or the end, is the patient.
        let starts_a_segment = before.chars().next_back().is_none_or(|c| !c.is_alphanumeric());
        let ends_a_segment = after.chars().next().is_none_or(|c| !(c.is_alphanumeric() || c == '-' || c == '.'));
        out.push_str(before);
        if starts_a_segment && ends_a_segment {
            out.push_str("Patient/");
            out.push_str(&patient.pseudonym);
            changed = true;
        } else {
            out.push_str(target);
        }
        rest = after;
    }
    out.push_str(rest);
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &[u8] = b"context-key-0123";

    fn deidentified(input: Value, level: Anonymization) -> Value {
        let keyed = Pseudonymizer::new(KEY).unwrap();
        let out = deidentify(&serde_json::to_vec(&input).unwrap(), level, &keyed).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    fn token(kind: &str, value: &str) -> String {
        Pseudonymizer::new(KEY).unwrap().token(kind, value)
    }

    fn patient() -> Value {
        json!({
            "resourceType": "Patient", "id": "p1",
            "text": {"status": "generated", "div": "<div>Freda O'Connell</div>"},
            "extension": [
                {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race", "extension": []},
                {"url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName", "valueString": "Ann Doe"},
                {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace", "valueAddress": {"city": "Easton"}},
                {"url": "http://example.org/qaly", "valueDecimal": 21.0},
            ],
            "identifier": [{"system": "http://hospital.example/mrn", "value": "MRN-77", "assigner": {"display": "Aoba"}}],
            "name": [{"family": "O'Connell", "given": ["Freda"]}],
            "telecom": [{"system": "phone", "value": "555-1234"}],
            "gender": "female",
            "birthDate": "1969-12-06",
            "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                                          "valueDateTime": "1969-12-06T10:14:00Z"}]},
            "address": [{"line": ["1 Main St"], "city": "Boston", "state": "MA", "postalCode": "02110", "country": "US"},
                        {"line": ["2 Side St"]}],
            "photo": [{"contentType": "image/png", "data": "AAAA"}],
            "contact": [{"name": {"family": "Doe"}}],
            "generalPractitioner": [{"reference": "Practitioner/9", "display": "Dr. Who"}],
        })
    }

    #[test]
    fn the_patient_resource_at_each_level() {
        let check = |level: Anonymization, expected: Value| assert_eq!(deidentified(patient(), level), expected);
        check(
            Anonymization::Pseudonymized,
            json!({
                "resourceType": "Patient", "id": token("patient", "p1"),
                "extension": [
                    {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race", "extension": []},
                    {"url": "http://example.org/qaly", "valueDecimal": 21.0},
                ],
                "identifier": [{"system": "http://hospital.example/mrn", "value": token("identifier", "MRN-77")}],
                "gender": "female",
                "birthDate": "1969",
                "address": [{"state": "MA", "country": "US"}],
                "generalPractitioner": [{"reference": "Practitioner/9", "display": "Dr. Who"}],
            }),
        );
        check(
            Anonymization::Anonymized,
            json!({
                "resourceType": "Patient", "id": token("patient", "p1"),
                "extension": [{"url": "http://example.org/qaly", "valueDecimal": 21.0}],
                "gender": "female",
                "birthDate": "1969",
            }),
        );
    }

    #[test]
    fn unreadable_dates_and_odd_shapes_go() {
        let input = json!({"resourceType": "Patient", "birthDate": "06/12/1969", "deceasedDateTime": "2020-03-04T05:06:07Z",
            "identifier": "MRN-77", "address": {"city": "Boston"}});
        assert_eq!(
            deidentified(input, Anonymization::Pseudonymized),
            json!({"resourceType": "Patient", "deceasedDateTime": "2020", "identifier": [], "address": []})
        );
    }

    #[test]
    fn references_to_the_patient_follow_the_pseudonym() {
        let input = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "id": "p1"}},
            {"fullUrl": "http://example.org/fhir/Observation/o1", "resource": {"resourceType": "Observation",
                "subject": {"reference": "urn:uuid:p1"},
                "performer": [{"reference": "Patient/p1"}, {"reference": "http://example.org/fhir/Patient/p1/_history/2"},
                              {"reference": "Patient/p10"}, {"reference": "RelatedPerson/p1"}, {"reference": "urn:uuid:p1x"}],
                "contained": [{"resourceType": "Patient", "id": "local", "name": [{"family": "Doe"}], "text": {"div": "x"}}],
                "note": [{"text": "seen with Patient/p1"}]}},
            {"request": {"method": "PUT", "url": "Patient/p1"}},
        ]});
        let p = token("patient", "p1");
        let expected = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": format!("urn:uuid:{p}"), "resource": {"resourceType": "Patient", "id": p}},
            {"fullUrl": "http://example.org/fhir/Observation/o1", "resource": {"resourceType": "Observation",
                "subject": {"reference": format!("urn:uuid:{p}")},
                "performer": [{"reference": format!("Patient/{p}")}, {"reference": format!("http://example.org/fhir/Patient/{p}/_history/2")},
                              {"reference": "Patient/p10"}, {"reference": "RelatedPerson/p1"}, {"reference": "urn:uuid:p1x"}],
                "contained": [{"resourceType": "Patient", "id": "local"}],
                "note": [{"text": format!("seen with Patient/{p}")}]}},
            {"request": {"method": "PUT", "url": format!("Patient/{p}")}},
        ]});
        assert_eq!(deidentified(input, Anonymization::Pseudonymized), expected);
    }

    #[test]
    fn anonymized_content_loses_notes_displays_and_quasi_identifying_extensions() {
        let input = json!({"resourceType": "Observation", "text": {"div": "narrative"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2", "display": "Body Height"}], "text": "Body Height"},
            "performer": [{"reference": "Practitioner/9", "display": "Dr. Who"}],
            "insurance": {"display": "private"},
            "note": [{"text": "called her husband John"}],
            "extension": [{"url": "http://example.org/ethnicity-detail", "valueString": "x"}],
            "component": [{"code": {"text": "c"}, "extension": [{"url": "http://example.org/birthPlace", "valueString": "Easton"}]}],
        });
        let check = |level: Anonymization, expected: Value| assert_eq!(deidentified(input.clone(), level), expected);
        check(
            Anonymization::Pseudonymized,
            json!({"resourceType": "Observation",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2", "display": "Body Height"}], "text": "Body Height"},
                "performer": [{"reference": "Practitioner/9", "display": "Dr. Who"}],
                "insurance": {"display": "private"},
                "note": [{"text": "called her husband John"}],
                "extension": [{"url": "http://example.org/ethnicity-detail", "valueString": "x"}],
                "component": [{"code": {"text": "c"}, "extension": []}],
            }),
        );
        check(
            Anonymization::Anonymized,
            json!({"resourceType": "Observation",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2", "display": "Body Height"}], "text": "Body Height"},
                "performer": [{"reference": "Practitioner/9"}],
                "insurance": {},
                "extension": [],
                "component": [{"code": {"text": "c"}, "extension": []}],
            }),
        );
    }

    #[test]
    fn attachments_lose_their_documents() {
        let input = json!({"resourceType": "DocumentReference", "content": [{"attachment":
            {"contentType": "text/plain", "data": "RnJlZGEgTydDb25uZWxs", "title": "Letter to Freda", "size": 15}}]});
        for level in [Anonymization::Pseudonymized, Anonymization::Anonymized] {
            assert_eq!(
                deidentified(input.clone(), level),
                json!({"resourceType": "DocumentReference", "content": [{"attachment": {"contentType": "text/plain", "size": 15}}]})
            );
        }
    }
}
