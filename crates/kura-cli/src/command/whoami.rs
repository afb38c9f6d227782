//! `kura whoami`: the account you are logged in as.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use kura_api_types as api;

use super::{Connection, connect, show};
use crate::output::or_dash;

#[derive(Debug, Args)]
pub struct WhoamiArgs {
    #[command(flatten)]
    conn: Connection,
}

fn print_account(account: &api::AccountView) {
    println!("username  {}", account.username);
    println!("kind      {}", account.kind);
    println!("id        {}", account.id);
    println!("org       {}", or_dash(account.org.as_deref()));
    println!("totp      {}", if account.totp_enabled { "on" } else { "off" });
}

pub async fn run(args: WhoamiArgs) -> Result<ExitCode> {
    let conn = args.conn;
    let client = connect(&conn, None)?;
    let me = client.get(&["api", "v1", "me"]).await?;
    show(conn.json, me, |account: api::AccountView| {
        println!("server    {}", client.server());
        print_account(&account);
    })
}
