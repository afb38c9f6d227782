//! `kura link`: link codes that tie a patient account to an institution's local patient id.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use kura_api_types as api;

use super::{ActAs, Connection, connect, show};
use crate::output::Table;

#[derive(Debug, Args)]
pub struct LinkArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    act_as: ActAs,
    #[command(subcommand)]
    command: LinkCommand,
}

#[derive(Debug, Subcommand)]
enum LinkCommand {
    /// Issue a one-time link code for a local patient id (institution staff).
    Issue {
        /// The institution's local patient id.
        #[arg(long)]
        mrn: String,
    },
    /// Redeem a link code from an institution (patients).
    Redeem {
        /// The code, as handed out (dashes and case do not matter).
        code: String,
    },
    /// The institutions your account is linked to.
    List,
}

pub async fn run(args: LinkArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, Some(&args.act_as))?;
    let json = args.conn.json;
    match args.command {
        LinkCommand::Issue { mrn } => {
            let issued = client.post(&["api", "v1", "links"], &api::CreateLinkCodeRequest { mrn }).await?;
            show(json, issued, |code: api::LinkCodeView| {
                println!("link code for {}: {}", code.mrn, code.code);
                println!("hand it to the patient; it works once, until {}", code.expires_at);
            })
        }
        LinkCommand::Redeem { code } => {
            let linked = client.post(&["api", "v1", "links", "redeem"], &api::RedeemLinkCodeRequest { code }).await?;
            show(json, linked, |link: api::LinkView| {
                println!("linked to {} ({}) as patient {}", link.institution_name, link.institution, link.mrn);
            })
        }
        LinkCommand::List => show(json, client.get(&["api", "v1", "links"]).await?, |links: Vec<api::LinkView>| {
            let mut table = Table::new(["INSTITUTION", "NAME", "MRN"]);
            for link in links {
                table.row(vec![link.institution, link.institution_name, link.mrn]);
            }
            table.print_or("no links yet");
        }),
    }
}
