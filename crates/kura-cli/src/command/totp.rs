//! `kura totp`: two-factor authentication with a one-time code app.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use kura_api_types as api;

use super::{Connection, connect, done, show};
use crate::secrets;

#[derive(Debug, Args)]
pub struct TotpArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: TotpCommand,
}

#[derive(Debug, Subcommand)]
enum TotpCommand {
    /// Get a fresh secret to load into an authenticator app (nothing changes yet).
    Enroll,
    /// Turn two-factor authentication on with a current code for the secret enrolment returned;
    /// asks for your password again.
    Confirm {
        /// The secret `kura totp enroll` printed (optional: the server remembers it).
        #[arg(long)]
        secret: Option<String>,
        #[arg(long)]
        code: String,
        /// Read the password from stdin instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
}

pub async fn run(args: TotpArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, None)?;
    let json = args.conn.json;
    match args.command {
        TotpCommand::Enroll => {
            let enrollment = client.post_empty(&["api", "v1", "auth", "totp", "enroll"]).await?;
            show(json, enrollment, |e: api::TotpEnrollment| {
                println!("secret  {}", e.secret);
                println!("url     {}", e.otpauth_url);
                println!("Load it into your authenticator app, then run:");
                println!("  kura totp confirm --code <CODE>");
            })
        }
        TotpCommand::Confirm { secret, code, password_stdin } => {
            let password = if password_stdin {
                secrets::read_password_stdin()?
            } else {
                secrets::prompt_password(&format!("Password (to confirm) at {}: ", client.server()))?
            };
            let body = api::TotpConfirmRequest { secret, code, password: password.expose().to_owned() };
            client.post(&["api", "v1", "auth", "totp", "confirm"], &body).await?;
            done(json, "two-factor authentication is on; log in with --totp CODE from now on")
        }
    }
}
