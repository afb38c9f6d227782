//! `kura org`: institutions and research organisations, and the helpers that name them for
//! people (`OrgNames`) or find one by its name (`resolve_org`).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use kura_api_types as api;

use super::{Connection, connect, show};
use crate::client::{Client, decode};
use crate::output::Table;

#[derive(Debug, Args)]
pub struct OrgArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: OrgCommand,
}

#[derive(Debug, Subcommand)]
enum OrgCommand {
    /// Register an institution or a research organisation (operators).
    Create {
        #[arg(long)]
        name: String,
        /// `institution` or `research`.
        #[arg(long, value_parser = ["institution", "research"])]
        kind: String,
    },
    /// List the organisations on the server.
    List,
}

pub async fn run(args: OrgArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, None)?;
    let json = args.conn.json;
    match args.command {
        OrgCommand::Create { name, kind } => {
            let created = client.post(&["api", "v1", "orgs"], &api::CreateOrgRequest { name, kind }).await?;
            show(json, created, |org: api::OrgView| {
                println!("organisation created: {} ({}), id {}", org.name, org.kind, org.id);
            })
        }
        OrgCommand::List => show(json, client.get(&["api", "v1", "orgs"]).await?, |orgs: Vec<api::OrgView>| {
            let mut table = Table::new(["ID", "KIND", "NAME"]);
            for org in orgs {
                table.row(vec![org.id, org.kind, org.name]);
            }
            table.print_or("no organisations yet");
        }),
    }
}

/// The id of the organisation `text` names: an id as is, or an exact (case-insensitive) name.
pub async fn resolve_org(client: &Client, text: &str) -> Result<String> {
    let orgs: Vec<api::OrgView> = decode(client.get(&["api", "v1", "orgs"]).await?)?;
    if orgs.iter().any(|o| o.id == text) {
        return Ok(text.to_owned());
    }
    let named: Vec<&api::OrgView> = orgs.iter().filter(|o| o.name.eq_ignore_ascii_case(text.trim())).collect();
    match named.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Ok(text.to_owned()),
        _ => bail!("several organisations are named '{text}'; give the id (see `kura org list`)"),
    }
}

/// Organisation names by their party text (`org:<id>`), so that listings for people name
/// hospitals rather than ids. Empty when the list cannot be read; ids are shown then.
#[derive(Default)]
pub struct OrgNames(BTreeMap<String, String>);

impl OrgNames {
    pub async fn load(client: &Client, json: bool) -> Self {
        if json {
            return Self::default();
        }
        let orgs = match client.get(&["api", "v1", "orgs"]).await.and_then(decode::<Vec<api::OrgView>>) {
            Ok(orgs) => orgs,
            Err(_) => return Self::default(),
        };
        Self(orgs.into_iter().map(|o| (format!("org:{}", o.id), o.name)).collect())
    }

    /// `Aoba General Hospital` for `org:<its id>`; anything else as it is.
    pub fn party(&self, text: &str) -> String {
        self.0.get(text).cloned().unwrap_or_else(|| text.to_owned())
    }

    pub fn org(&self, id: &str) -> String {
        self.party(&format!("org:{id}"))
    }
}
