//! `kura client`: machine clients of an organisation, which sign JWT assertions for tokens.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use kura_api_types as api;

use super::org::resolve_org;
use super::{Connection, connect, show};

#[derive(Debug, Args)]
pub struct ClientArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Register a machine client with its public key; it then signs JWT assertions for tokens.
    Register {
        /// The organisation (id or exact name).
        #[arg(long, value_name = "ORG")]
        org: String,
        /// The client's public key, PEM (SPKI).
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        #[arg(long, default_value = "ES384", value_parser = ["ES384", "ES256", "RS384", "RS256", "EdDSA"])]
        algorithm: String,
    },
}

pub async fn run(args: ClientArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, None)?;
    match args.command {
        ClientCommand::Register { org, public_key, algorithm } => {
            let public_key_pem = std::fs::read_to_string(&public_key)
                .with_context(|| format!("cannot read the public key {}", public_key.display()))?;
            let org = resolve_org(&client, &org).await?;
            let body = api::RegisterClientRequest { org, public_key_pem, algorithm };
            let registered = client.post(&["api", "v1", "clients"], &body).await?;
            show(args.conn.json, registered, |c: api::ClientView| {
                println!("client id       {}", c.client_id);
                println!("organisation    {}", c.org);
                println!("algorithm       {}", c.algorithm);
                println!("token endpoint  {}  (the aud of every assertion)", c.token_endpoint);
            })
        }
    }
}
