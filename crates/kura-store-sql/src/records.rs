//! Records and their custody (`kura_store::RecordStore`): one transaction per change, with its
//! custody ledger and audit entries.

use async_trait::async_trait;
use kura_core::custody::CustodyEvent;
use kura_core::ids::{GrantId, OrgId, RecordId};
use kura_core::labels::Label;
use kura_core::party::Party;
use kura_core::policy::{Permit, RecordPolicyView};
use kura_store::model::*;
use kura_store::{GrantStore, RecordStore, StoreError};
use sqlx::AnyConnection;

use crate::audit_chain::{append_audit, append_audit_entries_direct};
use crate::dialect::placeholders;
use crate::index_changes::note_change;
use crate::inserts::{insert_grant_row, insert_notifications};
use crate::ledger::{insert_ledger, ledger_write};
use crate::record_rows::{
    destroy_copy, end_record_rows, insert_record_rows, record_writes, replace_parts_and_labels, replace_values,
};
use crate::rows::{self, get};
use crate::writes;
use crate::{SqlStore, sealed_keys, store_error};

impl SqlStore {
    /// An active record's content reference, if it has content.
    async fn read_content_ref(&self, record: &RecordId) -> Result<Option<ContentRef>, StoreError> {
        let found = self
            .read(
                "SELECT blob_key, wrapped_key, content_hash, size FROM records WHERE id = $1 AND state = 'active'",
                &[record.as_str()],
                |row| match (get::<Option<String>>(row, "blob_key")?, get::<Option<Vec<u8>>>(row, "wrapped_key")?) {
                    (Some(blob_key), Some(wrapped_key)) => Ok(Some(ContentRef {
                        blob_key,
                        wrapped_key,
                        content_hash: get::<Option<String>>(row, "content_hash")?.unwrap_or_default(),
                        size: get(row, "size")?,
                    })),
                    _ => Ok(None),
                },
            )
            .await?;
        Ok(found.into_iter().flatten().next())
    }
}

