//! `kura serve`: the server in this process, on an empty or existing data directory.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::Args;

use super::DataDirArg;
use crate::local::{config, describe_database, init_logging, open};

#[derive(Debug, Args)]
#[command(after_help = "The master key is read from KURA_MASTER_KEY (64 hex digits) when set, else from \
    (or created in) DIR/master.key. KURA_SERVER_NAME names this server to peers and in exported \
    archives (default kura). Research counts below KURA_DISCLOSURE_K people (default 10) are \
    not disclosed. Linked external providers are pulled when their last sync is older than \
    KURA_PROVIDER_SYNC_INTERVAL_SECS (default 21600, six hours). Webhooks, external providers and \
    peers on loopback, private, link-local and other non-public addresses are refused unless \
    KURA_OUTBOUND_ALLOWED_NETWORKS allows their network (comma-separated, such as \
    10.20.0.0/16,127.0.0.1; also read by demo). Logs go to stderr; set RUST_LOG (default info).")]
pub struct ServeArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// The address to listen on.
    #[arg(long, env = "KURA_LISTEN", default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: SocketAddr,
    /// `sqlite:PATH` or `postgres://...` (default: SQLite at DIR/kura.db).
    #[arg(long, env = "KURA_DATABASE_URL", hide_env_values = true, value_name = "URL")]
    database_url: Option<String>,
    /// The URL clients reach this server at (default: http://<listen>).
    #[arg(long, env = "KURA_PUBLIC_URL", value_name = "URL")]
    public_url: Option<String>,
}

/// `kura serve`.
pub async fn run(args: ServeArgs) -> Result<ExitCode> {
    init_logging("info");
    let config = config(&args.data.data_dir, Some(args.listen), args.database_url, args.public_url)?;
    let database = describe_database(&config.database_url);
    let data_dir = config.data_dir.clone();
    let public_url = config.public_url.clone();
    let app = open(config).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr().unwrap_or(args.listen);
    println!("Kura is listening on http://{address} (public URL {public_url})");
    println!("data directory {}, database {database}; stop with Ctrl-C", data_dir.display());
    tracing::info!(%address, "serving");
    kura_server::serve_on(app, listener).await.map_err(|e| anyhow!(e))?;
    Ok(ExitCode::SUCCESS)
}
