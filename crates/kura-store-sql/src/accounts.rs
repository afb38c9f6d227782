//! Organisations, accounts, machine clients and patient links (`kura_store::AccountStore`).

use async_trait::async_trait;
use kura_core::ids::{AccountId, OrgId};
use kura_core::time::Timestamp;
use kura_store::model::*;
use kura_store::{AccountStore, StoreError};
use sqlx::AnyConnection;

use crate::audit_chain::append_audit;
use crate::index_changes::note_change;
use crate::inserts::insert_org_row;
use crate::rows::{self, get};
use crate::{SqlStore, store_error};

#[async_trait]
impl AccountStore for SqlStore {
    async fn create_org(&self, org: &Org, audit: NewAudit) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        insert_org_row(tx.conn(), org, false).await?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn org(&self, id: &OrgId) -> Result<Option<Org>, StoreError> {
        let rows = self
            .fetch_all(sqlx::query("SELECT id, name, kind, created_at FROM orgs WHERE id = $1").bind(id.as_str()))
            .await?;
        rows.first().map(rows::org).transpose()
    }

    async fn orgs(&self) -> Result<Vec<Org>, StoreError> {
        let rows = self.fetch_all(sqlx::query("SELECT id, name, kind, created_at FROM orgs ORDER BY name, id")).await?;
        rows.iter().map(rows::org).collect()
    }

