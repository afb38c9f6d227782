//! The authorization matrix (issue 26 item 3). Two halves:
//!
//! - Generated from the served OpenAPI document: every operation that declares a security
//!   requirement refuses a request without a token, with a forged one and with an expired one
//!   (401), whatever its path parameters and body; a new route is covered the day it is added.
//! - Record operations × callers × record states, against the table in `authz_matrix.txt`
//!   beside this file: the status each caller gets for each operation on a record held by the
//!   hospital, owned by the patient, or deleted (for `records_list`, whether the record is
//!   listed). Every operation in the document's `records` tag that names a record must have a
//!   row, so a new record route cannot go unreviewed. Every content read that succeeds must have
//!   added an entry to the owner's audit timeline.
//! - Operations around the records (grants, delegations, inbox, provider links, audit, studies,
//!   a research organisation's ledger and webhook) × the same callers, against `authz_routes.txt`.
//!
//! The table is reviewed by hand: `KURA_UPDATE_SNAPSHOTS=1` rewrites it with what the server does
//! today, and the diff is the review.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::Method;
use kura_testkit::{Organisation, TestApp, TestResponse};
use serde_json::{Value, json};

use super::FHIR;

/// The methods an OpenAPI path item may hold, with their HTTP method.
fn method_of(name: &str) -> Option<Method> {
    match name {
        "get" => Some(Method::GET),
        "post" => Some(Method::POST),
        "put" => Some(Method::PUT),
        "delete" => Some(Method::DELETE),
        "patch" => Some(Method::PATCH),
        _ => None,
    }
}

/// `(operationId, method, path, secured)` of every operation in the served document.
async fn operations(app: &TestApp) -> Vec<(String, Method, String, bool)> {
    let doc = app.call(Method::GET, "/api/v1/openapi.json", None, None).await.expect(200).json();
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (name, operation) in item.as_object().expect("path item") {
            let Some(method) = method_of(name) else { continue };
            let secured = operation["security"].as_array().is_some_and(|s| !s.is_empty());
            let id = operation["operationId"].as_str().expect("every operation has an id").to_owned();
            found.push((id, method, path.clone(), secured));
        }
    }
    assert!(found.len() > 50, "the document lists the API's operations ({} found)", found.len());
    found
}

/// `path` with every `{param}` replaced by `value`.
fn fill(path: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').expect("closed parameter") + open;
        out.push_str(value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn every_secured_operation_refuses_missing_forged_and_expired_tokens() {
    let app = TestApp::new().await;
    let alice = app.patient("alice").await;
    let expired = app.token(&alice).await;
    // Sessions last 30 minutes by default; a day later the token is dead.
    app.advance_days(1);
    let fresh = app.token(&alice).await;
    let operations = operations(&app).await;
    let unknown = "0b7a3c2e-5d1f-4c8e-9a6b-2f4d8e1c3a5b";
    let mut checked = 0;
    for (id, method, path, secured) in &operations {
        if !secured {
            continue;
        }
        let url = fill(path, unknown);
        let body = if *method == Method::GET { vec![] } else { b"{}".to_vec() };
        for (what, token) in [
            ("no token", None),
            ("a forged token", Some("kura-forged-token")),
            ("an expired token", Some(expired.as_str())),
        ] {
            let response = app.raw(method.clone(), &url, token, "application/json", body.clone(), &[]).await;
            assert_eq!(response.status, 401, "{id} ({method} {path}) with {what}: {}", response.text());
        }
        checked += 1;
    }
    assert!(checked >= 60, "most operations are secured ({checked})");
    // The fresh token of the same person still works: the refusals were about the tokens.
    app.get("/api/v1/me", &fresh).await.expect(200);
}

/// The callers of the matrix, in the table's column order.
const CALLERS: &[&str] = &[
    "owner",
    "agent_view",
    "agent_all",
    "grantee",
    "grantee_docs",
    "grantee_expired",
    "other_patient",
    "other_staff",
    "hospital",
    "researcher",
    "operator",
];

/// The record states of the matrix: held by the hospital that uploaded it, transferred to the
/// patient, moved out of the server by the patient after the transfer (only a locator stays),
/// deleted by the patient after the transfer.
const STATES: &[&str] = &["held", "owned", "moved", "deleted"];

/// The operations of the matrix, by operationId. `records_list` is whether the caller's list
/// shows the record; the others are the status of the call.
const RECORD_OPERATIONS: &[&str] = &[
    "records_list",
    "records_get",
    "records_ledger",
    "records_copy",
    "records_create_sealed_copy",
    "records_transfer",
    "records_move_record",
    "records_delete",
];

/// A small FHIR collection: a patient, a condition and a lab result.
fn small_bundle(n: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1980-04-01"}},
            {"fullUrl": "urn:uuid:c1", "resource": {"resourceType": "Condition", "id": "c1",
                "subject": {"reference": "urn:uuid:p1"},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006", "display": "Diabetes"}]},
                "onsetDateTime": format!("2020-01-{:02}", 1 + n % 28)}},
            {"fullUrl": "urn:uuid:o1", "resource": {"resourceType": "Observation", "id": "o1", "status": "final",
                "subject": {"reference": "urn:uuid:p1"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "2085-9", "display": "HDL"}]},
                "valueQuantity": {"value": 40 + n, "unit": "mg/dL"}, "effectiveDateTime": "2020-02-01"}}
        ]
    }))
    .expect("bundle")
}

