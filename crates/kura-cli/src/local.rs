//! What the commands that run Kura in this process rather than talk to it (`serve`, `operator
//! bootstrap`, `demo`) share: the configuration (file, environment, flags),
//! opening the store, and logging.

use std::path::Path;

use anyhow::{Result, anyhow};
use kura_server::{App, Clock, Config};

/// The default data directory when neither a flag, the environment nor the file names one.
pub const DEFAULT_DATA_DIR: &str = "./kura-data";

/// The configuration: the embedded defaults under the data directory, then the file, the
/// `KURA_*` environment and the flags (by setting name). A malformed value is an error naming
/// the setting.
pub fn config(file: Option<std::path::PathBuf>, flags: Vec<(&'static str, String)>) -> Result<Config> {
    let layers = kura_server::settings::Layers::from_process(file, flags);
    Ok(kura_server::settings::load(Path::new(DEFAULT_DATA_DIR), &layers)?)
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
        let dir = "/tmp/kura-config-test".to_owned();
        let config = config(None, vec![("data_dir", dir.clone()), ("listen", "127.0.0.1:9999".into())]).unwrap();
        assert_eq!(config.public_url, "http://127.0.0.1:9999");
        assert_eq!(config.database_url, "sqlite:/tmp/kura-config-test/kura.db");
        let flags = vec![
            ("data_dir", dir),
            ("database_url", "postgres://h/db".into()),
            ("public_url", "https://kura.example/".into()),
        ];
        let config = super::config(None, flags).unwrap();
        assert_eq!(config.public_url, "https://kura.example");
        assert_eq!(config.database_url, "postgres://h/db");
    }
}
