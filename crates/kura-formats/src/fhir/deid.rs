//! The anonymization unit for FHIR R4 JSON.
//!
//! `pseudonymized`: the patient's direct identifiers are replaced by pseudonyms keyed per context
//! (a grant or a study): names, identifiers, telecom, address lines, photo, contacts; every
//! resource id and reference is rewritten consistently; the birth date becomes the year;
//! narrative is dropped and free text is scrubbed of the patient's known identifiers and of
//! anything that looks like an e-mail, URL, IP address or phone / record number.
//!
//! `anonymized` works by allow-list: for each resource type the elements below are kept (and
//! transformed), everything else — narrative, notes, free text, unknown extensions, elements we
//! did not think of — is dropped, and a resource type without a list is dropped whole. HIPAA Safe
//! Harbor's identifiers go: dates are shifted by a per-patient, per-context number of days,
//! birth dates are reduced to the year (and removed when the patient is over 89), postal codes
//! keep three digits (or `000` where the three-digit area is small), practitioner and
//! organisation names become pseudonyms.

use std::collections::HashMap;

use kura_core::policy::Anonymization;
use serde_json::{Map, Value, json};

use super::{parse_json, serialize};
use crate::dates;
use crate::labels::Date;
use crate::pseudonym::Pseudonymizer;
use crate::{FormatError, scrub};

/// How an allow-listed element is kept.
#[derive(Clone, Copy)]
enum Kind {
    /// A FHIR `code`: kept when it is a short token without spaces.
    Code,
    Bool,
    Number,
    /// date, dateTime, instant: shifted.
    Date,
    /// CodeableConcept: codings of known terminologies, without display or text.
    Concept,
    Coding,
    Quantity,
    Period,
    Reference,
    /// A resource id: rewritten like references to it.
    Id,
    /// A nested element with its own allow-list.
    Backbone(&'static [(&'static str, Kind)]),
    /// `Patient.birthDate`: year only, removed over 89.
    BirthDate,
    /// `Patient.address`: state, country and a three-digit postal code.
    Address,
    /// `Practitioner.name` / `Organization.name`: a pseudonym.
    StaffName,
    /// `Patient.extension`: only the extensions listed in `KEPT_EXTENSIONS`.
    Extension,
    Dosage,
}

use Kind::*;

const COMMON: &[(&str, Kind)] = &[("id", Id)];

