//! The anonymization unit measured with planted identifiers: every Synthea fixture gets the
//! same made-up person's identifiers planted in every place they can hide, and none may survive
//! `anonymized`; no direct identifier may survive `pseudonymized`.

use kura_core::policy::Anonymization;
use kura_core::record::RecordFormat;
use kura_formats::{Deidentified, deidentify};
use serde_json::{Value, json};

const KEY: &[u8] = b"planted-corpus-context-key";

/// What is planted, and whether `pseudonymized` must remove it too (direct identifiers).
const PLANTED: &[(&str, bool)] = &[
    ("Zebulon", true),
    ("Quixotesque", true),
    ("555-867-5309", true),
    ("zebulon.q@example.org", true),
    ("MRN-PLANT-4471", true),
    ("4471 Planted Lane", true),
    ("photos.example", true),
    ("10.20.30.40", true),
    ("https://portal.example", true),
    ("1987-06-15", true),
    ("Zeb the planted", false),
    ("1999-03-04", false),
    ("Rumpelstilt Clinic", false),
];

fn fixture(n: u32) -> Value {
    let path = format!("{}/../../fixtures/synthea-r4/patient-{n:02}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn first_of<'a>(bundle: &'a mut Value, resource_type: &str) -> Option<&'a mut serde_json::Map<String, Value>> {
    bundle["entry"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .filter_map(|e| e.get_mut("resource"))
        .find(|r| r["resourceType"] == resource_type)
        .and_then(Value::as_object_mut)
}

fn narrative(text: &str) -> Value {
    json!({"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{text}</div>")})
}

/// Plants the identifiers of "Zebulon Quixotesque" everywhere they can hide.
fn plant(mut bundle: Value) -> Value {
    let patient = first_of(&mut bundle, "Patient").unwrap();
    patient["name"]
        .as_array_mut()
        .unwrap()
        .push(json!({"given": ["Zebulon"], "family": "Quixotesque", "text": "Zebulon Quixotesque"}));
    patient.entry("telecom").or_insert(json!([])).as_array_mut().unwrap().extend([
        json!({"system": "phone", "value": "555-867-5309"}),
        json!({"system": "email", "value": "zebulon.q@example.org"}),
    ]);
    patient["identifier"]
        .as_array_mut()
        .unwrap()
        .push(json!({"system": "http://hospital.example/mrn", "value": "MRN-PLANT-4471"}));
    patient["address"]
        .as_array_mut()
        .unwrap()
        .push(json!({"line": ["4471 Planted Lane"], "city": "Plantville", "postalCode": "03601"}));
    patient.insert("photo".into(), json!([{"url": "https://photos.example/zebulon.jpg"}]));
    patient.insert("birthDate".into(), json!("1987-06-15"));
    patient.insert("text".into(), narrative("Zebulon Quixotesque, 555-867-5309"));
    patient["extension"]
        .as_array_mut()
        .unwrap()
        .push(json!({"url": "http://example.org/fhir/nickname", "valueString": "Zeb the planted"}));
    patient.insert(
        "contact".into(),
        json!([{"name": {"family": "Quixotesque", "given": ["Zebulon"]}, "telecom": [{"system": "phone", "value": "555-867-5309"}]}]),
    );

    let observation = first_of(&mut bundle, "Observation").unwrap();
    observation.insert(
        "note".into(),
        json!([{"text": "Zebulon Quixotesque called from 555-867-5309 (ip 10.20.30.40), see https://portal.example/zq"}]),
    );
    observation.insert("text".into(), narrative("result for MRN-PLANT-4471"));
    observation.insert("issued".into(), json!("1999-03-04T10:00:00Z"));

    let encounter = first_of(&mut bundle, "Encounter").unwrap();
    encounter.insert(
        "participant".into(),
        json!([{"individual": {"reference": "Practitioner/123", "display": "Zebulon Quixotesque"}}]),
    );
    encounter
        .insert("identifier".into(), json!([{"system": "http://hospital.example/visit", "value": "MRN-PLANT-4471"}]));
    encounter.insert(
        "extension".into(),
        json!([{"url": "http://example.org/contact", "valueString": "zebulon.q@example.org"}]),
    );
    encounter.insert("serviceProvider".into(), json!({"reference": "Organization/9", "display": "Rumpelstilt Clinic"}));

    let condition = first_of(&mut bundle, "Condition").unwrap();
    condition["code"]["text"] = json!("Zebulon's long-standing complaint, Rumpelstilt Clinic");
    condition.insert("onsetDateTime".into(), json!("1999-03-04"));

    // A resource type the allow-list does not know, full of identifiers.
    bundle["entry"].as_array_mut().unwrap().push(json!({
        "fullUrl": "urn:uuid:planted-related",
        "resource": {
            "resourceType": "RelatedPerson",
            "name": [{"given": ["Zebulon"], "family": "Quixotesque"}],
            "telecom": [{"system": "email", "value": "zebulon.q@example.org"}],
            "address": [{"line": ["4471 Planted Lane"]}]
        }
    }));
    bundle
}

fn run(bundle: &Value, level: Anonymization) -> String {
    match deidentify(RecordFormat::Fhir, &serde_json::to_vec(bundle).unwrap(), level, KEY).unwrap() {
        Deidentified::Content(bytes) => String::from_utf8(bytes).unwrap(),
        Deidentified::Withheld { reason } => panic!("withheld: {reason}"),
    }
}

fn survivors(output: &str, direct_only: bool) -> Vec<&'static str> {
    PLANTED
        .iter()
        .filter(|(_, direct)| !direct_only || *direct)
        .filter(|(planted, _)| output.contains(planted))
        .map(|(planted, _)| *planted)
        .collect()
}

