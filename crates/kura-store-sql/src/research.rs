//! Research (`kura_store::ResearchStore`): preferences, the index's change sequence and the
//! subjects and facts it indexes, searches so far, handles and usage requests.

use async_trait::async_trait;
use kura_core::ids::{GrantId, OrgId};
use kura_core::labels::Label;
use kura_core::party::Party;
use kura_core::policy::{ActionSet, Anonymization};
use kura_core::record::CategorySet;
use kura_core::time::Timestamp;
use kura_store::model::*;
use kura_store::{ResearchStore, StoreError};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use crate::audit_chain::append_audit;
use crate::dialect::{IN_LIST_CHUNK, placeholders};
use crate::index_changes::note_change;
use crate::inserts::{insert_grant_row, insert_notifications};
use crate::rows::{self, get, ts};
use crate::{SqlStore, store_error};

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// The subjects an organisation's preference covers: its local patients with active records.
async fn local_subjects_of(conn: &mut AnyConnection, org: &OrgId) -> Result<Vec<String>, StoreError> {
    let rows =
        sqlx::query("SELECT DISTINCT mrn FROM records WHERE owner = $1 AND institution = $2 AND state = 'active'")
            .bind(Party::Organisation(org.clone()).to_text())
            .bind(org.as_str())
            .fetch_all(&mut *conn)
            .await
            .map_err(store_error)?;
    rows.iter().map(|r| Ok(format!("local:{org}:{}", get::<String>(r, "mrn")?))).collect()
}

/// The local subjects (`local:<org>:<mrn>`) of the MRNs linked to a patient's account.
async fn linked_local_subjects(
    conn: &mut AnyConnection,
    patient: &kura_core::ids::AccountId,
) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query("SELECT institution, mrn FROM patient_links WHERE patient = $1")
        .bind(patient.as_str())
        .fetch_all(&mut *conn)
        .await
        .map_err(store_error)?;
    rows.iter()
        .map(|r| Ok(format!("local:{}:{}", get::<String>(r, "institution")?, get::<String>(r, "mrn")?)))
        .collect()
}

/// Whether the patient linked to an institution's local patient (if any) opted out of
/// `population`: a linked patient who said no keeps the institution's records of them out too.
/// A patient who never chose leaves it to the institution.
async fn linked_patient_opted_out(
    store: &SqlStore,
    org: &OrgId,
    mrn: &str,
    population: Population,
) -> Result<bool, StoreError> {
    let rows = store
        .fetch_all(
            sqlx::query(&format!(
                "SELECT p.{} AS opted_in FROM patient_links l JOIN party_preferences p ON p.party = 'account:' || l.patient \
                 WHERE l.institution = $1 AND l.mrn = $2",
                opt_in_column(population)
            ))
            .bind(org.to_string())
            .bind(mrn.to_owned()),
        )
        .await?;
    rows.first().map(|r| get::<i64>(r, "opted_in").map(|v| v == 0)).transpose().map(|v| v.unwrap_or(false))
}

/// The preferences column that opts a party in to `population`.
fn opt_in_column(population: Population) -> &'static str {
    match population {
        Population::Discoverable => "discoverable",
        Population::Statistics => "contribute_statistics",
    }
}

/// The records of a subject, as a filter on `records r` and its bind values: all active,
/// non-copy records a patient owns, or those of one local patient an institution still owns.
/// `None` for a subject no owner answers for.
fn subject_filter(subject: &str) -> Option<(Party, String, Vec<String>)> {
    let owner = kura_core::research::owner_of_subject(subject)?;
    let (filter, binds): (&str, Vec<String>) = match (&owner, subject.strip_prefix("local:")) {
        (Party::Organisation(org), Some(rest)) => {
            let mrn = rest.split_once(':').map(|(_, m)| m).unwrap_or("");
            (
                "r.owner = $1 AND r.institution = $2 AND r.mrn = $3",
                vec![owner.to_text(), org.to_string(), mrn.to_owned()],
            )
        }
        _ => ("r.owner = $1", vec![owner.to_text()]),
    };
    Some((owner, format!("{filter} AND r.state = 'active' AND r.held_under IS NULL"), binds))
}

fn bind_all<'q>(sql: &'q str, binds: &[String]) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    binds.iter().fold(sqlx::query(sql), |q, b| q.bind(b.clone()))
}

fn value_row(row: &AnyRow) -> Result<(Label, f64), StoreError> {
    Ok((Label::parse(&get::<String>(row, "code")?).map_err(|_| corrupt("value code"))?, get::<f64>(row, "value")?))
}

const REQUEST_COLUMNS: &str = "id, study_id, requested_by, owner, subject, handle, scope, actions, anonymization, grant_days, \
     message, reward_amount, reward_currency, reward_description, reward_state, state, grant_id, answer_by, created_at, updated_at";

