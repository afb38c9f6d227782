//! The server's layering, checked on its source: handlers (`src/routes/`) call services
//! (`src/service/`), never the other way round, and the ingest sequence exists once.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("the source folder reads") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `.rs` file under `src/`, as (path relative to `src/` with `/`, text).
fn source_files() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(&src).expect("under src").to_string_lossy().replace('\\', "/");
            let text = std::fs::read_to_string(&path).expect("a source file reads");
            (relative, text)
        })
        .collect()
}

/// The lines of `text` that contain `needle`, as `file:line: text`.
fn lines_with(file: &str, text: &str, needle: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .map(|(n, line)| format!("{file}:{}: {}", n + 1, line.trim()))
        .collect()
}

/// Nothing outside `routes/` reaches into it. The wiring (`app.rs` assembles the router,
/// `openapi.rs` reads the document off it) calls its one entry point, `crate::routes::router`.
#[test]
fn nothing_outside_routes_imports_from_routes() {
    let mut found = Vec::new();
    for (file, text) in source_files() {
        if file.starts_with("routes/") {
            continue;
        }
        let allowed_entry = matches!(file.as_str(), "app.rs" | "openapi.rs");
        for needle in ["crate::routes", "routes::"] {
            for hit in lines_with(&file, &text, needle) {
                let only_the_router = hit.matches("routes::").count() == hit.matches("crate::routes::router(").count();
                if !(allowed_entry && only_the_router) {
                    found.push(hit);
                }
            }
        }
    }
    found.dedup();
    assert!(
        found.is_empty(),
        "modules outside routes/ use it; move what they need into service/:\n{}",
        found.join("\n")
    );
}

/// The ingest sequence (parse, seal, build the record, insert, discard the blob on failure)
/// is written once: only `service/ingest.rs` builds a `NewRecord`.
#[test]
fn only_the_ingest_service_builds_new_records() {
    let found: Vec<String> = source_files()
        .into_iter()
        .filter(|(file, _)| file != "service/ingest.rs")
        .flat_map(|(file, text)| lines_with(&file, &text, "NewRecord {"))
        .collect();
    assert!(found.is_empty(), "a NewRecord is built outside service/ingest.rs:\n{}", found.join("\n"));
}

/// Services answer in their own terms; only `service/error.rs` knows how that becomes HTTP.
#[test]
fn services_know_no_http_errors() {
    let found: Vec<String> = source_files()
        .into_iter()
        .filter(|(file, _)| file.starts_with("service/") && file != "service/error.rs")
        .flat_map(|(file, text)| {
            let mut hits = lines_with(&file, &text, "ApiError");
            hits.extend(lines_with(&file, &text, "axum::"));
            hits
        })
        .collect();
    assert!(found.is_empty(), "a service uses HTTP types:\n{}", found.join("\n"));
}
