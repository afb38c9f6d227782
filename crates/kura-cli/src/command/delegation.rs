//! `kura delegation`: agents (guardians, proxies) acting for a patient.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use kura_api_types as api;

use super::{Connection, connect, done, show};
use crate::output::{Table, comma_list, or_dash, wire_name};
use crate::values;

#[derive(Debug, Args)]
pub struct DelegationArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: DelegationCommand,
}

#[derive(Debug, Subcommand)]
enum DelegationCommand {
    /// Appoint an agent for yourself (patients), or register a guardian for a patient
    /// (operators, or staff of an institution the patient is linked to).
    Create {
        /// The agent's username (a personal account).
        #[arg(long, value_name = "USERNAME")]
        agent: String,
        /// What the agent may do: view, copy, move, delete, statistics, manage_grants.
        #[arg(long, required = true, value_delimiter = ',', value_parser = values::power, value_name = "POWERS")]
        powers: Vec<api::Power>,
        /// The patient's account id (guardians).
        #[arg(long, value_name = "ACCOUNT_ID")]
        patient: Option<String>,
        /// `appointed` or `guardian` [default: guardian with --patient, else appointed].
        #[arg(long, value_parser = ["appointed", "guardian"])]
        kind: Option<String>,
        /// The delegation ends at this time (RFC 3339).
        #[arg(long, value_parser = values::rfc3339, value_name = "TIME")]
        expires_at: Option<String>,
    },
    /// Delegations where you are the agent or the patient.
    List,
    /// Accept a guardian registered for you (patients): until then it can do nothing.
    Accept { id: String },
    /// End a delegation (patients: also decline one awaiting you).
    Revoke { id: String },
}

pub async fn run(args: DelegationArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, None)?;
    let json = args.conn.json;
    match args.command {
        DelegationCommand::Create { agent, powers, patient, kind, expires_at } => {
            let kind = kind.unwrap_or_else(|| if patient.is_some() { "guardian" } else { "appointed" }.to_owned());
            let body = api::CreateDelegationRequest { agent, patient, kind, powers, expires_at };
            let created = client.post(&["api", "v1", "delegations"], &body).await?;
            show(json, created, |d: api::DelegationView| {
                println!(
                    "delegation {} ({}): account {} acts for patient {} with {}",
                    d.id,
                    d.kind,
                    d.agent,
                    d.patient,
                    comma_list(d.powers.iter().map(wire_name))
                );
                if d.awaiting_acceptance {
                    println!("it takes effect once the patient accepts it (kura delegation accept {})", d.id);
                } else {
                    println!("the agent sends --act-as {} to act for the patient", d.patient);
                }
            })
        }
        DelegationCommand::List => {
            show(json, client.get(&["api", "v1", "delegations"]).await?, |list: api::DelegationList| {
                let mut table = Table::new(["ID", "KIND", "ACTIVE", "AGENT", "PATIENT", "POWERS", "UNTIL"]);
                for d in list.delegations {
                    table.row(vec![
                        d.id,
                        d.kind,
                        match (d.active, d.awaiting_acceptance) {
                            (true, _) => "yes",
                            (false, true) => "awaiting acceptance",
                            (false, false) => "no",
                        }
                        .to_owned(),
                        d.agent,
                        d.patient,
                        comma_list(d.powers.iter().map(wire_name)),
                        or_dash(d.expires_at.as_deref()),
                    ]);
                }
                table.print_or("no delegations");
            })
        }
        DelegationCommand::Accept { id } => {
            let accepted = client.post(&["api", "v1", "delegations", &id, "accept"], &serde_json::json!({})).await?;
            show(json, accepted, |d: api::DelegationView| {
                println!("delegation {} accepted: account {} may now act for you", d.id, d.agent);
            })
        }
        DelegationCommand::Revoke { id } => {
            client.delete(&["api", "v1", "delegations", &id]).await?;
            done(json, &format!("delegation {id} ended"))
        }
    }
}
