//! Bad input gets a clear error in the envelope and changes nothing.

use axum::http::Method;
use kura_testkit::{TestApp, fixture};
use serde_json::json;

use super::{FHIR, scene};

#[tokio::test]
async fn malformed_bodies_and_wrong_content_types() {
    let s = scene().await;
    let alice = s.app.token(&s.alice).await;
    let malformed = s
        .app
        .raw(Method::POST, "/api/v1/grants", Some(&alice), "application/json", b"{\"grantee\":".to_vec(), &[])
        .await
        .expect(400);
    assert_eq!(malformed.error_code(), "bad_request");
    let wrong_type =
        s.app.raw(Method::POST, "/api/v1/grants", Some(&alice), "text/plain", b"{}".to_vec(), &[]).await.expect(415);
    assert_eq!(wrong_type.error_code(), "unsupported_media_type");
    let missing_field = s.app.post("/api/v1/grants", &alice, json!({"scope": ["image"]})).await.expect(422);
    assert_eq!(missing_field.error_code(), "invalid_input");
    let unknown_category = s
        .app
        .post("/api/v1/grants", &alice, json!({"grantee": {"org": s.aoba.id}, "scope": ["xray"], "actions": ["view"]}))
        .await
        .expect(422);
    assert!(unknown_category.json()["error"]["message"].as_str().unwrap().contains("xray"));
    let bad_time = s
        .app
        .post(
            "/api/v1/grants",
            &alice,
            json!({"grantee": {"org": s.aoba.id}, "scope": ["image"], "actions": ["view"], "expires_at": "next week"}),
        )
        .await
        .expect(422);
    assert!(bad_time.json()["error"]["message"].as_str().unwrap().contains("RFC 3339"));

    let staff = s.app.token(&s.aoba.staff).await;
    let text = s
        .app
        .raw(Method::POST, "/api/v1/records?patient=MRN-1", Some(&staff), "text/plain", b"hello".to_vec(), &[])
        .await
        .expect(415);
    assert_eq!(text.error_code(), "unsupported_media_type");
    let broken_json =
        s.app.upload(&s.aoba, "MRN-1", FHIR, b"{\"resourceType\": \"Bundle\", ".to_vec()).await.expect(422);
    assert_eq!(broken_json.error_code(), "invalid_input");
    s.app.upload(&s.aoba, "MRN-1", FHIR, b"{\"hello\": 1}".to_vec()).await.expect(422);
    s.app.upload(&s.aoba, "MRN-1", "application/dicom", b"DICM but not really".to_vec()).await.expect(422);
    let truncated: Vec<u8> = fixture("dicom/MR_small.dcm").into_iter().take(400).collect();
    s.app.upload(&s.aoba, "MRN-1", "application/dicom", truncated).await.expect(422);
    s.app.upload(&s.aoba, "MRN-1", "application/pdf", b"not a pdf".to_vec()).await.expect(422);
    s.app.upload(&s.aoba, "MRN-1", FHIR, Vec::new()).await.expect(400);
    s.app
        .raw(Method::POST, "/api/v1/records", Some(&staff), FHIR, fixture("synthea-r4/patient-01.json"), &[])
        .await
        .expect(400);
    // Patients do not upload records as institutions.
    s.app
        .raw(
            Method::POST,
            "/api/v1/records?patient=MRN-1",
            Some(&alice),
            FHIR,
            fixture("synthea-r4/patient-01.json"),
            &[],
        )
        .await
        .expect(403);
    // Nothing above left a record behind.
    let listed = s.app.get("/api/v1/records", &staff).await.expect(200).json();
    assert_eq!(listed["records"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let s = scene().await;
    let alice = s.app.token(&s.alice).await;
    let huge = json!({"purpose": "x".repeat(2 * 1024 * 1024)});
    let refused = s.app.post("/api/v1/grants", &alice, huge).await.expect(413);
    assert_eq!(refused.error_code(), "body_too_large");

    let app = TestApp::with_config(|config| config.max_upload_bytes = 64 * 1024).await;
    let aoba = app.institution("Aoba").await;
    let big = app.upload(&aoba, "MRN-1", FHIR, fixture("synthea-r4/patient-01.json")).await.expect(413);
    assert_eq!(big.error_code(), "body_too_large");
}

#[tokio::test]
async fn records_of_others_look_missing() {
    let s = scene().await;
    let mallory = s.app.patient("mallory").await;
    let token = s.app.token(&mallory).await;
    let theirs = s.app.get(&format!("/api/v1/records/{}", s.bundle), &token).await.expect(404);
    let unknown = s.app.get("/api/v1/records/0190f0f0-0000-7000-8000-000000000000", &token).await.expect(404);
    assert_eq!(theirs.body, unknown.body);
    for path in ["copy", "move"] {
        s.app.post(&format!("/api/v1/records/{}/{path}", s.bundle), &token, json!({})).await.expect(404);
    }
    // Transfers are for institutions: a patient is refused by kind, whatever the record.
    let refused = s
        .app
        .post(&format!("/api/v1/records/{}/transfer", s.bundle), &token, json!({"agreement": {}}))
        .await
        .expect(403);
    assert_eq!(refused.json()["error"]["message"], "transferring records is not open to patient accounts");
    s.app.delete(&format!("/api/v1/records/{}", s.bundle), &token).await.expect(404);
    s.app.get(&format!("/api/v1/records/{}/ledger", s.bundle), &token).await.expect(404);
    s.app.delete("/api/v1/grants/no-such-grant", &token).await.expect(404);
    s.app.get("/api/v1/no-such-route", &token).await.expect(404);
    // The attempts are in the audit log as denials.
    let op = s.app.operator_token().await;
    let audit = s.app.get("/api/v1/audit", &op).await.expect(200).json();
    let denials = audit["entries"].as_array().unwrap().iter().filter(|e| e["outcome"] == "denied").count();
    assert!(denials >= 5, "{denials} denials");
}

#[tokio::test]
async fn concurrent_transfers_of_one_record() {
    let s = scene().await;
    let staff = s.app.token(&s.aoba.staff).await;
    let path = format!("/api/v1/records/{}/transfer", s.bundle);
    let (a, b) = tokio::join!(
        s.app.post(&path, &staff, json!({"agreement": {"retain_view": true}})),
        s.app.post(&path, &staff, json!({"agreement": {"parts": ["condition"]}}))
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    // The loser is refused whichever way the race went: 409 if it was decided while the winner
    // was still in flight; after the winner committed, 404 if the hospital kept nothing, or 403
    // naming the missing power if the winner kept the hospital a view (it still knows the record).
    assert!(
        statuses == [200, 404] || statuses == [200, 409] || statuses == [200, 403],
        "{statuses:?}: {} / {}",
        a.text(),
        b.text()
    );
    // Exactly one transfer is in the ledger, and the record is whole under one owner.
    let alice = s.app.token(&s.alice).await;
    let records = s.app.get("/api/v1/records", &alice).await.expect(200).json();
    assert_eq!(records["records"].as_array().unwrap().len(), 1);
    let id = records["records"][0]["id"].as_str().unwrap();
    let ledger = s.app.get(&format!("/api/v1/records/{id}/ledger"), &alice).await.expect(200).json();
    let transfers =
        ledger.as_array().unwrap().iter().filter(|e| e["event"] == "transferred" || e["event"] == "split_off").count();
    assert_eq!(transfers, 1);
}
