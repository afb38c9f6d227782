//! Login hardening: the shared login throttle, TOTP enrolment and one-use codes, and the check
//! value of the master key a database was initialised with.

use async_trait::async_trait;
use kura_core::ids::AccountId;
use kura_core::time::Timestamp;
use kura_store::model::*;
use kura_store::{LoginStore, StoreError};
use sqlx::Row;

use crate::{SqlStore, store_error};

/// How many idle keys one attempt clears out at most, so that the table does not grow under a
/// spray of usernames and no single attempt pays for a large clean-up.
const IDLE_KEYS_CLEARED_PER_ATTEMPT: i64 = 50;

impl SqlStore {
    /// Compares `check_value` (derived from the server's master key) with the one this database
    /// was initialised with, storing it on first use. `false` when they differ: the database
    /// belongs to another master key.
    pub async fn check_master_key(&self, check_value: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO master_key_check (id, check_value) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
            .bind(check_value)
            .execute(tx.conn())
            .await
            .map_err(store_error)?;
        let stored: String = sqlx::query("SELECT check_value FROM master_key_check WHERE id = 1")
            .fetch_one(tx.conn())
            .await
            .map_err(store_error)?
            .try_get("check_value")
            .map_err(store_error)?;
        tx.commit().await?;
        Ok(stored == check_value)
    }
}

#[async_trait]
impl LoginStore for SqlStore {
    async fn reserve_login_attempt(
        &self,
        rules: &[ThrottleRule],
        now: Timestamp,
    ) -> Result<ThrottleVerdict, StoreError> {
        let now_ms = now.as_millis();
        // The write transaction takes the audit head row first (see `begin_write`): every reserving
        // transaction on this database, from any server, runs one after the other, so the check and
        // the count below cannot interleave with another attempt's.
        let mut tx = self.begin_write().await?;
        if let Some(widest) = rules.iter().map(|r| r.window_ms).max() {
            sqlx::query(
                "DELETE FROM login_throttle WHERE throttle_key IN \
                 (SELECT throttle_key FROM login_throttle WHERE last_attempt_at < $1 LIMIT $2)",
            )
            .bind(now_ms - widest)
            .bind(IDLE_KEYS_CLEARED_PER_ATTEMPT)
            .execute(tx.conn())
            .await
            .map_err(store_error)?;
        }
        let mut counted = Vec::with_capacity(rules.len());
        let mut retry_at: Option<i64> = None;
        for rule in rules {
            let row = sqlx::query(
                "SELECT attempts, last_attempt_at, next_allowed_at FROM login_throttle WHERE throttle_key = $1",
            )
            .bind(&rule.key)
            .fetch_optional(tx.conn())
            .await
            .map_err(store_error)?;
            let (attempts, next_allowed_at) = match row {
                Some(row) => {
                    let attempts: i64 = row.try_get("attempts").map_err(store_error)?;
                    let last: i64 = row.try_get("last_attempt_at").map_err(store_error)?;
                    let next: i64 = row.try_get("next_allowed_at").map_err(store_error)?;
                    if now_ms - last >= rule.window_ms { (0, 0) } else { (attempts, next) }
                }
                None => (0, 0),
            };
            if now_ms < next_allowed_at {
                retry_at = Some(retry_at.map_or(next_allowed_at, |r| r.max(next_allowed_at)));
            }
            counted.push(attempts + 1);
        }
        if let Some(retry_at) = retry_at {
            // Nothing was written: ending the transaction without a commit leaves the counts as
            // they were, so a refused attempt costs the attacker time without costing the account.
            return Ok(ThrottleVerdict::Refused { retry_at: Timestamp::from_millis(retry_at) });
        }
        for (rule, attempts) in rules.iter().zip(counted) {
            sqlx::query(
                "INSERT INTO login_throttle (throttle_key, attempts, last_attempt_at, next_allowed_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (throttle_key) DO UPDATE SET attempts = $2, \
                 last_attempt_at = $3, next_allowed_at = $4",
            )
            .bind(&rule.key)
            .bind(attempts)
            .bind(now_ms)
            .bind(now_ms.saturating_add(rule.delay_after(attempts)))
            .execute(tx.conn())
            .await
            .map_err(store_error)?;
        }
        tx.commit().await?;
        Ok(ThrottleVerdict::Allowed)
    }

    async fn login_succeeded(&self, account_key: &str, address_key: Option<&str>) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM login_throttle WHERE throttle_key = $1")
            .bind(account_key)
            .execute(tx.conn())
            .await
            .map_err(store_error)?;
        if let Some(address_key) = address_key {
            sqlx::query("UPDATE login_throttle SET attempts = attempts - 1 WHERE throttle_key = $1 AND attempts > 0")
                .bind(address_key)
                .execute(tx.conn())
                .await
                .map_err(store_error)?;
        }
        tx.commit().await
    }

    async fn login_attempts(&self, key: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT attempts FROM login_throttle WHERE throttle_key = $1")
            .bind(key)
            .fetch_optional(self.pool_for_tests())
            .await
            .map_err(store_error)?;
        row.map(|r| r.try_get::<i64, _>("attempts").map_err(store_error)).transpose().map(Option::unwrap_or_default)
    }

    async fn set_totp_pending(&self, id: &AccountId, sealed_secret: &str, audit: NewAudit) -> Result<(), StoreError> {
        let update = sqlx::query("UPDATE accounts SET totp_pending_secret = $1 WHERE id = $2")
            .bind(sealed_secret)
            .bind(id.as_str());
        self.update_with_audit(update, StoreError::NotFound, &audit).await
    }

    async fn totp_pending(&self, id: &AccountId) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT totp_pending_secret FROM accounts WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(self.pool_for_tests())
            .await
            .map_err(store_error)?;
        Ok(row
            .map(|r| r.try_get::<Option<String>, _>("totp_pending_secret").map_err(store_error))
            .transpose()?
            .flatten())
    }

    async fn confirm_totp(
        &self,
        id: &AccountId,
        sealed_secret: &str,
        step: i64,
        audit: NewAudit,
    ) -> Result<(), StoreError> {
        // Only the pending secret it was shown may be confirmed: a second enrolment started in the
        // meantime replaced it, and this confirmation then changes nothing.
        let update = sqlx::query(
            "UPDATE accounts SET totp_secret = $1, totp_pending_secret = NULL, totp_last_step = $2 \
             WHERE id = $3 AND totp_pending_secret = $1",
        )
        .bind(sealed_secret)
        .bind(step)
        .bind(id.as_str());
        self.update_with_audit(update, StoreError::Conflict("the enrolment changed; start it again"), &audit).await
    }

    async fn use_totp_step(&self, id: &AccountId, step: i64, resealed: Option<&str>) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        // One statement checks and marks the step, so two logins racing with one code cannot both
        // pass.
        let done = sqlx::query(
            "UPDATE accounts SET totp_last_step = $1, totp_secret = COALESCE($2, totp_secret) \
             WHERE id = $3 AND (totp_last_step IS NULL OR totp_last_step < $1)",
        )
        .bind(step)
        .bind(resealed)
        .bind(id.as_str())
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }
}