const PATIENT: &[(&str, Kind)] = &[
    ("gender", Code),
    ("birthDate", BirthDate),
    ("deceasedBoolean", Bool),
    ("deceasedDateTime", Date),
    ("address", Address),
    ("maritalStatus", Concept),
    ("multipleBirthBoolean", Bool),
    ("communication", Backbone(&[("language", Concept), ("preferred", Bool)])),
    ("extension", Extension),
];
const ENCOUNTER: &[(&str, Kind)] = &[
    ("status", Code),
    ("class", Coding),
    ("type", Concept),
    ("serviceType", Concept),
    ("priority", Concept),
    ("subject", Reference),
    ("participant", Backbone(&[("type", Concept), ("period", Period), ("individual", Reference)])),
    ("period", Period),
    ("reasonCode", Concept),
    ("reasonReference", Reference),
    ("hospitalization", Backbone(&[("admitSource", Concept), ("dischargeDisposition", Concept)])),
    ("serviceProvider", Reference),
];
const CONDITION: &[(&str, Kind)] = &[
    ("clinicalStatus", Concept),
    ("verificationStatus", Concept),
    ("category", Concept),
    ("severity", Concept),
    ("code", Concept),
    ("bodySite", Concept),
    ("subject", Reference),
    ("encounter", Reference),
    ("onsetDateTime", Date),
    ("abatementDateTime", Date),
    ("recordedDate", Date),
];
const OBSERVATION_VALUES: &[(&str, Kind)] = &[
    ("code", Concept),
    ("valueQuantity", Quantity),
    ("valueCodeableConcept", Concept),
    ("valueBoolean", Bool),
    ("valueInteger", Number),
    ("dataAbsentReason", Concept),
    ("interpretation", Concept),
];
const OBSERVATION: &[(&str, Kind)] = &[
    ("status", Code),
    ("category", Concept),
    ("code", Concept),
    ("subject", Reference),
    ("encounter", Reference),
    ("effectiveDateTime", Date),
    ("effectivePeriod", Period),
    ("issued", Date),
    ("valueQuantity", Quantity),
    ("valueCodeableConcept", Concept),
    ("valueBoolean", Bool),
    ("valueInteger", Number),
    ("dataAbsentReason", Concept),
    ("interpretation", Concept),
    ("bodySite", Concept),
    ("method", Concept),
    ("hasMember", Reference),
    ("derivedFrom", Reference),
    ("component", Backbone(OBSERVATION_VALUES)),
];
const DIAGNOSTIC_REPORT: &[(&str, Kind)] = &[
    ("status", Code),
    ("category", Concept),
    ("code", Concept),
    ("subject", Reference),
    ("encounter", Reference),
    ("effectiveDateTime", Date),
    ("effectivePeriod", Period),
    ("issued", Date),
    ("result", Reference),
    ("conclusionCode", Concept),
];
const PROCEDURE: &[(&str, Kind)] = &[
    ("status", Code),
    ("category", Concept),
    ("code", Concept),
    ("subject", Reference),
    ("encounter", Reference),
    ("performedDateTime", Date),
    ("performedPeriod", Period),
    ("reasonCode", Concept),
    ("reasonReference", Reference),
    ("bodySite", Concept),
    ("outcome", Concept),
];
const DOSAGE: &[(&str, Kind)] = &[("sequence", Number), ("asNeededBoolean", Bool), ("route", Concept)];
const MEDICATION_REQUEST: &[(&str, Kind)] = &[
    ("status", Code),
    ("intent", Code),
    ("category", Concept),
    ("medicationCodeableConcept", Concept),
    ("medicationReference", Reference),
    ("subject", Reference),
    ("encounter", Reference),
    ("authoredOn", Date),
    ("requester", Reference),
    ("reasonCode", Concept),
    ("reasonReference", Reference),
    ("dosageInstruction", Dosage),
];
const MEDICATION_ADMINISTRATION: &[(&str, Kind)] = &[
    ("status", Code),
    ("medicationCodeableConcept", Concept),
    ("medicationReference", Reference),
    ("subject", Reference),
    ("context", Reference),
    ("effectiveDateTime", Date),
    ("effectivePeriod", Period),
    ("reasonCode", Concept),
    ("reasonReference", Reference),
];
const MEDICATION_STATEMENT: &[(&str, Kind)] = &[
    ("status", Code),
    ("medicationCodeableConcept", Concept),
    ("medicationReference", Reference),
    ("subject", Reference),
    ("effectiveDateTime", Date),
    ("effectivePeriod", Period),
    ("dateAsserted", Date),
    ("reasonCode", Concept),
];
const MEDICATION: &[(&str, Kind)] = &[("code", Concept), ("status", Code), ("form", Concept)];
const IMMUNIZATION: &[(&str, Kind)] = &[
    ("status", Code),
    ("vaccineCode", Concept),
    ("patient", Reference),
    ("encounter", Reference),
    ("occurrenceDateTime", Date),
    ("primarySource", Bool),
    ("site", Concept),
    ("route", Concept),
];
const ALLERGY: &[(&str, Kind)] = &[
    ("clinicalStatus", Concept),
    ("verificationStatus", Concept),
    ("type", Code),
    ("category", Code),
    ("criticality", Code),
    ("code", Concept),
    ("patient", Reference),
    ("onsetDateTime", Date),
    ("recordedDate", Date),
    ("reaction", Backbone(&[("substance", Concept), ("manifestation", Concept), ("severity", Code)])),
];
const CARE_PLAN: &[(&str, Kind)] = &[
    ("status", Code),
    ("intent", Code),
    ("category", Concept),
    ("subject", Reference),
    ("encounter", Reference),
    ("period", Period),
    ("careTeam", Reference),
    ("addresses", Reference),
    ("activity", Backbone(&[("detail", Backbone(&[("code", Concept), ("status", Code), ("location", Reference)]))])),
];
const CARE_TEAM: &[(&str, Kind)] = &[
    ("status", Code),
    ("subject", Reference),
    ("encounter", Reference),
    ("period", Period),
    ("participant", Backbone(&[("role", Concept), ("member", Reference)])),
    ("reasonCode", Concept),
    ("managingOrganization", Reference),
];
const GOAL: &[(&str, Kind)] =
    &[("lifecycleStatus", Code), ("category", Concept), ("subject", Reference), ("addresses", Reference)];
