//! Staff pseudonyms for FHIR content, for transfers under `anonymize_staff`: the patient's
//! record moves to the patient without naming the people who treated them or where.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::{Place, for_each_object_mut, for_each_resource_mut, for_each_string_mut, parse_json, resources, serialize};
use crate::FormatError;
use crate::pseudonym::Pseudonymizer;

/// Resource types that describe the institution and its staff.
const STAFF_TYPES: [&str; 4] = ["Practitioner", "PractitionerRole", "Organization", "Location"];

/// Contact details of staff resources, which identify them as well as their names do.
const STAFF_CONTACT_ELEMENTS: [&str; 6] = ["telecom", "address", "alias", "photo", "contact", "text"];

/// An institution name shorter than this would match inside unrelated words.
const MIN_INSTITUTION_NAME_CHARS: usize = 3;

/// The pseudonym prefix of a staff resource type. A PractitionerRole's display names the
/// practitioner, so both get the same pseudonym for the same name.
fn prefix_of(staff_type: &str) -> &'static str {
    match staff_type {
        "Organization" => "Organization",
        "Location" => "Location",
        _ => "Practitioner",
    }
}

/// Names are compared without case or repeated spaces, so `Dr. Jane  Doe` in a display and
/// `dr. jane doe` rendered from a HumanName get the same pseudonym.
pub(crate) fn normalized_name(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

pub fn anonymize_staff(bytes: &[u8], institution_name: &str, keyed: &Pseudonymizer) -> Result<Vec<u8>, FormatError> {
    let mut value = parse_json(bytes)?;
    resources(&value)?;
    // References to staff resources of this record, by the strings that refer to them.
    let mut staff_by_reference: HashMap<String, &'static str> = HashMap::new();
    for_each_resource_mut(&mut value, &mut |resource, place| {
        let rt = resource.get("resourceType").and_then(Value::as_str).unwrap_or("");
        let Some(staff_type) = STAFF_TYPES.iter().copied().find(|t| *t == rt) else { return };
        let id = resource.get("id").and_then(Value::as_str).unwrap_or("");
        match place {
            Place::Entry(full_url) => {
                if let Some(url) = full_url {
                    staff_by_reference.insert(url.clone(), staff_type);
                }
                if !id.is_empty() {
                    staff_by_reference.insert(format!("{staff_type}/{id}"), staff_type);
                }
            }
            Place::Contained if !id.is_empty() => {
                staff_by_reference.insert(format!("#{id}"), staff_type);
            }
            Place::Contained => {}
        }
        pseudonymize_staff_resource(resource, staff_type, keyed);
    });
    for_each_object_mut(&mut value, &mut |object| {
        let Some(staff_type) = staff_type_of_reference(object, &staff_by_reference) else { return };
        if let Some(Value::String(display)) = object.get_mut("display") {
            *display = keyed.name(prefix_of(staff_type), &normalized_name(display));
        }
    });
    let institution: Vec<char> = normalized_name(institution_name).chars().collect();
    if institution.len() >= MIN_INSTITUTION_NAME_CHARS {
        let pseudonym = keyed.name("Organization", &normalized_name(institution_name));
        for_each_string_mut(&mut value, &mut |s| {
            if let Some(replaced) = replace_ignoring_case(s, &institution, &pseudonym) {
                *s = replaced;
            }
        });
    }
    serialize(&value)
}

fn pseudonymize_staff_resource(resource: &mut Map<String, Value>, staff_type: &str, keyed: &Pseudonymizer) {
    let prefix = prefix_of(staff_type);
    match resource.get("name") {
        Some(Value::String(name)) => {
            let pseudonym = keyed.name(prefix, &normalized_name(name));
            resource.insert("name".into(), Value::String(pseudonym));
        }
        Some(name @ (Value::Array(_) | Value::Object(_))) => {
            let pseudonym = keyed.name(prefix, &normalized_name(&human_name_text(name)));
            resource.insert("name".into(), serde_json::json!([{ "text": pseudonym }]));
        }
        Some(_) => {
            resource.remove("name");
        }
        None => {}
    }
    resource.retain(|key, _| !STAFF_CONTACT_ELEMENTS.contains(&key.as_str()));
}

/// A HumanName (or a list of them) as people write it, `Dr. Jane Doe`: the form Synthea and
/// most systems use in Reference displays.
fn human_name_text(name: &Value) -> String {
    match name {
        Value::Array(names) => names.iter().map(human_name_text).collect::<Vec<_>>().join(" "),
        Value::Object(parts) => {
            let mut words: Vec<&str> = Vec::new();
            for key in ["prefix", "given"] {
                words.extend(parts.get(key).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str));
            }
            words.extend(parts.get("family").and_then(Value::as_str));
            words.extend(parts.get("suffix").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str));
            if words.is_empty() {
                words.extend(parts.get("text").and_then(Value::as_str));
            }
            words.join(" ")
        }
        _ => String::new(),
    }
}

