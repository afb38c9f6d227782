//! Peer servers (issue 5): the operator's registry (`kura peer add/list/remove`) and the
//! patient's move-in token at the destination (`kura peer token`). The move itself is
//! `kura records move ID --peer NAME --peer-token TOKEN`, at the origin.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use kura_api_types as api;

use super::{Connection, connect, done, show};
use crate::output::Table;
use crate::secrets::Secret;

#[derive(Debug, Args)]
pub struct PeerArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: PeerCommand,
}

#[derive(Debug, Subcommand)]
enum PeerCommand {
    /// Register a peer server (operators): its requests are accepted, and owners can move
    /// records to it.
    #[command(after_help = "Example: kura peer add east --url https://east.example.org --key KEY\n\n\
        KEY is the public_key of the peer's GET /api/v1/server; check it with its operator. \
        The peer's operator registers this server the same way.")]
    Add {
        /// A short name: a-z, 0-9 and -.
        name: String,
        /// The peer's base URL.
        #[arg(long)]
        url: String,
        /// The peer's Ed25519 public key (base64url).
        #[arg(long)]
        key: String,
    },
    /// The registered peer servers (operators).
    List,
    /// Deregister a peer server (operators); refused while a move with it is unfinished.
    Remove { name: String },
    /// A one-time token (valid one hour) to receive a record moved from a peer into your account
    /// here (patients).
    Token,
}

/// A token given on the command line, kept out of `Debug` output.
pub fn secret_arg(raw: &str) -> Result<Secret, String> {
    let raw = raw.trim();
    if raw.is_empty() { Err("the token is empty".into()) } else { Ok(Secret::new(raw)) }
}

pub async fn run(args: PeerArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, None)?;
    let json = args.conn.json;
    match args.command {
        PeerCommand::Add { name, url, key } => {
            let request = api::PeerRequest { name, base_url: url, public_key: key };
            let created = client.post(&["api", "v1", "peers"], &request).await?;
            show(json, created, |p: api::PeerView| {
                println!("peer {} registered at {}", p.name, p.base_url);
                println!("Its requests are accepted when signed with key {}.", p.public_key);
                println!("The peer's operator registers this server too (its key: GET /api/v1/server here).");
            })
        }
        PeerCommand::List => {
            let list = client.get(&["api", "v1", "peers"]).await?;
            show(json, list, |list: api::PeerList| {
                let mut table = Table::new(["NAME", "URL", "PUBLIC KEY", "REGISTERED"]);
                for p in list.peers {
                    table.row(vec![p.name, p.base_url, p.public_key, p.created_at]);
                }
                table.print_or("no peer servers registered");
            })
        }
        PeerCommand::Remove { name } => {
            client.delete(&["api", "v1", "peers", &name]).await?;
            done(json, &format!("peer {name} deregistered; its requests are refused from now on"))
        }
        PeerCommand::Token => {
            let issued = client.post_empty(&["api", "v1", "peer-tokens"]).await?;
            if json {
                eprintln!("note: the token is in this answer only; it is not shown again");
            }
            show(json, issued, |t: api::PeerTokenResponse| {
                println!("token    {}", t.token);
                println!("expires  {}", t.expires_at);
                println!("Give it to the move order at the origin server, once:");
                println!("  kura records move RECORD --peer NAME --peer-token {}", t.token);
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    #[test]
    fn peers_are_added_by_name_and_tokens_need_nothing() {
        let cli = Cli::try_parse_from(["kura", "peer", "add", "east", "--url", "http://e:1", "--key", "K"]).unwrap();
        let Command::Peer(args) = cli.command else { panic!("not peer") };
        assert!(matches!(args.command, PeerCommand::Add { ref name, .. } if name == "east"));
        assert!(Cli::try_parse_from(["kura", "peer", "token"]).is_ok());
    }
}
