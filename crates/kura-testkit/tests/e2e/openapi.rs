//! The OpenAPI document describes every route; this list is its snapshot, so that an added or
//! removed route shows in review.

use axum::http::Method;
use kura_testkit::TestApp;

const ROUTES: &[(&str, &str)] = &[
    ("/api/v1/audit", "get"),
    ("/api/v1/audit/verify", "get"),
    ("/api/v1/auth/login", "post"),
    ("/api/v1/auth/register", "post"),
    ("/api/v1/auth/token", "post"),
    ("/api/v1/auth/totp/confirm", "post"),
    ("/api/v1/auth/totp/enroll", "post"),
    ("/api/v1/accounts", "post"),
    ("/api/v1/analyses", "get"),
    ("/api/v1/analyses", "post"),
    ("/api/v1/analyses/{id}", "get"),
    ("/api/v1/statistics/conditions", "get"),
    ("/api/v1/statistics/me", "get"),
    ("/api/v1/statistics/participation", "get"),
    ("/api/v1/clients", "post"),
    ("/api/v1/delegations", "get"),
    ("/api/v1/delegations", "post"),
    ("/api/v1/delegations/{id}", "delete"),
    ("/api/v1/delegations/{id}/accept", "post"),
    ("/api/v1/grants", "get"),
    ("/api/v1/grants", "post"),
    ("/api/v1/grants/{id}", "delete"),
    ("/api/v1/links", "get"),
    ("/api/v1/links", "post"),
    ("/api/v1/links/redeem", "post"),
    ("/api/v1/me", "get"),
    ("/api/v1/openapi.json", "get"),
    ("/api/v1/orgs", "get"),
    ("/api/v1/orgs", "post"),
    ("/api/v1/peer-tokens", "post"),
    ("/api/v1/peer/moves", "post"),
    ("/api/v1/peer/moves/{move_id}", "get"),
    ("/api/v1/peer/moves/{move_id}/abort", "post"),
    ("/api/v1/peer/moves/{move_id}/confirm", "post"),
    ("/api/v1/peer/outgoing/{move_id}", "get"),
    ("/api/v1/peers", "get"),
    ("/api/v1/peers", "post"),
    ("/api/v1/peers/{name}", "delete"),
    ("/api/v1/records", "get"),
    ("/api/v1/records", "post"),
    ("/api/v1/records/{id}", "delete"),
    ("/api/v1/records/{id}", "get"),
    ("/api/v1/records/{id}/copy", "post"),
    ("/api/v1/records/{id}/ledger", "get"),
    ("/api/v1/records/{id}/move", "post"),
    ("/api/v1/records/{id}/sealed-copy", "post"),
    ("/api/v1/sealed-copies", "get"),
    ("/api/v1/sealed-copies/{id}/key", "post"),
    ("/api/v1/records/{id}/transfer", "post"),
    ("/api/v1/export", "post"),
    ("/api/v1/export/move", "post"),
    ("/api/v1/import", "post"),
    ("/api/v1/events", "get"),
    ("/api/v1/inbox", "get"),
    ("/api/v1/inbox/{id}/read", "post"),
    ("/api/v1/preferences", "get"),
    ("/api/v1/preferences", "put"),
    ("/api/v1/providers", "get"),
    ("/api/v1/providers", "post"),
    ("/api/v1/providers/{id}", "delete"),
    ("/api/v1/providers/{id}/sync", "post"),
    ("/api/v1/research/requests", "get"),
    ("/api/v1/research/requests", "post"),
    ("/api/v1/research/requests/{id}/answer", "post"),
    ("/api/v1/research/requests/{id}/reward/confirm", "post"),
    ("/api/v1/research/requests/{id}/reward/paid", "post"),
    ("/api/v1/research/requests/{id}/withdraw", "post"),
    ("/api/v1/research/search", "post"),
    ("/api/v1/research/studies", "get"),
    ("/api/v1/research/studies", "post"),
    ("/api/v1/research/studies/{id}/close", "post"),
    ("/api/v1/research/studies/{id}/review", "post"),
    ("/api/v1/research/organisations/{id}/disclosure", "get"),
    ("/api/v1/research/organisations/{id}/resume", "post"),
    ("/api/v1/server", "get"),
    ("/api/v1/webhooks", "post"),
    ("/api/v1/webhooks/{id}/deliveries", "get"),
    ("/healthz", "get"),
    ("/metrics", "get"),
];

#[tokio::test]
async fn openapi_lists_every_route() {
    let app = TestApp::new().await;
    let doc = app.call(Method::GET, "/api/v1/openapi.json", None, None).await.expect(200).json();
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((path.clone(), method.clone()));
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = ROUTES.iter().map(|(p, m)| (p.to_string(), m.to_string())).collect();
    expected.sort();
    assert_eq!(documented, expected);
    assert!(doc["components"]["schemas"]["ErrorEnvelope"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn health_and_metrics() {
    let app = TestApp::new().await;
    let health = app.call(Method::GET, "/healthz", None, None).await.expect(200).json();
    assert_eq!(health["status"], "ok");
    app.call(Method::GET, "/api/v1/no-such", None, None).await.expect(404);
    // Metrics are for operators (docs/security.md).
    let op = app.operator_token().await;
    let metrics = app.get("/metrics", &op).await.expect(200);
    assert!(metrics.content_type.starts_with("text/plain"));
    let text = metrics.text();
    assert!(text.contains("kura_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"), "{text}");
    // A second request on the same route adds to its count; an unknown path counts as unmatched.
    app.call(Method::GET, "/healthz", None, None).await.expect(200);
    let text = app.get("/metrics", &op).await.expect(200).text();
    assert!(text.contains("kura_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 2"), "{text}");
    assert!(text.contains("kura_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1"), "{text}");
    assert!(text.contains("kura_policy_decisions_total{outcome=\"denied\"}"));
}

/// The whole document is the API's contract: any change to it (a field, a status, a media type)
/// shows in review as a change to `openapi.snapshot.json`. After a deliberate change, run the test
/// with `KURA_UPDATE_SNAPSHOTS=1` and commit the file.
#[tokio::test]
async fn openapi_document_matches_its_snapshot() {
    let app = TestApp::new().await;
    let doc = app.call(Method::GET, "/api/v1/openapi.json", None, None).await.expect(200).json();
    let served = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/openapi.snapshot.json");
    if std::env::var_os("KURA_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(path, &served).unwrap();
    }
    let kept = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        kept == served,
        "the OpenAPI document changed; review the difference and rerun with KURA_UPDATE_SNAPSHOTS=1 to accept it\n{}",
        first_difference(&kept, &served)
    );
}

fn first_difference(kept: &str, served: &str) -> String {
    let line = kept
        .lines()
        .zip(served.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(kept.lines().count().min(served.lines().count()));
    format!(
        "first difference at line {}:\n  snapshot: {}\n  served:   {}",
        line + 1,
        kept.lines().nth(line).unwrap_or("<end>"),
        served.lines().nth(line).unwrap_or("<end>")
    )
}
