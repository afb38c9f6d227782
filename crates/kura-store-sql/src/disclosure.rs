//! What research organisations are told (`kura_store::DisclosureStore`): studies and their
//! review, searches with the subjects behind their handles, analyses, and each organisation's
//! partition, which every release refines in the release's own transaction.

use async_trait::async_trait;
use kura_core::ids::OrgId;
use kura_store::model::*;
use kura_store::{DisclosureStore, PartitionWrite, StoreError};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use crate::audit_chain::append_audit;
use crate::dialect::{IN_LIST_CHUNK, distinct, placeholders, rows_sharing_first};
use crate::inserts::insert_notifications;
use crate::rows::{self, ANALYSIS_COLUMNS, get, ts};
use crate::{SqlStore, store_error};

const STUDY_COLUMNS: &str = "id, org_id, title, purpose, ethics_reference, contact, created_by, created_at, \
     review_state, reviewed_by, reviewed_at, review_note";

fn study_row(row: &AnyRow) -> Result<Study, StoreError> {
    let state: String = get(row, "review_state")?;
    Ok(Study {
        id: get(row, "id")?,
        org: rows::parse_id(&get::<String>(row, "org_id")?, OrgId::parse)?,
        title: get(row, "title")?,
        purpose: get(row, "purpose")?,
        ethics_reference: get(row, "ethics_reference")?,
        contact: get(row, "contact")?,
        created_by: get(row, "created_by")?,
        created_at: ts(get(row, "created_at")?),
        review: StudyReview {
            state: StudyState::parse(&state).ok_or_else(|| StoreError::Corrupt("study review state".into()))?,
            by: get(row, "reviewed_by")?,
            at: get::<Option<i64>>(row, "reviewed_at")?.map(ts),
            note: get::<Option<String>>(row, "review_note")?.filter(|note| !note.is_empty()),
        },
    })
}

/// Replaces the organisation's partition if it is still at the version the release was computed
/// from; `Conflict` otherwise, and the caller's transaction is dropped (nothing written).
async fn write_partition(conn: &mut AnyConnection, partition: PartitionWrite<'_>) -> Result<(), StoreError> {
    let written = match partition.expected_version {
        None => {
            sqlx::query("INSERT INTO org_partitions (org_id, version, bytes) VALUES ($1, 1, $2) ON CONFLICT DO NOTHING")
                .bind(partition.org.as_str())
                .bind(partition.bytes.to_vec())
        }
        Some(version) => {
            sqlx::query("UPDATE org_partitions SET version = $1, bytes = $2 WHERE org_id = $3 AND version = $4")
                .bind(version + 1)
                .bind(partition.bytes.to_vec())
                .bind(partition.org.as_str())
                .bind(version)
        }
    }
    .execute(conn)
    .await
    .map_err(store_error)?;
    if written.rows_affected() != 1 {
        return Err(StoreError::Conflict("the organisation's disclosure partition changed"));
    }
    Ok(())
}

/// Refusals in all, less those the last resumption had seen (counts, not times, so that a
/// refusal and a resumption in the same millisecond are still ordered).
const REFUSALS_SINCE_RESUMED: &str = "SELECT (SELECT COUNT(*) FROM research_refusals WHERE org_id = $1) - \
     COALESCE((SELECT MAX(refusals_seen) FROM research_resumptions WHERE org_id = $1), 0) AS n";

async fn refusals_since_resumed(conn: &mut AnyConnection, org: &OrgId) -> Result<i64, StoreError> {
    let row = sqlx::query(REFUSALS_SINCE_RESUMED).bind(org.as_str()).fetch_one(conn).await.map_err(store_error)?;
    get(&row, "n")
}

