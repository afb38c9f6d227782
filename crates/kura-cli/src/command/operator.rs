//! `kura operator bootstrap`: offline administration that opens the store directly.

use std::process::ExitCode;

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand};

use super::DataDirArg;
use crate::local::open;
use crate::secrets::{self, Secret};

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Create the first operator account, offline, directly in the store.
    #[command(after_help = "Without --password-stdin a random password is generated and printed once.")]
    Bootstrap(BootstrapArgs),
}

#[derive(Debug, Args)]
pub struct BootstrapArgs {
    /// The operator's username.
    #[arg(long)]
    username: String,
    /// Read the password from stdin instead of generating one.
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    data: DataDirArg,
    /// `sqlite:PATH` or `postgres://...` [default: KURA_DATABASE_URL, the file's, or SQLite at
    /// DIR/kura.db].
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

pub async fn run(command: OperatorCommand) -> Result<ExitCode> {
    match command {
        OperatorCommand::Bootstrap(args) => bootstrap(args).await,
    }
}

/// `kura operator bootstrap`: the first operator, created directly in the store.
async fn bootstrap(args: BootstrapArgs) -> Result<ExitCode> {
    let (password, generated) = if args.password_stdin {
        (secrets::read_password_stdin()?, false)
    } else {
        (secrets::generate_password()?, true)
    };
    let app = open(args.data.load(args.database_url.map(|u| ("database_url", u)).into_iter().collect())?).await?;
    let created = app.create_operator(&args.username, password.expose()).await;
    app.store().close().await;
    let account_id = created.map_err(|e| anyhow!("cannot create the operator: {e}"))?;
    print_bootstrapped(&args.username, &account_id, generated.then_some(&password));
    Ok(ExitCode::SUCCESS)
}

fn print_bootstrapped(username: &str, account_id: &str, generated: Option<&Secret>) {
    println!("operator {username} created (account {account_id})");
    if let Some(password) = generated {
        // Shown once, deliberately: nobody else knows it.
        println!("password: {}", password.expose());
    }
}
