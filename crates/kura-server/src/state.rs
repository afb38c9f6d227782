//! The state every handler, service and background task shares ([`AppState`]), and how it is
//! built from the configuration: the data directory and its lock, the master key, the store,
//! the blob folder, the research indexes and the limits. Wiring it into a router and tasks is
//! `app.rs`'s job.

use std::sync::Arc;

use kura_store::Store;
use kura_store::blob::{BlobStore, FsBlobStore};
use kura_store::envelope::MasterKey;
use kura_store::model::Population;
use kura_store_sql::SqlStore;

use crate::auth::TokenKeys;
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::research_index::ResearchIndex;

/// Errors of the server's entry points are plain messages for the operator.
pub type StartResult<T> = Result<T, String>;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
    pub master: Arc<MasterKey>,
    pub tokens: Arc<TokenKeys>,
    /// This server's signing key (peer requests, archive manifests).
    pub identity: Arc<crate::identity::ServerIdentity>,
    pub clock: Clock,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Subjects findable by research search.
    pub index: Arc<ResearchIndex>,
    /// Subjects counted in statistics.
    pub statistics: Arc<ResearchIndex>,
    /// The member keys of the research organisations that analysed last, over `statistics`.
    pub org_keys: Arc<crate::analysis::OrgKeys>,
    /// Group commit for the audit entries of reads.
    pub reads_audit: Arc<crate::audit_batch::AuditBatcher>,
    /// Committed notifications, for live subscribers (SSE).
    pub events: tokio::sync::broadcast::Sender<kura_store::model::Notification>,
    /// For webhook deliveries, pulls from external providers and requests to peer servers.
    pub http: crate::outbound::OutboundClient,
    /// Fault injection points for tests of the peer move protocol; never armed in production.
    pub faults: Arc<crate::faults::Faults>,
    /// Permits for archive imports running at once (`Config::max_concurrent_imports`).
    pub imports: Arc<tokio::sync::Semaphore>,
    /// Upload bytes in memory, one permit per KiB (`Config::max_upload_bytes_in_flight`).
    pub upload_kib: Arc<tokio::sync::Semaphore>,
}

/// A state opened from a configuration, with what the app keeps beside it.
pub(crate) struct Opened {
    pub state: AppState,
    /// The concrete store behind `state.store` (to close it, and for tests).
    pub sql: SqlStore,
    /// The SQLite data directory's lock (see `data_dir.rs`).
    pub data_dir_lock: crate::data_dir::DataDirLock,
}

impl AppState {
    /// Opens (and migrates) the store, the blob folder and the master key, and builds the
    /// research indexes.
    pub(crate) async fn open(config: Config, clock: Clock) -> StartResult<Opened> {
        crate::data_dir::create_private_dir(&config.data_dir)?;
        let sqlite_file = kura_store_sql::sqlite_database_file(&config.database_url).map_err(|e| e.to_string())?;
        // Only a SQLite server keeps rows in memory between requests and relies on being the
        // file's only writer; servers sharing a PostgreSQL database are meant to.
        let data_dir_lock = match &sqlite_file {
            Some(_) => crate::data_dir::DataDirLock::acquire(&config.data_dir)?,
            None => crate::data_dir::DataDirLock::none(),
        };
        let master = match &config.master_key_hex {
            Some(hex) => MasterKey::from_hex(hex),
            None => MasterKey::load_or_create(&config.data_dir.join("master.key")),
        }
        .map_err(|e| e.to_string())?;
        if let Some(file) = &sqlite_file {
            crate::data_dir::prepare_private_database_file(file)?;
        }
        let sql = SqlStore::connect(&config.database_url).await.map_err(|e| e.to_string())?;
        if let Some(file) = &sqlite_file {
            crate::data_dir::make_database_files_private(file)?;
        }
        let key_check = crate::data_dir::master_key_check_value(&master);
        if !sql.check_master_key(&key_check).await.map_err(|e| e.to_string())? {
            sql.close().await;
            return Err("the database was initialised with another master key; start the server with the key it \
                 was created with (KURA_MASTER_KEY or DATA_DIR/master.key)"
                .to_owned());
        }
        let blobs = FsBlobStore::new(config.data_dir.join("blobs")).map_err(|e| e.to_string())?;
        let tokens = TokenKeys::new(&master);
        let identity = crate::identity::ServerIdentity::new(&master);
        let index = ResearchIndex::build(&sql, Population::Discoverable)
            .await
            .map_err(|e| format!("cannot build the research index: {e}"))?;
        let statistics = ResearchIndex::build(&sql, Population::Statistics)
            .await
            .map_err(|e| format!("cannot build the statistics index: {e}"))?;
        let (events, _) = tokio::sync::broadcast::channel(1024);
        let http = crate::outbound::OutboundClient::new(&config.outbound_allowed_networks)?;
        let most_permits = tokio::sync::Semaphore::MAX_PERMITS;
        let config_imports = config.max_concurrent_imports.clamp(1, most_permits);
        // One upload of the largest size must always fit.
        let upload_kib =
            config.max_upload_bytes_in_flight.max(config.max_upload_bytes).div_ceil(1024).min(most_permits);
        let store: Arc<dyn Store> = Arc::new(sql.clone());
        let reads_audit = Arc::new(crate::audit_batch::AuditBatcher::start(Arc::clone(&store)));
        let state = AppState {
            store,
            blobs: Arc::new(blobs),
            master: Arc::new(master),
            tokens: Arc::new(tokens),
            identity: Arc::new(identity),
            clock,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            index: Arc::new(index),
            statistics: Arc::new(statistics),
            org_keys: Arc::default(),
            reads_audit,
            events,
            http,
            faults: Arc::default(),
            imports: Arc::new(tokio::sync::Semaphore::new(config_imports)),
            upload_kib: Arc::new(tokio::sync::Semaphore::new(upload_kib)),
        };
        Ok(Opened { state, sql, data_dir_lock })
    }
}