const IMAGING_STUDY: &[(&str, Kind)] = &[
    ("status", Code),
    ("modality", Coding),
    ("subject", Reference),
    ("encounter", Reference),
    ("started", Date),
    ("numberOfSeries", Number),
    ("numberOfInstances", Number),
    ("procedureCode", Concept),
    (
        "series",
        Backbone(&[
            ("number", Number),
            ("modality", Coding),
            ("numberOfInstances", Number),
            ("bodySite", Coding),
            ("started", Date),
            ("instance", Backbone(&[("sopClass", Coding), ("number", Number)])),
        ]),
    ),
];
const DEVICE: &[(&str, Kind)] = &[("status", Code), ("type", Concept), ("patient", Reference)];
const CLAIM: &[(&str, Kind)] = &[
    ("status", Code),
    ("type", Concept),
    ("use", Code),
    ("patient", Reference),
    ("billablePeriod", Period),
    ("created", Date),
    ("provider", Reference),
    ("priority", Concept),
    (
        "diagnosis",
        Backbone(&[("sequence", Number), ("diagnosisReference", Reference), ("diagnosisCodeableConcept", Concept)]),
    ),
    (
        "procedure",
        Backbone(&[("sequence", Number), ("procedureReference", Reference), ("procedureCodeableConcept", Concept)]),
    ),
    (
        "item",
        Backbone(&[
            ("sequence", Number),
            ("productOrService", Concept),
            ("encounter", Reference),
            ("net", Backbone(&[("value", Number), ("currency", Code)])),
        ]),
    ),
    ("total", Backbone(&[("value", Number), ("currency", Code)])),
];
const EXPLANATION_OF_BENEFIT: &[(&str, Kind)] = &[
    ("status", Code),
    ("type", Concept),
    ("use", Code),
    ("patient", Reference),
    ("billablePeriod", Period),
    ("created", Date),
    ("provider", Reference),
    ("claim", Reference),
    ("outcome", Code),
    (
        "diagnosis",
        Backbone(&[("sequence", Number), ("diagnosisReference", Reference), ("diagnosisCodeableConcept", Concept)]),
    ),
    (
        "item",
        Backbone(&[
            ("sequence", Number),
            ("productOrService", Concept),
            ("servicedPeriod", Period),
            ("encounter", Reference),
        ]),
    ),
    ("total", Backbone(&[("category", Concept), ("amount", Backbone(&[("value", Number), ("currency", Code)]))])),
];
const COVERAGE: &[(&str, Kind)] =
    &[("status", Code), ("type", Concept), ("beneficiary", Reference), ("period", Period), ("payor", Reference)];
const SERVICE_REQUEST: &[(&str, Kind)] = &[
    ("status", Code),
    ("intent", Code),
    ("category", Concept),
    ("code", Concept),
    ("subject", Reference),
    ("encounter", Reference),
    ("authoredOn", Date),
    ("occurrenceDateTime", Date),
    ("requester", Reference),
    ("reasonCode", Concept),
];
const SUPPLY_DELIVERY: &[(&str, Kind)] = &[
    ("status", Code),
    ("patient", Reference),
    ("type", Concept),
    ("suppliedItem", Backbone(&[("quantity", Quantity), ("itemCodeableConcept", Concept)])),
    ("occurrenceDateTime", Date),
];
const SPECIMEN: &[(&str, Kind)] =
    &[("status", Code), ("type", Concept), ("subject", Reference), ("receivedTime", Date)];
const PROVENANCE: &[(&str, Kind)] = &[
    ("target", Reference),
    ("recorded", Date),
    ("agent", Backbone(&[("type", Concept), ("who", Reference), ("onBehalfOf", Reference)])),
];
const STAFF: &[(&str, Kind)] = &[("active", Bool), ("name", StaffName), ("gender", Code)];
const ROLE: &[(&str, Kind)] = &[
    ("active", Bool),
    ("practitioner", Reference),
    ("organization", Reference),
    ("code", Concept),
    ("specialty", Concept),
];
const ORGANIZATION: &[(&str, Kind)] = &[("active", Bool), ("type", Concept), ("name", StaffName)];
const LOCATION: &[(&str, Kind)] = &[("status", Code), ("name", StaffName), ("managingOrganization", Reference)];
const DOCUMENT_REFERENCE: &[(&str, Kind)] =
    &[("status", Code), ("type", Concept), ("category", Concept), ("subject", Reference), ("date", Date)];
const COMPOSITION: &[(&str, Kind)] = &[
    ("status", Code),
    ("type", Concept),
    ("category", Concept),
    ("subject", Reference),
    ("encounter", Reference),
    ("date", Date),
];

