//! What the commands that run Kura in this process rather than talk to it (`serve`, `operator
//! bootstrap`, `demo`) share: the configuration from the command line and the environment,
//! opening the store, and logging.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Result, anyhow};
use kura_server::{App, Clock, Config};

/// The embedded configuration under `data_dir`, with what the command line and the environment
/// change. The master key comes from `KURA_MASTER_KEY` when it is set.
pub fn config(
    data_dir: &Path,
    listen: Option<SocketAddr>,
    database_url: Option<String>,
    public_url: Option<String>,
) -> Result<Config> {
    let mut config = Config::embedded(data_dir);
    if let Some(listen) = listen {
        config.listen = listen;
        config.public_url = format!("http://{listen}");
    }
    if let Some(url) = database_url.filter(|u| !u.trim().is_empty()) {
        config.database_url = url;
    }
    if let Some(url) = public_url.filter(|u| !u.trim().is_empty()) {
        config.public_url = url.trim_end_matches('/').to_owned();
    }
    if let Some(name) = std::env::var("KURA_SERVER_NAME").ok().filter(|n| !n.trim().is_empty()) {
        config.server_name = name.trim().to_owned();
    }
    if let Some(key) = std::env::var("KURA_MASTER_KEY").ok().filter(|k| !k.trim().is_empty()) {
        config.master_key_hex = Some(key.trim().to_owned());
    }
    if let Some(k) =
        std::env::var("KURA_DISCLOSURE_K").ok().and_then(|k| k.trim().parse::<u64>().ok()).filter(|k| *k >= 1)
    {
        config.disclosure_k = k;
    }
    if let Some(secs) = std::env::var("KURA_PROVIDER_SYNC_INTERVAL_SECS")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|s| *s >= 1)
    {
        config.provider_sync_interval_secs = secs;
    }
    if let Ok(networks) = std::env::var("KURA_OUTBOUND_ALLOWED_NETWORKS") {
        config.outbound_allowed_networks = kura_server::outbound::parse_networks(&networks)
            .map_err(|e| anyhow!("KURA_OUTBOUND_ALLOWED_NETWORKS: {e}"))?;
    }
    Ok(config)
}

/// The database for people: the SQLite path, or the PostgreSQL host without credentials.
pub fn describe_database(url: &str) -> String {
    match url.strip_prefix("sqlite:") {
        Some(path) => format!("SQLite {}", path.trim_start_matches("//")),
        None => {
            let (scheme, rest) = url.split_once("://").unwrap_or(("database", url));
            let host_and_path = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme} {}", host_and_path.split('?').next().unwrap_or(""))
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (else `default`).
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

pub async fn open(config: Config) -> Result<App> {
    App::open(config, Clock::System).await.map_err(|e| anyhow!("cannot open the server's store: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn databases_are_described_without_credentials() {
        assert_eq!(describe_database("sqlite:/tmp/d/kura.db"), "SQLite /tmp/d/kura.db");
        assert_eq!(describe_database("postgres://kura:secret@db.local:5432/kura"), "postgres db.local:5432/kura");
        assert_eq!(describe_database("postgres://db.local/kura?sslmode=disable"), "postgres db.local/kura");
    }

    #[test]
    fn the_listen_address_sets_the_public_url_unless_given() {
        let dir = Path::new("/tmp/kura-config-test");
        let config = config(dir, Some("127.0.0.1:9999".parse().unwrap()), None, None).unwrap();
        assert_eq!(config.public_url, "http://127.0.0.1:9999");
        assert_eq!(config.database_url, "sqlite:/tmp/kura-config-test/kura.db");
        let config =
            super::config(dir, None, Some("postgres://h/db".into()), Some("https://kura.example/".into())).unwrap();
        assert_eq!(config.public_url, "https://kura.example");
        assert_eq!(config.database_url, "postgres://h/db");
    }
}
