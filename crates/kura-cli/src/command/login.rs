//! `kura login`: log in with a username and password and save the session.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;

use super::{Connection, connect_anonymously};
use crate::client::ApiFailure;
use crate::output;
use crate::secrets::{self, Secret};
use crate::session::{self, Session};

#[derive(Debug, Args)]
#[command(after_help = "Without --password-stdin the password is asked for on the terminal.\n\
    The session is saved to $KURA_SESSION or ~/.kura/session.json (mode 0600).")]
pub struct LoginArgs {
    #[command(flatten)]
    conn: Connection,
    #[arg(long)]
    username: String,
    /// Read the password from stdin.
    #[arg(long)]
    password_stdin: bool,
    /// The current one-time code, for accounts with two-factor authentication.
    #[arg(long, value_name = "CODE")]
    totp: Option<String>,
}

pub async fn run(args: LoginArgs) -> Result<ExitCode> {
    let client = connect_anonymously(&args.conn)?;
    let password = if args.password_stdin {
        secrets::read_password_stdin()?
    } else {
        secrets::prompt_password(&format!("Password for {} at {}: ", args.username, client.server()))?
    };
    let response = match client.login(&args.username, &password, args.totp.clone()).await {
        Ok(response) => response,
        Err(e) if e.downcast_ref::<ApiFailure>().is_some_and(|f| f.code == "totp_required") => {
            bail!("{e}; pass --totp CODE from your authenticator app");
        }
        Err(e) => return Err(e),
    };
    let path = session::default_path()?;
    let token = Secret::new(response.token);
    let saved = Session::new(
        client.server(),
        &token,
        Some(response.account.username.clone()),
        Some(response.expires_at.clone()),
    );
    session::save(&path, &saved)?;
    if args.conn.json {
        // The token stays in the session file; it is not printed.
        output::print_json(&json!({
            "account": response.account,
            "expires_at": response.expires_at,
            "server": client.server(),
            "session_file": path,
        }));
    } else {
        println!(
            "logged in to {} as {} ({}); the session lasts until {}",
            client.server(),
            response.account.username,
            response.account.kind,
            response.expires_at
        );
        println!("session saved to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