fn request_row(row: &AnyRow) -> Result<UsageRequest, StoreError> {
    let reward = match (
        get::<Option<String>>(row, "reward_amount")?,
        get::<Option<String>>(row, "reward_currency")?,
        get::<Option<String>>(row, "reward_description")?,
    ) {
        (Some(amount), Some(currency), description) => {
            Some(Reward { amount, currency, description: description.unwrap_or_default() })
        }
        _ => None,
    };
    Ok(UsageRequest {
        id: get(row, "id")?,
        study: get(row, "study_id")?,
        requested_by: get(row, "requested_by")?,
        owner: rows::party(&get::<String>(row, "owner")?)?,
        subject: get(row, "subject")?,
        handle: get(row, "handle")?,
        scope: CategorySet::from_text(&get::<String>(row, "scope")?).ok_or_else(|| corrupt("scope"))?,
        actions: ActionSet::from_text(&get::<String>(row, "actions")?).ok_or_else(|| corrupt("actions"))?,
        anonymization: Anonymization::parse(&get::<String>(row, "anonymization")?)
            .ok_or_else(|| corrupt("anonymization"))?,
        grant_days: get(row, "grant_days")?,
        message: get(row, "message")?,
        reward,
        reward_state: get(row, "reward_state")?,
        state: get(row, "state")?,
        grant: get::<Option<String>>(row, "grant_id")?.map(|g| rows::parse_id(&g, GrantId::parse)).transpose()?,
        answer_by: ts(get(row, "answer_by")?),
        created_at: ts(get(row, "created_at")?),
        updated_at: ts(get(row, "updated_at")?),
    })
}

