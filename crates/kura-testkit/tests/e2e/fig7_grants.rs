//! Fig. 7: the patient grants another institution use of some parts for a period; views follow
//! the scope; revocation and expiry end everything, copies included (DESIGN.md I2, I4, I7).

use kura_testkit::{TestApp, fixture, pdf_with_text};
use serde_json::json;

use super::{FHIR, audit_actions, categories};

struct Fig7 {
    app: TestApp,
    sakura: kura_testkit::Organisation,
    alice: kura_testkit::Person,
    image: String,
    certificate: String,
    bundle: String,
}

async fn fig7() -> Fig7 {
    let app = TestApp::new().await;
    let aoba = app.institution("Aoba General Hospital").await;
    let sakura = app.institution("Sakura Clinic").await;
    let alice = app.patient("alice").await;
    app.link(&aoba, &alice, "MRN-1").await;
    let image = app.upload_ok(&aoba, "MRN-1", "application/dicom", fixture("dicom/CT_small.dcm")).await;
    let staff = app.token(&aoba.staff).await;
    let certificate = app
        .raw(
            axum::http::Method::POST,
            "/api/v1/records?patient=MRN-1&category=certificate",
            Some(&staff),
            "application/pdf",
            pdf_with_text("Diagnosis certificate: type 2 diabetes"),
            &[],
        )
        .await
        .expect(201)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bundle = app.upload_ok(&aoba, "MRN-1", FHIR, fixture("synthea-r4/patient-05.json")).await;
    for record in [&image, &certificate, &bundle] {
        app.post(&format!("/api/v1/records/{record}/transfer"), &staff, json!({"agreement": {}})).await.expect(200);
    }
    Fig7 { app, sakura, alice, image, certificate, bundle }
}

