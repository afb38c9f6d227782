//! `kura records upload`: finds the files to send (folders recursively), picks each file's
//! content type from its extension, uploads them one by one with a progress bar, and reports
//! per file. A failed file does not stop the others; the exit code says whether any failed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use kura_api_types as api;
use serde_json::{Value, json};

use crate::client::{Client, decode};
use crate::output;

/// The formats Kura ingests, as the CLI recognises them by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Fhir,
    Dicom,
    Pdf,
}

impl FileKind {
    /// `*.json` → FHIR, `*.dcm` → DICOM, `*.pdf` → PDF (any case); anything else is skipped.
    pub fn for_path(path: &Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "json" => Some(FileKind::Fhir),
            "dcm" => Some(FileKind::Dicom),
            "pdf" => Some(FileKind::Pdf),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            FileKind::Fhir => "application/fhir+json",
            FileKind::Dicom => "application/dicom",
            FileKind::Pdf => "application/pdf",
        }
    }

    /// The category query parameter goes with PDFs only; the server refuses it for others.
    pub fn category_for(self, category: Option<api::Category>) -> Option<api::Category> {
        match self {
            FileKind::Pdf => category,
            FileKind::Fhir | FileKind::Dicom => None,
        }
    }
}

/// The files to upload under `paths` in a stable order, and those skipped for their type.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileSelection {
    pub files: Vec<(PathBuf, FileKind)>,
    pub skipped: Vec<PathBuf>,
}

/// Walks `paths`: files are taken as given, folders recursively in name order. A path that does
/// not exist is an error before anything is sent.
pub fn select_files(paths: &[PathBuf]) -> Result<FileSelection> {
    let mut selection = FileSelection::default();
    for path in paths {
        let metadata = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if metadata.is_dir() {
            walk(path, &mut selection)?;
        } else {
            take(path.clone(), &mut selection);
        }
    }
    Ok(selection)
}

fn walk(dir: &Path, selection: &mut FileSelection) -> Result<()> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the folder {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot read the folder {}", dir.display()))?;
    entries.sort();
    for path in entries {
        // Follow links to files and folders alike; `metadata` resolves them.
        let Ok(metadata) = std::fs::metadata(&path) else {
            selection.skipped.push(path);
            continue;
        };
        if metadata.is_dir() {
            walk(&path, selection)?;
        } else {
            take(path, selection);
        }
    }
    Ok(())
}

fn take(path: PathBuf, selection: &mut FileSelection) {
    match FileKind::for_path(&path) {
        Some(kind) => selection.files.push((path, kind)),
        None => selection.skipped.push(path),
    }
}

/// Uploads every selected file for the local patient id `mrn`; exit code 1 if any failed.
pub async fn run(
    client: &Client,
    paths: &[PathBuf],
    mrn: &str,
    category: Option<api::Category>,
    json: bool,
) -> Result<ExitCode> {
    let selection = select_files(paths)?;
    for skipped in &selection.skipped {
        eprintln!("note: skipped {} (not .json, .dcm or .pdf)", skipped.display());
    }
    if selection.files.is_empty() {
        bail!("nothing to upload: no .json, .dcm or .pdf files under the paths given");
    }
    let progress = if json { ProgressBar::hidden() } else { ProgressBar::new(selection.files.len() as u64) };
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut results = Vec::new();
    let mut failed = 0usize;
    for (path, kind) in &selection.files {
        progress.set_message(path.display().to_string());
        let outcome = upload_one(client, path, *kind, mrn, category).await;
        match outcome {
            Ok(value) => {
                if json {
                    results.push(json!({"path": path, "ok": true, "record": value}));
                } else {
                    let line = match decode::<api::UploadResponse>(value) {
                        Ok(uploaded) => format!(
                            "{}  {}  {} labels, {} parts",
                            uploaded.id,
                            path.display(),
                            uploaded.labels.len(),
                            uploaded.parts.len()
                        ),
                        Err(e) => format!("?  {}  uploaded, but {e:#}", path.display()),
                    };
                    progress.suspend(|| println!("{line}"));
                }
            }
            Err(error) => {
                failed += 1;
                if json {
                    results.push(json!({"path": path, "ok": false, "error": format!("{error:#}")}));
                } else {
                    progress.suspend(|| eprintln!("failed: {}: {error:#}", path.display()));
                }
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    let uploaded = selection.files.len() - failed;
    if json {
        output::print_json(&Value::Array(results));
    } else {
        println!("{uploaded} uploaded, {failed} failed, {} skipped (patient {mrn})", selection.skipped.len());
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn upload_one(
    client: &Client,
    path: &Path,
    kind: FileKind,
    mrn: &str,
    category: Option<api::Category>,
) -> Result<Value> {
    let bytes = tokio::fs::read(path).await.with_context(|| format!("cannot read {}", path.display()))?;
    client.upload(mrn, kind.category_for(category), kind.content_type(), bytes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_kinds_follow_the_extension() {
        let check = |name: &str, expected: Option<FileKind>| {
            assert_eq!(FileKind::for_path(Path::new(name)), expected, "{name}");
        };
        check("patient-01.json", Some(FileKind::Fhir));
        check("dir/CT_small.dcm", Some(FileKind::Dicom));
        check("SCAN.DCM", Some(FileKind::Dicom));
        check("certificate.Pdf", Some(FileKind::Pdf));
        check("notes.txt", None);
        check("LICENSE", None);
        check(".json", None);
        check("archive.json.gz", None);
    }

    #[test]
    fn content_types_are_the_ones_the_server_reads() {
        assert_eq!(FileKind::Fhir.content_type(), "application/fhir+json");
        assert_eq!(FileKind::Dicom.content_type(), "application/dicom");
        assert_eq!(FileKind::Pdf.content_type(), "application/pdf");
    }

    #[test]
    fn only_pdfs_carry_a_category() {
        let certificate = Some(api::Category::Certificate);
        assert_eq!(FileKind::Pdf.category_for(certificate), certificate);
        assert_eq!(FileKind::Fhir.category_for(certificate), None);
        assert_eq!(FileKind::Dicom.category_for(certificate), None);
    }

    #[test]
    fn folders_are_walked_recursively_in_order_and_other_files_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/nested")).unwrap();
        for name in ["b/nested/scan.dcm", "b/a.json", "readme.txt", "z.pdf"] {
            std::fs::write(root.join(name), b"x").unwrap();
        }
        let single = root.join("b/a.json");
        let selection = select_files(&[root.to_path_buf(), single.clone()]).unwrap();
        assert_eq!(
            selection.files,
            vec![
                (root.join("b/a.json"), FileKind::Fhir),
                (root.join("b/nested/scan.dcm"), FileKind::Dicom),
                (root.join("z.pdf"), FileKind::Pdf),
                (single, FileKind::Fhir),
            ]
        );
        assert_eq!(selection.skipped, vec![root.join("readme.txt")]);
        assert!(select_files(&[root.join("missing")]).is_err());
    }
}
