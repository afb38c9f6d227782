//! A record's rows: inserting a record with its parts, labels and research values, replacing
//! them, ending a record (its data key destroyed), destroying an in-server copy with its
//! receipt, and reading a record's parts and labels back.

use std::collections::HashMap;

use kura_core::custody::CustodyEvent;
use kura_core::ids::{GrantId, RecordId};
use kura_core::labels::Label;
use kura_core::party::Party;
use kura_core::time::Timestamp;
use kura_store::StoreError;
use kura_store::model::*;
use sqlx::AnyConnection;

use crate::audit_chain::append_audit;
use crate::dialect::{IN_LIST_CHUNK, insert_chunks, placeholders, values_sql};
use crate::index_changes::{change_write, note_change_of_record};
use crate::ledger::insert_ledger;
use crate::rows::{self, get};
use crate::writes::{self, Write};
use crate::{SqlStore, sealed_keys, store_error};

pub(crate) async fn insert_record_rows(conn: &mut AnyConnection, record: &NewRecord) -> Result<(), StoreError> {
    writes::run(conn, &record_writes(record)).await
}

/// The statements that insert a record with its parts, labels and research values, and note
/// the change of its subject for the research index.
pub(crate) fn record_writes(record: &NewRecord) -> Vec<Write> {
    let mut writes = vec![
        Write::new(
            "INSERT INTO records (id, owner, institution, mrn, format, state, document_category, blob_key, \
             wrapped_key, content_hash, size, derived_from, provenance, held_under, subject_birth_day, version, \
             created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8, $9, $10, $11, $12, $13, $15, 1, $14, $14)",
        )
        .text(record.id.as_str())
        .text(record.owner.to_text())
        .text(record.institution.as_str())
        .text(&record.mrn)
        .text(record.format.as_str())
        .opt_text(record.document_category.map(|c| c.as_str()))
        .text(&record.content.blob_key)
        .bytes(record.content.wrapped_key.clone())
        .text(&record.content.content_hash)
        .int(record.content.size)
        .opt_text(record.derived_from.as_ref().map(|r| r.to_string()))
        .text(&record.provenance)
        .opt_text(record.held_under.as_ref().map(|g| g.to_string()))
        .int(record.created_at.as_millis())
        .opt_int(record.subject_birth_day.map(i64::from)),
    ];
    writes.extend(parts_and_labels_writes(&record.id, &record.parts, &record.labels));
    writes.extend(values_writes(&record.id, &record.values));
    if record.held_under.is_none() {
        let subject = kura_core::research::subject_of_record(&record.owner, &record.institution, &record.mrn);
        writes.push(change_write(&subject, record.created_at));
    }
    writes
}

pub(crate) async fn replace_parts_and_labels(
    conn: &mut AnyConnection,
    record: &RecordId,
    parts: &[StoredPart],
    labels: &[Label],
) -> Result<(), StoreError> {
    writes::run(conn, &parts_and_labels_writes(record, parts, labels)).await
}

fn parts_and_labels_writes(record: &RecordId, parts: &[StoredPart], labels: &[Label]) -> Vec<Write> {
    let mut writes = vec![
        Write::new("DELETE FROM record_parts WHERE record_id = $1").text(record.as_str()),
        Write::new("DELETE FROM record_labels WHERE record_id = $1").text(record.as_str()),
    ];
    for (start, rows) in insert_chunks(parts.len()) {
        let sql = values_sql("INSERT INTO record_parts (record_id, idx, category, resource_type)", 4, rows, "");
        writes.push(parts[start..start + rows].iter().fold(Write::new(sql), |write, part| {
            write
                .text(record.as_str())
                .int(i64::from(part.index))
                .text(part.category.as_str())
                .text(&part.resource_type)
        }));
    }
    for (start, rows) in insert_chunks(labels.len()) {
        let sql = values_sql("INSERT INTO record_labels (record_id, label)", 2, rows, "ON CONFLICT DO NOTHING");
        writes.push(
            labels[start..start + rows]
                .iter()
                .fold(Write::new(sql), |write, label| write.text(record.as_str()).text(label.as_str())),
        );
    }
    writes
}

pub(crate) async fn replace_values(
    conn: &mut AnyConnection,
    record: &RecordId,
    values: &[StoredValue],
) -> Result<(), StoreError> {
    writes::run(conn, &values_writes(record, values)).await
}

pub(crate) fn values_writes(record: &RecordId, values: &[StoredValue]) -> Vec<Write> {
    let mut writes = vec![Write::new("DELETE FROM record_values WHERE record_id = $1").text(record.as_str())];
    for (start, rows) in insert_chunks(values.len()) {
        let sql = values_sql("INSERT INTO record_values (record_id, code, value, unit)", 4, rows, "");
        writes.push(values[start..start + rows].iter().fold(Write::new(sql), |write, value| {
            write.text(record.as_str()).text(value.code.as_str()).real(value.value).text(&value.unit)
        }));
    }
    writes
}

