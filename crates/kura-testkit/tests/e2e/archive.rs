//! Removable media (issue 5): export to an encrypted, signed archive, move to it, import into
//! any Kura server; tampered archives are refused and import nothing.

use axum::http::Method;
use kura_core::ids::RecordId;
use kura_server::archive::{self, Entry};
use kura_store::RecordStore;
use kura_testkit::{Person, TestApp, TestResponse, fixture, pdf_with_text};
use serde_json::{Value, json};

use super::FHIR;

const PASSPHRASE: &str = "blue whale over the hill";

/// Aoba hospital uploads Alice's FHIR bundle, a CT image and a PDF certificate and transfers
/// all three to her.
struct Exporting {
    app: TestApp,
    alice: Person,
    records: Vec<String>,
}

async fn exporting_scene() -> Exporting {
    let app = TestApp::new().await;
    let aoba = app.institution("Aoba General Hospital").await;
    let alice = app.patient("alice").await;
    app.link(&aoba, &alice, "MRN-1").await;
    let uploads = [
        (FHIR, fixture("synthea-r4/patient-03.json")),
        ("application/dicom", fixture("dicom/CT_small.dcm")),
        ("application/pdf", pdf_with_text("Certificate of diagnosis: type 2 diabetes")),
    ];
    let staff = app.token(&aoba.staff).await;
    let mut records = Vec::new();
    for (content_type, bytes) in uploads {
        let id = app.upload_ok(&aoba, "MRN-1", content_type, bytes).await;
        let body = json!({"agreement": {"retain_view": false}});
        app.post(&format!("/api/v1/records/{id}/transfer"), &staff, body).await.expect(200);
        records.push(id);
    }
    Exporting { app, alice, records }
}

async fn export(app: &TestApp, token: &str, body: Value) -> TestResponse {
    app.post("/api/v1/export", token, body).await
}

async fn import(app: &TestApp, token: &str, archive: Vec<u8>, passphrase: &str) -> TestResponse {
    let headers = [("kura-passphrase", passphrase)];
    app.raw(Method::POST, "/api/v1/import", Some(token), "application/octet-stream", archive, &headers).await
}