/// The staff type a Reference points to: through a resource of this record, by the type in
/// its `reference` (relative, absolute, versioned or conditional), or by its `type`.
fn staff_type_of_reference(
    object: &Map<String, Value>,
    staff_by_reference: &HashMap<String, &'static str>,
) -> Option<&'static str> {
    if let Some(reference) = object.get("reference").and_then(Value::as_str) {
        if let Some(staff_type) = staff_by_reference.get(reference) {
            return Some(staff_type);
        }
        if let Some(staff_type) = STAFF_TYPES.iter().copied().find(|t| names_type(reference, t)) {
            return Some(staff_type);
        }
    }
    let declared = object.get("type").and_then(Value::as_str)?;
    STAFF_TYPES.iter().copied().find(|t| *t == declared)
}

/// Whether `reference` is `Type/...` or `Type?...`, possibly after a base URL.
fn names_type(reference: &str, resource_type: &str) -> bool {
    reference.match_indices(resource_type).any(|(at, _)| {
        let before = reference.get(..at).unwrap_or("");
        let after = reference.get(at + resource_type.len()..).unwrap_or("");
        (before.is_empty() || before.ends_with('/')) && after.starts_with(['/', '?'])
    })
}

/// `haystack` with every case-insensitive occurrence of `needle` (given lower-cased, as
/// characters) replaced by `with`; `None` when there is none. Characters are compared by their
/// lower-case expansions, so this never splits a character whatever the case mapping does to
/// byte lengths.
fn replace_ignoring_case(haystack: &str, needle: &[char], with: &str) -> Option<String> {
    if needle.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(haystack.len());
    let mut rest = haystack;
    let mut found = false;
    while !rest.is_empty() {
        if let Some(len) = match_len_ignoring_case(rest, needle) {
            out.push_str(with);
            rest = rest.get(len..).unwrap_or("");
            found = true;
            continue;
        }
        let mut chars = rest.chars();
        out.extend(chars.next());
        rest = chars.as_str();
    }
    found.then_some(out)
}

