//! The audit chain: appending entries inside the caller's transaction, on either path (sqlx or
//! the synchronous SQLite connection), each hashed onto the one before, with the patient each
//! entry is about.

use kura_core::audit::{AuditFields, entry_hash};
use kura_core::ids::RecordId;
use kura_core::party::Party;
use kura_store::StoreError;
use kura_store::model::*;
use sqlx::AnyConnection;

use crate::dialect::{insert_chunks, values_sql};
use crate::rows::{Cells, get};
use crate::store_error;

pub(crate) async fn append_audit(conn: &mut AnyConnection, audit: &NewAudit) -> Result<(), StoreError> {
    append_audit_entries(conn, std::slice::from_ref(audit)).await
}

/// Appends entries in order to the chain: the head is read once, every entry hashed onto the one
/// before, the rows inserted a chunk at a time and the head written once (a group commit of
/// read entries is then a handful of statements, not four per entry).
pub(crate) async fn append_audit_entries(conn: &mut AnyConnection, audits: &[NewAudit]) -> Result<(), StoreError> {
    if audits.is_empty() {
        return Ok(());
    }
    let head = sqlx::query(AUDIT_HEAD_SQL).fetch_one(&mut *conn).await.map_err(store_error)?;
    let mut chain = AuditChain::from_head(&head)?;
    for audit in audits {
        let subject = match known_subject(audit) {
            Known::Subject(subject) => subject,
            Known::Record(record) => {
                let row = sqlx::query(RECORD_SUBJECT_SQL)
                    .bind(record.as_str())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(store_error)?;
                row.map(|r| record_subject(&r)).transpose()?.flatten()
            }
        };
        chain.push(audit, subject);
    }
    for (start, rows) in insert_chunks(chain.rows.len()) {
        let sql = audit_insert_sql(rows);
        let mut query = sqlx::query(&sql);
        for row in &chain.rows[start..start + rows] {
            let f = &row.fields;
            query = query
                .bind(f.seq)
                .bind(f.at_millis)
                .bind(&f.actor)
                .bind(&f.on_behalf_of)
                .bind(&f.action)
                .bind(&f.record)
                .bind(&f.grant)
                .bind(&f.outcome)
                .bind(&f.detail)
                .bind(row.subject.as_deref())
                .bind(row.prev.to_vec())
                .bind(row.hash.to_vec());
        }
        query.execute(&mut *conn).await.map_err(store_error)?;
    }
    sqlx::query(AUDIT_HEAD_UPDATE_SQL)
        .bind(chain.seq)
        .bind(chain.prev.to_vec())
        .execute(&mut *conn)
        .await
        .map_err(store_error)?;
    Ok(())
}

/// [`append_audit_entries`] on a connection of the synchronous SQLite path (`direct.rs`), inside
/// the caller's transaction: the same statements, the same chain.
pub(crate) fn append_audit_entries_direct(conn: &rusqlite::Connection, audits: &[NewAudit]) -> Result<(), StoreError> {
    use crate::direct::backend;
    if audits.is_empty() {
        return Ok(());
    }
    let mut chain = {
        let mut statement = conn.prepare_cached(AUDIT_HEAD_SQL).map_err(backend)?;
        let mut rows = statement.query([]).map_err(backend)?;
        let head = rows.next().map_err(backend)?.ok_or_else(|| StoreError::Corrupt("audit head".into()))?;
        AuditChain::from_head(head)?
    };
    for audit in audits {
        let subject = match known_subject(audit) {
            Known::Subject(subject) => subject,
            Known::Record(record) => {
                let mut statement = conn.prepare_cached(RECORD_SUBJECT_SQL).map_err(backend)?;
                let mut rows = statement.query([record.as_str()]).map_err(backend)?;
                rows.next().map_err(backend)?.map(record_subject).transpose()?.flatten()
            }
        };
        chain.push(audit, subject);
    }
    // One cached single-row statement per entry: here a statement costs no round trip, and a
    // multi-row INSERT per batch size would be parsed again for most batches.
    let mut insert = conn.prepare_cached(&audit_insert_sql(1)).map_err(backend)?;
    for row in &chain.rows {
        let f = &row.fields;
        insert
            .execute(rusqlite::params![
                f.seq,
                f.at_millis,
                f.actor,
                f.on_behalf_of,
                f.action,
                f.record,
                f.grant,
                f.outcome,
                f.detail,
                row.subject,
                row.prev.as_slice(),
                row.hash.as_slice(),
            ])
            .map_err(backend)?;
    }
    conn.prepare_cached(AUDIT_HEAD_UPDATE_SQL)
        .and_then(|mut s| s.execute(rusqlite::params![chain.seq, chain.prev.to_vec()]))
        .map_err(backend)?;
    Ok(())
}

