//! How every capability reaches the database: writing transactions (the audit head taken first,
//! the SQLite writer lock and the read cache's bump), the synchronous SQLite write path, reads
//! through the read cache, and the reads on every request's path.

use std::sync::Arc;

use kura_store::StoreError;
use kura_store::model::NewAudit;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Transaction};

use crate::audit_chain::append_audit;
use crate::cache::{ReadCache, Shelf};
use crate::rows::Cells;
use crate::{SqlStore, store_error};

/// A writing transaction. On SQLite it also holds the in-process writer lock, released after
/// the transaction ends, and bumps the read cache's generation once its commit has landed.
pub(crate) struct WriteTx {
    tx: Transaction<'static, Any>,
    writer: Option<tokio::sync::OwnedMutexGuard<()>>,
    cache: Option<Arc<ReadCache>>,
}

impl WriteTx {
    pub(crate) fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        let Self { tx, writer, cache } = self;
        let Some(cache) = cache else {
            return tx.commit().await.map_err(store_error);
        };
        // On a task of its own: a caller that goes away mid-commit (a client hanging up) must
        // not skip the bump, or rows read before the commit landed could be served after it.
        tokio::spawn(async move {
            let done = tx.commit().await.map_err(store_error);
            cache.changed();
            drop(writer);
            done
        })
        .await
        .map_err(|e| StoreError::Backend(format!("commit: {e}")))?
    }
}

impl SqlStore {
    pub(crate) async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let writer = match &self.write_lock {
            Some(lock) => Some(Arc::clone(lock).lock_owned().await),
            None => None,
        };
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        // Taking the audit head first makes every writer wait its turn here: it keeps the audit
        // chain linear and, on SQLite, takes the write lock before any read of the transaction.
        sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1").execute(&mut *tx).await.map_err(store_error)?;
        Ok(WriteTx { tx, writer, cache: self.cache.clone() })
    }

    /// Runs `work` in one transaction on the synchronous SQLite path (`direct.rs`): one hop to
    /// the blocking pool for the whole transaction instead of one per statement. The writer lock
    /// goes with it, so it is held until the commit even if this future is dropped, and so is the
    /// read cache's bump. Only for SQLite; elsewhere it fails.
    pub(crate) async fn write_direct<T: Send + 'static>(
        &self,
        work: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.direct_transaction(work, self.cache.clone()).await
    }

    /// [`SqlStore::write_direct`] with the cache to bump after it: `None` for a transaction that
    /// writes only audit entries, which no cached row depends on.
    pub(crate) async fn direct_transaction<T: Send + 'static>(
        &self,
        work: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
        changes: Option<Arc<ReadCache>>,
    ) -> Result<T, StoreError> {
        let (Some(direct), Some(lock)) = (&self.direct, &self.write_lock) else {
            return Err(StoreError::Backend("the synchronous write path is SQLite's only".into()));
        };
        let writer = Arc::clone(lock).lock_owned().await;
        let direct = Arc::clone(direct);
        tokio::task::spawn_blocking(move || {
            let _writer = writer;
            let done = direct.write(work);
            if let Some(cache) = changes {
                cache.changed();
            }
            done
        })
        .await
        .map_err(|e| StoreError::Backend(format!("writer: {e}")))?
    }

    /// `read` through a shelf of the read cache (`cache.rs`) on SQLite: what `read` finds is filed
    /// under the generation taken before it ran. Without a cache (PostgreSQL), just `read`.
    pub(crate) async fn through_cache<K, V, Fut>(
        &self,
        shelf: fn(&ReadCache) -> &Shelf<K, V>,
        key: &K,
        read: impl FnOnce() -> Fut,
    ) -> Result<Option<V>, StoreError>
    where
        K: std::hash::Hash + Eq + Clone,
        V: Clone,
        Fut: std::future::Future<Output = Result<Option<V>, StoreError>>,
    {
        let Some(cache) = &self.cache else {
            return read().await;
        };
        let generation = cache.generation();
        if let Some(value) = shelf(cache).get(key, generation) {
            return Ok(Some(value));
        }
        let found = read().await?;
        if let Some(value) = &found {
            shelf(cache).put(key.clone(), generation, value.clone());
        }
        Ok(found)
    }

    /// The rows of a read-only query whose parameters are all text, each mapped by `map`: on
    /// SQLite through the synchronous path (no thread hop per query, `direct.rs`), on
    /// PostgreSQL through the pool. For the reads on every request's path.
    pub(crate) async fn read<T>(
        &self,
        sql: &str,
        binds: &[&str],
        map: impl Fn(&dyn Cells) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        if let Some(direct) = &self.direct {
            return direct.rows(sql, rusqlite::params_from_iter(binds), |row| map(row));
        }
        let query = binds.iter().fold(sqlx::query(sql), |q, b| q.bind(*b));
        self.fetch_all(query).await?.iter().map(|row| map(row)).collect()
    }

    /// One writing transaction: `update`, then `audit`. When `update` changed no row, nothing is
    /// written and the answer is `unchanged`.
    pub(crate) async fn update_with_audit<'q>(
        &self,
        update: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
        unchanged: StoreError,
        audit: &NewAudit,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let done = update.execute(tx.conn()).await.map_err(store_error)?;
        if done.rows_affected() == 0 {
            return Err(unchanged);
        }
        append_audit(tx.conn(), audit).await?;
        tx.commit().await
    }

    pub(crate) async fn fetch_all<'q>(
        &self,
        query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<Vec<AnyRow>, StoreError> {
        query.fetch_all(&self.pool).await.map_err(store_error)
    }
}
