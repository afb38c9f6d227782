//! `kura deid`: the anonymization unit offline. De-identifies a FHIR JSON or DICOM file, or
//! reports the identifiers left in one. Nothing here talks to a server.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use kura_core::policy::Anonymization;
use kura_core::record::RecordFormat;
use kura_formats::Deidentified;
use sha2::{Digest, Sha256};

#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  kura deid patient.json --level anonymized --context study-42 > out.json\n  \
        kura deid scan.dcm --level pseudonymized --context grant-7 --out scan-pseudo.dcm\n  \
        kura deid check out.json\n\nThe context name keys every pseudonym and date shift: the same \
        file in the same context gives the same output, other contexts give unlinkable ones. Treat \
        it like a password; without --context a random one is used and nothing links across runs."
)]
pub struct DeidArgs {
    #[command(subcommand)]
    command: Option<DeidCommand>,
    /// The FHIR JSON (.json) or DICOM (.dcm) file to de-identify.
    file: Option<PathBuf>,
    /// How far: pseudonymized (direct identifiers replaced) or anonymized (allow-list, Safe Harbor).
    #[arg(long, value_enum, default_value = "anonymized")]
    level: Level,
    /// The context whose key makes pseudonyms and date shifts (a grant, a study).
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
    /// Write the result here instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum DeidCommand {
    /// Report the identifiers left in a FHIR or DICOM file (by place, never by value); exit code 1
    /// when any is found.
    Check { file: PathBuf },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Level {
    Pseudonymized,
    Anonymized,
}

/// The format of a file, by its name or its first bytes.
fn format_of(path: &Path, bytes: &[u8]) -> Result<RecordFormat> {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let format = match extension.as_str() {
        "json" => Some(RecordFormat::Fhir),
        "dcm" | "dicom" => Some(RecordFormat::Dicom),
        "pdf" => Some(RecordFormat::Pdf),
        _ if bytes.get(128..132) == Some(b"DICM".as_slice()) => Some(RecordFormat::Dicom),
        _ if bytes.starts_with(b"%PDF-") => Some(RecordFormat::Pdf),
        _ if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') => Some(RecordFormat::Fhir),
        _ => None,
    };
    format.with_context(|| format!("{}: not FHIR JSON, DICOM or PDF", path.display()))
}

/// The pseudonym key of a context name.
fn context_key(context: &str) -> [u8; 32] {
    Sha256::digest(format!("kura deid context\0{context}").as_bytes()).into()
}

pub fn run(args: DeidArgs) -> Result<ExitCode> {
    if let Some(DeidCommand::Check { file }) = args.command {
        return check(&file);
    }
    let Some(file) = args.file else {
        bail!("give a file to de-identify, or `kura deid check FILE` (see kura deid --help)");
    };
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let format = format_of(&file, &bytes)?;
    let key = match &args.context {
        Some(context) => context_key(context),
        None => {
            let mut random = [0u8; 32];
            getrandom::fill(&mut random).map_err(|_| anyhow::anyhow!("no random numbers for a context key"))?;
            eprintln!("note: no --context given; pseudonyms will not match any other run");
            random
        }
    };
    let level = match args.level {
        Level::Pseudonymized => Anonymization::Pseudonymized,
        Level::Anonymized => Anonymization::Anonymized,
    };
    let content =
        match kura_formats::deidentify(format, &bytes, level, &key).with_context(|| format!("{}", file.display()))? {
            Deidentified::Content(content) => content,
            Deidentified::Withheld { reason } => bail!("{}: withheld: {reason}", file.display()),
        };
    match &args.out {
        Some(out) => std::fs::write(out, &content).with_context(|| format!("cannot write {}", out.display()))?,
        None => std::io::stdout().write_all(&content).context("cannot write to standard output")?,
    }
    Ok(ExitCode::SUCCESS)
}

fn check(file: &Path) -> Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let format = format_of(file, &bytes)?;
    let findings = kura_formats::residual_identifiers(format, &bytes).with_context(|| format!("{}", file.display()))?;
    if findings.is_empty() {
        println!("{}: no residual identifiers found", file.display());
        return Ok(ExitCode::SUCCESS);
    }
    for (place, what) in &findings {
        println!("{place}: {what}");
    }
    println!("{}: {} residual identifier(s)", file.display(), findings.len());
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_name_or_content() {
        let check = |name: &str, bytes: &[u8], expected: Option<RecordFormat>| {
            assert_eq!(format_of(Path::new(name), bytes).ok(), expected, "{name}");
        };
        check("a.json", b"", Some(RecordFormat::Fhir));
        check("scan.DCM", b"", Some(RecordFormat::Dicom));
        check("noext", b"  {\"resourceType\": \"Patient\"}", Some(RecordFormat::Fhir));
        check("doc", b"%PDF-1.4", Some(RecordFormat::Pdf));
        let mut dicom = vec![0u8; 128];
        dicom.extend_from_slice(b"DICM");
        check("image", &dicom, Some(RecordFormat::Dicom));
        check("notes.txt", b"hello", None);
    }

    #[test]
    fn contexts_key_pseudonyms_apart() {
        assert_eq!(context_key("study-42"), context_key("study-42"));
        assert_ne!(context_key("study-42"), context_key("study-43"));
    }
}
