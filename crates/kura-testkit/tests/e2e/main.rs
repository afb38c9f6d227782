//! End-to-end tests through the HTTP API, on SQLite by default and on PostgreSQL when
//! `KURA_TEST_DATABASE_URL` is set (CI runs both).

mod agents_and_audit;
mod archive;
mod auth;
mod authz_matrix;
mod bad_input;
mod canary;
mod control_attacks;
mod disclosure_attacks;
mod fig6_transfer;
mod fig7_grants;
mod fig8_research;
mod fig9_analysis;
mod login_attacks;
mod machine_clients;
mod network_attacks;
mod openapi;
mod peers;
mod providers;
mod uploads;
mod webhooks;

use kura_testkit::{Organisation, Person, TestApp, fixture};
use serde_json::Value;

pub const FHIR: &str = "application/fhir+json";

/// Aoba hospital with patient Alice linked to MRN-1 and her Synthea bundle uploaded.
pub struct Scene {
    pub app: TestApp,
    pub aoba: Organisation,
    pub alice: Person,
    pub bundle: String,
}

pub async fn scene() -> Scene {
    let app = TestApp::new().await;
    let aoba = app.institution("Aoba General Hospital").await;
    let alice = app.patient("alice").await;
    app.link(&aoba, &alice, "MRN-1").await;
    let bundle = app.upload_ok(&aoba, "MRN-1", FHIR, fixture("synthea-r4/patient-03.json")).await;
    Scene { app, aoba, alice, bundle }
}

/// Resource types in a FHIR Bundle or a single resource.
pub fn resource_types(content: &Value) -> Vec<String> {
    match content["resourceType"].as_str() {
        Some("Bundle") => content["entry"]
            .as_array()
            .map(|entries| {
                entries.iter().filter_map(|e| e["resource"]["resourceType"].as_str().map(str::to_owned)).collect()
            })
            .unwrap_or_default(),
        Some(other) => vec![other.to_owned()],
        None => Vec::new(),
    }
}

pub fn categories(view: &Value) -> Vec<String> {
    let mut cats: Vec<String> = view["parts"]
        .as_array()
        .map(|parts| parts.iter().map(|p| p["category"].as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default();
    cats.sort();
    cats.dedup();
    cats
}

pub fn audit_actions(list: &Value) -> Vec<(String, String)> {
    list["entries"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    (
                        e["action"].as_str().unwrap_or_default().to_owned(),
                        e["outcome"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
