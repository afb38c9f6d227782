//! `kura register`: a patient registers their own account.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use kura_api_types as api;

use super::{Connection, connect_anonymously, password_from, show, show_generated_password};

#[derive(Debug, Args)]
#[command(after_help = "Without --password-stdin a random password is generated and printed once.")]
pub struct RegisterArgs {
    #[command(flatten)]
    conn: Connection,
    #[arg(long)]
    username: String,
    /// Read the password from stdin (at least 10 characters).
    #[arg(long)]
    password_stdin: bool,
}

pub async fn run(args: RegisterArgs) -> Result<ExitCode> {
    let client = connect_anonymously(&args.conn)?;
    let (password, generated) = password_from(args.password_stdin)?;
    let body = api::RegisterPatientRequest { username: args.username.clone(), password: password.expose().to_owned() };
    let account = client.post(&["api", "v1", "auth", "register"], &body).await?;
    let code = show(args.conn.json, account, |account: api::AccountView| {
        println!("patient account {} created (id {})", account.username, account.id);
    })?;
    if generated {
        show_generated_password(args.conn.json, &password);
    }
    Ok(code)
}
