//! Attacks on authentication, the process and the files at rest, and on HTTP hygiene (issue
//! 20, items 11–16 and 18). Each test performs the attack as an attacker would, shows it
//! refused, and shows that the legitimate use still works.

use axum::http::Method;
use kura_server::{App, Clock, Config};
use kura_store::LoginStore;
use kura_testkit::{Person, TestApp, TestResponse};
use serde_json::{Value, json};
use sqlx::Row;

use super::{FHIR, scene};

fn login_body(username: &str, password: &str, totp: Option<&str>) -> Value {
    let mut body = json!({"username": username, "password": password});
    if let Some(code) = totp {
        body["totp"] = json!(code);
    }
    body
}

async fn login_from(app: &TestApp, ip: &str, username: &str, password: &str, totp: Option<&str>) -> TestResponse {
    app.raw_from(ip, Method::POST, "/api/v1/auth/login", None, Some(login_body(username, password, totp))).await
}

/// Sends `bodies` to the login route all at once from `ip`; the statuses, in order.
async fn parallel_logins(app: &TestApp, ip: &str, bodies: Vec<Value>) -> Vec<u16> {
    let requests =
        bodies.into_iter().map(|body| app.raw_from(ip, Method::POST, "/api/v1/auth/login", None, Some(body)));
    let responses = tokio::time::timeout(std::time::Duration::from_secs(120), futures_util::future::join_all(requests))
        .await
        .expect("25 logins finish within two minutes");
    responses.iter().map(|r| r.status).collect()
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

fn advance_secs(app: &TestApp, secs: i64) {
    app.app().clock().advance_millis(secs * 1000);
}

/// Enrols `person` in TOTP the legitimate way; returns the secret the server chose.
async fn enable_totp(app: &TestApp, person: &Person) -> String {
    let token = app.token(person).await;
    let enrollment = app.post("/api/v1/auth/totp/enroll", &token, json!({})).await.expect(200).json();
    let secret = enrollment["secret"].as_str().expect("secret").to_owned();
    let code = kura_server::totp_code(&secret, app.now()).expect("code");
    app.post("/api/v1/auth/totp/confirm", &token, json!({"code": code, "password": person.password})).await.expect(204);
    secret
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_passwords_are_evaluated_at_most_the_limit() {
    let app = TestApp::new().await;
    let sato = app.patient("dr.sato").await;

    // 25 wrong passwords at once from one address: only the first five are evaluated (401);
    // the others are refused before any password check (429).
    let bodies = (0..25).map(|i| login_body("dr.sato", &format!("wrong-password-{i}"), None)).collect();
    let statuses = parallel_logins(&app, "203.0.113.7", bodies).await;
    assert_eq!(count(&statuses, 401), 5, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 20, "{statuses:?}");
    // The counter in the database counted the evaluated attempts only.
    assert_eq!(app.app().store().login_attempts("account:dr.sato").await.unwrap(), 5);

    // Another spelling of the same username is the same account, and still backing off; the
    // refusal says when to come back.
    let (refused, headers) = app
        .response_with_headers(
            Method::POST,
            "/api/v1/auth/login",
            None,
            "application/json",
            serde_json::to_vec(&login_body("DR.SATO", &sato.password, None)).unwrap(),
        )
        .await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.error_code(), "too_many_attempts");
    let retry_after: i64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");

    // No lock-out: after the wait, the clinician logs in from another address with the right
    // password, and the account's count starts afresh.
    advance_secs(&app, retry_after);
    login_from(&app, "198.51.100.20", "dr.sato", &sato.password, None).await.expect(200);
    assert_eq!(app.app().store().login_attempts("account:dr.sato").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_totp_guesses_are_evaluated_at_most_the_limit() {
    let app = TestApp::new().await;
    let sato = app.patient("dr.sato").await;
    let secret = enable_totp(&app, &sato).await;
    advance_secs(&app, 30);

    // The attacker knows the password and guesses codes, 25 at once.
    let valid: Vec<String> = [-30_000, 0, 30_000]
        .iter()
        .map(|offset| {
            let at = kura_core::time::Timestamp::from_millis(app.now().as_millis() + offset);
            kura_server::totp_code(&secret, at).unwrap()
        })
        .collect();
    let guesses: Vec<String> =
        (0..1000).map(|i| format!("{i:06}")).filter(|code| !valid.contains(code)).take(25).collect();
    let bodies = guesses.iter().map(|code| login_body("dr.sato", &sato.password, Some(code))).collect();
    let statuses = parallel_logins(&app, "203.0.113.8", bodies).await;
    assert_eq!(count(&statuses, 401), 5, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 20, "{statuses:?}");
    assert_eq!(app.app().store().login_attempts("account:dr.sato").await.unwrap(), 5);

    // After the wait the owner's current code works.
    advance_secs(&app, 60);
    let code = kura_server::totp_code(&secret, app.now()).unwrap();
    login_from(&app, "198.51.100.21", "dr.sato", &sato.password, Some(&code)).await.expect(200);
}

#[tokio::test]
async fn one_address_guessing_across_accounts_backs_off() {
    let app = TestApp::new().await;
    let alice = app.patient("alice").await;
    // Twenty wrong guesses spread over twenty usernames from one address; then that address
    // waits, even for an account it has not tried, while other addresses are unaffected.
    for i in 0..20 {
        login_from(&app, "203.0.113.9", &format!("user-{i}"), "wrong-password", None).await.expect(401);
    }
    let refused = login_from(&app, "203.0.113.9", "alice", &alice.password, None).await.expect(429);
    assert_eq!(refused.error_code(), "too_many_attempts");
    login_from(&app, "198.51.100.22", "alice", &alice.password, None).await.expect(200);
}

#[tokio::test]
async fn totp_secrets_are_chosen_by_the_server_used_once_and_sealed_at_rest() {
    let app = TestApp::new().await;
    let alice = app.patient("alice").await;
    let token = app.token(&alice).await;
    let all_zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let zero_code = kura_server::totp_code(all_zero, app.now()).unwrap();

    // A client-chosen secret is refused, before and after enrolment.
    let chosen = json!({"secret": all_zero, "code": zero_code, "password": alice.password});
    app.post("/api/v1/auth/totp/confirm", &token, chosen.clone()).await.expect(422);
    let enrollment = app.post("/api/v1/auth/totp/enroll", &token, json!({})).await.expect(200).json();
    let secret = enrollment["secret"].as_str().unwrap().to_owned();
    assert_ne!(secret, all_zero);
    let refused = app.post("/api/v1/auth/totp/confirm", &token, chosen).await.expect(422);
    assert_eq!(refused.error_code(), "totp_secret_refused");

    // Confirming asks for the password again: a stolen bearer token alone cannot turn it on.
    let code = kura_server::totp_code(&secret, app.now()).unwrap();
    let wrong_password = json!({"code": code, "password": "not-alices-password"});
    app.post("/api/v1/auth/totp/confirm", &token, wrong_password).await.expect(401);
    app.get("/api/v1/me", &token).await.expect(200);
    assert_eq!(app.get("/api/v1/me", &token).await.json()["totp_enabled"], false);
    app.post("/api/v1/auth/totp/confirm", &token, json!({"code": code, "password": alice.password})).await.expect(204);

    // At rest the secret is sealed: the raw column is neither the secret nor contains it.
    let pool = app.app().store().pool_for_tests();
    let stored: String = sqlx::query("SELECT totp_secret FROM accounts WHERE username = 'alice'")
        .fetch_one(pool)
        .await
        .unwrap()
        .get("totp_secret");
    assert!(!stored.contains(&secret), "the TOTP secret is stored in plaintext");
    assert!(stored.starts_with("sealed-v1:"), "{stored}");

    // A code opens one login: the same code again in the same step is refused.
    advance_secs(&app, 30);
    let code = kura_server::totp_code(&secret, app.now()).unwrap();
    login_from(&app, "198.51.100.30", "alice", &alice.password, Some(&code)).await.expect(200);
    let replay = login_from(&app, "198.51.100.31", "alice", &alice.password, Some(&code)).await.expect(401);
    assert_eq!(replay.error_code(), "invalid_credentials");
    advance_secs(&app, 30);
    let next = kura_server::totp_code(&secret, app.now()).unwrap();
    login_from(&app, "198.51.100.31", "alice", &alice.password, Some(&next)).await.expect(200);
}

#[tokio::test]
async fn plaintext_totp_secrets_from_before_sealing_still_work_and_get_sealed() {
    let mut app = TestApp::new().await;
    let bob = app.patient("bob").await;
    let legacy_secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    // As an older version stored it.
    sqlx::query("UPDATE accounts SET totp_secret = $1 WHERE username = 'bob'")
        .bind(legacy_secret)
        .execute(app.app().store().pool_for_tests())
        .await
        .unwrap();
    app.restart().await;
    let code = kura_server::totp_code(legacy_secret, app.now()).unwrap();
    login_from(&app, "198.51.100.40", "bob", &bob.password, Some(&code)).await.expect(200);
    let stored: String = sqlx::query("SELECT totp_secret FROM accounts WHERE username = 'bob'")
        .fetch_one(app.app().store().pool_for_tests())
        .await
        .unwrap()
        .get("totp_secret");
    assert!(stored.starts_with("sealed-v1:") && !stored.contains(legacy_secret), "{stored}");
    advance_secs(&app, 30);
    let code = kura_server::totp_code(legacy_secret, app.now()).unwrap();
    login_from(&app, "198.51.100.40", "bob", &bob.password, Some(&code)).await.expect(200);
}

#[tokio::test]
async fn usernames_are_unique_up_to_case_and_compatibility_forms() {
    let app = TestApp::new().await;
    let op = app.operator_token().await;
    let aoba = app.institution("Aoba").await;
    let sato = Person { username: "Dr.Sato".into(), password: "dr-sato-password".into(), id: String::new() };
    app.post(
        "/api/v1/accounts",
        &op,
        json!({"username": sato.username, "password": sato.password, "kind": "staff", "org": aoba.id}),
    )
    .await
    .expect(201);

    // An impostor's look-alike account is refused, whoever creates it.
    let register = |username: &str| json!({"username": username, "password": "impostor-password"});
    for spelling in ["dr.sato", "DR.SATO", "dr.Sato"] {
        app.call(Method::POST, "/api/v1/auth/register", None, Some(register(spelling))).await.expect(409);
        app.post(
            "/api/v1/accounts",
            &op,
            json!({"username": spelling, "password": "impostor-password", "kind": "staff", "org": aoba.id}),
        )
        .await
        .expect(409);
    }

    // The clinician logs in with any case, or in full-width letters from a Japanese keyboard.
    for spelling in ["Dr.Sato", "dr.sato", "DR.SATO", "ｄｒ．ｓａｔｏ"] {
        let ok = login_from(&app, "198.51.100.50", spelling, &sato.password, None).await.expect(200).json();
        assert_eq!(ok["account"]["username"], "Dr.Sato");
    }
}

#[tokio::test]
async fn a_sealed_copy_key_answers_a_missing_and_a_denied_copy_alike() {
    let s = scene().await;
    let sakura = s.app.institution("Sakura Clinic").await;
    let aoba = s.app.token(&s.aoba.staff).await;
    let transfer = format!("/api/v1/records/{}/transfer", s.bundle);
    s.app.post(&transfer, &aoba, json!({"agreement": {}})).await.expect(200);
    let alice = s.app.token(&s.alice).await;
    let expires = kura_core::time::Timestamp::from_millis(s.app.now().as_millis() + 30 * 86_400_000);
    s.app
        .post(
            "/api/v1/grants",
            &alice,
            json!({"grantee": {"org": sakura.id}, "records": [s.bundle],
                   "scope": ["other", "condition", "observation"], "actions": ["view", "copy"],
                   "expires_at": kura_testkit::rfc3339(expires)}),
        )
        .await
        .expect(201);
    let staff = s.app.token(&sakura.staff).await;
    let copy = s
        .app
        .raw(Method::POST, &format!("/api/v1/records/{}/sealed-copy", s.bundle), Some(&staff), FHIR, Vec::new(), &[])
        .await
        .expect(201);
    let package = kura_store::package::Package::parse(&copy.body).expect("a package");
    let copy_id = package.field("sealed-copy").unwrap().to_owned();

    // Mallory probes an existing copy id and a made-up one: the answers are identical.
    let mallory = s.app.patient("mallory").await;
    let mallory_token = s.app.token(&mallory).await;
    let existing = s.app.post(&format!("/api/v1/sealed-copies/{copy_id}/key"), &mallory_token, json!({})).await;
    let missing_id = "0190f0e0-0000-7000-8000-000000000000";
    let missing = s.app.post(&format!("/api/v1/sealed-copies/{missing_id}/key"), &mallory_token, json!({})).await;
    assert_eq!(existing.status, 404);
    assert_eq!(existing.status, missing.status);
    assert_eq!(existing.body, missing.body);

    // Both wrote the same kind of audit entry, neither naming the record or the grant that
    // Mallory could read back as its actor.
    let mine = s.app.get("/api/v1/audit", &mallory_token).await.expect(200).json();
    let probes: Vec<&Value> =
        mine["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "sealed_copy_key").collect();
    assert_eq!(probes.len(), 2, "{mine}");
    for probe in &probes {
        assert_eq!(probe["outcome"], "denied");
        assert!(probe["record"].is_null() && probe["grant"].is_null(), "{probe}");
    }
    assert_eq!(
        probes[0]["detail"].as_str().unwrap().replace(&copy_id, "ID"),
        probes[1]["detail"].as_str().unwrap().replace(missing_id, "ID")
    );
    // The owner sees the probe of her copy in her timeline.
    let hers = s.app.get("/api/v1/audit", &alice).await.expect(200).json();
    assert!(hers["entries"].as_array().unwrap().iter().any(|e| e["action"] == "sealed_copy_key"
        && e["outcome"] == "denied"
        && e["actor"] == format!("account:{}", mallory.id)));

    // The grantee still gets the key.
    s.app.post(&format!("/api/v1/sealed-copies/{copy_id}/key"), &staff, json!({})).await.expect(200);
}

#[tokio::test]
async fn a_second_server_on_the_same_sqlite_data_directory_is_refused() {
    let mut app = TestApp::new().await;
    let alice = app.patient("alice").await;
    let second = App::open(app.app().config().clone(), Clock::manual(app.now())).await;
    if app.is_postgres() {
        // Several servers may share a PostgreSQL database (there is no in-memory cache there).
        let second = second.expect("a second server on PostgreSQL");
        second.close().await;
    } else {
        let error = second.err().expect("a second server on the same SQLite data directory is refused");
        assert!(error.contains("another Kura server is running"), "{error}");
    }
    // Restarting (the first process ends, a new one starts) still works.
    app.restart().await;
    login_from(&app, "198.51.100.60", "alice", &alice.password, None).await.expect(200);
}

#[tokio::test]
async fn a_server_with_another_master_key_is_refused() {
    let app = TestApp::new().await;
    let alice = app.patient("alice").await;
    let elsewhere = tempfile::tempdir().unwrap();
    let mut config: Config = app.app().config().clone();
    // The same database, another data directory (so no lock is in the way), another key.
    config.data_dir = elsewhere.path().join("data");
    config.master_key_hex = Some("11".repeat(32));
    let error = App::open(config, Clock::manual(app.now())).await.err().expect("another master key is refused");
    assert!(error.contains("another master key"), "{error}");
    // The first server is unaffected.
    login_from(&app, "198.51.100.61", "alice", &alice.password, None).await.expect(200);
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

fn files_under(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        found.push(path.clone());
        if path.is_dir() {
            files_under(&path, found);
        }
    }
}

#[tokio::test]
async fn the_data_directory_and_its_files_are_private() {
    let s = scene().await;
    let data = s.app.data_dir();
    assert_eq!(mode_of(&data), 0o700);
    let mut expected = vec!["blobs", "master.key"];
    if !s.app.is_postgres() {
        expected.extend(["kura.db", "kura.db-wal", "kura.db-shm", "kura.lock"]);
    }
    for name in expected {
        assert!(data.join(name).exists(), "{name} exists");
    }
    let mut all = Vec::new();
    files_under(&data, &mut all);
    assert!(all.iter().any(|p| p.starts_with(data.join("blobs")) && p.is_file()), "a blob was written");
    for path in all {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode_of(&path), want, "{}", path.display());
    }
}

#[tokio::test]
async fn every_response_carries_the_hygiene_headers() {
    let s = scene().await;
    // Until a transfer, the record is the hospital's.
    let alice = s.app.token(&s.aoba.staff).await;
    let record = format!("/api/v1/records/{}", s.bundle);
    for (path, token, status) in [
        (record.as_str(), Some(alice.as_str()), 200),
        ("/api/v1/records/no-such-record", Some(alice.as_str()), 404),
        ("/api/v1/me", None, 401),
        ("/healthz", None, 200),
    ] {
        let (response, headers) = s.app.response_with_headers(Method::GET, path, token, FHIR, Vec::new()).await;
        assert_eq!(response.status, status, "{path}");
        assert_eq!(headers["cache-control"], "no-store", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
    }
}

#[tokio::test]
async fn every_client_error_answers_in_the_envelope() {
    let app = TestApp::new().await;
    let form = "application/x-www-form-urlencoded";
    // Method, path, content type, body, expected status and error code.
    type Case = (Method, &'static str, &'static str, Vec<u8>, u16, &'static str);
    let cases: Vec<Case> = vec![
        // A form body over the 1 MiB limit on the token endpoint (was plain text).
        (Method::POST, "/api/v1/auth/token", form, vec![b'a'; 2 * 1024 * 1024], 413, "body_too_large"),
        // A form missing its fields.
        (Method::POST, "/api/v1/auth/token", form, b"grant_type=x".to_vec(), 422, "invalid_input"),
        // Malformed JSON, and JSON of the wrong shape.
        (Method::POST, "/api/v1/auth/login", "application/json", b"{".to_vec(), 400, "bad_request"),
        (Method::POST, "/api/v1/auth/login", "application/json", b"[]".to_vec(), 422, "invalid_input"),
        (Method::POST, "/api/v1/auth/login", "text/plain", b"{}".to_vec(), 415, "unsupported_media_type"),
        // A method the route does not have, and a route that does not exist.
        (Method::DELETE, "/api/v1/auth/login", "application/json", Vec::new(), 405, "method_not_allowed"),
        (Method::GET, "/api/v1/no-such-route", "application/json", Vec::new(), 404, "not_found"),
    ];
    for (method, path, content_type, body, status, code) in cases {
        let (response, headers) = app.response_with_headers(method.clone(), path, None, content_type, body).await;
        assert_eq!(response.status, status, "{method} {path}: {}", response.text());
        assert!(response.content_type.starts_with("application/json"), "{method} {path}: {}", response.content_type);
        assert_eq!(response.error_code(), code, "{method} {path}: {}", response.text());
        assert!(!response.json()["error"]["message"].as_str().unwrap().is_empty());
        if status == 405 {
            assert!(headers.contains_key("allow"), "a 405 keeps its Allow header");
        }
    }
}

#[tokio::test]
async fn metrics_are_for_operators_and_their_labels_stay_bounded() {
    let app = TestApp::new().await;
    let alice = app.patient("alice").await;
    let alice_token = app.token(&alice).await;
    app.call(Method::GET, "/metrics", None, None).await.expect(401);
    app.get("/metrics", &alice_token).await.expect(403);

    // Made-up methods do not each become a label value.
    for method in ["BREW", "XYZZY1", "XYZZY2"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        app.call(method, "/healthz", None, None).await.expect(405);
    }
    let op = app.operator_token().await;
    let text = app.get("/metrics", &op).await.expect(200).text();
    assert!(text.contains("kura_http_requests_total{method=\"other\",route=\"/healthz\",status=\"405\"} 3"), "{text}");
    assert!(!text.contains("BREW") && !text.contains("XYZZY"), "{text}");
}

/// Accounts cannot be made in bulk from one address: ten an hour, then 429 with `Retry-After`
/// (no account made); another address still registers.
#[tokio::test]
async fn one_address_cannot_register_accounts_in_bulk() {
    let app = TestApp::new().await;
    let register = |ip: &'static str, n: usize| {
        let body = json!({"username": format!("bulk-{ip}-{n}"), "password": "a long enough password"});
        app.raw_from(ip, Method::POST, "/api/v1/auth/register", None, Some(body))
    };
    for n in 0..10 {
        register("198.51.100.7", n).await.expect(201);
    }
    let refused = register("198.51.100.7", 10).await;
    assert_eq!((refused.status, refused.error_code()), (429, "too_many_attempts".to_owned()), "{}", refused.text());
    let login = json!({"username": "bulk-198.51.100.7-10", "password": "a long enough password"});
    app.call(Method::POST, "/api/v1/auth/login", None, Some(login)).await.expect(401);
    register("203.0.113.9", 0).await.expect(201);
}