/// Inside a transfer's transaction (DESIGN.md I10): the grants of the previous owner over the
/// record end or pass to the patient, and every copy made under a grant that does not pass is
/// destroyed with its receipt. Returns the blobs to remove and whether any copy was destroyed.
async fn hand_grants_and_copies_over(
    conn: &mut AnyConnection,
    t: &TransferCommit,
) -> Result<(Vec<String>, bool), StoreError> {
    for carried in &t.carried_grants {
        insert_grant_row(conn, &carried.patients).await?;
        let new_grant = carried.patients.grant.id.as_str();
        sqlx::query(
            "UPDATE records SET held_under = $1, version = version + 1, updated_at = $2 WHERE derived_from = $3 \
             AND held_under = $4 AND state = 'active'",
        )
        .bind(new_grant)
        .bind(t.at.as_millis())
        .bind(t.record.as_str())
        .bind(carried.previous.as_str())
        .execute(&mut *conn)
        .await
        .map_err(store_error)?;
        sqlx::query(
            "UPDATE sealed_copies SET grant_id = $1, owner = $2 WHERE record_id = $3 AND grant_id = $4 \
             AND destroyed_at IS NULL",
        )
        .bind(new_grant)
        .bind(t.patient.to_text())
        .bind(t.record.as_str())
        .bind(carried.previous.as_str())
        .execute(&mut *conn)
        .await
        .map_err(store_error)?;
    }
    let ended = t.ended_grants.iter().chain(t.carried_grants.iter().filter(|c| c.end_previous).map(|c| &c.previous));
    for grant in ended {
        sqlx::query("UPDATE grants SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(t.at.as_millis())
            .bind(grant.as_str())
            .execute(&mut *conn)
            .await
            .map_err(store_error)?;
    }
    let copies = sqlx::query(
        "SELECT r.id, r.owner, r.held_under FROM records r JOIN grants g ON g.id = r.held_under \
         WHERE r.derived_from = $1 AND r.state = 'active' AND g.owner = $2",
    )
    .bind(t.record.as_str())
    .bind(t.institution.to_text())
    .fetch_all(&mut *conn)
    .await
    .map_err(store_error)?;
    let why = format!("custody of the copied record passed to the patient by transfer {}", t.transfer);
    let mut blobs = Vec::new();
    for copy in &copies {
        let id = rows::parse_id(&get::<String>(copy, "id")?, RecordId::parse)?;
        let owner = rows::party(&get::<String>(copy, "owner")?)?;
        let grant = rows::parse_id(&get::<String>(copy, "held_under")?, GrantId::parse)?;
        blobs.extend(destroy_copy(conn, &id, owner, Some(&grant), t.at, &why).await?);
    }
    // Copies the previous owner made for itself (as owner, under no grant) are copies of the
    // record too: custody of them does not stay behind.
    let own_copies = sqlx::query(
        "SELECT id, owner FROM records WHERE derived_from = $1 AND held_under IS NULL AND owner = $2 \
         AND state = 'active'",
    )
    .bind(t.record.as_str())
    .bind(t.institution.to_text())
    .fetch_all(&mut *conn)
    .await
    .map_err(store_error)?;
    for copy in &own_copies {
        let id = rows::parse_id(&get::<String>(copy, "id")?, RecordId::parse)?;
        blobs.extend(destroy_copy(conn, &id, t.institution.clone(), None, t.at, &why).await?);
    }
    let sealed = sealed_keys::destroy_for_transfer(conn, &t.record, &t.institution, t.at).await?;
    Ok((blobs, !copies.is_empty() || !own_copies.is_empty() || !sealed.is_empty()))
}

#[async_trait]
impl RecordStore for SqlStore {
    async fn insert_record(&self, record: &NewRecord, ledger: NewLedger, audit: NewAudit) -> Result<(), StoreError> {
        let mut writes = record_writes(record);
        writes.push(ledger_write(&record.id, &ledger));
        if self.direct.is_some() {
            return self
                .write_direct(move |conn| {
                    writes::run_direct(conn, &writes)?;
                    append_audit_entries_direct(conn, std::slice::from_ref(&audit))
                })
                .await;
        }
        let mut tx = self.begin_write().await?;
        writes::run(tx.conn(), &writes).await?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn record(&self, id: &RecordId) -> Result<Option<RecordRow>, StoreError> {
        self.through_cache(
            |c| &c.records,
            id,
            || async {
                let sql = format!("SELECT {} FROM records WHERE id = $1", rows::RECORD_COLUMNS);
                match self.read(&sql, &[id.as_str()], |r| rows::record(r)).await?.pop() {
                    Some(record) => Ok(Some(self.fill_record(record).await?)),
                    None => Ok(None),
                }
            },
        )
        .await
    }

    async fn policy_view(&self, record: &RecordRow) -> Result<RecordPolicyView, StoreError> {
        let owner = record.owner.to_text();
        let grants = self
            .through_cache(
                |c| &c.grants,
                &owner,
                || async {
                    let sql = format!(
                        "SELECT {} FROM grants WHERE owner = $1 AND revoked_at IS NULL ORDER BY id",
                        rows::GRANT_COLUMNS
                    );
                    Ok(Some(self.read(&sql, &[&owner], |r| rows::grant(r).map(|g| g.grant)).await?))
                },
            )
            .await?
            .unwrap_or_default();
        let held_under = match &record.held_under {
            Some(id) => {
                Some(self.grant(id).await?.ok_or_else(|| StoreError::Corrupt("copy without its grant".into()))?.grant)
            }
            None => None,
        };
        Ok(RecordPolicyView {
            id: record.id.clone(),
            owner: record.owner.clone(),
            state: record.state,
            categories: record.categories(),
            labels: record.labels.clone(),
            grants,
            held_under,
        })
    }

    async fn candidate_records(&self, parties: &[Party], labels: &[Label]) -> Result<Vec<RecordRow>, StoreError> {
        if parties.is_empty() {
            return Ok(Vec::new());
        }
        let n = parties.len();
        let mut sql = format!(
            "SELECT {} FROM records r WHERE r.state = 'active' AND (r.owner IN ({}) OR r.owner IN \
             (SELECT g.owner FROM grants g WHERE g.revoked_at IS NULL AND g.grantee IN ({})))",
            rows::RECORD_COLUMNS,
            placeholders(1, n),
            placeholders(n + 1, n),
        );
        for i in 0..labels.len() {
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM record_labels l WHERE l.record_id = r.id AND l.label = ${})",
                2 * n + 1 + i
            ));
        }
        sql.push_str(" ORDER BY r.created_at, r.id");
        let texts: Vec<String> = parties.iter().map(Party::to_text).collect();
        let mut query = sqlx::query(&sql);
        for text in texts.iter().chain(texts.iter()) {
            query = query.bind(text.as_str());
        }
        for label in labels {
            query = query.bind(label.as_str());
        }
        let rows = self.fetch_all(query).await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            records.push(self.fill_record(rows::record(row)?).await?);
        }
        Ok(records)
    }

    async fn content_ref(&self, permit: &Permit) -> Result<ContentRef, StoreError> {
        self.through_cache(|c| &c.contents, permit.record(), || self.read_content_ref(permit.record()))
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn ledger(&self, record: &RecordId) -> Result<Vec<LedgerEntry>, StoreError> {
        let rows = self
            .fetch_all(
                sqlx::query(
                    "SELECT seq, record_id, event, from_owner, to_owner, transfer_id, actor, at, note \
                     FROM custody_ledger WHERE record_id = $1 ORDER BY seq",
                )
                .bind(record.as_str()),
            )
            .await?;
        rows.iter().map(rows::ledger_entry).collect()
    }

    async fn apply_transfer(&self, t: &TransferCommit) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT blob_key, version, state, owner FROM records WHERE id = $1")
            .bind(t.record.as_str())
            .fetch_optional(tx.conn())
            .await
            .map_err(store_error)?
            .ok_or(StoreError::NotFound)?;
        let unchanged = get::<i64>(&row, "version")? == t.expected_version
            && get::<String>(&row, "state")? == "active"
            && get::<String>(&row, "owner")? == t.institution.to_text();
        if !unchanged {
            return Err(StoreError::Conflict("the record changed concurrently; nothing was applied"));
        }
        let old_blob: Option<String> = get(&row, "blob_key")?;
        let mut dead_blobs = Vec::new();
        let new_content = t.split.as_ref().map(|s| &s.staying_content).or(t.whole_content.as_ref());
        let new_owner = if t.split.is_some() { &t.institution } else { &t.patient };
        let provenance_note = match &t.split {
            Some(split) => format!("; split at transfer {}: parts moved to record {}", t.transfer, split.moving.id),
            None => format!("; transferred to the patient by transfer {}", t.transfer),
        };
        let mut update = sqlx::query(
            "UPDATE records SET owner = $1, version = version + 1, updated_at = $2, provenance = provenance || $3, \
             blob_key = COALESCE($4, blob_key), wrapped_key = COALESCE($5, wrapped_key), \
             content_hash = COALESCE($6, content_hash), size = COALESCE($7, size) WHERE id = $8 AND version = $9",
        )
        .bind(new_owner.to_text())
        .bind(t.at.as_millis())
        .bind(provenance_note);
        update = match new_content {
            Some(c) => update
                .bind(Some(c.blob_key.clone()))
                .bind(Some(c.wrapped_key.clone()))
                .bind(Some(c.content_hash.clone()))
                .bind(Some(c.size)),
            None => update.bind(None::<String>).bind(None::<Vec<u8>>).bind(None::<String>).bind(None::<i64>),
        };
        let updated =
            update.bind(t.record.as_str()).bind(t.expected_version).execute(tx.conn()).await.map_err(store_error)?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::Conflict("the record changed concurrently; nothing was applied"));
        }
        if new_content.is_some() {
            dead_blobs.extend(old_blob);
        }
        match &t.split {
            Some(split) => {
                replace_parts_and_labels(tx.conn(), &t.record, &split.staying_parts, &split.staying_labels).await?;
                replace_values(tx.conn(), &t.record, &split.staying_values).await?;
                insert_record_rows(tx.conn(), &split.moving).await?;
                let ledger = NewLedger {
                    event: CustodyEvent::SplitOff,
                    from_owner: Some(t.institution.clone()),
                    to_owner: t.patient.clone(),
                    transfer: Some(t.transfer.clone()),
                    actor: t.actor.clone(),
                    at: t.at,
                    note: format!("split from record {}", t.record),
                };
                insert_ledger(tx.conn(), &split.moving.id, &ledger).await?;
            }
            None => {
                let ledger = NewLedger {
                    event: CustodyEvent::Transferred,
                    from_owner: Some(t.institution.clone()),
                    to_owner: t.patient.clone(),
                    transfer: Some(t.transfer.clone()),
                    actor: t.actor.clone(),
                    at: t.at,
                    note: String::new(),
                };
                insert_ledger(tx.conn(), &t.record, &ledger).await?;
            }
        }
        if let Some(grant) = &t.retained_view {
            insert_grant_row(tx.conn(), grant).await?;
        }
        let (copy_blobs, copies_destroyed) = hand_grants_and_copies_over(tx.conn(), t).await?;
        dead_blobs.extend(copy_blobs);
        if copies_destroyed {
            insert_notifications(tx.conn(), &t.copies_destroyed_notice).await?;
        }
        let (institution, mrn): (String, String) = {
            let row = sqlx::query("SELECT institution, mrn FROM records WHERE id = $1")
                .bind(t.record.as_str())
                .fetch_one(tx.conn())
                .await
                .map_err(store_error)?;
            (get(&row, "institution")?, get(&row, "mrn")?)
        };
        let institution = rows::parse_id(&institution, OrgId::parse)?;
        for owner in [&t.institution, &t.patient] {
            let subject = kura_core::research::subject_of_record(owner, &institution, &mrn);
            note_change(tx.conn(), &subject, t.at).await?;
        }
        for audit in &t.audit {
            append_audit(tx.conn(), audit).await?;
        }
        tx.commit().await?;
        Ok(dead_blobs)
    }

    async fn end_record(
        &self,
        permit: &Permit,
        expected_version: i64,
        end: RecordEnd,
        ledger: NewLedger,
        audit: NewAudit,
        notifications: &[Notification],
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        let blob = end_record_rows(tx.conn(), permit.record(), Some(expected_version), &end, ledger.at).await?;
        insert_ledger(tx.conn(), permit.record(), &ledger).await?;
        insert_notifications(tx.conn(), notifications).await?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await?;
        Ok(blob)
    }
}
