//! `kura account`: staff, researcher, operator and reviewer accounts (operators).

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use kura_api_types as api;

use super::org::resolve_org;
use super::{Connection, connect, password_from, show, show_generated_password};

#[derive(Debug, Args)]
pub struct AccountArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: AccountCommand,
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// Create a staff, researcher, operator or study reviewer account (operators). Patients use
    /// `kura register`.
    #[command(after_help = "Without --password-stdin a random password is generated and printed once.")]
    Create {
        #[arg(long)]
        username: String,
        #[arg(long, value_parser = ["staff", "researcher", "operator", "reviewer"])]
        kind: String,
        /// The organisation (id or exact name) a staff member or researcher acts for.
        #[arg(long, value_name = "ORG")]
        org: Option<String>,
        /// Read the password from stdin.
        #[arg(long)]
        password_stdin: bool,
    },
}

pub async fn run(args: AccountArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, None)?;
    let json = args.conn.json;
    match args.command {
        AccountCommand::Create { username, kind, org, password_stdin } => {
            let org = match org {
                Some(org) => Some(resolve_org(&client, &org).await?),
                None => None,
            };
            let (password, generated) = password_from(password_stdin)?;
            let body = api::CreateAccountRequest { username, password: password.expose().to_owned(), kind, org };
            let created = client.post(&["api", "v1", "accounts"], &body).await?;
            let code = show(json, created, |account: api::AccountView| {
                println!("{} account {} created (id {})", account.kind, account.username, account.id);
            })?;
            if generated {
                show_generated_password(json, &password);
            }
            Ok(code)
        }
    }
}
