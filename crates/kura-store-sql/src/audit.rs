//! The audit log (`kura_store::AuditStore`): appends on either path, the blocking writer the
//! server's read audit batcher calls from a thread of its own, and reading the log back.

use async_trait::async_trait;
use kura_core::ids::AccountId;
use kura_core::party::Party;
use kura_store::model::*;
use kura_store::{AuditStore, StoreError};

use crate::audit_chain::{append_audit_entries, append_audit_entries_direct};
use crate::rows::{self, get};
use crate::{Backend, SqlStore};

#[async_trait]
impl AuditStore for SqlStore {
    fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    async fn append_audit(&self, audit: NewAudit) -> Result<(), StoreError> {
        self.append_audits(std::slice::from_ref(&audit)).await
    }

    async fn append_audits(&self, audits: &[NewAudit]) -> Result<(), StoreError> {
        if self.direct.is_some() {
            let audits = audits.to_vec();
            return self.direct_transaction(move |conn| append_audit_entries_direct(conn, &audits), None).await;
        }
        let mut tx = self.begin_write().await?;
        append_audit_entries(tx.conn(), audits).await?;
        tx.commit().await
    }

    fn blocking_audit_writer(&self) -> Option<kura_store::BlockingAuditWriter> {
        let (direct, lock) = (self.direct.clone()?, self.write_lock.clone()?);
        Some(Box::new(move |audits: &[NewAudit]| {
            // The same writer lock as every other write, taken without a runtime: the caller is a
            // thread of its own (`blocking_lock` panics on a runtime's thread, as documented).
            let _writer = lock.blocking_lock();
            direct.write(|conn| append_audit_entries_direct(conn, audits))
        }))
    }

    async fn audit_entries(
        &self,
        patient: Option<&AccountId>,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        const COLUMNS: &str = "seq, at, actor, on_behalf_of, action, record_id, grant_id, outcome, detail, subject_patient, prev_hash, hash";
        let rows = match patient {
            Some(patient) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM audit_log WHERE seq > $1 AND (subject_patient = $2 OR actor = $3 \
                     OR on_behalf_of = $3) ORDER BY seq LIMIT $4"
                );
                self.fetch_all(
                    sqlx::query(&sql)
                        .bind(after_seq)
                        .bind(patient.as_str())
                        .bind(Party::Account(patient.clone()).to_text())
                        .bind(limit),
                )
                .await?
            }
            None => {
                let sql = format!("SELECT {COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2");
                self.fetch_all(sqlx::query(&sql).bind(after_seq).bind(limit)).await?
            }
        };
        rows.iter().map(rows::audit).collect()
    }

    async fn audit_head(&self) -> Result<(i64, Vec<u8>), StoreError> {
        let rows = self.fetch_all(sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")).await?;
        let row = rows.first().ok_or_else(|| StoreError::Corrupt("audit head missing".into()))?;
        Ok((get(row, "seq")?, get(row, "hash")?))
    }
}