/// The allow-list of a resource type; `None` drops the resource at `anonymized`.
fn allow_list(resource_type: &str) -> Option<&'static [(&'static str, Kind)]> {
    Some(match resource_type {
        "Patient" => PATIENT,
        "Encounter" => ENCOUNTER,
        "Condition" => CONDITION,
        "Observation" => OBSERVATION,
        "DiagnosticReport" => DIAGNOSTIC_REPORT,
        "Procedure" => PROCEDURE,
        "MedicationRequest" => MEDICATION_REQUEST,
        "MedicationAdministration" => MEDICATION_ADMINISTRATION,
        "MedicationStatement" => MEDICATION_STATEMENT,
        "Medication" => MEDICATION,
        "Immunization" => IMMUNIZATION,
        "AllergyIntolerance" => ALLERGY,
        "CarePlan" => CARE_PLAN,
        "CareTeam" => CARE_TEAM,
        "Goal" => GOAL,
        "ImagingStudy" => IMAGING_STUDY,
        "Device" => DEVICE,
        "Claim" => CLAIM,
        "ExplanationOfBenefit" => EXPLANATION_OF_BENEFIT,
        "Coverage" => COVERAGE,
        "ServiceRequest" => SERVICE_REQUEST,
        "SupplyDelivery" => SUPPLY_DELIVERY,
        "Specimen" => SPECIMEN,
        "Provenance" => PROVENANCE,
        "Practitioner" => STAFF,
        "PractitionerRole" => ROLE,
        "Organization" => ORGANIZATION,
        "Location" => LOCATION,
        "DocumentReference" => DOCUMENT_REFERENCE,
        "Composition" => COMPOSITION,
        _ => return None,
    })
}

/// Terminologies whose codings survive anonymization. A coding of any other system (a local
/// system could carry anything) is dropped.
fn known_terminology(system: &str) -> bool {
    const EXACT: [&str; 10] = [
        "http://snomed.info/sct",
        "http://dicom.nema.org/resources/ontology/DCM",
        "http://loinc.org",
        "http://www.nlm.nih.gov/research/umls/rxnorm",
        "http://hl7.org/fhir/sid/icd-10",
        "http://hl7.org/fhir/sid/icd-10-cm",
        "http://hl7.org/fhir/sid/cvx",
        "http://www.whocc.no/atc",
        "http://unitsofmeasure.org",
        "urn:ietf:bcp:47",
    ];
    EXACT.contains(&system)
        || system.starts_with("http://terminology.hl7.org/CodeSystem/")
        || system.starts_with("http://hl7.org/fhir/")
}

/// Extensions kept at `anonymized` (with their code only).
const KEPT_EXTENSIONS: [&str; 1] = ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex"];

fn is_code(value: &Value) -> bool {
    value.as_str().is_some_and(|s| !s.is_empty() && s.len() <= 64 && !s.contains(char::is_whitespace))
}

/// Three-digit ZIP areas with fewer than 20,000 people (2000 census), which Safe Harbor
/// requires to become `000`.
const SMALL_ZIP3: [&str; 17] = [
    "036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831", "878", "879", "884", "890",
    "893",
];

/// The per-patient, per-context state of one de-identification run.
struct Context<'a> {
    keyed: &'a Pseudonymizer,
    level: Anonymization,
    /// Days every date moves (never zero).
    shift_days: i64,
    /// The latest date in the content, for ages.
    latest: Option<Date>,
    /// Strings known to identify the patient, scrubbed from free text.
    known: Vec<String>,
}

impl Context<'_> {
    fn reference(&self, raw: &str) -> String {
        if let Some(uuid) = raw.strip_prefix("urn:uuid:") {
            return format!("urn:uuid:{}", self.keyed.token("ref", uuid));
        }
        let (resource_type, rest) = raw.split_once(['/', '?']).unwrap_or(("Resource", raw));
        let resource_type =
            if resource_type.chars().all(|c| c.is_ascii_alphabetic()) { resource_type } else { "Resource" };
        // A relative reference `Type/id` keeps consistent with the rewritten id; anything else
        // (conditional or absolute) is one opaque token.
        let id = if raw.contains('?') || raw.contains("://") { raw } else { rest };
        format!("{resource_type}/{}", self.keyed.token("ref", id))
    }

    fn shift(&self, raw: &str) -> Option<String> {
        dates::shift(raw, self.shift_days)
    }
}