#[async_trait]
impl DisclosureStore for SqlStore {
    async fn insert_study(&self, study: &Study, max_open: i64, audit: NewAudit) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        // Every writing transaction holds the audit head first, so this count cannot race another
        // registration.
        let open = sqlx::query(
            "SELECT COUNT(*) AS n FROM studies WHERE org_id = $1 AND review_state IN ('pending', 'approved')",
        )
        .bind(study.org.as_str())
        .fetch_one(tx.conn())
        .await
        .map_err(store_error)?;
        if get::<i64>(&open, "n")? >= max_open {
            return Err(StoreError::Conflict("the organisation has as many open studies as it may"));
        }
        sqlx::query(&format!(
            "INSERT INTO studies ({STUDY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, NULL)"
        ))
        .bind(&study.id)
        .bind(study.org.as_str())
        .bind(&study.title)
        .bind(&study.purpose)
        .bind(&study.ethics_reference)
        .bind(&study.contact)
        .bind(&study.created_by)
        .bind(study.created_at.as_millis())
        .bind(study.review.state.as_str())
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn study(&self, id: &str) -> Result<Option<Study>, StoreError> {
        let sql = format!("SELECT {STUDY_COLUMNS} FROM studies WHERE id = $1");
        let rows = self.fetch_all(sqlx::query(&sql).bind(id.to_owned())).await?;
        rows.first().map(study_row).transpose()
    }

    async fn studies_of(&self, org: &OrgId) -> Result<Vec<Study>, StoreError> {
        let sql = format!("SELECT {STUDY_COLUMNS} FROM studies WHERE org_id = $1 ORDER BY created_at, id");
        let rows = self.fetch_all(sqlx::query(&sql).bind(org.to_string())).await?;
        rows.iter().map(study_row).collect()
    }

    async fn studies_in_state(&self, state: Option<StudyState>) -> Result<Vec<Study>, StoreError> {
        let rows = match state {
            Some(state) => {
                let sql =
                    format!("SELECT {STUDY_COLUMNS} FROM studies WHERE review_state = $1 ORDER BY created_at, id");
                self.fetch_all(sqlx::query(&sql).bind(state.as_str())).await?
            }
            None => {
                let sql = format!("SELECT {STUDY_COLUMNS} FROM studies ORDER BY created_at, id");
                self.fetch_all(sqlx::query(&sql)).await?
            }
        };
        rows.iter().map(study_row).collect()
    }

