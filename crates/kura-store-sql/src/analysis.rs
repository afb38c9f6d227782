//! Analyses (`kura_store::AnalysisStore`): stored analyses, who took part in each, every
//! subject's privacy loss so far, and the caps parties set on it. (Storing an analysis with what
//! it released is `disclosure.rs`.)

use async_trait::async_trait;
use kura_core::party::Party;
use kura_store::model::*;
use kura_store::{AnalysisStore, StoreError};

use crate::SqlStore;
use crate::dialect::{IN_LIST_CHUNK, distinct, placeholders};
use crate::rows::{self, ANALYSIS_COLUMNS, get, ts};

#[async_trait]
impl AnalysisStore for SqlStore {
    async fn analysis(&self, id: &str) -> Result<Option<AnalysisRow>, StoreError> {
        let sql = format!("SELECT {ANALYSIS_COLUMNS} FROM analyses WHERE id = $1");
        let rows = self.fetch_all(sqlx::query(&sql).bind(id)).await?;
        rows.first().map(rows::analysis).transpose()
    }

    async fn analyses_of_study(&self, study: &str) -> Result<Vec<AnalysisRow>, StoreError> {
        let sql = format!("SELECT {ANALYSIS_COLUMNS} FROM analyses WHERE study_id = $1 ORDER BY created_at, id");
        let rows = self.fetch_all(sqlx::query(&sql).bind(study)).await?;
        rows.iter().map(rows::analysis).collect()
    }

    async fn participation(&self, subjects: &[String]) -> Result<Vec<Participation>, StoreError> {
        let mut found = Vec::new();
        for chunk in distinct(subjects).chunks(IN_LIST_CHUNK) {
            let sql = format!(
                "SELECT p.analysis_id, a.study_id, s.title, p.subject, a.measures, a.epsilon, a.created_at \
                 FROM analysis_participants p JOIN analyses a ON a.id = p.analysis_id JOIN studies s ON s.id = a.study_id \
                 WHERE p.subject IN ({})",
                placeholders(1, chunk.len())
            );
            let rows = self.fetch_all(chunk.iter().fold(sqlx::query(&sql), |q, subject| q.bind(*subject))).await?;
            for row in &rows {
                found.push(Participation {
                    analysis: get(row, "analysis_id")?,
                    study: get(row, "study_id")?,
                    study_title: get(row, "title")?,
                    subject: get(row, "subject")?,
                    measures: get(row, "measures")?,
                    epsilon: get(row, "epsilon")?,
                    at: ts(get(row, "created_at")?),
                });
            }
        }
        // Sorted here rather than in SQL because the rows may come from several chunks.
        found.sort_by(|a, b| {
            (b.at.as_millis(), &b.analysis)
                .cmp(&(a.at.as_millis(), &a.analysis))
                .then_with(|| a.subject.cmp(&b.subject))
        });
        Ok(found)
    }

    async fn privacy_loss(&self, subjects: &[String]) -> Result<Vec<(String, f64)>, StoreError> {
        let mut found = Vec::new();
        for chunk in distinct(subjects).chunks(IN_LIST_CHUNK) {
            let sql = format!(
                "SELECT subject, epsilon FROM privacy_loss WHERE subject IN ({})",
                placeholders(1, chunk.len())
            );
            let rows = self.fetch_all(chunk.iter().fold(sqlx::query(&sql), |q, subject| q.bind(*subject))).await?;
            for row in &rows {
                found.push((get::<String>(row, "subject")?, get::<f64>(row, "epsilon")?));
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    async fn privacy_loss_caps(&self) -> Result<Vec<(Party, f64)>, StoreError> {
        let rows = self
            .fetch_all(sqlx::query(
                "SELECT party, privacy_loss_cap FROM party_preferences WHERE privacy_loss_cap IS NOT NULL ORDER BY party",
            ))
            .await?;
        rows.iter()
            .map(|r| Ok((rows::party(&get::<String>(r, "party")?)?, get::<f64>(r, "privacy_loss_cap")?)))
            .collect()
    }
}