/// Destroys a record's data key and marks it ended; returns the blob key that held its content.
/// `Conflict` if the record is no longer active at `expected_version` (when given).
pub(crate) async fn end_record_rows(
    conn: &mut AnyConnection,
    record: &RecordId,
    expected_version: Option<i64>,
    end: &RecordEnd,
    at: Timestamp,
) -> Result<Option<String>, StoreError> {
    let row =
        sqlx::query("SELECT blob_key, version, state, owner, institution, mrn, held_under FROM records WHERE id = $1")
            .bind(record.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(store_error)?
            .ok_or(StoreError::NotFound)?;
    if get::<Option<String>>(&row, "held_under")?.is_none() {
        note_change_of_record(conn, &row, at).await?;
    }
    let version: i64 = get(&row, "version")?;
    let state: String = get(&row, "state")?;
    if state != "active" || expected_version.is_some_and(|v| v != version) {
        return Err(StoreError::Conflict("the record changed concurrently; nothing was applied"));
    }
    let blob_key: Option<String> = get(&row, "blob_key")?;
    if matches!(end, RecordEnd::Deleted) {
        sealed_keys::destroy_for_deleted(conn, record, at).await?;
    }
    let (state, moved_to, moved_at, moved_by) = match end {
        RecordEnd::Moved(locator) => (
            "moved",
            Some(locator.destination.clone()),
            Some(locator.moved_at.as_millis()),
            Some(locator.ordered_by.clone()),
        ),
        RecordEnd::Deleted => ("deleted", None, None, None),
    };
    sqlx::query(
        "UPDATE records SET state = $1, wrapped_key = NULL, blob_key = NULL, moved_to = $2, moved_at = $3, \
         moved_by = $4, version = version + 1, updated_at = $5 WHERE id = $6 AND version = $7",
    )
    .bind(state)
    .bind(moved_to)
    .bind(moved_at)
    .bind(moved_by)
    .bind(at.as_millis())
    .bind(record.as_str())
    .bind(version)
    .execute(&mut *conn)
    .await
    .map_err(store_error)?;
    Ok(blob_key)
}

/// Destroys one in-server copy, with its receipt: the ledger's deletion and an audit entry
/// (which lands in the timeline of the patient the copied record is about).
pub(crate) async fn destroy_copy(
    conn: &mut AnyConnection,
    id: &RecordId,
    owner: Party,
    grant: Option<&GrantId>,
    at: Timestamp,
    why: &str,
) -> Result<Option<String>, StoreError> {
    let blob = end_record_rows(conn, id, None, &RecordEnd::Deleted, at).await?;
    let ledger = NewLedger {
        event: CustodyEvent::Deleted,
        from_owner: Some(owner.clone()),
        to_owner: owner,
        transfer: None,
        actor: "system".into(),
        at,
        note: why.into(),
    };
    insert_ledger(conn, id, &ledger).await?;
    let audit = NewAudit {
        at,
        actor: "system".into(),
        on_behalf_of: String::new(),
        action: "copy_destroyed".into(),
        record: Some(id.clone()),
        grant: grant.cloned(),
        outcome: "done".into(),
        detail: why.into(),
        subject: None,
    };
    append_audit(conn, &audit).await?;
    Ok(blob)
}

impl SqlStore {
    /// Loads a record's parts and labels in one round trip (every read of a record does this):
    /// label rows come with index -1 and the label in the category column.
    pub(crate) async fn fill_record(&self, mut record: RecordRow) -> Result<RecordRow, StoreError> {
        enum Row {
            Part(StoredPart),
            Label(Label),
        }
        let rows = self
            .read(
                "SELECT idx, category, resource_type FROM record_parts WHERE record_id = $1 UNION ALL \
                 SELECT -1, label, '' FROM record_labels WHERE record_id = $1 ORDER BY 1, 2",
                &[record.id.as_str()],
                |row| {
                    if get::<i64>(row, "idx")? < 0 {
                        let text: String = get(row, "category")?;
                        Ok(Row::Label(Label::parse(&text).map_err(|_| StoreError::Corrupt("label".into()))?))
                    } else {
                        Ok(Row::Part(rows::part(row)?))
                    }
                },
            )
            .await?;
        let (mut parts, mut labels) = (Vec::new(), Vec::new());
        for row in rows {
            match row {
                Row::Part(part) => parts.push(part),
                Row::Label(label) => labels.push(label),
            }
        }
        record.parts = parts.into();
        record.labels = labels.into();
        Ok(record)
    }

    /// [`Self::fill_record`] for many records, with one query per chunk of ids instead of two per
    /// record.
    pub(crate) async fn fill_records(&self, mut records: Vec<RecordRow>) -> Result<Vec<RecordRow>, StoreError> {
        let mut parts: HashMap<String, Vec<StoredPart>> = HashMap::new();
        let mut labels: HashMap<String, Vec<Label>> = HashMap::new();
        let ids: Vec<String> = records.iter().map(|r| r.id.to_string()).collect();
        for chunk in ids.chunks(IN_LIST_CHUNK) {
            let sql = format!(
                "SELECT record_id, idx, category, resource_type FROM record_parts WHERE record_id IN ({}) \
                 ORDER BY record_id, idx",
                placeholders(1, chunk.len())
            );
            for row in &self.fetch_all(chunk.iter().fold(sqlx::query(&sql), |q, id| q.bind(id.as_str()))).await? {
                parts.entry(get(row, "record_id")?).or_default().push(rows::part(row)?);
            }
            let sql = format!(
                "SELECT record_id, label FROM record_labels WHERE record_id IN ({}) ORDER BY record_id, label",
                placeholders(1, chunk.len())
            );
            for row in &self.fetch_all(chunk.iter().fold(sqlx::query(&sql), |q, id| q.bind(id.as_str()))).await? {
                labels.entry(get(row, "record_id")?).or_default().push(rows::label(row)?);
            }
        }
        for record in &mut records {
            record.parts = parts.remove(record.id.as_str()).unwrap_or_default().into();
            record.labels = labels.remove(record.id.as_str()).unwrap_or_default().into();
        }
        Ok(records)
    }
}