const AUDIT_HEAD_SQL: &str = "SELECT seq, hash FROM audit_head WHERE id = 1";

const AUDIT_HEAD_UPDATE_SQL: &str = "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1";

const AUDIT_COLUMNS: usize = 12;

fn audit_insert_sql(rows: usize) -> String {
    values_sql(
        "INSERT INTO audit_log (seq, at, actor, on_behalf_of, action, record_id, grant_id, outcome, detail, \
         subject_patient, prev_hash, hash)",
        AUDIT_COLUMNS,
        rows,
        "",
    )
}

/// One entry about to be inserted.
struct ChainRow {
    fields: AuditFields,
    subject: Option<String>,
    prev: [u8; 32],
    hash: [u8; 32],
}

/// Entries hashed onto the chain's head, in order.
struct AuditChain {
    seq: i64,
    prev: [u8; 32],
    rows: Vec<ChainRow>,
}

impl AuditChain {
    fn from_head(head: &(impl Cells + ?Sized)) -> Result<Self, StoreError> {
        let prev: Vec<u8> = get(head, "hash")?;
        let prev = prev.try_into().map_err(|_| StoreError::Corrupt("audit head".into()))?;
        Ok(Self { seq: get(head, "seq")?, prev, rows: Vec::new() })
    }

    fn push(&mut self, audit: &NewAudit, subject: Option<String>) {
        self.seq += 1;
        let fields = AuditFields {
            seq: self.seq,
            at_millis: audit.at.as_millis(),
            actor: audit.actor.clone(),
            on_behalf_of: audit.on_behalf_of.clone(),
            action: audit.action.clone(),
            record: audit.record.as_ref().map(|r| r.to_string()).unwrap_or_default(),
            grant: audit.grant.as_ref().map(|g| g.to_string()).unwrap_or_default(),
            outcome: audit.outcome.clone(),
            detail: audit.detail.clone(),
            subject: subject.as_ref().map(|s| format!("account:{s}")).unwrap_or_default(),
        };
        let hash = entry_hash(&self.prev, &fields);
        self.rows.push(ChainRow { fields, subject, prev: self.prev, hash });
        self.prev = hash;
    }
}

/// The patient an audit entry is about: the one named, else the patient the record is about
/// (see [`record_subject`]), else the one an agent acted for. The record comes before the agent's
/// patient so that an agent's use of another patient's record (under that patient's grant)
/// lands in the record's patient's timeline; the agent's own patient finds the entry through
/// its `on_behalf_of` ([`kura_store::AuditStore::audit_entries`]).
enum Known<'a> {
    Subject(Option<String>),
    /// Known only from the record's row ([`RECORD_SUBJECT_SQL`], [`record_subject`]).
    Record(&'a RecordId),
}

fn known_subject(audit: &NewAudit) -> Known<'_> {
    if let Some(subject) = &audit.subject {
        return Known::Subject(Some(subject.to_string()));
    }
    if let Some(record) = &audit.record {
        return Known::Record(record);
    }
    match Party::from_text(&audit.on_behalf_of) {
        Some(Party::Account(patient)) => Known::Subject(Some(patient.to_string())),
        _ => Known::Subject(None),
    }
}

/// The record's owner, the patient linked to its local id, and for an in-server copy the owner
/// of the record it was copied from.
const RECORD_SUBJECT_SQL: &str = "SELECT r.owner, l.patient, s.owner AS source_owner FROM records r \
     LEFT JOIN records s ON r.held_under IS NOT NULL AND s.id = r.derived_from \
     LEFT JOIN patient_links l ON l.institution = r.institution AND l.mrn = r.mrn WHERE r.id = $1";

/// The patient a record is about: its owner if a patient owns it, else the patient linked to
/// its local id. An in-server copy is about the patient of the record it copies, whoever holds
/// it: a copy held by a personal account is not about that account (DESIGN.md I7).
fn record_subject(row: &(impl Cells + ?Sized)) -> Result<Option<String>, StoreError> {
    let owner = match get::<Option<String>>(row, "source_owner")? {
        Some(source_owner) => source_owner,
        None => get::<String>(row, "owner")?,
    };
    if let Some(Party::Account(owner)) = Party::from_text(&owner) {
        return Ok(Some(owner.to_string()));
    }
    get(row, "patient")
}