#[async_trait]
impl ResearchStore for SqlStore {
    async fn set_preferences(&self, party: &Party, prefs: &Preferences, audit: NewAudit) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let key = party.to_text();
        // An optional number is bound as a flag and a number: on PostgreSQL the `Any` driver keeps a
        // statement prepared with the type of the first value bound, and a first NULL leaves the
        // parameter mistyped for every later number.
        let updated = sqlx::query(
            "UPDATE party_preferences SET discoverable = $1, contribute_statistics = $2, \
             privacy_loss_cap = CASE WHEN $3 = 1 THEN $4 ELSE NULL END, updated_at = $5 WHERE party = $6",
        )
        .bind(i64::from(prefs.discoverable))
        .bind(i64::from(prefs.contribute_statistics))
        .bind(i64::from(prefs.privacy_loss_cap.is_some()))
        .bind(prefs.privacy_loss_cap.unwrap_or(0.0))
        .bind(prefs.updated_at.as_millis())
        .bind(&key)
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        if updated.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO party_preferences (party, discoverable, contribute_statistics, privacy_loss_cap, updated_at) \
                 VALUES ($1, $2, $3, CASE WHEN $4 = 1 THEN $5 ELSE NULL END, $6)",
            )
            .bind(&key)
            .bind(i64::from(prefs.discoverable))
            .bind(i64::from(prefs.contribute_statistics))
            .bind(i64::from(prefs.privacy_loss_cap.is_some()))
            .bind(prefs.privacy_loss_cap.unwrap_or(0.0))
            .bind(prefs.updated_at.as_millis())
            .execute(tx.conn())
            .await
            .map_err(store_error)?;
        }
        let subjects = match party {
            // A patient's choice also covers the records institutions still hold about them.
            Party::Account(patient) => {
                let mut subjects = vec![key.clone()];
                subjects.extend(linked_local_subjects(tx.conn(), patient).await?);
                subjects
            }
            Party::Organisation(org) => local_subjects_of(tx.conn(), org).await?,
        };
        for subject in subjects {
            note_change(tx.conn(), &subject, prefs.updated_at).await?;
        }
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn preferences(&self, party: &Party) -> Result<Option<Preferences>, StoreError> {
        let rows = self
            .fetch_all(
                sqlx::query(
                    "SELECT discoverable, contribute_statistics, privacy_loss_cap, updated_at FROM party_preferences \
                     WHERE party = $1",
                )
                .bind(party.to_text()),
            )
            .await?;
        rows.first()
            .map(|r| {
                Ok(Preferences {
                    discoverable: get::<i64>(r, "discoverable")? != 0,
                    contribute_statistics: get::<i64>(r, "contribute_statistics")? != 0,
                    privacy_loss_cap: get(r, "privacy_loss_cap")?,
                    updated_at: ts(get(r, "updated_at")?),
                })
            })
            .transpose()
    }

    async fn index_changes_after(&self, seq: i64, limit: i64) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = self
            .fetch_all(
                sqlx::query("SELECT seq, subject FROM index_changes WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(seq)
                    .bind(limit),
            )
            .await?;
        rows.iter().map(|r| Ok((get(r, "seq")?, get(r, "subject")?))).collect()
    }

    async fn last_index_change(&self) -> Result<i64, StoreError> {
        let rows = self.fetch_all(sqlx::query("SELECT seq FROM index_changes ORDER BY seq DESC LIMIT 1")).await?;
        rows.first().map(|r| get::<i64>(r, "seq")).transpose().map(Option::unwrap_or_default)
    }

    async fn subjects_in(&self, population: Population) -> Result<Vec<String>, StoreError> {
        let sql = format!("SELECT party FROM party_preferences WHERE {} = 1", opt_in_column(population));
        let parties = self.fetch_all(sqlx::query(&sql)).await?;
        let mut subjects = Vec::new();
        let mut conn = self.pool_for_tests().acquire().await.map_err(store_error)?;
        for row in parties {
            match rows::party(&get::<String>(&row, "party")?)? {
                party @ Party::Account(_) => subjects.push(party.to_text()),
                Party::Organisation(org) => subjects.extend(local_subjects_of(&mut conn, &org).await?),
            }
        }
        Ok(subjects)
    }

    async fn subject_facts(&self, subject: &str, population: Population) -> Result<Option<SubjectFacts>, StoreError> {
        let Some((owner, active, binds)) = subject_filter(subject) else { return Ok(None) };
        let opted_in = self.preferences(&owner).await?.is_some_and(|p| match population {
            Population::Discoverable => p.discoverable,
            Population::Statistics => p.contribute_statistics,
        });
        if !opted_in {
            return Ok(None);
        }
        if let (Party::Organisation(org), Some(rest)) = (&owner, subject.strip_prefix("local:")) {
            let mrn = rest.split_once(':').map(|(_, m)| m).unwrap_or("");
            if linked_patient_opted_out(self, org, mrn, population).await? {
                return Ok(None);
            }
        }
        let label_sql =
            format!("SELECT DISTINCT l.label FROM record_labels l JOIN records r ON r.id = l.record_id WHERE {active}");
        let value_sql =
            format!("SELECT v.code, v.value FROM record_values v JOIN records r ON r.id = v.record_id WHERE {active}");
        let birth_sql = format!("SELECT MAX(r.subject_birth_day) AS birth FROM records r WHERE {active}");
        let labels = self.fetch_all(bind_all(&label_sql, &binds)).await?;
        if labels.is_empty() {
            return Ok(None);
        }
        let values = self.fetch_all(bind_all(&value_sql, &binds)).await?;
        let birth = self.fetch_all(bind_all(&birth_sql, &binds)).await?;
        Ok(Some(SubjectFacts {
            labels: labels.iter().map(rows::label).collect::<Result<_, _>>()?,
            values: values.iter().map(value_row).collect::<Result<_, StoreError>>()?,
            birth_day: birth
                .first()
                .map(|r| get::<Option<i64>>(r, "birth"))
                .transpose()?
                .flatten()
                .and_then(|d| i32::try_from(d).ok()),
        }))
    }

    /// The subject's records with their values and birth day, whatever the opt-ins. The records in
    /// one query, then their parts, labels and values by chunks of ids, not record by record.
    async fn subject_records(&self, subject: &str) -> Result<Vec<RecordFacts>, StoreError> {
        let Some((_, active, binds)) = subject_filter(subject) else { return Ok(Vec::new()) };
        let sql = format!(
            "SELECT {}, subject_birth_day FROM records r WHERE {active} ORDER BY r.created_at, r.id",
            rows::RECORD_COLUMNS
        );
        let found = self.fetch_all(bind_all(&sql, &binds)).await?;
        let mut birth_days = Vec::with_capacity(found.len());
        let mut records = Vec::with_capacity(found.len());
        for row in &found {
            birth_days.push(get::<Option<i64>>(row, "subject_birth_day")?.and_then(|d| i32::try_from(d).ok()));
            records.push(rows::record(row)?);
        }
        let records = self.fill_records(records).await?;
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let mut values: std::collections::HashMap<String, Vec<(Label, f64)>> = std::collections::HashMap::new();
        for chunk in ids.chunks(IN_LIST_CHUNK) {
            let sql = format!(
                "SELECT record_id, code, value FROM record_values WHERE record_id IN ({}) ORDER BY record_id, code, value",
                placeholders(1, chunk.len())
            );
            let rows = self.fetch_all(chunk.iter().fold(sqlx::query(&sql), |q, id| q.bind(*id))).await?;
            for row in &rows {
                values.entry(get(row, "record_id")?).or_default().push(value_row(row)?);
            }
        }
        Ok(records
            .into_iter()
            .zip(birth_days)
            .map(|(record, birth_day)| {
                let values = values.remove(record.id.as_str()).unwrap_or_default();
                RecordFacts { record, values, birth_day }
            })
            .collect())
    }

    async fn searches_since(&self, study: &str, query_text: &str, since: Timestamp) -> Result<i64, StoreError> {
        let rows = self
            .fetch_all(
                sqlx::query(
                    "SELECT COUNT(*) AS n FROM study_searches WHERE study_id = $1 AND query_text = $2 AND at >= $3",
                )
                .bind(study.to_owned())
                .bind(query_text.to_owned())
                .bind(since.as_millis()),
            )
            .await?;
        rows.first().map(|r| get::<i64>(r, "n")).transpose().map(Option::unwrap_or_default)
    }

    async fn subject_of_handle(&self, study: &str, handle: &str) -> Result<Option<String>, StoreError> {
        let rows = self
            .fetch_all(
                sqlx::query("SELECT subject FROM study_handles WHERE study_id = $1 AND handle = $2")
                    .bind(study.to_owned())
                    .bind(handle.to_owned()),
            )
            .await?;
        rows.first().map(|r| get::<String>(r, "subject")).transpose()
    }

    async fn insert_usage_requests(
        &self,
        requests: &[UsageRequest],
        notifications: &[Notification],
        audit: Vec<NewAudit>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for r in requests {
            sqlx::query(&format!(
                "INSERT INTO usage_requests ({REQUEST_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
                 $14, $15, $16, $17, $18, $19, $20)"
            ))
            .bind(&r.id)
            .bind(&r.study)
            .bind(&r.requested_by)
            .bind(r.owner.to_text())
            .bind(&r.subject)
            .bind(&r.handle)
            .bind(r.scope.to_text())
            .bind(r.actions.to_text())
            .bind(r.anonymization.as_str())
            .bind(r.grant_days)
            .bind(&r.message)
            .bind(r.reward.as_ref().map(|w| w.amount.clone()))
            .bind(r.reward.as_ref().map(|w| w.currency.clone()))
            .bind(r.reward.as_ref().map(|w| w.description.clone()))
            .bind(r.reward_state.clone())
            .bind(&r.state)
            .bind(r.grant.as_ref().map(|g| g.to_string()))
            .bind(r.answer_by.as_millis())
            .bind(r.created_at.as_millis())
            .bind(r.updated_at.as_millis())
            .execute(tx.conn())
            .await
            .map_err(store_error)?;
        }
        insert_notifications(tx.conn(), notifications).await?;
        for entry in &audit {
            append_audit(tx.conn(), entry).await?;
        }
        tx.commit().await
    }

    async fn usage_request(&self, id: &str) -> Result<Option<UsageRequest>, StoreError> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM usage_requests WHERE id = $1");
        let rows = self.fetch_all(sqlx::query(&sql).bind(id.to_owned())).await?;
        rows.first().map(request_row).transpose()
    }

    async fn usage_requests_for_owners(&self, owners: &[Party]) -> Result<Vec<UsageRequest>, StoreError> {
        if owners.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM usage_requests WHERE owner IN ({}) ORDER BY created_at, id",
            placeholders(1, owners.len())
        );
        let mut query = sqlx::query(&sql);
        for owner in owners {
            query = query.bind(owner.to_text());
        }
        let rows = self.fetch_all(query).await?;
        rows.iter().map(request_row).collect()
    }

    async fn usage_requests_of_study(&self, study: &str) -> Result<Vec<UsageRequest>, StoreError> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM usage_requests WHERE study_id = $1 ORDER BY created_at, id");
        let rows = self.fetch_all(sqlx::query(&sql).bind(study.to_owned())).await?;
        rows.iter().map(request_row).collect()
    }

    async fn update_usage_request(
        &self,
        id: &str,
        expected: (&str, Option<&str>),
        new: (&str, Option<&str>),
        grant: Option<&GrantRow>,
        at: Timestamp,
        notifications: &[Notification],
        audit: NewAudit,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT state, reward_state FROM usage_requests WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(tx.conn())
            .await
            .map_err(store_error)?
            .ok_or(StoreError::NotFound)?;
        let state: String = get(&row, "state")?;
        let reward_state: Option<String> = get(&row, "reward_state")?;
        if state != expected.0 || reward_state.as_deref() != expected.1 {
            return Err(StoreError::Conflict("the request changed meanwhile; nothing was applied"));
        }
        if let Some(grant) = grant {
            insert_grant_row(tx.conn(), grant).await?;
        }
        sqlx::query("UPDATE usage_requests SET state = $1, reward_state = $2, grant_id = COALESCE($3, grant_id), updated_at = $4 WHERE id = $5")
            .bind(new.0.to_owned())
            .bind(new.1.map(str::to_owned))
            .bind(grant.map(|g| g.grant.id.to_string()))
            .bind(at.as_millis())
            .bind(id.to_owned())
            .execute(tx.conn())
            .await
            .map_err(store_error)?;
        insert_notifications(tx.conn(), notifications).await?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }
}