/// The byte length of the prefix of `s` that equals `needle` ignoring case.
fn match_len_ignoring_case(s: &str, needle: &[char]) -> Option<usize> {
    let mut matched = 0;
    for (at, c) in s.char_indices() {
        if matched == needle.len() {
            return Some(at);
        }
        for lower in c.to_lowercase() {
            if needle.get(matched) != Some(&lower) {
                return None;
            }
            matched += 1;
        }
    }
    (matched == needle.len()).then_some(s.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &[u8] = b"institution-key!";

    fn keyed() -> Pseudonymizer {
        Pseudonymizer::new(KEY).unwrap()
    }

    fn anonymized(input: Value, institution: &str) -> Value {
        let out = anonymize_staff(&serde_json::to_vec(&input).unwrap(), institution, &keyed()).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn staff_resources_and_references_get_the_same_pseudonyms() {
        let input = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:pr1", "resource": {"resourceType": "Practitioner", "id": "pr1",
                "name": [{"family": "Hettinger", "given": ["Miquel"], "prefix": ["Dr."]}],
                "telecom": [{"value": "555"}], "address": [{"city": "Athol"}], "gender": "male"}},
            {"fullUrl": "urn:uuid:o1", "resource": {"resourceType": "Organization", "id": "o1", "name": "SOUTHCOAST HOSPITAL",
                "alias": ["Southcoast"]}},
            {"resource": {"resourceType": "Encounter",
                "participant": [{"individual": {"reference": "urn:uuid:pr1", "display": "Dr.  Miquel Hettinger"}}],
                "serviceProvider": {"reference": "Organization/o1", "display": "Southcoast Hospital"},
                "location": [{"location": {"reference": "Location?identifier=x|1", "display": "Ward 3"}}],
                "subject": {"reference": "Patient/p", "display": "Freda O'Connell"},
                "reasonCode": [{"coding": [{"system": "http://snomed.info/sct", "code": "1", "display": "Dr. Miquel Hettinger"}]}]}},
        ]});
        let practitioner = keyed().name("Practitioner", "dr. miquel hettinger");
        let organization = keyed().name("Organization", "southcoast hospital");
        let location = keyed().name("Location", "ward 3");
        let expected = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:pr1", "resource": {"resourceType": "Practitioner", "id": "pr1",
                "name": [{"text": practitioner}], "gender": "male"}},
            {"fullUrl": "urn:uuid:o1", "resource": {"resourceType": "Organization", "id": "o1", "name": organization}},
            {"resource": {"resourceType": "Encounter",
                "participant": [{"individual": {"reference": "urn:uuid:pr1", "display": practitioner}}],
                "serviceProvider": {"reference": "Organization/o1", "display": organization},
                "location": [{"location": {"reference": "Location?identifier=x|1", "display": location}}],
                "subject": {"reference": "Patient/p", "display": "Freda O'Connell"},
                "reasonCode": [{"coding": [{"system": "http://snomed.info/sct", "code": "1", "display": "Dr. Miquel Hettinger"}]}]}},
        ]});
        assert_eq!(anonymized(input, "Aoba General Hospital"), expected);
    }

    #[test]
    fn references_are_recognised_by_their_target_type() {
        let check = |reference: Value, staff: Option<&str>| {
            let map = reference.as_object().unwrap().clone();
            assert_eq!(staff_type_of_reference(&map, &HashMap::new()), staff, "{reference}");
        };
        check(json!({"reference": "Practitioner/1"}), Some("Practitioner"));
        check(
            json!({"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999"}),
            Some("Practitioner"),
        );
        check(json!({"reference": "PractitionerRole/7"}), Some("PractitionerRole"));
        check(json!({"reference": "https://example.org/fhir/Organization/3/_history/1"}), Some("Organization"));
        check(json!({"type": "Location", "identifier": {"value": "1"}}), Some("Location"));
        check(json!({"reference": "Patient/Practitioner"}), None);
        check(json!({"reference": "MyPractitioner/1"}), None);
        check(json!({"reference": "urn:uuid:1"}), None);
        check(json!({"display": "Dr. Who"}), None);
    }

    #[test]
    fn the_institution_name_is_replaced_inside_any_string() {
        let pseudonym = keyed().name("Organization", "aoba general hospital");
        let check = |text: &str, institution: &str, expected: &str| {
            let out = anonymized(json!({"resourceType": "Basic", "note": [{"text": text}]}), institution);
            assert_eq!(out["note"][0]["text"], expected.replace("{P}", &pseudonym), "{text}");
        };
        check("seen at AOBA general Hospital today", "Aoba General Hospital", "seen at {P} today");
        check("Aoba General Hospital/Aoba General Hospital", "  aoba  general hospital ", "{P}/{P}");
        check("nothing to see", "Aoba General Hospital", "nothing to see");
        check("İstanbul Aoba General Hospital", "Aoba General Hospital", "İstanbul {P}");
        // Too short a name would replace parts of words.
        check("a ward", "A", "a ward");
    }

    #[test]
    fn case_insensitive_matching() {
        let check = |haystack: &str, needle: &str, expected: Option<&str>| {
            let needle: Vec<char> = needle.chars().collect();
            assert_eq!(replace_ignoring_case(haystack, &needle, "X").as_deref(), expected, "{haystack}");
        };
        check("Aoba aoba AOBA", "aoba", Some("X X X"));
        check("aob", "aoba", None);
        check("", "aoba", None);
        check("x", "", None);
        check("ÅOBA", "åoba", Some("X"));
        // 'İ' lower-cases to two characters; a needle ending inside it does not match.
        check("İ", "i", None);
        check("İx", "i\u{307}x", Some("X"));
    }
}
