//! FHIR R4 JSON. Content is kept as `serde_json::Value` (key order preserved) and read where
//! Kura needs it: parts, labels, and the transforms. Unknown elements are kept untouched.

use std::collections::{HashMap, HashSet};

use kura_core::policy::Anonymization;
use kura_core::record::{CategorySet, PartCategory};
use serde_json::{Map, Value};

use crate::labels::{Date, LabelSet, age_band};
use crate::pseudonym::Pseudonymizer;
use crate::{FormatError, IngestContext, PartInfo};

/// The part category of a FHIR resource type. This table is normative (DESIGN.md section 2):
///
/// | resource types | category |
/// | --- | --- |
/// | Condition | `condition` |
/// | Observation, DiagnosticReport, Specimen | `observation` |
/// | MedicationRequest, MedicationStatement, MedicationAdministration, MedicationDispense, Medication, Immunization | `medication` |
/// | Procedure | `procedure` |
/// | ImagingStudy, Media | `image` |
/// | Composition | `certificate` |
/// | DocumentReference, Binary | `document` |
/// | QuestionnaireResponse | `patient_entered` |
/// | everything else (Patient, Encounter, Claim, CarePlan, AllergyIntolerance, ...) | `other` |
pub fn category_of_resource_type(resource_type: &str) -> PartCategory {
    match resource_type {
        "Condition" => PartCategory::Condition,
        "Observation" | "DiagnosticReport" | "Specimen" => PartCategory::Observation,
        "MedicationRequest"
        | "MedicationStatement"
        | "MedicationAdministration"
        | "MedicationDispense"
        | "Medication"
        | "Immunization" => PartCategory::Medication,
        "Procedure" => PartCategory::Procedure,
        "ImagingStudy" | "Media" => PartCategory::Image,
        "Composition" => PartCategory::Certificate,
        "DocumentReference" | "Binary" => PartCategory::Document,
        "QuestionnaireResponse" => PartCategory::PatientEntered,
        _ => PartCategory::Other,
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, FormatError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| FormatError::Malformed(format!("not valid JSON (line {}, column {})", e.line(), e.column())))?;
    let resource_type = value.get("resourceType").and_then(Value::as_str);
    match resource_type {
        Some(t) if !t.is_empty() && t.chars().all(|c| c.is_ascii_alphabetic()) => Ok(value),
        _ => Err(FormatError::Malformed("a FHIR resource is a JSON object with a resourceType".into())),
    }
}

fn is_bundle(value: &Value) -> bool {
    value.get("resourceType").and_then(Value::as_str) == Some("Bundle")
}

fn resource_type(resource: &Value) -> &str {
    resource.get("resourceType").and_then(Value::as_str).unwrap_or("")
}

/// The resources of a Bundle's entries (entries without one are skipped), or the resource itself.
fn resources(value: &Value) -> Result<Vec<&Value>, FormatError> {
    if !is_bundle(value) {
        return Ok(vec![value]);
    }
    let entries = value
        .get("entry")
        .and_then(Value::as_array)
        .ok_or_else(|| FormatError::Malformed("the Bundle has no entries".into()))?;
    let mut found = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let Some(resource) = entry.get("resource") else { continue };
        if !resource.is_object() || resource_type(resource).is_empty() {
            return Err(FormatError::Malformed(format!("Bundle entry {i} has a resource without a resourceType")));
        }
        found.push(resource);
    }
    if found.is_empty() {
        return Err(FormatError::Malformed("the Bundle has no entries with a resource".into()));
    }
    Ok(found)
}

/// Fields whose CodeableConcepts become labels.
const CODED_FIELDS: [&str; 8] = [
    "code",
    "vaccineCode",
    "medicationCodeableConcept",
    "type",
    "category",
    "bodySite",
    "reasonCode",
    "valueCodeableConcept",
];

