//! `kura study`: studies of a research organisation, their review, and its disclosure ledger.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use kura_api_types as api;

use super::{Connection, connect, show};
use crate::client::{Client, decode};
use crate::output::Table;

#[derive(Debug, Args)]
pub struct StudyArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: StudyCommand,
}

#[derive(Debug, Subcommand)]
enum StudyCommand {
    /// Register a study: what it is for and its ethics approval. An operator reviews it before it
    /// may search, ask or analyse.
    #[command(after_help = "Example: kura study create --title \"Diabetes in women 40-60\" \\\n    \
        --purpose \"Outcomes of type 2 diabetes\" --ethics-ref IRB-2026-017 --contact research@example.org")]
    Create {
        #[arg(long)]
        title: String,
        /// What the study is for; owners read it before answering a request.
        #[arg(long)]
        purpose: String,
        /// The ethics committee's approval reference.
        #[arg(long, value_name = "REF")]
        ethics_ref: String,
        /// Whom owners can contact about the study.
        #[arg(long)]
        contact: String,
    },
    /// The studies of your research organisation; for an operator, every organisation's.
    #[command(
        after_help = "Examples:\n  kura study list\n  kura study list --state pending   (operator: the review queue)"
    )]
    List {
        /// Only studies in this state: pending, approved, rejected or closed.
        #[arg(long)]
        state: Option<String>,
    },
    /// Operator: approve a study waiting for review, so that it may search, ask and analyse.
    #[command(after_help = "Example: kura study approve <study-id> --note \"IRB-42 checked\"")]
    Approve {
        id: String,
        /// A note to the researchers.
        #[arg(long)]
        note: Option<String>,
    },
    /// Operator: reject a study waiting for review.
    #[command(after_help = "Example: kura study reject <study-id> --note \"no ethics approval on file\"")]
    Reject {
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Close a study: it stops searching, asking and analysing and frees its place.
    #[command(after_help = "Example: kura study close <study-id>")]
    Close { id: String },
    /// What your research organisation has been told (its disclosure ledger), its refusals
    /// for differencing and whether its research is suspended; operators name the organisation.
    #[command(after_help = "Examples:\n  kura study ledger\n  kura study ledger --org <org-id>   (operator)")]
    Ledger {
        #[arg(long)]
        org: Option<String>,
    },
    /// Operator: resume a research organisation suspended after refusals for differencing.
    #[command(after_help = "Example: kura study resume --org <org-id>")]
    Resume {
        #[arg(long)]
        org: String,
    },
}

pub async fn run(args: StudyArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, None)?;
    let json = args.conn.json;
    match args.command {
        StudyCommand::Create { title, purpose, ethics_ref, contact } => {
            let body = api::CreateStudyRequest { title, purpose, ethics_reference: ethics_ref, contact };
            let created = client.post(&["api", "v1", "research", "studies"], &body).await?;
            show(json, created, |s: api::StudyView| {
                println!("study {} created: {}", s.id, s.title);
                println!("it waits for an operator's review (kura study approve {}); then search with:", s.id);
                println!("  kura search --study {} <QUERY>", s.id);
            })
        }
        StudyCommand::List { state } => {
            let query: Vec<(&str, String)> = state.into_iter().map(|s| ("state", s)).collect();
            let list = client.get_query(&["api", "v1", "research", "studies"], &query).await?;
            show(json, list, |list: api::StudyList| {
                let mut table = Table::new(["ID", "STATE", "CREATED", "ETHICS", "CONTACT", "TITLE"]);
                for s in list.studies {
                    table.row(vec![s.id, s.state, s.created_at, s.ethics_reference, s.contact, s.title]);
                }
                table.print_or("no studies yet; register one with `kura study create`");
            })
        }
        StudyCommand::Approve { id, note } => review(&client, json, &id, api::StudyDecision::Approve, note).await,
        StudyCommand::Reject { id, note } => review(&client, json, &id, api::StudyDecision::Reject, note).await,
        StudyCommand::Ledger { org } => {
            let org = match org {
                Some(org) => org,
                None => {
                    let me: api::AccountView = decode(client.get(&["api", "v1", "me"]).await?)?;
                    me.org.context("your account acts for no organisation; give --org")?
                }
            };
            let status = client.get(&["api", "v1", "research", "organisations", &org, "disclosure"]).await?;
            show(json, status, print_disclosure)
        }
        StudyCommand::Resume { org } => {
            let path = ["api", "v1", "research", "organisations", org.as_str(), "resume"];
            show(json, client.post(&path, &serde_json::json!({})).await?, print_disclosure)
        }
        StudyCommand::Close { id } => {
            let closed =
                client.post(&["api", "v1", "research", "studies", &id, "close"], &serde_json::json!({})).await?;
            show(json, closed, |s: api::StudyView| println!("study {} is {}", s.id, s.state))
        }
    }
}

fn print_disclosure(status: api::DisclosureStatus) {
    println!("organisation        {}", status.organisation);
    println!("people told about   {}", status.people_told_about);
    println!("refusals            {} of {} since the last review", status.refusals_since_review, status.refusal_limit);
    println!("epsilon             {} of {}", status.epsilon_spent, status.epsilon_budget);
    if status.suspended {
        println!(
            "research is SUSPENDED until an operator resumes it (kura study resume --org {})",
            status.organisation
        );
    }
}

async fn review(
    client: &Client,
    json: bool,
    id: &str,
    decision: api::StudyDecision,
    note: Option<String>,
) -> Result<ExitCode> {
    let body = api::ReviewStudyRequest { decision, note };
    let reviewed = client.post(&["api", "v1", "research", "studies", id, "review"], &body).await?;
    show(json, reviewed, |s: api::StudyView| println!("study {} ({}) is {}", s.id, s.title, s.state))
}
