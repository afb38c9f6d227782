//! `kura audit`: the audit log and its hash-chain check.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use kura_api_types as api;

use super::{ActAs, Connection, connect, show};
use crate::client::decode;
use crate::output::{self, Table, or_dash};

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    act_as: ActAs,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Audit entries: your own (patients, agents) or all (operators).
    List {
        /// Only entries after this sequence number.
        #[arg(long, default_value_t = 0, value_name = "N")]
        after: i64,
        /// At most this many entries (the server caps it at 5000).
        #[arg(long, value_name = "N")]
        limit: Option<i64>,
    },
    /// Check the hash chain of the whole log; exit code 1 when it is broken.
    Verify,
}

pub async fn run(args: AuditArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, Some(&args.act_as))?;
    let json = args.conn.json;
    match args.command {
        AuditCommand::List { after, limit } => {
            let mut query = vec![("after", after.to_string())];
            if let Some(limit) = limit {
                query.push(("limit", limit.to_string()));
            }
            let list = client.get_query(&["api", "v1", "audit"], &query).await?;
            show(json, list, |list: api::AuditList| {
                let mut table = Table::new(["SEQ", "AT", "ACTOR", "FOR", "ACTION", "OUTCOME", "RECORD", "DETAIL"]);
                for e in list.entries {
                    let actor = if e.actor_name.is_empty() { e.actor } else { e.actor_name };
                    table.row(vec![
                        e.seq.to_string(),
                        e.at,
                        actor,
                        or_dash(Some(&e.on_behalf_of)),
                        e.action,
                        e.outcome,
                        or_dash(Some(&e.record)),
                        e.detail,
                    ]);
                }
                table.print_or("no audit entries");
            })
        }
        AuditCommand::Verify => {
            let value = client.get(&["api", "v1", "audit", "verify"]).await?;
            let verification: api::AuditVerification = decode(value.clone())?;
            if json {
                output::print_json(&value);
            } else if verification.ok {
                println!("the audit chain is intact ({} entries checked)", verification.entries_checked);
            } else {
                println!(
                    "the audit chain is BROKEN at entry {}: {} ({} entries before it check out)",
                    verification.broken_at_seq.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
                    verification.reason.as_deref().unwrap_or("no reason given"),
                    verification.entries_checked
                );
            }
            Ok(if verification.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