fn add_codings(concept: &Value, labels: &mut LabelSet) {
    match concept {
        Value::Array(items) => items.iter().for_each(|c| add_codings(c, labels)),
        Value::Object(map) => {
            for coding in map.get("coding").and_then(Value::as_array).into_iter().flatten() {
                if let (Some(system), Some(code)) =
                    (coding.get("system").and_then(Value::as_str), coding.get("code").and_then(Value::as_str))
                {
                    labels.add_coding(system, code);
                }
            }
        }
        _ => {}
    }
}

fn record_dates(resource: &Value) -> impl Iterator<Item = Date> + '_ {
    let direct =
        ["effectiveDateTime", "issued", "onsetDateTime", "authoredOn", "recordedDate", "occurrenceDateTime", "date"]
            .into_iter()
            .filter_map(|f| resource.get(f).and_then(Value::as_str));
    let periods = ["period", "performedPeriod", "effectivePeriod"]
        .into_iter()
        .filter_map(|f| resource.get(f).and_then(|p| p.get("start")).and_then(Value::as_str));
    direct.chain(periods).filter_map(Date::parse)
}

pub fn parse(bytes: &[u8], ctx: &IngestContext, labels: &mut LabelSet) -> Result<Vec<PartInfo>, FormatError> {
    let value = parse_json(bytes)?;
    let resources = resources(&value)?;
    let mut parts = Vec::with_capacity(resources.len());
    let mut birth = None;
    let mut latest: Option<Date> = None;
    for (index, resource) in resources.iter().enumerate() {
        let rt = resource_type(resource);
        parts.push(PartInfo {
            index: u32::try_from(index).map_err(|_| FormatError::Unsupported("too many entries".into()))?,
            category: category_of_resource_type(rt),
            resource_type: rt.to_owned(),
        });
        for field in CODED_FIELDS {
            if let Some(concept) = resource.get(field) {
                add_codings(concept, labels);
            }
        }
        for component in resource.get("component").and_then(Value::as_array).into_iter().flatten() {
            if let Some(code) = component.get("code") {
                add_codings(code, labels);
            }
        }
        if rt == "Patient" {
            if let Some(gender) = resource.get("gender").and_then(Value::as_str) {
                labels.add("sex", gender);
            }
            birth = resource.get("birthDate").and_then(Value::as_str).and_then(Date::parse);
        }
        latest = latest.max(record_dates(resource).max());
    }
    if let Some(birth) = birth {
        let at = latest.unwrap_or_else(|| Date::from_millis(ctx.now.as_millis()));
        if let Some(age) = birth.age_at(at) {
            labels.add("ageband", &age_band(age));
        }
    }
    Ok(parts)
}

pub fn select(bytes: &[u8], keep: CategorySet) -> Result<Option<Vec<u8>>, FormatError> {
    let value = parse_json(bytes)?;
    if !is_bundle(&value) {
        let category = category_of_resource_type(resource_type(&value));
        return Ok(keep.contains(category).then(|| bytes.to_vec()));
    }
    let Value::Object(mut bundle) = value else {
        return Err(FormatError::Malformed("a Bundle is a JSON object".into()));
    };
    let entries = match bundle.remove("entry") {
        Some(Value::Array(entries)) => entries,
        _ => return Err(FormatError::Malformed("the Bundle has no entries".into())),
    };
    let kept: Vec<Value> = entries
        .into_iter()
        .filter(|e| e.get("resource").is_some_and(|r| keep.contains(category_of_resource_type(resource_type(r)))))
        .collect();
    if kept.is_empty() {
        return Ok(None);
    }
    bundle.insert("entry".into(), Value::Array(kept));
    serialize(&Value::Object(bundle)).map(Some)
}

fn serialize(value: &Value) -> Result<Vec<u8>, FormatError> {
    serde_json::to_vec(value).map_err(|_| FormatError::Malformed("content could not be written back".into()))
}

/// Applies `f` to every resource of a Bundle (or to the single resource), with its entry's
/// `fullUrl` when there is one.
fn for_each_resource(value: &mut Value, mut f: impl FnMut(&mut Map<String, Value>, Option<&mut Value>)) {
    if is_bundle(value) {
        for entry in value.get_mut("entry").and_then(Value::as_array_mut).into_iter().flatten() {
            let Some(entry) = entry.as_object_mut() else { continue };
            let mut full_url = entry.remove("fullUrl");
            if let Some(Value::Object(resource)) = entry.get_mut("resource") {
                f(resource, full_url.as_mut());
            }
            if let Some(url) = full_url {
                entry.insert("fullUrl".into(), url);
            }
        }
    } else if let Value::Object(resource) = value {
        f(resource, None);
    }
}

