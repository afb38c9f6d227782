//! Wiring: the app over its state (`state.rs`), the router with its layers, the background
//! tasks (sweeper, webhook deliveries, provider pulls, move recovery), the offline bootstrap,
//! and serving.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use kura_store_sql::SqlStore;

use crate::clock::Clock;
use crate::config::Config;
use crate::state::{AppState, StartResult};

/// A running configuration of Kura: state plus router, before it listens anywhere.
#[derive(Clone)]
pub struct App {
    state: AppState,
    sql: SqlStore,
    /// The SQLite data directory's lock, held while this app lives (see `data_dir.rs`).
    data_dir_lock: Arc<crate::data_dir::DataDirLock>,
}

impl App {
    /// Opens (and migrates) the store, the blob folder and the master key.
    pub async fn open(config: Config, clock: Clock) -> StartResult<Self> {
        let opened = AppState::open(config, clock).await?;
        Ok(Self { state: opened.state, sql: opened.sql, data_dir_lock: Arc::new(opened.data_dir_lock) })
    }

    /// Closes the database connections and releases the data directory's lock, as the end of
    /// the process would; the app must not serve afterwards. Tests use it to restart on the same
    /// data.
    pub async fn close(&self) {
        self.sql.close().await;
        self.data_dir_lock.release();
    }

    pub fn router(&self) -> Router {
        let (router, _) = crate::routes::router(self.state.config.max_upload_bytes).split_for_parts();
        router
            .layer(axum::middleware::from_fn_with_state(self.state.clone(), crate::metrics::track))
            .layer(DefaultBodyLimit::max(1024 * 1024))
            .layer(axum::middleware::from_fn(crate::http_hygiene::harden))
            .with_state(self.state.clone())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn clock(&self) -> &Clock {
        &self.state.clock
    }

    pub fn store(&self) -> &SqlStore {
        &self.sql
    }

    pub fn config(&self) -> &Config {
        &self.state.config
    }

    /// Runs the sweeper once now (the background task does this every interval).
    pub async fn sweep_once(&self) -> Result<usize, String> {
        crate::sweeper::sweep(&self.state).await.map_err(|e| format!("{e:?}"))
    }

    /// Attempts the webhook deliveries that are due now (the background task does this every
    /// second).
    pub async fn deliver_webhooks_once(&self) -> Result<usize, String> {
        crate::webhooks::deliver_due(&self.state).await.map_err(|e| e.to_string())
    }

    /// Pulls the external providers whose last sync is older than `provider_sync_interval_secs`
    /// (the background task does this every minute); returns how many links were attempted.
    pub async fn sync_providers_once(&self) -> Result<usize, String> {
        crate::service::providers::sync_due(&self.state).await.map_err(|e| e.to_string())
    }

    /// Resolves every half-finished move to or from a peer now (the background task does this
    /// at start-up and then every sweep interval for moves older than two minutes); returns how
    /// many it looked at.
    pub async fn recover_moves_once(&self) -> Result<usize, String> {
        crate::service::peers::recover(&self.state, 0).await.map_err(|e| e.to_string())
    }

    /// Arms a fault injection point (tests only; see `faults.rs`): the next request reaching it
    /// stops there as if the process died.
    pub fn arm_fault(&self, point: &str) {
        self.state.faults.arm(point);
    }

    /// Creates the first operator account (bootstrap, offline).
    pub async fn create_operator(&self, username: &str, password: &str) -> Result<String, String> {
        crate::service::accounts::bootstrap_operator(&self.state, username, password).await.map_err(|e| e.to_string())
    }
}

/// Serves `app` on its configured address until Ctrl-C, with the sweeper running.
pub async fn serve(app: App) -> StartResult<()> {
    let listener = tokio::net::TcpListener::bind(app.config().listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", app.config().listen))?;
    serve_on(app, listener).await
}

/// Serves on an already bound listener (tests bind port 0).
pub async fn serve_on(app: App, listener: tokio::net::TcpListener) -> StartResult<()> {
    let sweeper = tokio::spawn(crate::sweeper::run(app.state.clone()));
    let deliveries = tokio::spawn(crate::webhooks::run(app.state.clone()));
    let provider_syncs = tokio::spawn(crate::service::providers::run(app.state.clone()));
    let moves = tokio::spawn(crate::service::peers::run(app.state.clone()));
    let router = app.router().into_make_service_with_connect_info::<std::net::SocketAddr>();
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| format!("server failed: {e}"));
    sweeper.abort();
    deliveries.abort();
    provider_syncs.abort();
    moves.abort();
    result
}
