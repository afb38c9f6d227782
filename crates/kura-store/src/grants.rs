//! Grants an owner gives over its records (with the in-server copies made under them) and the
//! delegations that let an agent act for a patient.

use async_trait::async_trait;
use kura_core::ids::{AccountId, DelegationId, GrantId};
use kura_core::party::Party;
use kura_core::time::Timestamp;

use crate::StoreError;
use crate::model::*;

#[async_trait]
pub trait GrantStore: Send + Sync {
    async fn insert_grant(&self, grant: &GrantRow, audit: NewAudit) -> Result<(), StoreError>;
    async fn grant(&self, id: &GrantId) -> Result<Option<GrantRow>, StoreError>;
    /// Grants given by or to any of `parties`.
    async fn grants_involving(&self, parties: &[Party]) -> Result<Vec<GrantRow>, StoreError>;
    /// Revokes the grant and deletes the in-server copies made under it, in one transaction,
    /// with `notices_if_copies_destroyed` when any copy was. Returns the blob keys of the
    /// destroyed copies. `NotFound` if unknown, `Conflict` if already revoked.
    async fn revoke_grant(
        &self,
        id: &GrantId,
        at: Timestamp,
        audit: NewAudit,
        notices_if_copies_destroyed: &[Notification],
    ) -> Result<Vec<String>, StoreError>;
    /// Deletes copies whose grant is no longer in force at `now`; returns their blob keys.
    async fn sweep_copies(&self, now: Timestamp) -> Result<SweptCopies, StoreError>;

    // Delegations.
    /// Inserts a delegation with its audit entry and the notifications telling the patient.
    async fn insert_delegation(
        &self,
        delegation: &DelegationRow,
        audit: NewAudit,
        notifications: &[Notification],
    ) -> Result<(), StoreError>;
    /// The patient accepts a delegation awaiting them: it takes effect at `at`. `NotFound` when
    /// it is not pending (accepted, ended or revoked already).
    async fn accept_delegation(&self, id: &DelegationId, at: Timestamp, audit: NewAudit) -> Result<(), StoreError>;
    async fn delegation(&self, id: &DelegationId) -> Result<Option<DelegationRow>, StoreError>;
    /// Delegations where `account` is the agent or the patient.
    async fn delegations_involving(&self, account: &AccountId) -> Result<Vec<DelegationRow>, StoreError>;
    async fn revoke_delegation(&self, id: &DelegationId, at: Timestamp, audit: NewAudit) -> Result<(), StoreError>;
}