/// Rewrites every string in `value` that equals a key of `replacements`.
fn rewrite_strings(value: &mut Value, replacements: &HashMap<String, String>) {
    match value {
        Value::String(s) => {
            if let Some(new) = replacements.get(s.as_str()) {
                *s = new.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_strings(v, replacements)),
        Value::Object(map) => map.values_mut().for_each(|v| rewrite_strings(v, replacements)),
        _ => {}
    }
}

/// Removes `display` from every Reference (an object with a `reference`), recursively.
fn drop_reference_displays(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(drop_reference_displays),
        Value::Object(map) => {
            if map.contains_key("reference") {
                map.remove("display");
            }
            map.values_mut().for_each(drop_reference_displays);
        }
        _ => {}
    }
}

fn drop_key_recursively(value: &mut Value, key: &str) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| drop_key_recursively(v, key)),
        Value::Object(map) => {
            map.remove(key);
            map.values_mut().for_each(|v| drop_key_recursively(v, key));
        }
        _ => {}
    }
}

/// Extensions that identify a person (or a relative) and go at every level.
const IDENTIFYING_EXTENSIONS: [&str; 2] = ["mothersMaidenName", "birthPlace"];
/// Extensions that are quasi-identifiers and go when anonymized.
const QUASI_IDENTIFYING_EXTENSIONS: [&str; 3] = ["race", "ethnicity", "birthsex"];

fn deidentify_patient(patient: &mut Map<String, Value>, level: Anonymization, keyed: &Pseudonymizer) {
    for field in ["name", "telecom", "photo", "contact", "link", "generalPractitioner", "managingOrganization"] {
        patient.remove(field);
    }
    match level {
        Anonymization::Anonymized => {
            patient.remove("identifier");
            patient.remove("address");
        }
        _ => {
            if let Some(Value::Array(identifiers)) = patient.get_mut("identifier") {
                for identifier in identifiers.iter_mut().filter_map(Value::as_object_mut) {
                    let value = identifier.get("value").and_then(Value::as_str).unwrap_or("").to_owned();
                    identifier.insert("value".into(), Value::String(keyed.token("identifier", &value)));
                    identifier.remove("assigner");
                }
            }
            if let Some(Value::Array(addresses)) = patient.get_mut("address") {
                for address in addresses.iter_mut().filter_map(Value::as_object_mut) {
                    address.retain(|k, _| k == "state" || k == "country");
                }
            }
        }
    }
    for field in ["birthDate", "deceasedDateTime"] {
        if let Some(year) = patient.get(field).and_then(Value::as_str).and_then(|d| d.get(..4)).map(str::to_owned) {
            patient.insert(field.into(), Value::String(year));
        }
    }
    if let Some(Value::Array(extensions)) = patient.get_mut("extension") {
        extensions.retain(|ext| {
            let url = ext.get("url").and_then(Value::as_str).unwrap_or("");
            let identifying = IDENTIFYING_EXTENSIONS.iter().any(|name| url.contains(name));
            let quasi = QUASI_IDENTIFYING_EXTENSIONS.iter().any(|name| url.contains(name));
            let removed = identifying || (quasi && level == Anonymization::Anonymized);
            !removed
        });
    }
}