    async fn create_account(&self, account: &Account, audit: NewAudit) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        insert_account(tx.conn(), account).await?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        self.through_cache(
            |c| &c.accounts,
            id,
            || async {
                let sql = format!("SELECT {} FROM accounts WHERE id = $1", rows::ACCOUNT_COLUMNS);
                Ok(self.read(&sql, &[id.as_str()], |r| rows::account(r)).await?.pop())
            },
        )
        .await
    }

    async fn account_by_username(&self, username: &str) -> Result<Option<Account>, StoreError> {
        // Usernames are unique and found by their folded form (case, Unicode compatibility).
        let sql = format!("SELECT {} FROM accounts WHERE username_key = $1", rows::ACCOUNT_COLUMNS);
        let rows = self.fetch_all(sqlx::query(&sql).bind(kura_core::party::username_key(username))).await?;
        rows.first().map(rows::account).transpose()
    }

    async fn set_totp_secret(&self, id: &AccountId, secret: Option<&str>, audit: NewAudit) -> Result<(), StoreError> {
        let update = sqlx::query("UPDATE accounts SET totp_secret = $1 WHERE id = $2").bind(secret).bind(id.as_str());
        self.update_with_audit(update, StoreError::NotFound, &audit).await
    }

    async fn register_client(
        &self,
        account: &Account,
        client: &MachineClient,
        audit: NewAudit,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        insert_account(tx.conn(), account).await?;
        sqlx::query(
            "INSERT INTO machine_clients (client_id, account_id, org_id, public_key_pem, algorithm, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&client.client_id)
        .bind(client.account.as_str())
        .bind(client.org.as_str())
        .bind(&client.public_key_pem)
        .bind(&client.algorithm)
        .bind(client.created_at.as_millis())
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn client(&self, client_id: &str) -> Result<Option<MachineClient>, StoreError> {
        let rows = self
            .fetch_all(
                sqlx::query(
                    "SELECT client_id, account_id, org_id, public_key_pem, algorithm, created_at \
                     FROM machine_clients WHERE client_id = $1",
                )
                .bind(client_id),
            )
            .await?;
        rows.first().map(rows::machine_client).transpose()
    }

    async fn use_assertion_id(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM client_assertion_ids WHERE expires_at < $1")
            .bind(now.as_millis())
            .execute(tx.conn())
            .await
            .map_err(store_error)?;
        let inserted = sqlx::query(
            "INSERT INTO client_assertion_ids (client_id, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(client_id)
        .bind(jti)
        .bind(expires_at.as_millis())
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict("assertion id already used"));
        }
        tx.commit().await
    }

    async fn create_link_code(&self, code: &LinkCode, audit: NewAudit) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO link_codes (code_hash, institution, mrn, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&code.code_hash)
        .bind(code.institution.as_str())
        .bind(&code.mrn)
        .bind(code.expires_at.as_millis())
        .bind(code.created_at.as_millis())
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn redeem_link_code(
        &self,
        code_hash: &str,
        patient: &AccountId,
        now: Timestamp,
        audit: NewAudit,
    ) -> Result<(OrgId, String), StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT institution, mrn, expires_at, used_at FROM link_codes WHERE code_hash = $1")
            .bind(code_hash)
            .fetch_optional(tx.conn())
            .await
            .map_err(store_error)?
            .ok_or(StoreError::NotFound)?;
        let used_at: Option<i64> = get(&row, "used_at")?;
        if used_at.is_some() || get::<i64>(&row, "expires_at")? <= now.as_millis() {
            return Err(StoreError::NotFound);
        }
        let institution: String = get(&row, "institution")?;
        let mrn: String = get(&row, "mrn")?;
        let existing = sqlx::query("SELECT patient FROM patient_links WHERE institution = $1 AND mrn = $2")
            .bind(&institution)
            .bind(&mrn)
            .fetch_optional(tx.conn())
            .await
            .map_err(store_error)?;
        match existing {
            Some(row) if get::<String>(&row, "patient")? != patient.as_str() => {
                return Err(StoreError::Conflict("this local patient id is linked to another account"));
            }
            Some(_) => {}
            None => {
                sqlx::query("INSERT INTO patient_links (institution, mrn, patient, linked_at) VALUES ($1, $2, $3, $4)")
                    .bind(&institution)
                    .bind(&mrn)
                    .bind(patient.as_str())
                    .bind(now.as_millis())
                    .execute(tx.conn())
                    .await
                    .map_err(store_error)?;
            }
        }
        // The patient's choices now cover the institution's records of this MRN too.
        note_change(tx.conn(), &format!("local:{institution}:{mrn}"), now).await?;
        sqlx::query("UPDATE link_codes SET used_at = $1 WHERE code_hash = $2")
            .bind(now.as_millis())
            .bind(code_hash)
            .execute(tx.conn())
            .await
            .map_err(store_error)?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await?;
        Ok((rows::parse_id(&institution, OrgId::parse)?, mrn))
    }

    async fn linked_patient(&self, institution: &OrgId, mrn: &str) -> Result<Option<AccountId>, StoreError> {
        let rows = self
            .fetch_all(
                sqlx::query("SELECT patient FROM patient_links WHERE institution = $1 AND mrn = $2")
                    .bind(institution.as_str())
                    .bind(mrn),
            )
            .await?;
        rows.first().map(|r| rows::parse_id(&get::<String>(r, "patient")?, AccountId::parse)).transpose()
    }

    async fn links_of(&self, patient: &AccountId) -> Result<Vec<(OrgId, String)>, StoreError> {
        let rows = self
            .fetch_all(
                sqlx::query("SELECT institution, mrn FROM patient_links WHERE patient = $1 ORDER BY institution, mrn")
                    .bind(patient.as_str()),
            )
            .await?;
        rows.iter()
            .map(|r| Ok((rows::parse_id(&get::<String>(r, "institution")?, OrgId::parse)?, get(r, "mrn")?)))
            .collect()
    }
}

async fn insert_account(conn: &mut AnyConnection, account: &Account) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO accounts (id, username, password_hash, kind, org_id, totp_secret, created_at, username_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(account.id.as_str())
    .bind(&account.username)
    .bind(&account.password_hash)
    .bind(account.kind.as_str())
    .bind(account.org.as_ref().map(|o| o.to_string()))
    .bind(account.totp_secret.as_deref())
    .bind(account.created_at.as_millis())
    .bind(kura_core::party::username_key(&account.username))
    .execute(&mut *conn)
    .await
    .map_err(|e| match store_error(e) {
        StoreError::Conflict(_) => StoreError::Conflict("the username is taken"),
        other => other,
    })?;
    Ok(())
}
