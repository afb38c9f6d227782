//! Accounts: the rules for usernames and passwords, password hashing, and making person
//! accounts, for the API's handlers and for the offline bootstrap of the first operator.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, SaltString};
use kura_core::ids::OrgId;
use kura_core::party::AccountKind;
use kura_store::model::{Account, NewAudit};

use super::error::{ServiceError, ServiceResult};
use super::ids;
use crate::state::AppState;

pub fn hash_password(password: &str) -> ServiceResult<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|_| ServiceError::Internal)?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| ServiceError::Internal)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| ServiceError::Internal)
}

pub fn check_password_rules(password: &str) -> ServiceResult<()> {
    if password.chars().count() < 10 || password.len() > 1024 {
        return Err(ServiceError::Invalid("a password must have between 10 and 1024 characters".into()));
    }
    Ok(())
}

pub fn check_username(username: &str) -> ServiceResult<()> {
    let ok = (3..=64).contains(&username.len())
        && username.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !ok {
        return Err(ServiceError::Invalid("a username has 3 to 64 letters, digits or . _ - @".into()));
    }
    Ok(())
}

/// Builds a new person account after checking the username and password rules.
pub fn new_person(
    username: &str,
    password: &str,
    kind: AccountKind,
    org: Option<OrgId>,
    now: kura_core::time::Timestamp,
) -> ServiceResult<Account> {
    check_username(username)?;
    check_password_rules(password)?;
    Ok(Account {
        id: ids::new_account_id()?,
        username: username.to_owned(),
        password_hash: hash_password(password)?,
        kind,
        org,
        totp_secret: None,
        created_at: now,
    })
}

/// Creates the first operator (CLI bootstrap); refused once the username exists.
pub async fn bootstrap_operator(state: &AppState, username: &str, password: &str) -> ServiceResult<String> {
    let now = state.clock.now();
    let account = new_person(username, password, AccountKind::Operator, None, now)?;
    let audit = NewAudit {
        at: now,
        actor: "system".into(),
        on_behalf_of: String::new(),
        action: "operator_bootstrap".into(),
        record: None,
        grant: None,
        outcome: "done".into(),
        detail: format!("account:{}", account.id),
        subject: None,
    };
    state.store.create_account(&account, audit).await?;
    Ok(account.id.to_string())
}
