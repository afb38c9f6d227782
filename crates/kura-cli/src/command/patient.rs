//! Removable media: `kura patient export --to DIR [--move]`, `kura patient import FILE` and the
//! offline `kura patient archive verify FILE`.
//!
//! An export is written to a new file and read back and verified (decrypted, signature and
//! every hash checked) before `--move` asks the server to end the records there: the records
//! leave the server only once a complete archive is on the patient's disk. The passphrase comes
//! from `--passphrase-file`, `KURA_ARCHIVE_PASSPHRASE` or a prompt, and is never written
//! anywhere or printed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use kura_api_types as api;
use kura_server::archive;

use super::{ActAs, Connection, connect, show};
use crate::output::{Table, print_json};
use crate::secrets::{Secret, prompt_password};

#[derive(Debug, Args)]
#[command(after_help = "The passphrase is read from --passphrase-file (its first line), else from \
    KURA_ARCHIVE_PASSPHRASE, else asked for on the terminal. It is never stored: without it the \
    archive cannot be opened. docs/portability-archive.md describes the archive format.")]
pub struct PatientArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    act_as: ActAs,
    #[command(subcommand)]
    command: PatientCommand,
}

#[derive(Debug, Clone, Args)]
struct PassphraseArgs {
    /// Read the archive's passphrase from the first line of this file.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum PatientCommand {
    /// Export your records (default: all active ones) to an encrypted, signed archive file in DIR.
    Export {
        /// The folder to write the archive to (created if missing); an existing file is never overwritten.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// After the file is written and verified, remove the records from the server: each keeps
        /// the locator "held by the patient offline since <export time>".
        #[arg(long = "move")]
        move_records: bool,
        /// Only these records (repeat, or separate with commas).
        #[arg(long = "record", value_name = "ID", value_delimiter = ',')]
        records: Vec<String>,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Import an archive into this server: its records become yours, content unchanged.
    Import {
        file: PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Archive files, offline.
    #[command(subcommand)]
    Archive(ArchiveCommand),
}

#[derive(Debug, Subcommand)]
enum ArchiveCommand {
    /// Decrypt an archive, check its signature and every hash, and list its records (offline).
    Verify {
        file: PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
}

/// The environment variable scripts may set instead of a prompt or a file.
pub const PASSPHRASE_ENV: &str = "KURA_ARCHIVE_PASSPHRASE";

/// The passphrase from the file, else the environment, else asked for (twice when `confirm`).
fn passphrase(args: &PassphraseArgs, confirm: bool) -> Result<Secret> {
    if let Some(path) = &args.passphrase_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the passphrase file {}", path.display()))?;
        let first = text.lines().next().unwrap_or("");
        if first.is_empty() {
            bail!("the passphrase file {} is empty", path.display());
        }
        return Ok(Secret::new(first));
    }
    if let Ok(value) = std::env::var(PASSPHRASE_ENV)
        && !value.is_empty()
    {
        return Ok(Secret::new(value));
    }
    let first = prompt_password("Archive passphrase: ")?;
    if confirm {
        let again = prompt_password("Repeat the passphrase: ")?;
        if again != first {
            bail!("the two passphrases differ; nothing was exported");
        }
    }
    Ok(first)
}

/// Opens and verifies an archive file: decrypted, manifest signature and every hash checked.
fn verify_file(path: &Path, passphrase: &Secret) -> Result<archive::Verified> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    archive::open(&bytes, passphrase.expose())
        .and_then(archive::verify)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Writes `bytes` to a new file in `dir` named `name` (or `name` with `-1`, `-2`, ... before the
/// extension if taken), flushed to disk; never overwrites.
fn write_new_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the folder {}", dir.display()))?;
    let (stem, extension) = name.rsplit_once('.').unwrap_or((name, "kura"));
    for n in 0..1000 {
        let candidate = if n == 0 { dir.join(name) } else { dir.join(format!("{stem}-{n}.{extension}")) };
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&candidate) {
            Ok(mut file) => {
                file.write_all(bytes).with_context(|| format!("cannot write {}", candidate.display()))?;
                file.sync_all().with_context(|| format!("cannot flush {} to disk", candidate.display()))?;
                return Ok(candidate);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", candidate.display())),
        }
    }
    bail!("{} holds too many archives named like {name}", dir.display())
}

/// The file name the server proposed (`kura-export-<date>.kura`), if it is a plain name.
fn proposed_name(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get(reqwest::header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("filename=\"").nth(1))
        .and_then(|v| v.split('"').next())
        .filter(|n| archive::is_entry_name(n) && !n.contains('/'))
        .unwrap_or("kura-export.kura")
        .to_owned()
}

pub async fn run(args: PatientArgs) -> Result<ExitCode> {
    match args.command {
        PatientCommand::Export { to, move_records, records, passphrase: source } => {
            let client = connect(&args.conn, Some(&args.act_as))?;
            let passphrase = passphrase(&source, true)?;
            let request = api::ExportRequest {
                passphrase: passphrase.expose().to_owned(),
                records: (!records.is_empty()).then_some(records),
            };
            let (bytes, headers) = client.post_for_bytes(&["api", "v1", "export"], &request).await?;
            let announced = headers.get("kura-manifest-sha256").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let path = write_new_file(&to, &proposed_name(&headers), &bytes)?;
            // Read back from disk: what --move relies on is the file as written, not the answer.
            let verified = verify_file(&path, &passphrase)?;
            if verified.manifest_sha256 != announced {
                bail!(
                    "{} does not hold the archive the server announced (manifest {announced}); nothing was moved",
                    path.display()
                );
            }
            let count = verified.manifest.records.len();
            let moved = if move_records {
                let body = api::ExportMoveRequest { manifest_sha256: verified.manifest_sha256.clone() };
                Some(client.post(&["api", "v1", "export", "move"], &body).await?)
            } else {
                None
            };
            if args.conn.json {
                print_json(&serde_json::json!({
                    "path": path.display().to_string(),
                    "records": count,
                    "manifest_sha256": verified.manifest_sha256,
                    "moved": moved,
                }));
                return Ok(ExitCode::SUCCESS);
            }
            println!("wrote {} ({count} records)", path.display());
            println!("manifest sha256 {}", verified.manifest_sha256);
            if let Some(moved) = moved {
                let moved: api::ExportMoveResponse = crate::client::decode(moved)?;
                println!(
                    "moved {} records off the server; each now says: {}",
                    moved.moved.len(),
                    moved.locator.destination
                );
            } else {
                println!(
                    "the records stay on the server; keep the passphrase: without it the archive cannot be opened"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        PatientCommand::Import { file, passphrase: source } => {
            let client = connect(&args.conn, Some(&args.act_as))?;
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let passphrase = passphrase(&source, false)?;
            let answer = client
                .post_with_secret_header(
                    &["api", "v1", "import"],
                    "application/octet-stream",
                    bytes,
                    ("kura-passphrase", &passphrase),
                )
                .await?;
            show(args.conn.json, answer, |r: api::ImportResponse| {
                println!(
                    "archive of {} ({}) exported {}{}",
                    r.origin_server,
                    r.origin_key,
                    r.exported_at,
                    if r.signed_by_this_server { ", signed by this server" } else { "" }
                );
                let mut table = Table::new(["ORIGINAL", "ID HERE", "FORMAT", "RESULT"]);
                for (items, result) in [(&r.imported, "imported"), (&r.skipped, "skipped: imported before")] {
                    for item in items {
                        table.row(vec![item.original_id.clone(), item.id.clone(), item.format.clone(), result.into()]);
                    }
                }
                table.print_or("the archive holds no records");
                println!("{} imported, {} skipped", r.imported.len(), r.skipped.len());
            })
        }
        PatientCommand::Archive(ArchiveCommand::Verify { file, passphrase: source }) => {
            let passphrase = passphrase(&source, false)?;
            let verified = verify_file(&file, &passphrase)?;
            let manifest = &verified.manifest;
            if args.conn.json {
                print_json(&serde_json::json!({
                    "manifest_sha256": verified.manifest_sha256,
                    "manifest": manifest,
                }));
                return Ok(ExitCode::SUCCESS);
            }
            println!("{}: signature and every hash verify", file.display());
            println!(
                "made by {} ({}) at {} for {}",
                manifest.server.name, manifest.server.public_key, manifest.exported_at, manifest.owner
            );
            println!("manifest sha256 {}", verified.manifest_sha256);
            let mut table = Table::new(["RECORD", "FORMAT", "INSTITUTION", "ENTRY", "SIZE", "SHA-256"]);
            for r in &manifest.records {
                table.row(vec![
                    r.id.clone(),
                    r.format.clone(),
                    r.institution.name.clone(),
                    r.entry.clone(),
                    r.size.to_string(),
                    r.content_sha256.clone(),
                ]);
            }
            table.print_or("the archive holds no records");
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    #[test]
    fn new_files_never_overwrite_an_archive() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_new_file(dir.path(), "kura-export-2026-01-31.kura", b"one").unwrap();
        let second = write_new_file(dir.path(), "kura-export-2026-01-31.kura", b"two").unwrap();
        assert_eq!(first.file_name().unwrap(), "kura-export-2026-01-31.kura");
        assert_eq!(second.file_name().unwrap(), "kura-export-2026-01-31-1.kura");
        assert_eq!(std::fs::read(first).unwrap(), b"one");
    }

    #[test]
    fn offline_verify_refuses_a_costly_key_derivation_before_deriving() {
        // The header asks for 256 MiB and sixteen passes, more than Kura writes: refused at once.
        let dir = tempfile::tempdir().unwrap();
        let header = r#"{"kdf":"argon2id","m_cost_kib":262144,"t_cost":16,"p_cost":1,"salt":"AAAAAAAAAAAAAAAAAAAAAA==","cipher":"xchacha20poly1305","nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#;
        let path = dir.path().join("crafted.kura");
        std::fs::write(&path, [archive::MAGIC, header.as_bytes(), b"\n", &[0u8; 32]].concat()).unwrap();
        let started = std::time::Instant::now();
        let refused = match verify_file(&path, &Secret::new("correct horse battery")) {
            Ok(_) => panic!("a crafted archive verified"),
            Err(e) => e.to_string(),
        };
        assert!(refused.contains("costlier than Kura writes"), "{refused}");
        assert!(started.elapsed() < std::time::Duration::from_secs(3), "{:?}", started.elapsed());
    }

    #[test]
    fn the_proposed_name_must_be_a_plain_file_name() {
        let check = |disposition: &str, expected: &str| {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::CONTENT_DISPOSITION, disposition.parse().unwrap());
            assert_eq!(proposed_name(&headers), expected);
        };
        check("attachment; filename=\"kura-export-2026-01-31.kura\"", "kura-export-2026-01-31.kura");
        check("attachment; filename=\"../../etc/passwd\"", "kura-export.kura");
        check("inline", "kura-export.kura");
    }

    #[test]
    fn archive_commands_parse() {
        let cli = Cli::try_parse_from([
            "kura",
            "patient",
            "export",
            "--to",
            "/media/usb",
            "--move",
            "--record",
            "r1,r2",
            "--passphrase-file",
            "p",
        ])
        .unwrap();
        let Command::Patient(args) = cli.command else { panic!("not patient") };
        let PatientCommand::Export { to, move_records, records, passphrase } = args.command else {
            panic!("not export")
        };
        assert_eq!(to, PathBuf::from("/media/usb"));
        assert!(move_records);
        assert_eq!(records, ["r1", "r2"]);
        assert_eq!(passphrase.passphrase_file, Some(PathBuf::from("p")));
        let cli = Cli::try_parse_from(["kura", "patient", "import", "a.kura", "--act-as", "p1"]).unwrap();
        let Command::Patient(args) = cli.command else { panic!("not patient") };
        assert!(matches!(args.command, PatientCommand::Import { ref file, .. } if file == &PathBuf::from("a.kura")));
        assert_eq!(args.act_as.act_as.as_deref(), Some("p1"));
        let cli = Cli::try_parse_from(["kura", "patient", "archive", "verify", "a.kura"]).unwrap();
        let Command::Patient(args) = cli.command else { panic!("not patient") };
        assert!(matches!(args.command, PatientCommand::Archive(ArchiveCommand::Verify { .. })));
    }
}