struct World {
    app: TestApp,
    aoba: Organisation,
    /// Each caller's token and, for agents, the patient it acts for.
    callers: BTreeMap<&'static str, (String, Option<String>)>,
    uploads: std::cell::Cell<usize>,
    /// What the second table's operations act on (see `other_outcome`).
    others: Others,
}

/// Alice's standing grant to Sakura, delegation to her viewer and provider link; the research
/// organisation and its webhook; a counter for fresh people.
struct Others {
    sakura: Organisation,
    lab: Organisation,
    grant: String,
    delegation: String,
    provider: String,
    webhook: String,
    fresh: std::cell::Cell<usize>,
}

async fn world() -> World {
    let app = TestApp::new().await;
    let aoba = app.institution("Aoba General Hospital").await;
    let sakura = app.institution("Sakura Clinic").await;
    let kita = app.institution("Kita Hospital").await;
    let lab = app.research_org("Tohoku Research").await;
    let alice = app.patient("alice").await;
    let bob = app.patient("bob").await;
    let viewer = app.patient("alice-viewer").await;
    let helper = app.patient("alice-helper").await;
    app.link(&aoba, &alice, "MRN-1").await;
    let owner = app.token(&alice).await;
    let delegation =
        app.post("/api/v1/delegations", &owner, json!({"agent": "alice-viewer", "powers": ["view"]})).await;
    let delegation = delegation.expect(201).json()["id"].as_str().expect("delegation").to_owned();
    app.post(
        "/api/v1/delegations",
        &owner,
        json!({"agent": "alice-helper", "powers": ["view", "copy", "move", "delete", "statistics", "manage_grants"]}),
    )
    .await
    .expect(201);
    let all = [
        "certificate",
        "image",
        "medication",
        "observation",
        "condition",
        "procedure",
        "document",
        "patient_entered",
        "other",
    ];
    let grant =
        app.post("/api/v1/grants", &owner, json!({"grantee": {"org": sakura.id}, "scope": all, "actions": ["view"]}));
    let grant = grant.await.expect(201).json()["id"].as_str().expect("grant").to_owned();
    let docs_only = json!({"grantee": {"org": kita.id}, "scope": ["document"], "actions": ["view", "copy"]});
    app.post("/api/v1/grants", &owner, docs_only).await.expect(201);
    let other = app.institution("Minami Clinic").await;
    // Higashi Clinic's grant of everything ran out a minute before the matrix runs.
    let higashi = app.institution("Higashi Clinic").await;
    let until = kura_testkit::rfc3339(app.now().plus_millis(60_000));
    let lapsing =
        json!({"grantee": {"org": higashi.id}, "scope": all, "actions": ["view", "copy"], "expires_at": until});
    app.post("/api/v1/grants", &owner, lapsing).await.expect(201);

    let mut callers = BTreeMap::new();
    callers.insert("owner", (owner, None));
    callers.insert("agent_view", (app.token(&viewer).await, Some(alice.id.clone())));
    callers.insert("agent_all", (app.token(&helper).await, Some(alice.id.clone())));
    callers.insert("grantee", (app.token(&sakura.staff).await, None));
    callers.insert("grantee_docs", (app.token(&kita.staff).await, None));
    callers.insert("grantee_expired", (app.token(&higashi.staff).await, None));
    callers.insert("other_patient", (app.token(&bob).await, None));
    callers.insert("other_staff", (app.token(&other.staff).await, None));
    callers.insert("hospital", (app.token(&aoba.staff).await, None));
    callers.insert("researcher", (app.token(&lab.staff).await, None));
    callers.insert("operator", (app.operator_token().await, None));
    let provider = app.post("/api/v1/providers", &callers["owner"].0, provider_link()).await;
    let provider = provider.expect(201).json()["id"].as_str().expect("provider").to_owned();
    let hook = json!({"url": "https://hooks.example.org/kura"});
    let webhook = app.post("/api/v1/webhooks", &callers["researcher"].0, hook).await;
    let webhook = webhook.expect(201).json()["id"].as_str().expect("webhook").to_owned();
    // Tokens live 30 minutes; two minutes on, every token still works and the grant has lapsed.
    app.app().clock().advance_millis(120_000);
    let others = Others { sakura, lab, grant, delegation, provider, webhook, fresh: std::cell::Cell::new(0) };
    World { app, aoba, callers, uploads: std::cell::Cell::new(0), others }
}

