//! Determinism and unlinkability of the anonymization unit: the same input in the same context
//! gives the same output; different contexts give pseudonyms and date offsets that cannot be
//! linked to each other.

use std::collections::BTreeSet;

use kura_core::policy::Anonymization;
use kura_core::record::RecordFormat;
use kura_formats::{Deidentified, deidentify};
use proptest::prelude::*;
use serde_json::{Value, json};

fn fixture(n: usize) -> Vec<u8> {
    std::fs::read(format!("{}/../../fixtures/synthea-r4/patient-{n:02}.json", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn run(bytes: &[u8], level: Anonymization, key: &[u8]) -> Value {
    match deidentify(RecordFormat::Fhir, bytes, level, key).unwrap() {
        Deidentified::Content(out) => serde_json::from_slice(&out).unwrap(),
        Deidentified::Withheld { reason } => panic!("withheld: {reason}"),
    }
}

fn patient(bundle: &Value) -> &Value {
    bundle["entry"].as_array().unwrap().iter().map(|e| &e["resource"]).find(|r| r["resourceType"] == "Patient").unwrap()
}

fn level() -> impl Strategy<Value = Anonymization> {
    prop_oneof![Just(Anonymization::Pseudonymized), Just(Anonymization::Anonymized)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn same_context_same_output_other_context_unlinkable(
        n in 1usize..=15,
        level in level(),
        key in proptest::collection::vec(any::<u8>(), 16..48),
        other in proptest::collection::vec(any::<u8>(), 16..48),
    ) {
        prop_assume!(key != other);
        let bytes = fixture(n);
        let first = run(&bytes, level, &key);
        prop_assert_eq!(&run(&bytes, level, &key), &first);
        let second = run(&bytes, level, &other);
        prop_assert_ne!(&patient(&second)["id"], &patient(&first)["id"]);
        let first_refs: BTreeSet<String> = first["entry"].as_array().unwrap().iter().filter_map(|e| e["fullUrl"].as_str().map(str::to_owned)).collect();
        let second_refs: BTreeSet<String> = second["entry"].as_array().unwrap().iter().filter_map(|e| e["fullUrl"].as_str().map(str::to_owned)).collect();
        prop_assert!(first_refs.is_disjoint(&second_refs), "no reference is shared across contexts");
        if level == Anonymization::Pseudonymized {
            prop_assert_ne!(&patient(&second)["name"], &patient(&first)["name"]);
        }
    }
}

/// One observation dated 2010-06-15, alone in a Bundle with its patient.
fn dated_bundle() -> Vec<u8> {
    let bundle = json!({
        "resourceType": "Bundle", "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01"}},
            {"resource": {"resourceType": "Observation", "status": "final", "subject": {"reference": "urn:uuid:p1"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]}, "effectiveDateTime": "2010-06-15"}}
        ]
    });
    serde_json::to_vec(&bundle).unwrap()
}

#[test]
fn date_offsets_differ_across_contexts_and_never_keep_the_date() {
    let bytes = dated_bundle();
    let mut dates = BTreeSet::new();
    for context in 0..200 {
        let key = format!("context-number-{context:04}");
        let out = run(&bytes, Anonymization::Anonymized, key.as_bytes());
        let date = out["entry"][1]["resource"]["effectiveDateTime"].as_str().unwrap().to_owned();
        assert_ne!(date, "2010-06-15", "a shift is never zero");
        dates.insert(date);
    }
    // Offsets spread over ±365 days: 200 contexts give well over a hundred distinct dates.
    assert!(dates.len() > 150, "only {} distinct shifted dates", dates.len());
}

#[test]
fn a_patients_dates_move_together_so_intervals_survive() {
    let bundle = json!({
        "resourceType": "Bundle", "type": "collection",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "p1"}},
            {"resource": {"resourceType": "Encounter", "status": "finished", "period": {"start": "2010-06-15T08:00:00Z", "end": "2010-06-20T08:00:00Z"}}}
        ]
    });
    let out = run(&serde_json::to_vec(&bundle).unwrap(), Anonymization::Anonymized, b"interval-context-key");
    let period = &out["entry"][1]["resource"]["period"];
    let day = |s: &str| s[8..10].parse::<i32>().unwrap() + 31 * s[5..7].parse::<i32>().unwrap();
    let (start, end) = (period["start"].as_str().unwrap(), period["end"].as_str().unwrap());
    assert_ne!(start, "2010-06-15T08:00:00Z");
    assert_eq!(&start[10..], "T08:00:00Z", "the time of day stays");
    let gap = day(end) - day(start);
    assert!(gap == 5 || gap > 5 && start[5..7] != end[5..7], "five days apart: {start} .. {end}");
}

#[test]
fn ages_over_89_lose_the_birth_year() {
    let bundle = json!({
        "resourceType": "Bundle", "type": "collection",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "old", "birthDate": "1910-09-19"}},
            {"resource": {"resourceType": "Encounter", "status": "finished", "period": {"start": "2015-01-01"}}}
        ]
    });
    let out = run(&serde_json::to_vec(&bundle).unwrap(), Anonymization::Anonymized, b"old-age-context-key!");
    assert!(patient(&out).get("birthDate").is_none(), "a birth year would say the patient is over 89");
}

#[test]
fn rare_codes_are_generalised_or_suppressed_in_a_released_set() {
    let patient_with = |code: &str| {
        serde_json::to_vec(&json!({"resourceType": "Condition", "code": {"coding": [
            {"system": "http://hl7.org/fhir/sid/icd-10", "code": code},
            {"system": "http://snomed.info/sct", "code": "44054006"}
        ]}}))
        .unwrap()
    };
    // Three patients with E11.9, two with E11.65 (rare alone, common as E11), one with a rare Q87.
    let mut released: Vec<Vec<u8>> =
        ["E11.9", "E11.9", "E11.9", "E11.65", "E11.65", "Q87.1"].iter().map(|c| patient_with(c)).collect();
    let removed = kura_formats::suppress_rare_codes(&mut released, 3).unwrap();
    let codes: Vec<Vec<String>> = released
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(r).unwrap();
            v["code"]["coding"].as_array().unwrap().iter().map(|c| c["code"].as_str().unwrap().to_owned()).collect()
        })
        .collect();
    assert_eq!(codes[0], ["E11.9", "44054006"]);
    assert_eq!(codes[3], ["E11", "44054006"], "generalised to the category held by five");
    assert_eq!(codes[5], ["44054006"], "a code held by one patient goes");
    assert_eq!(removed, 1);
}