pub fn deidentify(bytes: &[u8], level: Anonymization, keyed: &Pseudonymizer) -> Result<Vec<u8>, FormatError> {
    let mut value = parse_json(bytes)?;
    // First pass: who is the patient, under which ids and URLs.
    let mut replacements = HashMap::new();
    for_each_resource(&mut value, |resource, full_url| {
        if resource.get("resourceType").and_then(Value::as_str) != Some("Patient") {
            return;
        }
        let id = resource.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
        let pseudonym = keyed.token("patient", &id);
        if !id.is_empty() {
            replacements.insert(format!("Patient/{id}"), format!("Patient/{pseudonym}"));
            replacements.insert(format!("urn:uuid:{id}"), format!("urn:uuid:{pseudonym}"));
        }
        if let Some(Value::String(url)) = full_url {
            let new_url = format!("urn:uuid:{pseudonym}");
            replacements.insert(url.clone(), new_url.clone());
            *url = new_url;
        }
        resource.insert("id".into(), Value::String(pseudonym));
        deidentify_patient(resource, level, keyed);
    });
    for_each_resource(&mut value, |resource, _| {
        resource.remove("text");
        if level == Anonymization::Anonymized {
            let mut as_value = Value::Object(std::mem::take(resource));
            drop_key_recursively(&mut as_value, "note");
            drop_reference_displays(&mut as_value);
            if let Value::Object(map) = as_value {
                *resource = map;
            }
        }
    });
    rewrite_strings(&mut value, &replacements);
    serialize(&value)
}

const STAFF_TYPES: [&str; 4] = ["Practitioner", "PractitionerRole", "Organization", "Location"];

fn staff_type_of_reference(reference: &str, types_by_url: &HashMap<String, String>) -> Option<String> {
    if let Some(t) = types_by_url.get(reference) {
        return STAFF_TYPES.contains(&t.as_str()).then(|| t.clone());
    }
    let head = reference.split(['/', '?']).next().unwrap_or("");
    STAFF_TYPES.contains(&head).then(|| head.to_owned())
}

