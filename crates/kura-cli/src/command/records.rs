//! `kura records`: upload (`records/upload.rs`), list, show, the custody ledger, transfer, copy,
//! sealed copies (`records/sealed.rs`), move (to a locator, or to a peer server) and delete.

mod sealed;
mod upload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::{Args, Subcommand};
use kura_api_types as api;

use super::org::OrgNames;
use super::{ActAs, Connection, connect, done, show};
use crate::client::decode;
use crate::output::{self, Table, comma_list, wire_name};
use crate::{secrets, values};

#[derive(Debug, Args)]
pub struct RecordsArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    act_as: ActAs,
    #[command(subcommand)]
    command: RecordsCommand,
}

#[derive(Debug, Subcommand)]
enum RecordsCommand {
    /// Upload files or folders for a local patient id (institution staff).
    #[command(after_help = "Folders are read recursively: *.json is sent as FHIR, *.dcm as DICOM, \
        *.pdf as PDF; other files are skipped with a note. A failed file does not stop the rest; \
        the exit code is 1 if any failed.")]
    Upload {
        /// Files or folders.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// The institution's local patient id (MRN) the content is about.
        #[arg(long, value_name = "MRN")]
        patient: String,
        /// For PDFs: `certificate` or `document` (the server's default).
        #[arg(long, value_parser = ["certificate", "document"])]
        category: Option<String>,
    },
    /// List the records you may see.
    List {
        /// Only records carrying this label (repeatable; all must match), e.g. icd10:E11.
        #[arg(long = "label", value_name = "LABEL")]
        labels: Vec<String>,
    },
    /// Show a record's metadata, and save its content with --out.
    Show {
        id: String,
        /// Write the content here, exactly the bytes the server sent (FHIR JSON as served).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// The custody ledger of a record (owners).
    Ledger { id: String },
    /// Transfer custody of a record to the linked patient (institution staff).
    Transfer {
        id: String,
        /// The institution keeps a view grant.
        #[arg(long)]
        retain_view: bool,
        /// Only parts of these categories move (the record splits), e.g. condition,observation.
        #[arg(long, value_delimiter = ',', value_parser = values::category, value_name = "CATEGORIES")]
        parts: Option<Vec<api::Category>>,
        /// Replace the names of the institution and its staff by stable pseudonyms.
        #[arg(long)]
        anonymize_staff: bool,
        /// Grants of the institution over the record that become the patient's (with their
        /// copies); every other grant ends and its copies are destroyed.
        #[arg(long, value_delimiter = ',', value_name = "GRANT_IDS")]
        carry_over_grants: Vec<String>,
    },
    /// Make an in-server copy (owners, or grantees with the copy action).
    Copy { id: String },
    /// Take a copy out as a sealed package that opens only while your grant stands (grantees).
    #[command(after_help = "The package is encrypted; its key stays on the server, which releases it only \
        to you, only until the grant's end and while the owner does not revoke it. Open it with \
        `kura open FILE`.")]
    SealedCopy {
        id: String,
        /// Where to save the package [default: ./<sealed copy id>.kura-sealed].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Sealed copies of your records (with deletion receipts) and those you took out.
    SealedCopies,
    /// Deliver the content and remove it here; a locator stays behind. With --peer, move it into
    /// your account at a registered peer server instead.
    #[command(after_help = "The content comes back in the answer only: save it with --out FILE (or take it \
        from --json), the server keeps nothing but the locator.\n\n\
        To another Kura server: get a token there (`kura peer token`, logged in at that server), then \
        `kura records move ID --peer NAME --peer-token TOKEN` here.")]
    Move {
        id: String,
        /// Where the content goes, in words or as a URL; kept in the locator.
        #[arg(long, value_name = "TEXT", conflicts_with = "peer")]
        destination: Option<String>,
        /// The registered peer server to move the record to.
        #[arg(long, value_name = "NAME", requires = "peer_token", conflicts_with = "out")]
        peer: Option<String>,
        /// The one-time token from `kura peer token` at the peer.
        #[arg(long, value_name = "TOKEN", requires = "peer", value_parser = super::peer::secret_arg)]
        peer_token: Option<secrets::Secret>,
        /// Write the delivered content here: FHIR as pretty JSON, DICOM and PDF as their bytes.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Delete a record: its data key is destroyed, so the content is gone everywhere.
    Delete { id: String },
}

/// `observation:12 condition:3`: how many parts of each category, in order of appearance.
fn parts_summary(parts: &[api::PartView]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for part in parts {
        let name = wire_name(&part.category);
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count += 1,
            None => counts.push((name, 1)),
        }
    }
    comma_list(counts.iter().map(|(name, count)| format!("{name}:{count}")))
}

fn access_summary(access: &api::AccessView) -> String {
    let mut text = access.basis.clone();
    if access.anonymization != api::Anonymization::None {
        text.push_str(&format!(" ({})", wire_name(&access.anonymization)));
    }
    text
}

pub async fn run(args: RecordsArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, Some(&args.act_as))?;
    let json = args.conn.json;
    let names = match &args.command {
        RecordsCommand::Upload { .. }
        | RecordsCommand::Delete { .. }
        | RecordsCommand::Copy { .. }
        | RecordsCommand::SealedCopy { .. }
        | RecordsCommand::SealedCopies => OrgNames::default(),
        _ => OrgNames::load(&client, json).await,
    };
    match args.command {
        RecordsCommand::Upload { paths, patient, category } => {
            let category = category.as_deref().map(values::category).transpose().map_err(anyhow::Error::msg)?;
            upload::run(&client, &paths, &patient, category, json).await
        }
        RecordsCommand::List { labels } => {
            let query: Vec<(&str, String)> = labels.into_iter().map(|l| ("label", l)).collect();
            let list = client.get_query(&["api", "v1", "records"], &query).await?;
            show(json, list, |list: api::RecordList| {
                let mut table = Table::new(["ID", "FORMAT", "STATE", "OWNER", "ACCESS", "LABELS", "PARTS"]);
                for r in list.records {
                    table.row(vec![
                        r.id,
                        r.format,
                        r.state,
                        names.party(&r.owner),
                        access_summary(&r.access),
                        r.labels.len().to_string(),
                        parts_summary(&r.parts),
                    ]);
                }
                table.print_or("no records you may see");
            })
        }
        RecordsCommand::Show { id, out } => {
            // Read as sent, so that --out writes the content's bytes, not a re-serialisation.
            let body = client.get_bytes(&["api", "v1", "records", &id]).await?;
            let record: api::RecordView =
                serde_json::from_slice(&body).context("the server sent a record this client cannot read")?;
            if json {
                output::print_json(&serde_json::from_slice(&body)?);
            } else {
                print_record(&record, &names);
            }
            match out {
                Some(path) => {
                    let written = write_content(&record, &path)?;
                    if !json {
                        println!("content written to {} ({written} bytes)", path.display());
                    }
                }
                None if !json && (record.content.is_some() || record.content_base64.is_some()) => {
                    println!("content  {} (save it with --out FILE)", record.format);
                }
                None => {}
            }
            Ok(ExitCode::SUCCESS)
        }
        RecordsCommand::Ledger { id } => {
            let ledger = client.get(&["api", "v1", "records", &id, "ledger"]).await?;
            show(json, ledger, |entries: Vec<api::LedgerEntryView>| {
                let mut table = Table::new(["SEQ", "AT", "EVENT", "FROM", "TO", "ACTOR", "NOTE"]);
                for e in entries {
                    table.row(vec![
                        e.seq.to_string(),
                        e.at,
                        e.event,
                        e.from_owner.as_deref().map_or_else(|| "-".to_owned(), |o| names.party(o)),
                        names.party(&e.to_owner),
                        e.actor,
                        e.note,
                    ]);
                }
                table.print_or("no ledger entries");
            })
        }
        RecordsCommand::Transfer { id, retain_view, parts, anonymize_staff, carry_over_grants } => {
            let body = api::TransferRequest {
                agreement: api::TransferAgreementBody { retain_view, parts, anonymize_staff, carry_over_grants },
            };
            let transferred = client.post(&["api", "v1", "records", &id, "transfer"], &body).await?;
            show(json, transferred, |t: api::TransferResponse| {
                println!("record {} is now owned by {} (transfer {})", t.record, names.party(&t.owner), t.transfer);
                if let Some(remainder) = t.remainder {
                    println!("the institution keeps the other parts as record {remainder}");
                }
                if let Some(grant) = t.retained_grant {
                    println!("the institution keeps a view grant: {grant}");
                }
                if !t.ended_grants.is_empty() {
                    println!(
                        "the institution's grants that ended, their copies destroyed: {}",
                        t.ended_grants.join(", ")
                    );
                }
                if !t.carried_grants.is_empty() {
                    println!("now the patient's grants: {}", t.carried_grants.join(", "));
                }
            })
        }
        RecordsCommand::Copy { id } => {
            let copied = client.post_empty(&["api", "v1", "records", &id, "copy"]).await?;
            show(json, copied, |c: api::CopyResponse| match c.expires_at {
                Some(at) => println!("copy {} made; it is destroyed at {at} or when the grant is revoked", c.id),
                None => println!("copy {} made", c.id),
            })
        }
        RecordsCommand::SealedCopy { id, out } => sealed::take(&client, &id, out, json).await,
        RecordsCommand::SealedCopies => sealed::list(&client, json).await,
        RecordsCommand::Move { id, destination, peer: Some(peer), peer_token, .. } => {
            let request = api::MoveRequest {
                destination,
                peer: Some(peer.clone()),
                peer_token: peer_token.map(|t| t.expose().to_owned()),
            };
            let value = client.post(&["api", "v1", "records", &id, "move"], &request).await?;
            show(json, value, |moved: api::RecordView| {
                let to = moved.locator.as_ref().map(|l| l.destination.as_str()).unwrap_or("-");
                println!("record {} moved to peer {peer}: {to}", moved.id);
                println!("It is readable there, in your account; here only its locator stays.");
            })
        }
        RecordsCommand::Move { id, destination, out, .. } => {
            let request = api::MoveRequest { destination, ..Default::default() };
            let value = client.post(&["api", "v1", "records", &id, "move"], &request).await?;
            let moved: api::RecordView = decode(value.clone())?;
            if json {
                output::print_json(&value);
            } else {
                let to = moved.locator.as_ref().map(|l| l.destination.as_str()).unwrap_or("-");
                println!("record {} moved: {to}", moved.id);
            }
            match out {
                // The record is gone here already; a failed write must still say what happened.
                Some(path) => {
                    let written = write_content(&moved, &path)
                        .with_context(|| format!("record {id} was moved, but its delivered content was not saved"))?;
                    if !json {
                        println!("delivered content written to {} ({written} bytes)", path.display());
                    }
                }
                None if !json => eprintln!("warning: the delivered content was not saved (use --out FILE or --json)"),
                None => {}
            }
            Ok(ExitCode::SUCCESS)
        }
        RecordsCommand::Delete { id } => {
            client.delete(&["api", "v1", "records", &id]).await?;
            done(json, &format!("record {id} deleted; its data key is destroyed"))
        }
    }
}