fn apply(kind: Kind, value: &Value, cx: &Context) -> Option<Value> {
    if let Value::Array(items) = value {
        let kept: Vec<Value> = items.iter().filter_map(|v| apply(kind, v, cx)).collect();
        return (!kept.is_empty()).then_some(Value::Array(kept));
    }
    match kind {
        Code => is_code(value).then(|| value.clone()),
        Bool => value.is_boolean().then(|| value.clone()),
        Number => value.is_number().then(|| value.clone()),
        Date => value.as_str().and_then(|s| cx.shift(s)).map(Value::String),
        Id => value.as_str().map(|id| Value::String(cx.keyed.token("ref", id))),
        Coding => {
            let system = value.get("system")?.as_str()?;
            let code = value.get("code")?;
            (known_terminology(system) && is_code(code)).then(|| json!({"system": system, "code": code}))
        }
        Concept => {
            let codings = apply(Coding, value.get("coding")?, cx)?;
            Some(json!({ "coding": codings }))
        }
        Quantity => {
            let mut out = Map::new();
            if let Some(v) = value.get("value").filter(|v| v.is_number()) {
                out.insert("value".into(), v.clone());
            }
            if value.get("system").and_then(Value::as_str) == Some("http://unitsofmeasure.org")
                && let Some(code) = value.get("code").filter(|c| is_code(c))
            {
                out.insert("system".into(), json!("http://unitsofmeasure.org"));
                out.insert("code".into(), code.clone());
            }
            if let Some(c) = value.get("comparator").filter(|c| is_code(c)) {
                out.insert("comparator".into(), c.clone());
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Period => {
            let mut out = Map::new();
            for end in ["start", "end"] {
                if let Some(shifted) = value.get(end).and_then(Value::as_str).and_then(|s| cx.shift(s)) {
                    out.insert(end.into(), Value::String(shifted));
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Reference => {
            let reference = value.get("reference")?.as_str()?;
            Some(json!({ "reference": cx.reference(reference) }))
        }
        Backbone(fields) => {
            let object = value.as_object()?;
            let out = apply_fields(fields, object, cx);
            (!out.is_empty()).then_some(Value::Object(out))
        }
        BirthDate => {
            let birth = Date::parse(value.as_str()?)?;
            let age = cx.latest.and_then(|at| birth.age_at(at));
            // Safe Harbor: ages over 89 are aggregated; a birth year would give them away.
            age.is_none_or(|a| a <= 89).then(|| Value::String(format!("{:04}", birth.year)))
        }
        Address => {
            let mut out = Map::new();
            for field in ["state", "country"] {
                if let Some(v) = value.get(field).filter(|v| v.as_str().is_some_and(|s| s.len() <= 30)) {
                    out.insert(field.into(), v.clone());
                }
            }
            if let Some(zip) = value.get("postalCode").and_then(Value::as_str) {
                let digits: String = zip.chars().filter(char::is_ascii_digit).take(3).collect();
                if digits.len() == 3 {
                    let area = if SMALL_ZIP3.contains(&digits.as_str()) { "000".to_owned() } else { digits };
                    out.insert("postalCode".into(), Value::String(area));
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        StaffName => {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some(Value::String(cx.keyed.name("Staff", &text.to_lowercase())))
        }
        Extension => {
            let url = value.get("url")?.as_str()?;
            let code = value.get("valueCode").filter(|c| is_code(c))?;
            KEPT_EXTENSIONS.contains(&url).then(|| json!({"url": url, "valueCode": code}))
        }
        Dosage => {
            let object = value.as_object()?;
            let out = apply_fields(DOSAGE, object, cx);
            (!out.is_empty()).then_some(Value::Object(out))
        }
    }
}

fn apply_fields(fields: &[(&str, Kind)], object: &Map<String, Value>, cx: &Context) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, kind) in fields {
        if let Some(value) = object.get(*name)
            && let Some(kept) = apply(*kind, value, cx)
        {
            out.insert((*name).to_owned(), kept);
        }
    }
    out
}

fn anonymize_resource(resource: &Map<String, Value>, cx: &Context) -> Option<Map<String, Value>> {
    let resource_type = resource.get("resourceType")?.as_str()?;
    let fields = allow_list(resource_type)?;
    let mut out = Map::new();
    out.insert("resourceType".into(), Value::String(resource_type.to_owned()));
    out.extend(apply_fields(COMMON, resource, cx));
    out.extend(apply_fields(fields, resource, cx));
    Some(out)
}

/// Keys whose strings are structure, not free text: left to the reference and id rewriting.
const STRUCTURAL_KEYS: [&str; 8] = ["resourceType", "id", "reference", "fullUrl", "system", "code", "url", "profile"];

/// Pseudonymized: scrub free text, tokenise identifiers, rewrite ids and references.
fn pseudonymize_value(key: &str, value: &mut Value, cx: &Context) {
    match value {
        Value::String(s) => {
            let replaced = match key {
                "reference" => Some(cx.reference(s)),
                "id" => Some(cx.keyed.token("ref", s)),
                k if STRUCTURAL_KEYS.contains(&k) => None,
                // A whole date is structure; pseudonymized data keeps its dates.
                _ if dates::shift(s, 0).is_some() => None,
                _ => Some(scrub::redact(s, &cx.known)),
            };
            if let Some(new) = replaced {
                *s = new;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| pseudonymize_value(key, v, cx)),
        Value::Object(map) => {
            // Narrative (an object with a `div`) goes; `text` strings are free text and scrubbed.
            if map.get("text").is_some_and(Value::is_object) {
                map.remove("text");
            }
            // An attachment's document cannot be proven free of identifiers, like a PDF record.
            if map.contains_key("contentType") || map.contains_key("data") {
                for field in ATTACHMENT_CONTENT_ELEMENTS {
                    map.remove(field);
                }
            }
            if let Some(Value::Array(identifiers)) = map.get_mut("identifier") {
                for identifier in identifiers.iter_mut().filter_map(Value::as_object_mut) {
                    if let Some(v) = identifier.get("value").and_then(Value::as_str).map(str::to_owned) {
                        identifier.insert("value".into(), Value::String(cx.keyed.token("identifier", &v)));
                    }
                    identifier.remove("assigner");
                    identifier.remove("period");
                }
            }
            for (k, v) in map.iter_mut() {
                if k != "identifier" {
                    pseudonymize_value(k, v, cx);
                }
            }
        }
        _ => {}
    }
}

/// Attachment elements that carry or point to a document.
const ATTACHMENT_CONTENT_ELEMENTS: [&str; 4] = ["data", "url", "title", "hash"];

fn pseudonymize_patient(patient: &mut Map<String, Value>, cx: &Context) {
    let id = patient.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
    // `_birthDate` and `_deceasedDateTime` hold extensions of the dates, such as the birth time.
    for field in ["telecom", "photo", "contact", "link", "_birthDate", "_deceasedDateTime"] {
        patient.remove(field);
    }
    patient.insert("name".into(), json!([{ "text": cx.keyed.name("Patient", &id) }]));
    if let Some(Value::Array(addresses)) = patient.get_mut("address") {
        for address in addresses.iter_mut().filter_map(Value::as_object_mut) {
            address.retain(|k, _| matches!(k.as_str(), "city" | "state" | "postalCode" | "country"));
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
            !(url.contains("mothersMaidenName") || url.contains("birthPlace"))
        });
    }
}

/// Strings that identify the patient wherever they appear: names, identifier values, telecom,
/// address lines, and the same of their contacts.
fn known_identifiers(patient: &Value) -> Vec<String> {
    let mut known = Vec::new();
    let mut names = |value: Option<&Value>| {
        for name in value.and_then(Value::as_array).into_iter().flatten() {
            for key in ["family", "text"] {
                known.extend(name.get(key).and_then(Value::as_str).map(str::to_owned));
            }
            for given in name.get("given").and_then(Value::as_array).into_iter().flatten() {
                known.extend(given.as_str().map(str::to_owned));
            }
        }
    };
    names(patient.get("name"));
    for contact in patient.get("contact").and_then(Value::as_array).into_iter().flatten() {
        names(contact.get("name").map(|n| Value::Array(vec![n.clone()])).as_ref());
    }
    for list in ["identifier", "telecom"] {
        for item in patient.get(list).and_then(Value::as_array).into_iter().flatten() {
            known.extend(item.get("value").and_then(Value::as_str).map(str::to_owned));
        }
    }
    for address in patient.get("address").and_then(Value::as_array).into_iter().flatten() {
        for line in address.get("line").and_then(Value::as_array).into_iter().flatten() {
            known.extend(line.as_str().map(str::to_owned));
        }
    }
    known.retain(|k| k.chars().count() >= 2);
    known.sort_by_key(|k| std::cmp::Reverse(k.len()));
    known.dedup();
    known
}

fn latest_date(resources: &[&Value]) -> Option<Date> {
    const DATE_FIELDS: [&str; 6] =
        ["effectiveDateTime", "issued", "onsetDateTime", "authoredOn", "recordedDate", "occurrenceDateTime"];
    resources
        .iter()
        .flat_map(|r| {
            let direct = DATE_FIELDS.iter().filter_map(|f| r.get(*f).and_then(Value::as_str));
            let period = r.get("period").and_then(|p| p.get("start")).and_then(Value::as_str);
            direct.chain(period).filter_map(Date::parse).collect::<Vec<_>>()
        })
        .max()
}

/// De-identifies FHIR content at `level` (not `None`).
pub fn deidentify(bytes: &[u8], level: Anonymization, keyed: &Pseudonymizer) -> Result<Vec<u8>, FormatError> {
    serialize(&deidentify_value(parse_json(bytes)?, level, keyed))
}

fn deidentify_value(value: Value, level: Anonymization, keyed: &Pseudonymizer) -> Value {
    let is_bundle = value.get("resourceType").and_then(Value::as_str) == Some("Bundle");
    let resources: Vec<&Value> = if is_bundle {
        value
            .get("entry")
            .and_then(Value::as_array)
            .map(|entries| entries.iter().filter_map(|e| e.get("resource")).collect())
            .unwrap_or_default()
    } else {
        vec![&value]
    };
    let patient = resources.iter().find(|r| r.get("resourceType").and_then(Value::as_str) == Some("Patient"));
    let patient_id = patient.and_then(|p| p.get("id")).and_then(Value::as_str).unwrap_or("");
    let cx = Context {
        keyed,
        level,
        shift_days: keyed.shift_days(patient_id),
        latest: latest_date(&resources),
        known: patient.map(|p| known_identifiers(p)).unwrap_or_default(),
    };
    let transform = |resource: &Value| -> Option<Value> {
        let map = resource.as_object()?;
        match cx.level {
            Anonymization::Anonymized => anonymize_resource(map, &cx).map(Value::Object),
            _ => {
                let mut copy = map.clone();
                if copy.get("resourceType").and_then(Value::as_str) == Some("Patient") {
                    pseudonymize_patient(&mut copy, &cx);
                }
                let mut as_value = Value::Object(copy);
                pseudonymize_value("", &mut as_value, &cx);
                Some(as_value)
            }
        }
    };
    if !is_bundle {
        return transform(&value)
            .unwrap_or_else(|| json!({"resourceType": "Bundle", "type": "collection", "entry": []}));
    }
    let mut entries = Vec::new();
    for entry in value.get("entry").and_then(Value::as_array).into_iter().flatten() {
        let Some(resource) = entry.get("resource").and_then(transform) else { continue };
        let mut out = Map::new();
        if let Some(url) = entry.get("fullUrl").and_then(Value::as_str) {
            out.insert("fullUrl".into(), Value::String(cx.reference(url)));
        }
        out.insert("resource".into(), resource);
        entries.push(Value::Object(out));
    }
    let mut bundle = Map::new();
    bundle.insert("resourceType".into(), json!("Bundle"));
    bundle.insert("type".into(), json!("collection"));
    bundle.insert("entry".into(), Value::Array(entries));
    Value::Object(bundle)
}

/// Where identifiers remain in FHIR content: `(path, what)` pairs, never the values themselves.
pub fn residual_identifiers(bytes: &[u8]) -> Result<Vec<(String, &'static str)>, FormatError> {
    Ok(residual_in(&parse_json(bytes)?))
}

fn residual_in(value: &Value) -> Vec<(String, &'static str)> {
    let mut findings = Vec::new();
    let resources: Vec<(String, &Value)> = match value.get("entry").and_then(Value::as_array) {
        Some(entries) => entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.get("resource").map(|r| (format!("entry[{i}].resource"), r)))
            .collect(),
        None => vec![(String::new(), value)],
    };
    let known: Vec<String> = resources
        .iter()
        .filter(|(_, r)| r.get("resourceType").and_then(Value::as_str) == Some("Patient"))
        .flat_map(|(_, p)| {
            // Pseudonyms the unit itself wrote are not residual identifiers.
            let mut k = known_identifiers(p);
            k.retain(|s| !s.starts_with("Patient-"));
            k
        })
        .collect();
    for (path, resource) in resources {
        let rt = resource.get("resourceType").and_then(Value::as_str).unwrap_or("");
        if rt == "Patient" {
            for field in ["telecom", "photo", "contact"] {
                if resource.get(field).is_some() {
                    findings.push((format!("{path}.{field}"), "direct identifier of the patient"));
                }
            }
            if resource
                .get("address")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x.get("line").is_some()))
            {
                findings.push((format!("{path}.address.line"), "street address"));
            }
            if resource.get("birthDate").and_then(Value::as_str).is_some_and(|d| d.len() > 4) {
                findings.push((format!("{path}.birthDate"), "birth date finer than the year"));
            }
        }
        walk_strings(resource, &path, &known, &mut findings);
    }
    findings
}

fn walk_strings(value: &Value, path: &str, known: &[String], findings: &mut Vec<(String, &'static str)>) {
    match value {
        Value::String(s) => {
            let key = path.rsplit('.').next().unwrap_or("");
            let key = key.split('[').next().unwrap_or(key);
            // Whole date values are structure (shifted when anonymizing); free text is searched.
            let is_date = dates::shift(s, 0).is_some();
            if !STRUCTURAL_KEYS.contains(&key) && !is_date && s != "[redacted]" {
                for (found, _, _) in scrub::find(s, known) {
                    findings.push((path.to_owned(), found.as_str()));
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_strings(item, &format!("{path}[{i}]"), known, findings);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                if k == "div" {
                    findings.push((format!("{path}.text.div"), "narrative"));
                    continue;
                }
                walk_strings(v, &format!("{path}.{k}"), known, findings);
            }
        }
        _ => {}
    }
}

fn coding_of(map: &Map<String, Value>) -> Option<(String, String)> {
    let system = map.get("system")?.as_str()?;
    let code = map.get("code")?.as_str()?;
    Some((system.to_owned(), code.to_owned()))
}

fn collect_codings(value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| collect_codings(v, out)),
        Value::Object(map) => {
            out.extend(coding_of(map));
            map.values().for_each(|v| collect_codings(v, out));
        }
        _ => {}
    }
}

fn icd10_category(system: &str, code: &str) -> Option<String> {
    system.contains("icd-10").then(|| code.get(..3).map(str::to_owned)).flatten()
}

/// Removes (or generalises) codings; returns whether `value` itself stays.
fn prune(value: &mut Value, verdict: &dyn Fn(&str, &str) -> Option<Option<String>>, removed: &mut usize) -> bool {
    match value {
        Value::Array(items) => {
            items.retain_mut(|v| prune(v, verdict, removed));
            true
        }
        Value::Object(map) => {
            if let Some((system, code)) = coding_of(map) {
                match verdict(&system, &code) {
                    None => {}
                    Some(Some(general)) => {
                        map.insert("code".into(), Value::String(general));
                    }
                    Some(None) => {
                        *removed += 1;
                        return false;
                    }
                }
            }
            map.retain(|_, v| prune(v, verdict, removed));
            true
        }
        _ => true,
    }
}

/// Rare quasi-identifiers in a released set: a coding held by fewer than `k` patients is
/// generalised (ICD-10 to its three-character category, when that category is held by at least
/// `k`) or removed. Each element of `released` is one patient's de-identified content. Returns
/// how many codings were removed.
pub fn suppress_rare_codes(released: &mut [Vec<u8>], k: usize) -> Result<usize, FormatError> {
    let mut values = released.iter().map(|bytes| parse_json(bytes)).collect::<Result<Vec<_>, _>>()?;
    let removed = suppress_rare_values(&mut values, k);
    for (bytes, value) in released.iter_mut().zip(&values) {
        *bytes = serialize(value)?;
    }
    Ok(removed)
}

fn suppress_rare_values(released: &mut [Value], k: usize) -> usize {
    let mut holders: HashMap<(String, String), usize> = HashMap::new();
    let mut category_holders: HashMap<String, usize> = HashMap::new();
    for patient in released.iter() {
        let mut found = Vec::new();
        collect_codings(patient, &mut found);
        found.sort();
        found.dedup();
        let mut categories: Vec<String> = found.iter().filter_map(|(s, c)| icd10_category(s, c)).collect();
        categories.sort();
        categories.dedup();
        for coding in found {
            *holders.entry(coding).or_default() += 1;
        }
        for category in categories {
            *category_holders.entry(category).or_default() += 1;
        }
    }
    let verdict = |system: &str, code: &str| -> Option<Option<String>> {
        if holders.get(&(system.to_owned(), code.to_owned())).copied().unwrap_or(0) >= k {
            return None;
        }
        let general = icd10_category(system, code).filter(|c| category_holders.get(c).copied().unwrap_or(0) >= k);
        Some(general)
    };
    let mut removed = 0;
    for patient in released.iter_mut() {
        prune(patient, &verdict, &mut removed);
    }
    removed
}
