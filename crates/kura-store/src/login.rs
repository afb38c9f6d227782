//! Login hardening (issue 20): the login throttle shared by the servers of one database, and
//! TOTP enrolment and one-use codes.

use async_trait::async_trait;
use kura_core::ids::AccountId;
use kura_core::time::Timestamp;

use crate::StoreError;
use crate::model::*;

#[async_trait]
pub trait LoginStore: Send + Sync {
    /// Checks every rule's key and, when none is backing off, counts the attempt under each of
    /// them, atomically (parallel attempts see each other's counts). A refused attempt is not
    /// counted. Also forgets keys idle for longer than their window.
    async fn reserve_login_attempt(
        &self,
        rules: &[ThrottleRule],
        now: Timestamp,
    ) -> Result<ThrottleVerdict, StoreError>;
    /// After a successful login: forgets the account's key and takes the attempt back from the
    /// address's count.
    async fn login_succeeded(&self, account_key: &str, address_key: Option<&str>) -> Result<(), StoreError>;
    /// How many attempts a throttle key has counted (0 when it has none).
    async fn login_attempts(&self, key: &str) -> Result<i64, StoreError>;
    /// Stores the sealed TOTP secret the server generated for `id`, waiting for its first code.
    async fn set_totp_pending(&self, id: &AccountId, sealed_secret: &str, audit: NewAudit) -> Result<(), StoreError>;
    /// The sealed pending TOTP secret of `id`, if enrolment started.
    async fn totp_pending(&self, id: &AccountId) -> Result<Option<String>, StoreError>;
    /// Turns the second factor on: the pending secret (sealed) becomes the secret and `step`,
    /// the time step of the code that confirmed it, counts as used.
    async fn confirm_totp(
        &self,
        id: &AccountId,
        sealed_secret: &str,
        step: i64,
        audit: NewAudit,
    ) -> Result<(), StoreError>;
    /// Marks the TOTP time step `step` as used by `id`; `false` when it (or a later one) was
    /// used already, so that each code opens one login. `resealed`, when given, replaces the
    /// stored secret (a plaintext secret from before sealing, sealed now).
    async fn use_totp_step(&self, id: &AccountId, step: i64, resealed: Option<&str>) -> Result<bool, StoreError>;
}
