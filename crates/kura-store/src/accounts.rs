//! Organisations, accounts, machine clients and the links between patients and the local ids
//! institutions know them by.

use async_trait::async_trait;
use kura_core::ids::{AccountId, OrgId};
use kura_core::time::Timestamp;

use crate::StoreError;
use crate::model::*;

#[async_trait]
pub trait AccountStore: Send + Sync {
    async fn create_org(&self, org: &Org, audit: NewAudit) -> Result<(), StoreError>;
    async fn org(&self, id: &OrgId) -> Result<Option<Org>, StoreError>;
    async fn orgs(&self) -> Result<Vec<Org>, StoreError>;
    /// `Conflict` if the username is taken.
    async fn create_account(&self, account: &Account, audit: NewAudit) -> Result<(), StoreError>;
    async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError>;
    async fn account_by_username(&self, username: &str) -> Result<Option<Account>, StoreError>;
    async fn set_totp_secret(&self, id: &AccountId, secret: Option<&str>, audit: NewAudit) -> Result<(), StoreError>;
    async fn register_client(
        &self,
        account: &Account,
        client: &MachineClient,
        audit: NewAudit,
    ) -> Result<(), StoreError>;
    async fn client(&self, client_id: &str) -> Result<Option<MachineClient>, StoreError>;
    /// Records a client assertion's `jti`; `Conflict` if it was seen before (a replay).
    async fn use_assertion_id(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    // Patient links.
    async fn create_link_code(&self, code: &LinkCode, audit: NewAudit) -> Result<(), StoreError>;
    /// `NotFound` for an unknown, used or expired code; `Conflict` if the local id is already
    /// linked to another patient.
    async fn redeem_link_code(
        &self,
        code_hash: &str,
        patient: &AccountId,
        now: Timestamp,
        audit: NewAudit,
    ) -> Result<(OrgId, String), StoreError>;
    async fn linked_patient(&self, institution: &OrgId, mrn: &str) -> Result<Option<AccountId>, StoreError>;
    async fn links_of(&self, patient: &AccountId) -> Result<Vec<(OrgId, String)>, StoreError>;
}