fn human_name_text(name: &Value) -> String {
    match name {
        Value::Array(names) => names.iter().map(human_name_text).collect::<Vec<_>>().join(" "),
        Value::Object(map) => {
            let mut words = Vec::new();
            for key in ["prefix", "given"] {
                for word in map.get(key).and_then(Value::as_array).into_iter().flatten() {
                    words.extend(word.as_str().map(str::to_owned));
                }
            }
            words.extend(map.get("family").and_then(Value::as_str).map(str::to_owned));
            if words.is_empty() {
                words.extend(map.get("text").and_then(Value::as_str).map(str::to_owned));
            }
            words.join(" ")
        }
        Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

/// Replaces staff names in references and the institution's name inside any string.
fn pseudonymize_staff_references(
    value: &mut Value,
    types_by_url: &HashMap<String, String>,
    institution: &str,
    keyed: &Pseudonymizer,
) {
    match value {
        Value::String(s) if institution.len() >= 3 && s.to_lowercase().contains(&institution.to_lowercase()) => {
            *s = replace_case_insensitive(s, institution, &keyed.name("Organization", &institution.to_lowercase()));
        }
        Value::Array(items) => {
            items.iter_mut().for_each(|v| pseudonymize_staff_references(v, types_by_url, institution, keyed))
        }
        Value::Object(map) => {
            let staff_type =
                map.get("reference").and_then(Value::as_str).and_then(|r| staff_type_of_reference(r, types_by_url));
            if let (Some(t), Some(Value::String(display))) = (staff_type, map.get_mut("display")) {
                *display = keyed.name(&t, &display.to_lowercase());
            }
            map.values_mut().for_each(|v| pseudonymize_staff_references(v, types_by_url, institution, keyed));
        }
        _ => {}
    }
}

fn replace_case_insensitive(haystack: &str, needle: &str, with: &str) -> String {
    let lower = haystack.to_lowercase();
    let needle = needle.to_lowercase();
    // Lower-casing can change byte lengths outside ASCII; then the whole string is replaced.
    if lower.len() != haystack.len() {
        return with.to_owned();
    }
    let mut out = String::with_capacity(haystack.len());
    let mut rest = 0;
    for (at, _) in lower.match_indices(&needle) {
        out.push_str(haystack.get(rest..at).unwrap_or(""));
        out.push_str(with);
        rest = at + needle.len();
    }
    out.push_str(haystack.get(rest..).unwrap_or(""));
    out
}

pub fn anonymize_staff(bytes: &[u8], institution_name: &str, keyed: &Pseudonymizer) -> Result<Vec<u8>, FormatError> {
    let mut value = parse_json(bytes)?;
    let mut types_by_url = HashMap::new();
    let mut staff_ids = HashSet::new();
    for_each_resource(&mut value, |resource, full_url| {
        let rt = resource.get("resourceType").and_then(Value::as_str).unwrap_or("").to_owned();
        if !STAFF_TYPES.contains(&rt.as_str()) {
            return;
        }
        if let Some(Value::String(url)) = full_url {
            types_by_url.insert(url.clone(), rt.clone());
        }
        if let Some(id) = resource.get("id").and_then(Value::as_str) {
            staff_ids.insert(format!("{rt}/{id}"));
        }
        if let Some(name) = resource.get("name") {
            let pseudonym = keyed.name(&rt, &human_name_text(name).to_lowercase());
            let replaced = match name {
                Value::String(_) => Value::String(pseudonym),
                _ => serde_json::json!([{ "text": pseudonym }]),
            };
            resource.insert("name".into(), replaced);
        }
        for field in ["telecom", "address", "photo", "alias", "text"] {
            resource.remove(field);
        }
    });
    for id in staff_ids {
        if let Some((t, _)) = id.split_once('/') {
            types_by_url.insert(id.clone(), t.to_owned());
        }
    }
    pseudonymize_staff_references(&mut value, &types_by_url, institution_name.trim(), keyed);
    serialize(&value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_core::time::Timestamp;

    fn fixture(n: u32) -> Vec<u8> {
        let path = format!("{}/../../fixtures/synthea-r4/patient-{n:02}.json", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap()
    }

    fn ctx() -> IngestContext<'static> {
        IngestContext { institution: "h1", now: Timestamp::from_millis(1_764_000_000_000), document_category: None }
    }

    fn labels_of(bytes: &[u8]) -> Vec<String> {
        let mut labels = LabelSet::default();
        parse(bytes, &ctx(), &mut labels).unwrap();
        labels.into_sorted().iter().map(|l| l.to_string()).collect()
    }

    fn patient_of(bytes: &[u8]) -> Value {
        let value: Value = serde_json::from_slice(bytes).unwrap();
        resources(&value).unwrap().into_iter().find(|r| resource_type(r) == "Patient").unwrap().clone()
    }

    #[test]
    fn every_fixture_parses_with_labels() {
        for n in 1..=15 {
            let bytes = fixture(n);
            let patient = patient_of(&bytes);
            let labels = labels_of(&bytes);
            assert!(labels.contains(&format!("sex:{}", patient["gender"].as_str().unwrap())), "{n}");
            assert!(labels.iter().any(|l| l.starts_with("ageband:")), "{n}");
            assert!(labels.iter().any(|l| l.starts_with("snomed:")), "{n}");
            assert!(labels.iter().any(|l| l.starts_with("loinc:")), "{n}");
        }
        // Patient 03 has a known condition and vaccination codes.
        let labels = labels_of(&fixture(3));
        assert!(labels.contains(&"cvx:140".to_owned()), "{labels:?}");
    }

    #[test]
    fn malformed_content_is_refused_clearly() {
        let check = |bytes: &[u8], expected: &str| {
            let mut labels = LabelSet::default();
            let err = parse(bytes, &ctx(), &mut labels).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        };
        check(b"{\"resourceType\": ", "not valid JSON (line 1");
        check(b"[1, 2]", "resourceType");
        check(b"{\"id\": \"x\"}", "resourceType");
        check(b"{\"resourceType\": \"Bundle\"}", "no entries");
        check(b"{\"resourceType\": \"Bundle\", \"entry\": [{\"resource\": {\"id\": 1}}]}", "entry 0");
    }

    #[test]
    fn select_keeps_exactly_the_chosen_categories() {
        let bytes = fixture(3);
        let keep = CategorySet::empty().with(PartCategory::Condition).with(PartCategory::Medication);
        let selected = select(&bytes, keep).unwrap().unwrap();
        let value: Value = serde_json::from_slice(&selected).unwrap();
        let types: HashSet<&str> = resources(&value).unwrap().into_iter().map(resource_type).collect();
        assert_eq!(types, HashSet::from(["Condition", "Immunization", "MedicationRequest"]));
        assert_eq!(select(&bytes, CategorySet::empty().with(PartCategory::Certificate)).unwrap(), None);
        let single = br#"{"resourceType": "Condition"}"#;
        assert_eq!(select(single, keep).unwrap().as_deref(), Some(&single[..]));
    }

    #[test]
    fn deidentification_removes_the_patients_direct_identifiers() {
        for level in [Anonymization::Pseudonymized, Anonymization::Anonymized] {
            for n in 1..=15 {
                let bytes = fixture(n);
                let patient = patient_of(&bytes);
                let out = deidentify(&bytes, level, &Pseudonymizer::new(b"context-key-0123")).unwrap();
                let text = String::from_utf8(out.clone()).unwrap();
                let name = &patient["name"][0];
                let mut secrets: Vec<String> = vec![name["family"].as_str().unwrap().to_owned()];
                secrets.extend(name["given"].as_array().unwrap().iter().map(|g| g.as_str().unwrap().to_owned()));
                secrets.extend(
                    patient["identifier"].as_array().unwrap().iter().map(|i| i["value"].as_str().unwrap().to_owned()),
                );
                secrets.extend(
                    patient["telecom"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|t| t["value"].as_str().unwrap().to_owned()),
                );
                secrets.push(patient["address"][0]["line"][0].as_str().unwrap().to_owned());
                secrets.push(patient["id"].as_str().unwrap().to_owned());
                for secret in &secrets {
                    assert!(!text.contains(secret.as_str()), "patient {n} at {level:?}: an identifier survived");
                }
                let out_patient = patient_of(&out);
                assert_eq!(out_patient["birthDate"].as_str().unwrap().len(), 4, "birth date to the year");
                // Same input and key: same output; another key: other pseudonyms.
                assert_eq!(deidentify(&bytes, level, &Pseudonymizer::new(b"context-key-0123")).unwrap(), out);
                let other = deidentify(&bytes, level, &Pseudonymizer::new(b"context-key-4567")).unwrap();
                assert_ne!(patient_of(&other)["id"], out_patient["id"]);
            }
        }
    }

    #[test]
    fn references_to_the_patient_follow_the_pseudonym() {
        let bytes = fixture(3);
        let out = deidentify(&bytes, Anonymization::Pseudonymized, &Pseudonymizer::new(b"k-0123456789abcd")).unwrap();
        let value: Value = serde_json::from_slice(&out).unwrap();
        let patient_id = patient_of(&out)["id"].as_str().unwrap().to_owned();
        let condition = resources(&value).unwrap().into_iter().find(|r| resource_type(r) == "Condition").unwrap();
        assert_eq!(condition["subject"]["reference"], format!("urn:uuid:{patient_id}"));
    }

    #[test]
    fn staff_names_become_stable_pseudonyms() {
        let bytes = fixture(3);
        let keyed = Pseudonymizer::new(b"institution-key!");
        let out = anonymize_staff(&bytes, "Aoba General Hospital", &keyed).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        for name in ["Hettinger", "Miquel", "SOUTHCOAST"] {
            assert!(!text.contains(name), "{name}");
        }
        assert!(text.contains("Freda"), "the patient is not staff");
        assert_eq!(anonymize_staff(&bytes, "Aoba General Hospital", &keyed).unwrap(), out);
        let note = br#"{"resourceType": "Observation", "performer": [{"reference": "Practitioner?identifier=x|1", "display": "Dr. Who"}],
            "note": [{"text": "seen at aoba general hospital today"}]}"#;
        let out = String::from_utf8(anonymize_staff(note, "Aoba General Hospital", &keyed).unwrap()).unwrap();
        assert!(!out.contains("Dr. Who") && !out.to_lowercase().contains("aoba"), "{out}");
        assert!(out.contains("Practitioner-") && out.contains("seen at Organization-"), "{out}");
    }
}