impl World {
    /// A fresh record of Alice's in `state`.
    async fn record(&self, state: &str) -> String {
        let n = self.uploads.get();
        self.uploads.set(n + 1);
        let id = self.app.upload_ok(&self.aoba, "MRN-1", FHIR, small_bundle(n)).await;
        if state == "held" {
            return id;
        }
        let staff = &self.callers["hospital"].0;
        self.app.post(&format!("/api/v1/records/{id}/transfer"), staff, json!({"agreement": {}})).await.expect(200);
        let owner = &self.callers["owner"].0;
        match state {
            "deleted" => {
                self.app.delete(&format!("/api/v1/records/{id}"), owner).await.expect(204);
            }
            "moved" => {
                let away = json!({"destination": "a USB stick at home"});
                self.app.post(&format!("/api/v1/records/{id}/move"), owner, away).await.expect(200);
            }
            _ => {}
        }
        id
    }

    async fn send(&self, caller: &str, method: Method, path: &str, body: Option<Value>) -> TestResponse {
        let (token, act_as) = &self.callers[caller];
        let headers: Vec<(&str, &str)> = act_as.iter().map(|patient| ("kura-act-as", patient.as_str())).collect();
        let bytes = body.map(|b| serde_json::to_vec(&b).expect("body")).unwrap_or_default();
        self.app.raw(method, path, Some(token), "application/json", bytes, &headers).await
    }

