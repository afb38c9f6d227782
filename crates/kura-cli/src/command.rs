//! The subcommands of `kura`, one file each: a command's clap arguments live beside its `run`
//! (`command/records.rs` holds `RecordsArgs`, `RecordsCommand` and `records::run`). `main.rs`
//! keeps only the top-level `Cli`, the `Command` enum and the dispatch.
//!
//! This module holds what the client commands share: the connection options (`--server`,
//! `--token`, `--json`, `--act-as`), resolving them against the session saved by `kura login`,
//! and printing an answer as JSON or for people. The in-process commands (`serve`, `demo`,
//! `operator`) share `--data-dir`.

pub mod account;
pub mod analysis;
pub mod audit;
pub mod client;
pub mod completions;
pub mod deid;
pub mod delegation;
pub mod demo;
pub mod events;
pub mod grant;
pub mod inbox;
pub mod link;
pub mod login;
pub mod logout;
pub mod open;
pub mod operator;
pub mod org;
pub mod patient;
pub mod peer;
pub mod prefs;
pub mod provider;
pub mod records;
pub mod register;
pub mod request;
pub mod search;
pub mod serve;
pub mod stats;
pub mod study;
pub mod totp;
pub mod webhook;
pub mod whoami;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::Value;

use crate::client::{Client, decode};
use crate::output;
use crate::secrets::{self, Secret};
use crate::session;

/// Where the server keeps its data and where its configuration file is. Every other setting
/// comes from the file, `KURA_*` environment variables or the command's flags
/// (`kura_server::settings`, docs/configuration.md).
#[derive(Debug, Args)]
pub struct DataDirArg {
    /// The data directory: SQLite database, blob folder and master key [default: ./kura-data,
    /// or data_dir in the file, or KURA_DATA_DIR].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A TOML configuration file (docs/configuration.md lists every setting).
    #[arg(long, env = "KURA_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl DataDirArg {
    /// The configuration from the file, the environment and `flags` (by setting name), in that
    /// order of precedence, lowest first; `--data-dir` is one of the flags.
    pub fn load(&self, mut flags: Vec<(&'static str, String)>) -> anyhow::Result<kura_server::Config> {
        if let Some(dir) = &self.data_dir {
            flags.insert(0, ("data_dir", dir.display().to_string()));
        }
        crate::local::config(self.config.clone(), flags)
    }
}

// ---------------------------------------------------------------------------------------------
// Client commands

/// How a client command reaches the server and who it is there.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection")]
pub struct Connection {
    /// The server's URL [default: the logged-in session's, else http://127.0.0.1:8080].
    #[arg(long, env = "KURA_SERVER", global = true, value_name = "URL")]
    server: Option<String>,
    /// A bearer token [default: the session saved by `kura login`].
    #[arg(long, env = "KURA_TOKEN", global = true, hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Print the server's JSON answer as is.
    #[arg(long, global = true)]
    json: bool,
}

/// For agents: act as a patient under a delegation.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection")]
pub struct ActAs {
    /// Act for this patient (account id) under your delegation (sends `kura-act-as`).
    #[arg(long, global = true, value_name = "PATIENT_ID")]
    act_as: Option<String>,
}

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The server to talk to and the token to send: flags and environment first, then the session
/// saved by `kura login` (whose token is only used with the server it came from).
fn resolve(conn: &Connection) -> Result<(String, Option<Secret>)> {
    let saved = if conn.server.is_none() || conn.token.is_none() {
        match session::default_path() {
            Ok(path) => session::load(&path)?,
            Err(_) => None,
        }
    } else {
        None
    };
    let server = conn
        .server
        .as_deref()
        .map(session::normalise_server)
        .or_else(|| saved.as_ref().map(|s| s.server.clone()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let token = match &conn.token {
        Some(token) => Some(Secret::new(token.trim())),
        None => saved.filter(|s| s.is_for(&server)).map(|s| s.token()),
    };
    Ok((server, token))
}

/// A client that sends the caller's token (and `kura-act-as` when given).
pub fn connect(conn: &Connection, act_as: Option<&ActAs>) -> Result<Client> {
    let (server, token) = resolve(conn)?;
    let Some(token) = token else {
        bail!("not logged in to {server}: run `kura login --username NAME`, or pass --token (or set KURA_TOKEN)");
    };
    Ok(Client::new(&server, Some(token))?.acting_as(act_as.and_then(|a| a.act_as.clone())))
}

/// A client without credentials (logging in, registering).
fn connect_anonymously(conn: &Connection) -> Result<Client> {
    let (server, _) = resolve(conn)?;
    Client::new(&server, None)
}

/// Prints the answer as JSON, or hands it, decoded, to `human`.
pub fn show<T: serde::de::DeserializeOwned>(json: bool, value: Value, human: impl FnOnce(T)) -> Result<ExitCode> {
    if json {
        if !value.is_null() {
            output::print_json(&value);
        }
    } else {
        human(decode(value)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// For answers without a body: the JSON mode prints nothing, people get `message`.
pub fn done(json: bool, message: &str) -> Result<ExitCode> {
    if !json {
        println!("{message}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A password from stdin, or a generated one (and whether it was generated).
fn password_from(password_stdin: bool) -> Result<(Secret, bool)> {
    if password_stdin {
        Ok((secrets::read_password_stdin()?, false))
    } else {
        Ok((secrets::generate_password()?, true))
    }
}

/// Shows a generated password once: on stdout for people, on stderr beside `--json` output.
fn show_generated_password(json: bool, password: &Secret) {
    if json {
        eprintln!("generated password (shown once): {}", password.expose());
    } else {
        println!("password: {}  (generated; shown once)", password.expose());
    }
}