fn print_record(r: &api::RecordView, names: &OrgNames) {
    println!("id           {}", r.id);
    println!("format       {}", r.format);
    println!("state        {}", r.state);
    println!("owner        {}", names.party(&r.owner));
    println!("institution  {}", names.org(&r.institution));
    println!("created      {}", r.created_at);
    println!("provenance   {}", r.provenance);
    if let Some(from) = &r.derived_from {
        println!("derived from {from}");
    }
    if let Some(access) = &r.access {
        let mut text = access_summary(access);
        if let Some(grant) = &access.grant {
            text.push_str(&format!(", grant {grant}"));
        }
        if let Some(until) = &access.expires_at {
            text.push_str(&format!(", until {until}"));
        }
        println!("access       {text}");
    }
    println!("parts        {}", parts_summary(&r.parts));
    if !r.labels.is_empty() {
        println!("labels       {}", r.labels.join(" "));
    }
    if let Some(locator) = &r.locator {
        println!("moved        to {} at {} by {}", locator.destination, locator.moved_at, locator.ordered_by);
    }
    if let Some(withheld) = &r.withheld {
        println!("withheld     {withheld}");
    }
}

/// Writes a record's content to `path` exactly as the server sent it: FHIR as its JSON text,
/// other formats as their bytes.
fn write_content(record: &api::RecordView, path: &Path) -> Result<usize> {
    let bytes = content_bytes(record)?;
    std::fs::write(path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(bytes.len())
}

fn content_bytes(record: &api::RecordView) -> Result<Vec<u8>> {
    if let Some(content) = &record.content {
        return Ok(content.get().as_bytes().to_vec());
    }
    if let Some(encoded) = &record.content_base64 {
        return base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .context("the server sent content that is not valid base64");
    }
    match (&record.withheld, &record.locator) {
        (Some(why), _) => bail!("no content to write: {why}"),
        (None, Some(locator)) => bail!("no content to write: the record was moved to {}", locator.destination),
        (None, None) => bail!("no content to write: the server sent none"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn part(category: api::Category) -> api::PartView {
        api::PartView { index: 0, category, resource_type: String::new() }
    }

    #[test]
    fn parts_are_counted_per_category_in_order() {
        let parts = [
            part(api::Category::Other),
            part(api::Category::Observation),
            part(api::Category::Observation),
            part(api::Category::PatientEntered),
        ];
        assert_eq!(parts_summary(&parts), "other:1,observation:2,patient_entered:1");
        assert_eq!(parts_summary(&[]), "-");
    }

    fn record_with(content: Option<Value>, base64: Option<&str>, withheld: Option<&str>) -> api::RecordView {
        api::RecordView {
            id: "r".into(),
            owner: "account:a".into(),
            institution: "i".into(),
            format: "fhir".into(),
            state: "active".into(),
            parts: Vec::new(),
            labels: Vec::new(),
            created_at: "2026-01-01T00:00:00Z".into(),
            derived_from: None,
            provenance: String::new(),
            access: None,
            content: content.map(|c| serde_json::value::to_raw_value(&c).unwrap()),
            content_base64: base64.map(str::to_owned),
            withheld: withheld.map(str::to_owned),
            locator: None,
        }
    }

    #[test]
    fn content_is_written_as_served_or_decoded_bytes() {
        // The FHIR text as the server sent it: spacing and decimals (1.50, 1e2) kept.
        let served = r#"{"resourceType": "Observation", "valueQuantity": {"value": 1.50}, "x": 1e2}"#;
        let record: api::RecordView = serde_json::from_str(&format!(
            r#"{{"id": "r", "owner": "account:a", "institution": "i", "format": "fhir", "state": "active",
                "parts": [], "labels": [], "created_at": "2026-01-01T00:00:00Z", "provenance": "", "content": {served}}}"#
        ))
        .unwrap();
        assert_eq!(content_bytes(&record).unwrap(), served.as_bytes());
        let pdf = record_with(None, Some("JVBERi0xLjQ="), None);
        assert_eq!(content_bytes(&pdf).unwrap(), b"%PDF-1.4");
        let withheld = record_with(None, None, Some("no image parts in scope"));
        let message = content_bytes(&withheld).unwrap_err().to_string();
        assert!(message.contains("no image parts in scope"), "{message}");
    }

    #[test]
    fn peer_moves_take_a_peer_and_its_token_together() {
        let cli =
            Cli::try_parse_from(["kura", "records", "move", "r1", "--peer", "east", "--peer-token", "t0k"]).unwrap();
        let Command::Records(args) = cli.command else { panic!("not records") };
        let RecordsCommand::Move { peer, peer_token, .. } = args.command else { panic!("not move") };
        assert_eq!(peer.as_deref(), Some("east"));
        assert_eq!(peer_token.as_ref().map(|t| t.expose()), Some("t0k"));
        assert!(!format!("{peer_token:?}").contains("t0k"), "the token stays out of Debug output");
        assert!(Cli::try_parse_from(["kura", "records", "move", "r1", "--peer", "east"]).is_err());
        assert!(Cli::try_parse_from(["kura", "records", "move", "r1", "--peer-token", "t"]).is_err());
    }

    #[test]
    fn connection_options_follow_the_subcommand() {
        let cli =
            Cli::try_parse_from(["kura", "records", "list", "--server", "http://h:1", "--json", "--act-as", "p1"])
                .unwrap();
        let Command::Records(args) = cli.command else { panic!("not records") };
        assert_eq!(args.conn.server.as_deref(), Some("http://h:1"));
        assert!(args.conn.json);
        assert_eq!(args.act_as.act_as.as_deref(), Some("p1"));
    }
}