    /// Alice's audit entries about `record` that allowed something.
    async fn allowed_entries(&self, record: &str) -> usize {
        let owner = &self.callers["owner"].0;
        let audit = self.app.get("/api/v1/audit?limit=5000", owner).await.expect(200).json();
        audit["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .filter(|e| e["record"] == record && e["outcome"] == "allowed")
            .count()
    }

    /// What `caller` gets for `operation` on a fresh record in `state`. A caller with no
    /// relation to the record must get exactly what it gets for an id that does not exist: the
    /// answer may not tell it that the record is there.
    async fn outcome(&self, operation: &str, state: &str, caller: &str) -> String {
        let id = self.record(state).await;
        if operation == "records_list" {
            let listed = self.send(caller, Method::GET, "/api/v1/records", None).await;
            if listed.status != 200 {
                return listed.status.to_string();
            }
            let ids: BTreeSet<String> = listed.json()["records"]
                .as_array()
                .expect("records")
                .iter()
                .filter_map(|r| r["id"].as_str().map(str::to_owned))
                .collect();
            return if ids.contains(&id) { "listed" } else { "hidden" }.to_owned();
        }
        let before = self.allowed_entries(&id).await;
        let response = self.call(operation, &id, caller).await;
        assert_ne!(response.status, 500, "{operation} {state} {caller}: {}", response.text());
        if operation == "records_get" && response.status == 200 && response.json()["content"].is_object() {
            let after = self.allowed_entries(&id).await;
            assert!(after > before, "{caller} read {state} content; the owner's timeline shows it");
        }
        if UNRELATED.contains(&caller) {
            let unknown = self.call(operation, "5d0c6a8e-1b2f-4e3a-9c7d-8f6e5a4b3c2d", caller).await;
            assert_eq!(
                (response.status, response.error_code()),
                (unknown.status, unknown.error_code()),
                "{operation} on a {state} record answers {caller} as for a record that does not exist"
            );
        }
        response.status.to_string()
    }

    async fn call(&self, operation: &str, id: &str, caller: &str) -> TestResponse {
        let at = format!("/api/v1/records/{id}");
        match operation {
            "records_get" => self.send(caller, Method::GET, &at, None).await,
            "records_ledger" => self.send(caller, Method::GET, &format!("{at}/ledger"), None).await,
            "records_copy" => self.send(caller, Method::POST, &format!("{at}/copy"), None).await,
            "records_create_sealed_copy" => self.send(caller, Method::POST, &format!("{at}/sealed-copy"), None).await,
            "records_transfer" => {
                self.send(caller, Method::POST, &format!("{at}/transfer"), Some(json!({"agreement": {}}))).await
            }
            "records_move_record" => {
                self.send(caller, Method::POST, &format!("{at}/move"), Some(json!({"destination": "a USB stick"})))
                    .await
            }
            "records_delete" => self.send(caller, Method::DELETE, &at, None).await,
            other => panic!("no request for {other}"),
        }
    }
}

/// Callers with no relation to Alice's records (no custody, grant or delegation).
const UNRELATED: &[&str] = &["other_patient", "other_staff", "researcher", "grantee_docs", "grantee_expired"];

/// A reviewed table: `(operation, state) -> outcome per caller`.
type Table = BTreeMap<(String, String), Vec<String>>;

fn parse_table(text: &str) -> Table {
    let mut table = BTreeMap::new();
    let mut header_seen = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cells: Vec<&str> = line.split_whitespace().collect();
        if !header_seen {
            let expected: Vec<&str> = ["operation", "state"].iter().chain(CALLERS).copied().collect();
            assert_eq!(cells, expected, "the table's header names the callers in order");
            header_seen = true;
            continue;
        }
        assert_eq!(cells.len(), 2 + CALLERS.len(), "row {line}");
        table.insert((cells[0].to_owned(), cells[1].to_owned()), cells[2..].iter().map(|c| (*c).to_owned()).collect());
    }
    table
}

/// `actual` as a table, in `rows` order, under the comment lines of the reviewed `text`.
fn render(text: &str, rows: &[(&str, &str)], actual: &Table) -> String {
    let mut out: String = text.lines().take_while(|l| l.starts_with('#')).map(|l| format!("{l}\n")).collect();
    let widths: Vec<usize> =
        std::iter::once(29).chain(std::iter::once(8)).chain(CALLERS.iter().map(|c| c.len().max(6))).collect();
    let header: Vec<&str> = ["operation", "state"].iter().chain(CALLERS).copied().collect();
    let line = |cells: &[&str]| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join(" ").trim_end().to_owned()
            + "\n"
    };
    out.push_str(&line(&header));
    for (operation, state) in rows {
        let row = &actual[&((*operation).to_owned(), (*state).to_owned())];
        let cells: Vec<&str> = [*operation, *state].into_iter().chain(row.iter().map(String::as_str)).collect();
        out.push_str(&line(&cells));
    }
    out
}

