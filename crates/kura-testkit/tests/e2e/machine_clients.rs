//! Machine clients: OAuth2 client credentials with a signed JWT assertion, by SMART Backend
//! Services rules.

use axum::http::Method;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kura_testkit::{TestApp, fixture};
use serde_json::json;

use super::FHIR;

/// An Ed25519 test key pair as PEM (PKCS#8 private, SPKI public), from a fixed seed.
fn key_pair(seed: u8) -> (String, String) {
    let seed = [seed; 32];
    let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    let pem = |label: &str, prefix: &str, key: &[u8]| {
        let mut der = (0..prefix.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&prefix[i..i + 2], 16).unwrap())
            .collect::<Vec<_>>();
        der.extend_from_slice(key);
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n")
    };
    (
        pem("PRIVATE KEY", "302e020100300506032b657004220420", &seed),
        pem("PUBLIC KEY", "302a300506032b6570032100", &public),
    )
}

struct Client {
    id: String,
    private_pem: String,
}

async fn registered_client(app: &TestApp) -> (Client, kura_testkit::Organisation) {
    let aoba = app.institution("Aoba General Hospital").await;
    let (private_pem, public_pem) = key_pair(7);
    let op = app.operator_token().await;
    let client = app
        .post("/api/v1/clients", &op, json!({"org": aoba.id, "public_key_pem": public_pem, "algorithm": "EdDSA"}))
        .await
        .expect(201)
        .json();
    assert_eq!(client["token_endpoint"], "http://127.0.0.1:8080/api/v1/auth/token");
    (Client { id: client["client_id"].as_str().unwrap().to_owned(), private_pem }, aoba)
}

fn assertion(client: &Client, private_pem: &str, aud: &str, exp: i64, jti: &str) -> String {
    let claims = json!({"iss": client.id, "sub": client.id, "aud": aud, "exp": exp, "jti": jti});
    let key = EncodingKey::from_ed_pem(private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &key).unwrap()
}

async fn exchange(app: &TestApp, assertion: &str) -> kura_testkit::TestResponse {
    let form = format!(
        "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}&scope=system%2F*.write"
    );
    app.raw(Method::POST, "/api/v1/auth/token", None, "application/x-www-form-urlencoded", form.into_bytes(), &[]).await
}

const AUD: &str = "http://127.0.0.1:8080/api/v1/auth/token";

#[tokio::test]
async fn a_valid_assertion_gets_a_token_that_acts_for_the_institution() {
    let app = TestApp::new().await;
    let (client, _aoba) = registered_client(&app).await;
    let now = app.now().as_millis() / 1000;
    let token =
        exchange(&app, &assertion(&client, &client.private_pem, AUD, now + 240, "jti-1")).await.expect(200).json();
    assert_eq!(token["token_type"], "bearer");
    assert_eq!(token["expires_in"], 300);
    let access = token["access_token"].as_str().unwrap();
    let uploaded = app
        .raw(
            Method::POST,
            "/api/v1/records?patient=MRN-1",
            Some(access),
            FHIR,
            fixture("synthea-r4/patient-01.json"),
            &[],
        )
        .await
        .expect(201)
        .json();
    assert!(uploaded["owner"].as_str().unwrap().starts_with("org:"));
}

#[tokio::test]
async fn bad_assertions_are_rejected() {
    let app = TestApp::new().await;
    let (client, _aoba) = registered_client(&app).await;
    let now = app.now().as_millis() / 1000;
    let check = |response: kura_testkit::TestResponse, why: &str| {
        assert_eq!(response.status, 401, "{why}: {}", response.text());
        assert_eq!(response.error_code(), "invalid_client", "{why}");
        response.json()["error"]["message"].as_str().unwrap().to_owned()
    };
    let expired =
        check(exchange(&app, &assertion(&client, &client.private_pem, AUD, now - 5, "jti-a")).await, "expired");
    assert!(expired.contains("expired"));
    let too_long =
        check(exchange(&app, &assertion(&client, &client.private_pem, AUD, now + 3600, "jti-b")).await, "exp too far");
    assert!(too_long.contains("five minutes"));
    let (other_private, _) = key_pair(9);
    let wrong_key =
        check(exchange(&app, &assertion(&client, &other_private, AUD, now + 60, "jti-c")).await, "wrong key");
    assert!(wrong_key.contains("signature"));
    let wrong_aud = check(
        exchange(&app, &assertion(&client, &client.private_pem, "https://elsewhere.example/token", now + 60, "jti-d"))
            .await,
        "wrong audience",
    );
    assert!(wrong_aud.contains("aud"));
    exchange(&app, &assertion(&client, &client.private_pem, AUD, now + 60, "jti-e")).await.expect(200);
    let replay =
        check(exchange(&app, &assertion(&client, &client.private_pem, AUD, now + 60, "jti-e")).await, "replay");
    assert!(replay.contains("replay"));
    let unknown = Client { id: "kura-client-unknown".into(), private_pem: client.private_pem.clone() };
    check(exchange(&app, &assertion(&unknown, &client.private_pem, AUD, now + 60, "jti-f")).await, "unknown client");
    check(exchange(&app, "not.a.jwt").await, "garbage");
    let wrong_grant = app
        .raw(
            Method::POST,
            "/api/v1/auth/token",
            None,
            "application/x-www-form-urlencoded",
            b"grant_type=password&client_assertion_type=x&client_assertion=y".to_vec(),
            &[],
        )
        .await
        .expect(400);
    assert_eq!(wrong_grant.error_code(), "unsupported_grant_type");
}
