//! The SQL metadata store: SQLite (the embedded default) and PostgreSQL, through sqlx's `Any`
//! driver so that one implementation of [`kura_store::Store`] serves both.
//!
//! Only this crate knows SQL. The two backends differ in their migrations (one folder each,
//! append-only) and in connection set-up; queries are written in the common dialect with `$n`
//! placeholders. Driver errors never leave this crate: they become [`StoreError`]s.

mod access;
mod accounts;
mod analysis;
mod archive;
mod audit;
mod audit_chain;
mod cache;
mod dialect;
mod direct;
mod disclosure;
mod grants;
mod index_changes;
mod inserts;
mod ledger;
mod login;
mod notices;
mod peers;
mod providers;
mod record_rows;
mod records;
mod research;
mod rows;
mod sealed;
mod sealed_keys;
mod writes;

use std::sync::Arc;
use std::time::Duration;

use kura_store::StoreError;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::Invalid("database URL: use sqlite:PATH or postgres://..."))
        }
    }
}

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// SQLite admits one writer at a time; writers queue here instead of failing with
    /// `SQLITE_BUSY`. PostgreSQL serialises on the audit head row instead.
    write_lock: Option<Arc<tokio::sync::Mutex<()>>>,
    /// SQLite only: the synchronous path of the hot reads and the audit group commits
    /// (`direct.rs`).
    direct: Option<Arc<direct::Direct>>,
    /// SQLite only: the rows every request reads, kept between requests (`cache.rs`).
    cache: Option<Arc<cache::ReadCache>>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

impl SqlStore {
    /// Connects to `url` (`sqlite:PATH` or `postgres://...`) and applies pending migrations.
    /// SQLite runs in WAL mode with `synchronous=FULL`, so an acknowledged write survives power
    /// loss.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        install_default_drivers();
        let backend = Backend::from_url(url)?;
        let url = match backend {
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = FULL",
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA busy_timeout = 10000",
                        ] {
                            conn.execute(pragma).await?;
                        }
                    }
                    Ok(())
                })
            });
        let pool = options.connect(&url).await.map_err(store_error)?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await.map_err(|e| StoreError::Backend(format!("migration failed: {e}")))?;
        let write_lock = (backend == Backend::Sqlite).then(|| Arc::new(tokio::sync::Mutex::new(())));
        let direct = match backend {
            Backend::Sqlite => sqlite_file(&url)?.map(|path| direct::Direct::open(&path).map(Arc::new)).transpose()?,
            Backend::Postgres => None,
        };
        let cache = direct.is_some().then(|| Arc::new(cache::ReadCache::new()));
        Ok(Self { pool, backend, write_lock, direct, cache })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Direct access for tests that tamper with stored rows on purpose (audit verification).
    pub fn pool_for_tests(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The database file a `sqlite:` URL names; `None` for PostgreSQL and in-memory databases.
pub fn sqlite_database_file(url: &str) -> Result<Option<std::path::PathBuf>, StoreError> {
    match Backend::from_url(url)? {
        Backend::Sqlite => sqlite_file(url),
        Backend::Postgres => Ok(None),
    }
}

/// The file a SQLite URL names; `None` for an in-memory database (which other connections
/// cannot open, so it gets no direct path).
fn sqlite_file(url: &str) -> Result<Option<std::path::PathBuf>, StoreError> {
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Ok(None);
    }
    let options: sqlx::sqlite::SqliteConnectOptions =
        url.parse().map_err(|e| StoreError::Backend(format!("database URL: {e}")))?;
    Ok(Some(options.get_filename().to_owned()))
}

/// Maps a driver error to a [`StoreError`] without leaking driver types.
pub(crate) fn store_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict("already exists"),
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::Invalid("reference to a missing row"),
        _ => StoreError::Backend(e.to_string()),
    }
}

/// Creates an empty PostgreSQL database next to the one `base_url` names and returns its URL;
/// tests use one per test so that they never see each other's rows.
pub async fn create_scratch_database(base_url: &str) -> Result<(String, String), StoreError> {
    use sqlx::Connection;
    install_default_drivers();
    let (prefix, base_db, query) = split_database_url(base_url)?;
    let name = format!("{}_{}", base_db.chars().take(40).collect::<String>(), &uuid_like_suffix());
    let mut conn = sqlx::AnyConnection::connect(base_url).await.map_err(store_error)?;
    conn.execute(format!("CREATE DATABASE \"{name}\"").as_str()).await.map_err(store_error)?;
    conn.close().await.map_err(store_error)?;
    Ok((format!("{prefix}/{name}{query}"), name))
}

/// Drops a database made by [`create_scratch_database`], closing its connections.
pub async fn drop_scratch_database(base_url: &str, name: &str) -> Result<(), StoreError> {
    use sqlx::Connection;
    install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(base_url).await.map_err(store_error)?;
    conn.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str()).await.map_err(store_error)?;
    conn.close().await.map_err(store_error)
}

fn split_database_url(url: &str) -> Result<(String, String, String), StoreError> {
    let (without_query, query) = match url.split_once('?') {
        Some((u, q)) => (u, format!("?{q}")),
        None => (url, String::new()),
    };
    let (prefix, db) = without_query
        .rsplit_once('/')
        .filter(|(p, db)| p.contains("://") && !p.ends_with('/') && !db.is_empty())
        .ok_or(StoreError::Invalid("PostgreSQL URL: it must name a database, as in postgres://host/db"))?;
    let db_ok = db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !db_ok {
        return Err(StoreError::Invalid("database name: use letters, digits and _"));
    }
    Ok((prefix.to_owned(), db.to_owned(), query))
}

fn uuid_like_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}_{:x}{:x}", std::process::id(), nanos, COUNTER.fetch_add(1, Ordering::Relaxed))
}
