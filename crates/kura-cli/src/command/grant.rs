//! `kura grant`: who may use which of your records, how, and for how long.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use kura_api_types as api;

use super::org::{OrgNames, resolve_org};
use super::{ActAs, Connection, connect, done, show};
use crate::client::Client;
use crate::output::{Table, comma_list, or_dash, wire_name};
use crate::values;

#[derive(Debug, Args)]
pub struct GrantArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    act_as: ActAs,
    #[command(subcommand)]
    command: GrantCommand,
}

#[derive(Debug, Subcommand)]
enum GrantCommand {
    /// Let an organisation or an account use some of your records.
    #[command(
        after_help = "Example: kura grant create --to-org <ID> --record <ID> --scope image --actions view --days 30"
    )]
    Create(Box<GrantCreateArgs>),
    /// Grants you gave or hold.
    List,
    /// Revoke a grant; it allows nothing from now on and copies made under it are destroyed.
    Revoke { id: String },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("grantee").required(true).args(["to_org", "to_account"])))]
#[command(group(clap::ArgGroup::new("selection").required(true).args(["records", "labels"])))]
struct GrantCreateArgs {
    /// The organisation (id or exact name) to grant to.
    #[arg(long, value_name = "ORG")]
    to_org: Option<String>,
    /// The account id to grant to.
    #[arg(long, value_name = "ACCOUNT_ID")]
    to_account: Option<String>,
    /// These records (repeatable).
    #[arg(long = "record", value_name = "ID")]
    records: Vec<String>,
    /// Every record of yours carrying all these labels, now and later (repeatable).
    #[arg(long = "label", value_name = "LABEL")]
    labels: Vec<String>,
    /// Part categories covered, e.g. image,certificate.
    #[arg(long, required = true, value_delimiter = ',', value_parser = values::category, value_name = "CATEGORIES")]
    scope: Vec<api::Category>,
    /// Allowed actions: view, copy, move, delete, statistics.
    #[arg(long, value_delimiter = ',', value_parser = values::grant_action, default_value = "view", value_name = "ACTIONS")]
    actions: Vec<api::GrantAction>,
    /// none, pseudonymized or anonymized.
    #[arg(long, value_parser = values::anonymization, default_value = "none")]
    anonymization: api::Anonymization,
    /// The grant ends after this many days.
    #[arg(long, conflicts_with = "expires_at", value_name = "N")]
    days: Option<u32>,
    /// The grant ends at this time (RFC 3339).
    #[arg(long, value_parser = values::rfc3339, value_name = "TIME")]
    expires_at: Option<String>,
    /// The grant starts at this time (RFC 3339; default now).
    #[arg(long, value_parser = values::rfc3339, value_name = "TIME")]
    not_before: Option<String>,
    /// Why the grant is given.
    #[arg(long, default_value = "", value_name = "TEXT")]
    purpose: String,
}

/// A grant's scope for people: `all` when it covers every category.
pub fn scope_summary(scope: &[api::Category]) -> String {
    if scope.len() == values::CATEGORIES.len() { "all".to_owned() } else { comma_list(scope.iter().map(wire_name)) }
}

fn grant_state(g: &api::GrantView) -> &'static str {
    if g.revoked_at.is_some() {
        "revoked"
    } else if g.active {
        "active"
    } else {
        "inactive"
    }
}

pub async fn run(args: GrantArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, Some(&args.act_as))?;
    let json = args.conn.json;
    let names = match &args.command {
        GrantCommand::Revoke { .. } => OrgNames::default(),
        _ => OrgNames::load(&client, json).await,
    };
    match args.command {
        GrantCommand::Create(create) => {
            let body = grant_request(&client, *create).await?;
            let created = client.post(&["api", "v1", "grants"], &body).await?;
            show(json, created, |g: api::GrantView| {
                println!(
                    "grant {} created: {} may {} ({})",
                    g.id,
                    g.grantee,
                    comma_list(g.actions.iter().map(wire_name)),
                    comma_list(g.scope.iter().map(wire_name))
                );
                println!("from {} until {}", g.not_before, or_dash(g.expires_at.as_deref()));
            })
        }
        GrantCommand::List => show(json, client.get(&["api", "v1", "grants"]).await?, |list: api::GrantList| {
            let mut table =
                Table::new(["ID", "STATE", "OWNER", "GRANTEE", "COVERS", "SCOPE", "ACTIONS", "ANONYMIZATION", "UNTIL"]);
            for g in list.grants {
                let covers = match &g.records {
                    Some(ids) => format!("{} record(s)", ids.len()),
                    None => format!("labels {}", comma_list(&g.labels)),
                };
                table.row(vec![
                    g.id.clone(),
                    grant_state(&g).to_owned(),
                    names.party(&g.owner),
                    names.party(&g.grantee),
                    covers,
                    scope_summary(&g.scope),
                    comma_list(g.actions.iter().map(wire_name)),
                    wire_name(&g.anonymization),
                    or_dash(g.expires_at.as_deref()),
                ]);
            }
            table.print_or("no grants");
        }),
        GrantCommand::Revoke { id } => {
            client.delete(&["api", "v1", "grants", &id]).await?;
            done(json, &format!("grant {id} revoked"))
        }
    }
}

async fn grant_request(client: &Client, args: GrantCreateArgs) -> Result<api::CreateGrantRequest> {
    let grantee = match (args.to_org, args.to_account) {
        (Some(org), _) => api::PartyRef::Org(resolve_org(client, &org).await?),
        (None, Some(account)) => api::PartyRef::Account(account),
        (None, None) => bail!("give --to-org or --to-account"),
    };
    Ok(api::CreateGrantRequest {
        grantee,
        records: (!args.records.is_empty()).then_some(args.records),
        labels: args.labels,
        scope: args.scope,
        actions: args.actions,
        anonymization: args.anonymization,
        not_before: args.not_before,
        expires_at: values::expiry(args.days, args.expires_at)?,
        purpose: args.purpose,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    #[test]
    fn lists_parse_with_commas() {
        let cli = Cli::try_parse_from([
            "kura",
            "grant",
            "create",
            "--to-org",
            "o1",
            "--record",
            "r1",
            "--record",
            "r2",
            "--scope",
            "image,certificate",
            "--actions",
            "view,copy",
            "--days",
            "30",
        ])
        .unwrap();
        let Command::Grant(GrantArgs { command: GrantCommand::Create(args), .. }) = cli.command else {
            panic!("not grant create");
        };
        assert_eq!(args.scope, vec![api::Category::Image, api::Category::Certificate]);
        assert_eq!(args.actions, vec![api::GrantAction::View, api::GrantAction::Copy]);
        assert_eq!(args.records, vec!["r1", "r2"]);
        assert_eq!(args.days, Some(30));

        let refused =
            Cli::try_parse_from(["kura", "grant", "create", "--to-org", "o", "--record", "r", "--scope", "xray"]);
        assert!(refused.is_err());
        let both = Cli::try_parse_from([
            "kura",
            "grant",
            "create",
            "--to-org",
            "o",
            "--to-account",
            "a",
            "--record",
            "r",
            "--scope",
            "image",
        ]);
        assert!(both.is_err());
    }
}