    async fn review_study(
        &self,
        id: &str,
        from: StudyState,
        review: &StudyReview,
        notifications: &[Notification],
        audit: NewAudit,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE studies SET review_state = $1, reviewed_by = $2, reviewed_at = $3, review_note = $4 \
             WHERE id = $5 AND review_state = $6",
        )
        // Text and numbers only, never a NULL (see `set_preferences`): a review always has its
        // reviewer and time; an absent note is stored empty.
        .bind(review.state.as_str())
        .bind(review.by.clone().unwrap_or_default())
        .bind(review.at.map_or(0, |t| t.as_millis()))
        .bind(review.note.clone().unwrap_or_default())
        .bind(id.to_owned())
        .bind(from.as_str())
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        if changed.rows_affected() != 1 {
            return Err(StoreError::Conflict("the study's review changed meanwhile"));
        }
        insert_notifications(tx.conn(), notifications).await?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn record_search(
        &self,
        search: &SearchLog,
        handles: &[(String, String)],
        partition: Option<PartitionWrite<'_>>,
        audit: NewAudit,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        if let Some(partition) = partition {
            write_partition(tx.conn(), partition).await?;
        }
        sqlx::query(
            "INSERT INTO study_searches (id, study_id, query_text, disclosed_count, at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&search.id)
        .bind(&search.study)
        .bind(&search.query_text)
        .bind(search.disclosed_count)
        .bind(search.at.as_millis())
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        // Thousands of handles per search: many rows per statement, within the bind limits.
        for chunk in handles.chunks(IN_LIST_CHUNK / 2) {
            let rows = (0..chunk.len()).map(|i| format!("($1, ${}, ${})", 2 * i + 2, 2 * i + 3)).collect::<Vec<_>>();
            let sql = format!(
                "INSERT INTO study_handles (study_id, handle, subject) VALUES {} ON CONFLICT DO NOTHING",
                rows.join(", ")
            );
            let query = chunk
                .iter()
                .fold(sqlx::query(&sql).bind(&search.study), |q, (handle, subject)| q.bind(handle).bind(subject));
            query.execute(tx.conn()).await.map_err(store_error)?;
        }
        let subjects: Vec<String> = handles.iter().map(|(_, subject)| subject.clone()).collect();
        for chunk in distinct(&subjects).chunks(IN_LIST_CHUNK) {
            let sql =
                format!("INSERT INTO search_matches (search_id, subject) VALUES {}", rows_sharing_first(chunk.len()));
            let query = chunk.iter().fold(sqlx::query(&sql).bind(&search.id), |q, subject| q.bind(*subject));
            query.execute(tx.conn()).await.map_err(store_error)?;
        }
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn insert_analysis(
        &self,
        analysis: &AnalysisRow,
        participants: &[String],
        partition: PartitionWrite<'_>,
        audit: NewAudit,
    ) -> Result<(), StoreError> {
        let participants = distinct(participants);
        let mut tx = self.begin_write().await?;
        // The partition first: if another release of the organisation got in meanwhile, nothing
        // else is written and dropping the transaction rolls it back.
        write_partition(tx.conn(), partition).await?;
        // ε is bound as a flag and a number, never as NULL (see `set_preferences`).
        sqlx::query(&format!(
            "INSERT INTO analyses ({ANALYSIS_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, \
             CASE WHEN $7 = 1 THEN $8 ELSE NULL END, $9, $10)"
        ))
        .bind(&analysis.id)
        .bind(&analysis.study)
        .bind(&analysis.requested_by)
        .bind(&analysis.spec)
        .bind(&analysis.result)
        .bind(&analysis.measures)
        .bind(i64::from(analysis.epsilon.is_some()))
        .bind(analysis.epsilon.unwrap_or(0.0))
        .bind(analysis.participants)
        .bind(analysis.created_at.as_millis())
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        // Cohorts run to tens of thousands of subjects: many rows per statement, within the limits
        // on bind parameters.
        for chunk in participants.chunks(IN_LIST_CHUNK) {
            let sql = format!(
                "INSERT INTO analysis_participants (analysis_id, subject) VALUES {}",
                rows_sharing_first(chunk.len())
            );
            let query = chunk.iter().fold(sqlx::query(&sql).bind(&analysis.id), |q, subject| q.bind(*subject));
            query.execute(tx.conn()).await.map_err(store_error)?;
        }
        if let Some(epsilon) = analysis.epsilon {
            for chunk in participants.chunks(IN_LIST_CHUNK) {
                // The rows are `(epsilon, subject)` pairs sharing $1; the column list puts them right.
                let sql = format!(
                    "INSERT INTO privacy_loss (epsilon, subject) VALUES {} \
                     ON CONFLICT (subject) DO UPDATE SET epsilon = privacy_loss.epsilon + excluded.epsilon",
                    rows_sharing_first(chunk.len())
                );
                let query = chunk.iter().fold(sqlx::query(&sql).bind(epsilon), |q, subject| q.bind(*subject));
                query.execute(tx.conn()).await.map_err(store_error)?;
            }
        }
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn org_partition(&self, org: &OrgId) -> Result<Option<OrgPartition>, StoreError> {
        let rows = self
            .fetch_all(sqlx::query("SELECT version, bytes FROM org_partitions WHERE org_id = $1").bind(org.to_string()))
            .await?;
        rows.first().map(|r| Ok(OrgPartition { version: get(r, "version")?, bytes: get(r, "bytes")? })).transpose()
    }

    async fn record_refusal(
        &self,
        org: &OrgId,
        study: &str,
        id: &str,
        suspend_at: i64,
        notices_at_suspension: &[Notification],
        audit: NewAudit,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO research_refusals (id, org_id, study_id, at) VALUES ($1, $2, $3, $4)")
            .bind(id.to_owned())
            .bind(org.as_str())
            .bind(study.to_owned())
            .bind(audit.at.as_millis())
            .execute(tx.conn())
            .await
            .map_err(store_error)?;
        let since = refusals_since_resumed(tx.conn(), org).await?;
        if since == suspend_at {
            insert_notifications(tx.conn(), notices_at_suspension).await?;
        }
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await?;
        Ok(since)
    }

    async fn refusals_since_resumed(&self, org: &OrgId) -> Result<i64, StoreError> {
        let rows = self.fetch_all(sqlx::query(REFUSALS_SINCE_RESUMED).bind(org.to_string())).await?;
        rows.first().map(|row| get(row, "n")).transpose().map(Option::unwrap_or_default)
    }

    async fn resume_research(&self, org: &OrgId, id: &str, by: &str, audit: NewAudit) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let total = sqlx::query("SELECT COUNT(*) AS n FROM research_refusals WHERE org_id = $1")
            .bind(org.as_str())
            .fetch_one(tx.conn())
            .await
            .map_err(store_error)?;
        let total: i64 = get(&total, "n")?;
        sqlx::query(
            "INSERT INTO research_resumptions (id, org_id, refusals_seen, resumed_by, at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.to_owned())
        .bind(org.as_str())
        .bind(total)
        .bind(by.to_owned())
        .bind(audit.at.as_millis())
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn org_epsilon_spent(&self, org: &OrgId) -> Result<f64, StoreError> {
        // Summed here rather than in SQL: the `Any` driver has no common type for a REAL sum
        // that may be NULL on both backends.
        let rows = self
            .fetch_all(
                sqlx::query(
                    "SELECT a.epsilon AS epsilon FROM analyses a JOIN studies s ON s.id = a.study_id \
                     WHERE s.org_id = $1 AND a.epsilon IS NOT NULL",
                )
                .bind(org.to_string()),
            )
            .await?;
        // Folded from +0.0: a float sum of nothing is -0.0.
        rows.iter().try_fold(0.0, |spent, r| Ok(spent + get::<f64>(r, "epsilon")?))
    }

    async fn search_matches(&self, subjects: &[String], limit: i64) -> Result<Vec<SearchMatch>, StoreError> {
        let mut matches = Vec::new();
        for chunk in subjects.chunks(IN_LIST_CHUNK) {
            let sql = format!(
                "SELECT m.search_id AS search_id, m.subject AS subject, q.at AS at, s.id AS study_id, \
                 s.title AS title, s.org_id AS org_id FROM search_matches m \
                 JOIN study_searches q ON q.id = m.search_id JOIN studies s ON s.id = q.study_id \
                 WHERE m.subject IN ({}) ORDER BY q.at DESC, m.search_id, m.subject LIMIT {}",
                placeholders(1, chunk.len()),
                limit.max(0)
            );
            let query = chunk.iter().fold(sqlx::query(&sql), |q, subject| q.bind(subject.clone()));
            for row in self.fetch_all(query).await? {
                matches.push(SearchMatch {
                    search: get(&row, "search_id")?,
                    study: get(&row, "study_id")?,
                    study_title: get(&row, "title")?,
                    org: rows::parse_id(&get::<String>(&row, "org_id")?, OrgId::parse)?,
                    subject: get(&row, "subject")?,
                    at: ts(get(&row, "at")?),
                });
            }
        }
        matches.sort_by(|a, b| {
            b.at.cmp(&a.at).then_with(|| a.search.cmp(&b.search)).then_with(|| a.subject.cmp(&b.subject))
        });
        matches.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(matches)
    }
}
