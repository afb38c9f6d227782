//! `kura serve`: the server in this process, on an empty or existing data directory.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::Args;

use super::DataDirArg;
use crate::local::{describe_database, init_logging, open};

#[derive(Debug, Args)]
#[command(after_help = "Every setting comes from, lowest precedence first: the defaults, the TOML file \
    of --config, KURA_<SETTING> environment variables (KURA_LISTEN, KURA_DATABASE_URL, \
    KURA_MASTER_KEY, KURA_DISCLOSURE_K, ...), then these flags; docs/configuration.md lists every \
    setting. A malformed value stops the server with an error naming the setting. The master key \
    is read from KURA_MASTER_KEY (64 hex digits) when set, else from (or created in) \
    DIR/master.key. Logs go to stderr; set RUST_LOG (default info).")]
pub struct ServeArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// The address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// `sqlite:PATH` or `postgres://...` [default: SQLite at DIR/kura.db].
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// The URL clients reach this server at [default: http://<listen>].
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
}

/// `kura serve`.
pub async fn run(args: ServeArgs) -> Result<ExitCode> {
    init_logging("info");
    let mut flags = Vec::new();
    flags.extend(args.listen.map(|a| ("listen", a.to_string())));
    flags.extend(args.database_url.map(|u| ("database_url", u)));
    flags.extend(args.public_url.map(|u| ("public_url", u)));
    let config = args.data.load(flags)?;
    let listen = config.listen;
    let database = describe_database(&config.database_url);
    let data_dir = config.data_dir.clone();
    let public_url = config.public_url.clone();
    let app = open(config).await?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr().unwrap_or(listen);
    println!("Kura is listening on http://{address} (public URL {public_url})");
    println!("data directory {}, database {database}; stop with Ctrl-C", data_dir.display());
    tracing::info!(%address, "serving");
    kura_server::serve_on(app, listener).await.map_err(|e| anyhow!(e))?;
    Ok(ExitCode::SUCCESS)
}
