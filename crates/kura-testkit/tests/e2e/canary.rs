//! Content at rest is encrypted: a canary in an upload appears nowhere in plaintext, neither
//! under the data directory nor in the database; deleting the record destroys its key.

use kura_testkit::fixture;
use sqlx::Row;

use super::{FHIR, scene};

const CANARY: &str = "CANARY-7f3e9b1c-Kura";

fn files_containing(dir: &std::path::Path, needle: &[u8], found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_containing(&path, needle, found);
        } else if std::fs::read(&path).unwrap().windows(needle.len()).any(|w| w == needle) {
            found.push(path.display().to_string());
        }
    }
}

async fn database_contains(app: &kura_testkit::TestApp, needle: &str) -> Vec<String> {
    let pool = app.app().store().pool_for_tests();
    let mut hits = Vec::new();
    for table in ["records", "record_parts", "record_labels", "custody_ledger", "audit_log", "grants", "accounts"] {
        let sql = if app.is_postgres() {
            format!("SELECT CAST(t AS TEXT) AS row_text FROM {table} t")
        } else {
            // SQLite has no row-to-text; the data files are scanned byte by byte instead.
            continue;
        };
        for row in sqlx::query(&sql).fetch_all(pool).await.unwrap() {
            let text: String = row.get("row_text");
            if text.contains(needle) {
                hits.push(table.to_owned());
            }
        }
    }
    hits
}

#[tokio::test]
async fn canary_never_at_rest_in_plaintext() {
    let s = scene().await;
    let bundle = String::from_utf8(fixture("synthea-r4/patient-01.json")).unwrap().replace("Hodkiewicz", CANARY);
    assert!(bundle.contains(CANARY));
    let id = s.app.upload_ok(&s.aoba, "MRN-1", FHIR, bundle.into_bytes()).await;
    // The owner reads it back intact, so the canary really went in.
    let staff = s.app.token(&s.aoba.staff).await;
    let view = s.app.get(&format!("/api/v1/records/{id}"), &staff).await.expect(200);
    assert!(view.text().contains(CANARY));

    let mut found = Vec::new();
    files_containing(&s.app.data_dir(), CANARY.as_bytes(), &mut found);
    assert!(found.is_empty(), "canary in plaintext in {found:?}");
    assert!(database_contains(&s.app, CANARY).await.is_empty());

    let blobs_before = count_files(&s.app.data_dir().join("blobs"));
    s.app.delete(&format!("/api/v1/records/{id}"), &staff).await.expect(204);
    assert_eq!(count_files(&s.app.data_dir().join("blobs")), blobs_before - 1);
    let pool = s.app.app().store().pool_for_tests();
    let row = sqlx::query("SELECT wrapped_key, blob_key, state FROM records WHERE id = $1")
        .bind(&id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(row.get::<Option<Vec<u8>>, _>("wrapped_key").is_none(), "the data key must be destroyed");
    assert!(row.get::<Option<String>, _>("blob_key").is_none());
    assert_eq!(row.get::<String, _>("state"), "deleted");
    s.app.get(&format!("/api/v1/records/{id}"), &staff).await.expect(404);
}

fn count_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .map(|p| if p.is_dir() { count_files(&p) } else { usize::from(p.extension().is_none()) })
                .sum()
        })
        .unwrap_or(0)
}