/// Compares `actual` with the reviewed table in `file` (whose text is `text`), or rewrites the
/// file with `KURA_UPDATE_SNAPSHOTS=1`.
fn check_against(file: &str, text: &str, rows: &[(&str, &str)], actual: &Table) {
    println!(
        "authorization matrix {file}: {} rows x {} callers = {} cells",
        rows.len(),
        CALLERS.len(),
        rows.len() * CALLERS.len()
    );
    let rendered = render(text, rows, actual);
    if std::env::var_os("KURA_UPDATE_SNAPSHOTS").is_some() {
        let path = format!("{}/tests/e2e/{file}", env!("CARGO_MANIFEST_DIR"));
        std::fs::write(path, &rendered).expect("write the matrix");
        return;
    }
    let expected = parse_table(text);
    let mut differences = Vec::new();
    for ((operation, state), row) in actual {
        let want = expected.get(&(operation.clone(), state.clone()));
        for (i, caller) in CALLERS.iter().enumerate() {
            let wanted = want.map(|w| w[i].as_str()).unwrap_or("(no row)");
            if wanted != row[i] {
                differences.push(format!("{operation} {state} {caller}: table says {wanted}, server gave {}", row[i]));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "the server differs from the reviewed matrix {file}:\n{}\n\nwhat it does now:\n{rendered}",
        differences.join("\n")
    );
}

#[tokio::test]
async fn record_operations_follow_the_reviewed_matrix() {
    let w = world().await;
    // Every record route of the document is in the matrix.
    let documented: BTreeSet<String> = operations(&w.app)
        .await
        .into_iter()
        .filter(|(_, _, path, _)| path == "/api/v1/records" || path.starts_with("/api/v1/records/{id}"))
        .map(|(id, ..)| id)
        .filter(|id| id != "records_upload")
        .collect();
    let covered: BTreeSet<String> = RECORD_OPERATIONS.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(documented, covered, "every record operation of the API has rows in the matrix");

    let mut actual = BTreeMap::new();
    for operation in RECORD_OPERATIONS {
        for state in STATES {
            let mut row = Vec::new();
            for caller in CALLERS {
                row.push(w.outcome(operation, state, caller).await);
            }
            actual.insert(((*operation).to_owned(), (*state).to_owned()), row);
        }
    }
    let rows: Vec<(&str, &str)> = RECORD_OPERATIONS.iter().flat_map(|o| STATES.iter().map(move |s| (*o, *s))).collect();
    check_against("authz_matrix.txt", include_str!("authz_matrix.txt"), &rows, &actual);
}

/// The second table (`authz_routes.txt`): operations on what surrounds Alice's records — her
/// grants, delegations, inbox and provider links — and on a research organisation's studies,
/// ledger and webhook, by the same callers. `*_list` and `audit_list` say whether the caller's
/// list shows the thing (`audit_list`: any entry about Alice's record); the others are statuses.
const OTHER_OPERATIONS: &[&str] = &[
    "grants_list",
    "grants_revoke",
    "delegations_list",
    "delegations_revoke",
    "delegations_accept",
    "inbox_mark_read",
    "providers_list",
    "providers_remove",
    "audit_list",
    "research_review_study",
    "research_disclosure",
    "research_resume",
    "inbox_list_webhook_deliveries",
];

/// A provider link whose server does not exist (nothing in the table talks to it).
fn provider_link() -> Value {
    json!({"name": "Aoba portal", "base_url": "http://fhir.aoba.example/fhir", "token": "t0k3n", "patient_id": "p-1"})
}

impl World {
    fn fresh(&self) -> usize {
        let n = self.others.fresh.get() + 1;
        self.others.fresh.set(n);
        n
    }

    /// Whether the caller's list at `path` has an item with `id` under `key`.
    async fn lists(&self, caller: &str, path: &str, key: &str, id: &str) -> String {
        let listed = self.send(caller, Method::GET, path, None).await;
        if listed.status != 200 {
            return listed.status.to_string();
        }
        let items = listed.json()[key].as_array().cloned().unwrap_or_default();
        if items.iter().any(|item| item["id"] == id) { "listed" } else { "hidden" }.to_owned()
    }

    /// The path `operation` acts on, made fresh where the call uses it up, for the second table.
    async fn other_target(&self, operation: &str) -> (Method, String, Option<Value>) {
        let owner = &self.callers["owner"].0;
        let o = &self.others;
        match operation {
            "grants_revoke" => {
                let body = json!({"grantee": {"org": o.sakura.id}, "scope": ["observation"], "actions": ["view"]});
                let id = self.app.post("/api/v1/grants", owner, body).await.expect(201).json()["id"].clone();
                (Method::DELETE, format!("/api/v1/grants/{}", id.as_str().expect("id")), None)
            }
            "delegations_revoke" | "delegations_accept" => {
                let friend = self.app.patient(&format!("alice-friend-{}", self.fresh())).await;
                let body = json!({"agent": friend.username, "powers": ["view"]});
                let id = self.app.post("/api/v1/delegations", owner, body).await.expect(201).json()["id"].clone();
                let id = id.as_str().expect("id");
                if operation == "delegations_revoke" {
                    (Method::DELETE, format!("/api/v1/delegations/{id}"), None)
                } else {
                    (Method::POST, format!("/api/v1/delegations/{id}/accept"), Some(json!({})))
                }
            }
            "inbox_mark_read" => {
                let inbox = self.app.get("/api/v1/inbox", owner).await.expect(200).json();
                let id = inbox["notifications"][0]["id"].as_str().expect("Alice has a notification").to_owned();
                (Method::POST, format!("/api/v1/inbox/{id}/read"), Some(json!({})))
            }
            "providers_remove" => {
                let id =
                    self.app.post("/api/v1/providers", owner, provider_link()).await.expect(201).json()["id"].clone();
                (Method::DELETE, format!("/api/v1/providers/{}", id.as_str().expect("id")), None)
            }
            "research_review_study" => {
                let study = self.app.pending_study(&o.lab, &format!("Study {}", self.fresh())).await;
                (Method::POST, format!("/api/v1/research/studies/{study}/review"), Some(json!({"decision": "reject"})))
            }
            "research_disclosure" => {
                (Method::GET, format!("/api/v1/research/organisations/{}/disclosure", o.lab.id), None)
            }
            "research_resume" => {
                (Method::POST, format!("/api/v1/research/organisations/{}/resume", o.lab.id), Some(json!({})))
            }
            "inbox_list_webhook_deliveries" => {
                (Method::GET, format!("/api/v1/webhooks/{}/deliveries", o.webhook), None)
            }
            other => panic!("no request for {other}"),
        }
    }

    async fn other_outcome(&self, operation: &str, caller: &str, record: &str) -> String {
        let o = &self.others;
        match operation {
            "grants_list" => return self.lists(caller, "/api/v1/grants", "grants", &o.grant).await,
            "delegations_list" => return self.lists(caller, "/api/v1/delegations", "delegations", &o.delegation).await,
            "providers_list" => return self.lists(caller, "/api/v1/providers", "providers", &o.provider).await,
            "audit_list" => {
                let listed = self.send(caller, Method::GET, "/api/v1/audit?limit=5000", None).await;
                if listed.status != 200 {
                    return listed.status.to_string();
                }
                let entries = listed.json()["entries"].as_array().cloned().unwrap_or_default();
                return if entries.iter().any(|e| e["record"] == record) { "listed" } else { "hidden" }.to_owned();
            }
            _ => {}
        }
        let (method, path, body) = self.other_target(operation).await;
        let response = self.send(caller, method.clone(), &path, body.clone()).await;
        assert_ne!(response.status, 500, "{operation} {caller}: {}", response.text());
        if UNRELATED.contains(&caller)
            && ["grants_", "delegations_", "inbox_mark", "providers_"].iter().any(|p| operation.starts_with(p))
        {
            // Alice's things look to strangers exactly like things that do not exist.
            let missing = fill_last_id(&path, "5d0c6a8e-1b2f-4e3a-9c7d-8f6e5a4b3c2d");
            let answer = self.send(caller, method, &missing, body).await;
            assert_eq!(
                (response.status, response.error_code()),
                (answer.status, answer.error_code()),
                "{operation} answers {caller} about Alice's as about something that does not exist"
            );
        }
        response.status.to_string()
    }
}

/// `path` with its id segment (the one after the collection name) replaced by `id`.
fn fill_last_id(path: &str, id: &str) -> String {
    let segments: Vec<&str> = path.split('/').collect();
    // /api/v1/<collection>/<id>[/<action>]
    segments.iter().enumerate().map(|(i, s)| if i == 4 { id } else { s }).collect::<Vec<_>>().join("/")
}

#[tokio::test]
async fn operations_around_records_follow_the_reviewed_matrix() {
    let w = world().await;
    // One record of Alice's, read by Sakura, so that audit lists have something to show or hide.
    let record = w.record("owned").await;
    w.send("grantee", Method::GET, &format!("/api/v1/records/{record}"), None).await;
    let mut actual = BTreeMap::new();
    for operation in OTHER_OPERATIONS {
        let mut row = Vec::new();
        for caller in CALLERS {
            row.push(w.other_outcome(operation, caller, &record).await);
        }
        actual.insert(((*operation).to_owned(), "live".to_owned()), row);
    }
    let rows: Vec<(&str, &str)> = OTHER_OPERATIONS.iter().map(|o| (*o, "live")).collect();
    check_against("authz_routes.txt", include_str!("authz_routes.txt"), &rows, &actual);
}