/// The fixture's own direct identifiers of the patient.
fn own_identifiers(bundle: &Value) -> Vec<String> {
    let patient = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == "Patient")
        .unwrap();
    let mut values = vec![patient["name"][0]["family"].as_str().unwrap().to_owned()];
    values.extend(patient["name"][0]["given"].as_array().unwrap().iter().map(|g| g.as_str().unwrap().to_owned()));
    values.extend(patient["identifier"].as_array().unwrap().iter().map(|i| i["value"].as_str().unwrap().to_owned()));
    values.extend(patient["telecom"].as_array().into_iter().flatten().map(|t| t["value"].as_str().unwrap().to_owned()));
    values.extend(patient["address"][0]["line"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_owned()));
    values
}

#[test]
fn nothing_planted_survives_anonymization() {
    for n in 1..=15 {
        let original = fixture(n);
        let planted = plant(original.clone());
        let output = run(&planted, Anonymization::Anonymized);
        assert_eq!(survivors(&output, false), Vec::<&str>::new(), "fixture {n} at anonymized");
        for own in own_identifiers(&original) {
            assert!(!output.contains(&own), "fixture {n}: one of its own identifiers survived anonymization");
        }
        assert!(!output.contains("\"div\""), "narrative survived");
        assert!(!output.contains("RelatedPerson"), "a resource type outside the allow-list survived");
        // The clinical content is still there.
        assert!(output.contains("http://snomed.info/sct") && output.contains("http://loinc.org"), "fixture {n}");
    }
}

#[test]
fn no_direct_identifier_survives_pseudonymization() {
    for n in 1..=15 {
        let original = fixture(n);
        let planted = plant(original.clone());
        let output = run(&planted, Anonymization::Pseudonymized);
        assert_eq!(survivors(&output, true), Vec::<&str>::new(), "fixture {n} at pseudonymized");
        for own in own_identifiers(&original) {
            if let Some(at) = output.find(&own) {
                let context = &output[at.saturating_sub(120)..(at + own.len() + 40).min(output.len())];
                panic!("fixture {n}: one of its own direct identifiers survived pseudonymization, in: {context}");
            }
        }
        // Pseudonymized data keeps what is not a direct identifier: the clinical dates survive.
        assert!(output.contains("1999-03-04"), "fixture {n}");
    }
}

#[test]
fn the_checker_finds_what_was_planted_and_nothing_after_anonymization() {
    let planted = plant(fixture(3));
    let before =
        kura_formats::residual_identifiers(RecordFormat::Fhir, &serde_json::to_vec(&planted).unwrap()).unwrap();
    assert!(before.len() >= 10, "{before:?}");
    let after = run(&planted, Anonymization::Anonymized);
    let findings = kura_formats::residual_identifiers(RecordFormat::Fhir, after.as_bytes()).unwrap();
    assert_eq!(findings, Vec::<(String, &str)>::new());
}
