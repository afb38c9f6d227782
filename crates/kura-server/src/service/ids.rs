//! New ids: time-ordered UUIDs (v7) for every row this server creates.

use kura_core::ids::{AccountId, GrantId, OrgId, RecordId, TransferId};

use super::error::{ServiceError, ServiceResult};

pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A fresh id of a kind that parses from [`new_id`]'s text (a UUID always does).
fn fresh<T>(parse: impl FnOnce(&str) -> Result<T, kura_core::ids::InvalidId>) -> ServiceResult<T> {
    parse(&new_id()).map_err(|_| ServiceError::Internal)
}

pub fn new_record_id() -> ServiceResult<RecordId> {
    fresh(RecordId::parse)
}

pub fn new_grant_id() -> ServiceResult<GrantId> {
    fresh(GrantId::parse)
}

pub fn new_transfer_id() -> ServiceResult<TransferId> {
    fresh(TransferId::parse)
}

pub fn new_account_id() -> ServiceResult<AccountId> {
    fresh(AccountId::parse)
}

pub fn new_org_id() -> ServiceResult<OrgId> {
    fresh(OrgId::parse)
}