async fn grant_images(f: &Fig7, days: i64) -> String {
    let alice = f.app.token(&f.alice).await;
    let expires = kura_core::time::Timestamp::from_millis(f.app.now().as_millis() + days * 86_400_000);
    let expires = kura_testkit::rfc3339(expires);
    let grant = f
        .app
        .post(
            "/api/v1/grants",
            &alice,
            json!({"grantee": {"org": f.sakura.id}, "scope": ["image"], "actions": ["view", "copy"],
                   "expires_at": expires, "purpose": "second opinion"}),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(grant["active"], true);
    grant["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn grantee_sees_images_only_until_the_grant_expires() {
    let f = fig7().await;
    grant_images(&f, 30).await;
    let sakura = f.app.token(&f.sakura.staff).await;

    let image = f.app.get(&format!("/api/v1/records/{}", f.image), &sakura).await.expect(200).json();
    assert_eq!(image["access"]["basis"], "grant");
    assert!(image["content_base64"].as_str().unwrap().len() > 1000);
    assert!(image["labels"].as_array().unwrap().is_empty(), "grantees do not see labels");
    // The certificate is out of scope: it looks like it does not exist.
    let missing = f.app.get(&format!("/api/v1/records/{}", f.certificate), &sakura).await.expect(404);
    let unknown = f.app.get("/api/v1/records/no-such-record", &sakura).await.expect(404);
    assert_eq!(missing.body, unknown.body);
    // Patient-05's bundle has an ImagingStudy: only that part is visible.
    let bundle = f.app.get(&format!("/api/v1/records/{}", f.bundle), &sakura).await.expect(200).json();
    assert_eq!(categories(&bundle), ["image"]);
    assert_eq!(super::resource_types(&bundle["content"]), ["ImagingStudy"]);
    let listed = f.app.get("/api/v1/records", &sakura).await.expect(200).json();
    let ids: Vec<&str> = listed["records"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&f.image.as_str()) && !ids.contains(&f.certificate.as_str()));

    let copy = f.app.post(&format!("/api/v1/records/{}/copy", f.image), &sakura, json!({})).await.expect(201).json();
    let copy_id = copy["id"].as_str().unwrap().to_owned();
    assert!(copy["expires_at"].is_string());
    f.app.get(&format!("/api/v1/records/{copy_id}"), &sakura).await.expect(200);

    // Thirty-one days later the grant has ended: nothing opens, and the sweeper removes the copy.
    f.app.advance_days(31);
    let sakura = f.app.token(&f.sakura.staff).await;
    f.app.get(&format!("/api/v1/records/{}", f.image), &sakura).await.expect(404);
    f.app.get(&format!("/api/v1/records/{copy_id}"), &sakura).await.expect(404);
    assert_eq!(f.app.sweep().await, 1);
    assert!(f.app.get("/api/v1/records", &sakura).await.expect(200).json()["records"].as_array().unwrap().is_empty());

    let alice = f.app.token(&f.alice).await;
    let audit = f.app.get("/api/v1/audit", &alice).await.expect(200).json();
    let actions = audit_actions(&audit);
    for expected in [
        ("upload", "done"),
        ("transfer", "done"),
        ("grant_create", "done"),
        ("view", "allowed"),
        ("view", "denied"),
        ("copy", "allowed"),
        ("copy_destroyed", "done"),
    ] {
        assert!(
            actions.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "missing {expected:?} in {actions:?}"
        );
    }
    let verification = f.app.get("/api/v1/audit/verify", &alice).await.expect(200).json();
    assert_eq!(verification["ok"], true, "{verification}");
}

#[tokio::test]
async fn revocation_ends_access_and_copies_at_once() {
    let f = fig7().await;
    let grant = grant_images(&f, 30).await;
    let sakura = f.app.token(&f.sakura.staff).await;
    let copy = f.app.post(&format!("/api/v1/records/{}/copy", f.image), &sakura, json!({})).await.expect(201).json();
    let copy_id = copy["id"].as_str().unwrap();

    let alice = f.app.token(&f.alice).await;
    f.app.delete(&format!("/api/v1/grants/{grant}"), &alice).await.expect(204);
    // The token Sakura holds was issued before the revocation; it opens nothing now.
    f.app.get(&format!("/api/v1/records/{}", f.image), &sakura).await.expect(404);
    f.app.get(&format!("/api/v1/records/{copy_id}"), &sakura).await.expect(404);
    assert_eq!(f.app.sweep().await, 0, "the copy was destroyed with the revocation");
    // Revoking twice is a conflict; others cannot revoke it at all.
    f.app.delete(&format!("/api/v1/grants/{grant}"), &alice).await.expect(409);
    f.app.delete(&format!("/api/v1/grants/{grant}"), &sakura).await.expect(404);
    let grants = f.app.get("/api/v1/grants", &alice).await.expect(200).json();
    assert_eq!(grants["grants"][0]["active"], false);
}

#[tokio::test]
async fn move_and_delete_under_a_grant() {
    let f = fig7().await;
    let alice = f.app.token(&f.alice).await;
    f.app
        .post(
            "/api/v1/grants",
            &alice,
            json!({"grantee": {"org": f.sakura.id}, "records": [f.image], "scope": ["image"], "actions": ["move"]}),
        )
        .await
        .expect(201);
    let sakura = f.app.token(&f.sakura.staff).await;
    let moved = f
        .app
        .post(&format!("/api/v1/records/{}/move", f.image), &sakura, json!({"destination": "Sakura PACS"}))
        .await
        .expect(200)
        .json();
    assert!(moved["content_base64"].is_string());
    assert_eq!(moved["locator"]["destination"], "Sakura PACS");
    // The owner reads the locator, not the content.
    let located = f.app.get(&format!("/api/v1/records/{}", f.image), &alice).await.expect(200).json();
    assert_eq!(located["state"], "moved");
    assert!(located.get("content_base64").is_none());
    assert_eq!(located["locator"]["destination"], "Sakura PACS");

    f.app.delete(&format!("/api/v1/records/{}", f.certificate), &sakura).await.expect(404);
    f.app.delete(&format!("/api/v1/records/{}", f.certificate), &alice).await.expect(204);
    f.app.get(&format!("/api/v1/records/{}", f.certificate), &alice).await.expect(404);
}

#[tokio::test]
async fn a_guardian_acts_for_a_minor() {
    let app = TestApp::new().await;
    let aoba = app.institution("Aoba General Hospital").await;
    let sakura = app.institution("Sakura Clinic").await;
    let van = app.patient("van").await;
    let parent = app.patient("van-parent").await;
    app.link(&aoba, &van, "MRN-KID").await;
    let record = app.upload_ok(&aoba, "MRN-KID", FHIR, fixture("synthea-r4/patient-06.json")).await;
    let staff = app.token(&aoba.staff).await;
    app.post(&format!("/api/v1/records/{record}/transfer"), &staff, json!({"agreement": {}})).await.expect(200);

    // The institution the child is linked to registers the parent as guardian until the 18th birthday.
    let delegation = app
        .post(
            "/api/v1/delegations",
            &staff,
            json!({"agent": "van-parent", "patient": van.id, "kind": "guardian",
                   "powers": ["view", "copy", "move", "delete", "statistics", "manage_grants"],
                   "expires_at": "2034-06-26T00:00:00Z"}),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(delegation["active"], true);

    let guardian = app.token(&parent).await;
    let as_van = [("kura-act-as", van.id.as_str())];
    // Without the header the parent is only themself.
    app.get(&format!("/api/v1/records/{record}"), &guardian).await.expect(404);
    let seen = app
        .raw(
            axum::http::Method::GET,
            &format!("/api/v1/records/{record}"),
            Some(&guardian),
            "application/json",
            vec![],
            &as_van,
        )
        .await
        .expect(200)
        .json();
    assert_eq!(seen["access"]["basis"], "delegation");
    let grant =
        json!({"grantee": {"org": sakura.id}, "records": [record], "scope": ["condition"], "actions": ["view"]});
    app.raw(
        axum::http::Method::POST,
        "/api/v1/grants",
        Some(&guardian),
        "application/json",
        serde_json::to_vec(&grant).unwrap(),
        &as_van,
    )
    .await
    .expect(201);
    let clinic = app.token(&sakura.staff).await;
    let view = app.get(&format!("/api/v1/records/{record}"), &clinic).await.expect(200).json();
    assert_eq!(categories(&view), ["condition"]);
    // Someone the child never appointed cannot act for them.
    let stranger = app.patient("stranger").await;
    let stranger = app.token(&stranger).await;
    app.raw(
        axum::http::Method::GET,
        &format!("/api/v1/records/{record}"),
        Some(&stranger),
        "application/json",
        vec![],
        &as_van,
    )
    .await
    .expect(403);

    // The child's audit names both the guardian and the child.
    let van_token = app.token(&van).await;
    let audit = app.get("/api/v1/audit", &van_token).await.expect(200).json();
    let by_guardian = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "grant_create" && e["actor"] == format!("account:{}", parent.id))
        .expect("the guardian's grant is in the child's audit log");
    assert_eq!(by_guardian["on_behalf_of"], format!("account:{}", van.id));
    assert_eq!(by_guardian["actor_name"], "van-parent");

    // When the delegation ends, so does the guardian's power.
    app.advance_days(365 * 9);
    let guardian = app.token(&parent).await;
    app.raw(
        axum::http::Method::GET,
        &format!("/api/v1/records/{record}"),
        Some(&guardian),
        "application/json",
        vec![],
        &as_van,
    )
    .await
    .expect(403);
}

#[tokio::test]
async fn grants_apply_the_anonymization_unit_keyed_per_grant() {
    let f = fig7().await;
    let alice = f.app.token(&f.alice).await;
    let sakura = f.app.token(&f.sakura.staff).await;
    let bundle_path = format!("/api/v1/records/{}", f.bundle);
    let original = f.app.get(&bundle_path, &alice).await.expect(200).json();
    let original_text = original["content"].to_string();
    assert!(original_text.contains("Beer"), "the fixture names its patient");

    let mut ids = Vec::new();
    for level in ["anonymized", "pseudonymized"] {
        let grant = f
            .app
            .post(
                "/api/v1/grants",
                &alice,
                json!({"grantee": {"org": f.sakura.id}, "records": [f.bundle], "scope": ["other", "condition", "observation"],
                       "actions": ["view"], "anonymization": level}),
            )
            .await
            .expect(201)
            .json();
        let view = f.app.get(&bundle_path, &sakura).await.expect(200).json();
        assert_eq!(view["access"]["anonymization"], level);
        let text = view["content"].to_string();
        assert!(!text.contains("Beer") && !text.contains("Brent"), "{level}: the patient's name survived");
        assert!(!text.contains("\"div\""), "{level}: narrative survived");
        let patient = view["content"]["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .find(|r| r["resourceType"] == "Patient")
            .unwrap()
            .clone();
        ids.push(patient["id"].as_str().unwrap().to_owned());
        if level == "anonymized" {
            // Dates moved: the first encounter's start is no longer the original one.
            let first_start = |content: &serde_json::Value| {
                content["entry"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| &e["resource"])
                    .find(|r| r["resourceType"] == "Encounter")
                    .map(|r| r["period"]["start"].as_str().unwrap().to_owned())
                    .unwrap()
            };
            assert_ne!(first_start(&view["content"]), first_start(&original["content"]));
        }
        f.app.delete(&format!("/api/v1/grants/{}", grant["id"].as_str().unwrap()), &alice).await.expect(204);
    }
    assert_ne!(ids[0], ids[1], "pseudonyms under different grants cannot be linked");
}