async fn content_hash(app: &TestApp, id: &str) -> String {
    let id = RecordId::parse(id).expect("record id");
    app.app().store().record(&id).await.expect("store").expect("record").content_hash.expect("content hash")
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// Decrypts, changes one entry with `alter`, and encrypts again with the right passphrase.
fn reseal(archive_bytes: &[u8], alter: impl Fn(&mut Entry)) -> Vec<u8> {
    let mut entries = archive::open(archive_bytes, PASSPHRASE).expect("opens");
    entries.iter_mut().for_each(alter);
    archive::seal(&entries, PASSPHRASE).expect("seals")
}

#[tokio::test]
async fn export_then_import_into_a_fresh_server_keeps_content_hashes_and_gives_custody_to_the_patient() {
    let s = exporting_scene().await;
    let alice = s.app.token(&s.alice).await;
    let exported = export(&s.app, &alice, json!({"passphrase": PASSPHRASE})).await.expect(200);
    assert_eq!(exported.content_type, "application/octet-stream");
    assert!(exported.body.starts_with(b"KURA-ARCHIVE-1\n"));

    // Offline, the archive holds the bundle, each record's content and a signed manifest.
    let verified = archive::verify(archive::open(&exported.body, PASSPHRASE).expect("opens")).expect("verifies");
    let manifest = &verified.manifest;
    assert_eq!(manifest.owner, format!("account:{}", s.alice.id));
    let mut ids: Vec<String> = manifest.records.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    let mut expected = s.records.clone();
    expected.sort();
    assert_eq!(ids, expected);
    let bundle: Value = serde_json::from_slice(verified.entry("bundle.json").expect("bundle")).expect("json");
    assert_eq!(bundle["type"], "collection");
    assert!(super::resource_types(&bundle).contains(&"Patient".to_owned()));
    for record in &manifest.records {
        assert_eq!(record.content_sha256, content_hash(&s.app, &record.id).await, "{}", record.entry);
    }
    // The export is on the patient's timeline, record by record.
    let audit = s.app.get("/api/v1/audit", &alice).await.expect(200).json();
    let exports = super::audit_actions(&audit).iter().filter(|(a, o)| a == "export" && o == "done").count();
    assert_eq!(exports, 3);

    // A fresh server: the patient imports the archive and owns identical content there.
    let other = TestApp::new().await;
    let bob = other.patient("alice-elsewhere").await;
    let bob_token = other.token(&bob).await;
    let imported = import(&other, &bob_token, exported.body.clone(), PASSPHRASE).await.expect(201).json();
    assert_eq!(imported["imported"].as_array().unwrap().len(), 3);
    assert_eq!(imported["skipped"].as_array().unwrap().len(), 0);
    assert_eq!(imported["signed_by_this_server"], false);
    let origin_key = imported["origin_key"].as_str().unwrap().to_owned();
    let server = s.app.get("/api/v1/server", &alice).await.expect(200).json();
    assert_eq!(server["public_key"], origin_key.as_str());
    for item in imported["imported"].as_array().unwrap() {
        let (original, id) = (item["original_id"].as_str().unwrap(), item["id"].as_str().unwrap());
        assert_eq!(content_hash(&other, id).await, content_hash(&s.app, original).await);
        let view = other.get(&format!("/api/v1/records/{id}"), &bob_token).await.expect(200).json();
        assert_eq!(view["owner"], format!("account:{}", bob.id));
        assert_eq!(view["access"]["basis"], "owner");
        let provenance = view["provenance"].as_str().unwrap();
        assert!(provenance.starts_with("imported from an archive of kura ("), "{provenance}");
        assert!(provenance.contains(&origin_key) && provenance.contains(original), "{provenance}");
        let ledger = other.get(&format!("/api/v1/records/{id}/ledger"), &bob_token).await.expect(200).json();
        assert_eq!(ledger.as_array().unwrap().len(), 1);
        assert_eq!(ledger[0]["event"], "imported");
        assert_eq!(ledger[0]["to_owner"], format!("account:{}", bob.id));
        assert_eq!(ledger[0]["note"], provenance);
    }
    // Labels come from the same ingest as uploads, so search finds the imported records.
    let images = other.get("/api/v1/records?label=modality:CT", &bob_token).await.expect(200).json();
    assert_eq!(images["records"].as_array().unwrap().len(), 1);
    let audit = other.get("/api/v1/audit", &bob_token).await.expect(200).json();
    assert_eq!(super::audit_actions(&audit).iter().filter(|(a, _)| a == "import").count(), 3);

    // Importing the same archive again creates nothing and says what it skipped.
    let again = import(&other, &bob_token, exported.body, PASSPHRASE).await.expect(200).json();
    assert_eq!(again["imported"].as_array().unwrap().len(), 0);
    assert_eq!(again["skipped"].as_array().unwrap().len(), 3);
    let all = other.get("/api/v1/records", &bob_token).await.expect(200).json();
    assert_eq!(all["records"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn tampered_archives_and_wrong_passphrases_are_refused_and_import_nothing() {
    let s = exporting_scene().await;
    let alice = s.app.token(&s.alice).await;
    let good = export(&s.app, &alice, json!({"passphrase": PASSPHRASE})).await.expect(200).body;
    let other = TestApp::new().await;
    let bob = other.patient("bob").await;
    let bob_token = other.token(&bob).await;

    let check = |response: TestResponse, code: &str, message: &str| {
        let response = response.expect(422);
        assert_eq!(response.error_code(), code);
        let said = response.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(said.contains(message), "{said}");
    };
    let wrong = import(&other, &bob_token, good.clone(), "not the passphrase at all").await;
    check(wrong, "wrong_passphrase", "the passphrase does not open this archive");

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let refused = import(&other, &bob_token, flipped, PASSPHRASE).await;
    check(refused, "wrong_passphrase", "damaged or altered");

    let pdf_entry = format!("records/{}.pdf", s.records[2]);
    let altered_entry = reseal(&good, |e| {
        if e.name == pdf_entry {
            e.data.extend_from_slice(b"% appended");
        }
    });
    check(import(&other, &bob_token, altered_entry, PASSPHRASE).await, "entry_altered", &pdf_entry);

    let altered_manifest = reseal(&good, |e| {
        if e.name == "manifest.json" {
            let text = String::from_utf8(e.data.clone()).unwrap().replace("MRN-1", "MRN-9");
            e.data = text.into_bytes();
        }
    });
    let refused = import(&other, &bob_token, altered_manifest, PASSPHRASE).await;
    check(refused, "bad_signature", "the archive's signature does not verify");

    let unsigned = reseal(&good, |e| {
        if e.name == "manifest.sig" {
            e.data = b"AAAA".to_vec();
        }
    });
    check(
        import(&other, &bob_token, unsigned, PASSPHRASE).await,
        "bad_signature",
        "altered or not made by a Kura server",
    );

    check(import(&other, &bob_token, b"%PDF-1.4 not an archive".to_vec(), PASSPHRASE).await, "not_an_archive", "");
    let no_passphrase = other
        .raw(Method::POST, "/api/v1/import", Some(&bob_token), "application/octet-stream", good.clone(), &[])
        .await
        .expect(400);
    assert!(no_passphrase.text().contains("Kura-Passphrase"));

    // Nothing of any refused archive was imported; the good one still imports.
    let none = other.get("/api/v1/records", &bob_token).await.expect(200).json();
    assert_eq!(none["records"].as_array().unwrap().len(), 0);
    import(&other, &bob_token, good, PASSPHRASE).await.expect(201);
}

#[tokio::test]
async fn moving_to_media_leaves_a_locator_and_the_records_no_longer_open_here() {
    let s = exporting_scene().await;
    let alice = s.app.token(&s.alice).await;
    // A record that changes after its export stops the move: nothing moves.
    let first = export(&s.app, &alice, json!({"passphrase": PASSPHRASE, "records": [s.records[0], s.records[1]]}))
        .await
        .expect(200)
        .body;
    let first_hash = archive::verify(archive::open(&first, PASSPHRASE).unwrap()).unwrap().manifest_sha256;
    s.app.delete(&format!("/api/v1/records/{}", s.records[1]), &alice).await.expect(204);
    let refused = s.app.post("/api/v1/export/move", &alice, json!({"manifest_sha256": first_hash})).await.expect(409);
    assert!(refused.text().contains("nothing was moved"), "{}", refused.text());
    s.app.get(&format!("/api/v1/records/{}", s.records[0]), &alice).await.expect(200);

    // The default export holds the remaining records; moving ends them here with a locator.
    let archive_bytes = export(&s.app, &alice, json!({"passphrase": PASSPHRASE})).await.expect(200).body;
    let verified = archive::verify(archive::open(&archive_bytes, PASSPHRASE).unwrap()).unwrap();
    assert_eq!(verified.manifest.records.len(), 2);
    let moved = s
        .app
        .post("/api/v1/export/move", &alice, json!({"manifest_sha256": verified.manifest_sha256}))
        .await
        .expect(200)
        .json();
    let mut moved_ids = strings(&moved["moved"]);
    moved_ids.sort();
    let mut expected = vec![s.records[0].clone(), s.records[2].clone()];
    expected.sort();
    assert_eq!(moved_ids, expected);
    let destination = format!("held by the patient offline since {}", verified.manifest.exported_at);
    assert_eq!(moved["locator"]["destination"], destination.as_str());
    for id in &expected {
        let view = s.app.get(&format!("/api/v1/records/{id}"), &alice).await.expect(200).json();
        assert_eq!(view["state"], "moved");
        assert_eq!(view["locator"]["destination"], destination.as_str());
        assert!(view["content"].is_null() && view["content_base64"].is_null());
        let ledger = s.app.get(&format!("/api/v1/records/{id}/ledger"), &alice).await.expect(200).json();
        let last = ledger.as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["event"], "moved_out");
        assert!(last["note"].as_str().unwrap().contains(&verified.manifest_sha256));
    }
    let again = s.app.post("/api/v1/export/move", &alice, json!({"manifest_sha256": verified.manifest_sha256}));
    again.await.expect(409);
    export(&s.app, &alice, json!({"passphrase": PASSPHRASE})).await.expect(422);

    // The patient's archive is now the only copy, and it restores the records elsewhere.
    let other = TestApp::new().await;
    let bob = other.patient("bob").await;
    let bob_token = other.token(&bob).await;
    let imported = import(&other, &bob_token, archive_bytes, PASSPHRASE).await.expect(201).json();
    assert_eq!(imported["imported"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn only_the_owner_exports_and_moves() {
    let s = exporting_scene().await;
    let carol = s.app.patient("carol").await;
    let carol_token = s.app.token(&carol).await;
    let alice = s.app.token(&s.alice).await;

    // Someone else's records look missing; with none of their own there is nothing to export.
    let theirs = export(&s.app, &carol_token, json!({"passphrase": PASSPHRASE, "records": [s.records[0]]}));
    assert_eq!(theirs.await.expect(404).error_code(), "not_found");
    export(&s.app, &carol_token, json!({"passphrase": PASSPHRASE})).await.expect(422);
    export(&s.app, &alice, json!({"passphrase": "short"})).await.expect(422);
    let operator = s.app.operator_token().await;
    export(&s.app, &operator, json!({"passphrase": PASSPHRASE})).await.expect(403);

    let mine = export(&s.app, &alice, json!({"passphrase": PASSPHRASE})).await.expect(200).body;
    let hash = archive::verify(archive::open(&mine, PASSPHRASE).unwrap()).unwrap().manifest_sha256;
    s.app.post("/api/v1/export/move", &carol_token, json!({"manifest_sha256": hash})).await.expect(404);
    for id in &s.records {
        s.app.get(&format!("/api/v1/records/{id}"), &alice).await.expect(200);
    }
}

#[tokio::test]
async fn an_agent_exports_for_the_patient_only_with_the_copy_power() {
    let s = exporting_scene().await;
    let alice = s.app.token(&s.alice).await;
    let helper = s.app.patient("alice-daughter").await;
    let helper_token = s.app.token(&helper).await;
    let as_alice = [("kura-act-as", s.alice.id.as_str())];
    let export_as_agent = |body: Value| {
        let (app, token) = (&s.app, helper_token.clone());
        let bytes = serde_json::to_vec(&body).unwrap();
        async move { app.raw(Method::POST, "/api/v1/export", Some(&token), "application/json", bytes, &as_alice).await }
    };
    let delegation = json!({"agent": "alice-daughter", "powers": ["view"]});
    let viewer = s.app.post("/api/v1/delegations", &alice, delegation).await.expect(201).json();
    export_as_agent(json!({"passphrase": PASSPHRASE})).await.expect(422);
    export_as_agent(json!({"passphrase": PASSPHRASE, "records": [s.records[0]]})).await.expect(404);
    s.app.delete(&format!("/api/v1/delegations/{}", viewer["id"].as_str().unwrap()), &alice).await.expect(204);

    let delegation = json!({"agent": "alice-daughter", "powers": ["view", "copy"]});
    s.app.post("/api/v1/delegations", &alice, delegation).await.expect(201);
    let body = export_as_agent(json!({"passphrase": PASSPHRASE})).await.expect(200).body;
    let verified = archive::verify(archive::open(&body, PASSPHRASE).unwrap()).unwrap();
    assert_eq!(verified.manifest.owner, format!("account:{}", s.alice.id));
    assert_eq!(verified.manifest.records.len(), 3);
    // Without the move power the agent cannot remove the records.
    let hash = json!({"manifest_sha256": verified.manifest_sha256}).to_string().into_bytes();
    let headers = as_alice;
    let path = "/api/v1/export/move";
    let refused = s.app.raw(Method::POST, path, Some(&helper_token), "application/json", hash, &headers).await;
    refused.expect(404);
    s.app.get(&format!("/api/v1/records/{}", s.records[0]), &alice).await.expect(200);
}

/// Re-signs an archive's manifest, after `alter`, with another server's key (as anyone running
/// a Kura server could), keeping the entries' hashes consistent.
fn forge(archive_bytes: &[u8], alter: impl Fn(&mut Vec<Entry>)) -> (Vec<u8>, String) {
    let forger = kura_server::identity::ServerIdentity::new(
        &kura_store::envelope::MasterKey::from_hex(&"42".repeat(32)).unwrap(),
    );
    let mut entries = archive::open(archive_bytes, PASSPHRASE).expect("opens");
    alter(&mut entries);
    let hashes: Vec<(String, String)> =
        entries.iter().map(|e| (e.name.clone(), archive::entry_sha256(&e.data))).collect();
    let manifest = entries.iter_mut().find(|e| e.name == "manifest.json").unwrap();
    let mut value: Value = serde_json::from_slice(&manifest.data).unwrap();
    value["server"]["public_key"] = json!(forger.public_key());
    for record in value["records"].as_array_mut().unwrap() {
        let hash = hashes.iter().find(|(name, _)| record["entry"] == name.as_str()).unwrap().1.clone();
        record["content_sha256"] = json!(hash);
    }
    manifest.data = serde_json::to_vec_pretty(&value).unwrap();
    let signature = forger.sign(&manifest.data);
    entries.iter_mut().find(|e| e.name == "manifest.sig").unwrap().data = signature.into_bytes();
    (archive::seal(&entries, PASSPHRASE).unwrap(), forger.public_key().to_owned())
}

#[tokio::test]
async fn an_archive_signed_by_another_key_says_so_and_content_that_does_not_read_is_refused() {
    let s = exporting_scene().await;
    let alice = s.app.token(&s.alice).await;
    let good = export(&s.app, &alice, json!({"passphrase": PASSPHRASE})).await.expect(200).body;
    let other = TestApp::new().await;
    let bob = other.patient("bob").await;
    let bob_token = other.token(&bob).await;

    let pdf_entry = format!("records/{}.pdf", s.records[2]);
    let (broken, _) = forge(&good, |entries| {
        entries.iter_mut().find(|e| e.name == pdf_entry).unwrap().data = b"not a pdf at all".to_vec();
    });
    let refused = import(&other, &bob_token, broken, PASSPHRASE).await.expect(422);
    assert!(refused.text().contains(&s.records[2]), "{}", refused.text());
    let none = other.get("/api/v1/records", &bob_token).await.expect(200).json();
    assert_eq!(none["records"].as_array().unwrap().len(), 0);

    // Consistent and signed, but by a key that is not the exporting server's: it imports, and
    // the key it names is the forger's, in the answer and in every record's provenance.
    let (foreign, forger_key) = forge(&good, |_| {});
    let imported = import(&other, &bob_token, foreign, PASSPHRASE).await.expect(201).json();
    assert_eq!(imported["origin_key"], forger_key.as_str());
    assert_eq!(imported["signed_by_this_server"], false);
    let id = imported["imported"][0]["id"].as_str().unwrap();
    let view = other.get(&format!("/api/v1/records/{id}"), &bob_token).await.expect(200).json();
    assert!(view["provenance"].as_str().unwrap().contains(&forger_key));
}
