//! Research: preferences (opt-ins), the research index's change sequence and the subjects and
//! facts it indexes, searches so far, handles, and usage requests.

use async_trait::async_trait;
use kura_core::party::Party;
use kura_core::time::Timestamp;

use crate::StoreError;
use crate::model::*;

#[async_trait]
pub trait ResearchStore: Send + Sync {
    async fn set_preferences(&self, party: &Party, prefs: &Preferences, audit: NewAudit) -> Result<(), StoreError>;
    async fn preferences(&self, party: &Party) -> Result<Option<Preferences>, StoreError>;
    /// Subjects whose facts changed after `seq`, in order: `(seq, subject)`.
    async fn index_changes_after(&self, seq: i64, limit: i64) -> Result<Vec<(i64, String)>, StoreError>;
    /// The newest change's sequence number (0 when none).
    async fn last_index_change(&self) -> Result<i64, StoreError>;
    /// Every subject whose owner opted in to `population`.
    async fn subjects_in(&self, population: Population) -> Result<Vec<String>, StoreError>;
    /// What an index of `population` holds about `subject`; `None` unless its owner opted in to
    /// it and it has records.
    async fn subject_facts(&self, subject: &str, population: Population) -> Result<Option<SubjectFacts>, StoreError>;
    /// The subject's active records that are not in-server copies, each with its values and birth
    /// day, whatever its owner's opt-ins: grants decide record by record what an analysis uses.
    async fn subject_records(&self, subject: &str) -> Result<Vec<RecordFacts>, StoreError>;
    /// How many searches of `study` with this canonical query ran since `since`.
    async fn searches_since(&self, study: &str, query_text: &str, since: Timestamp) -> Result<i64, StoreError>;
    async fn subject_of_handle(&self, study: &str, handle: &str) -> Result<Option<String>, StoreError>;
    async fn insert_usage_requests(
        &self,
        requests: &[UsageRequest],
        notifications: &[Notification],
        audit: Vec<NewAudit>,
    ) -> Result<(), StoreError>;
    async fn usage_request(&self, id: &str) -> Result<Option<UsageRequest>, StoreError>;
    async fn usage_requests_for_owners(&self, owners: &[Party]) -> Result<Vec<UsageRequest>, StoreError>;
    async fn usage_requests_of_study(&self, study: &str) -> Result<Vec<UsageRequest>, StoreError>;
    /// Moves a request from `expected_state` (and reward state) to the new ones, with the grant an
    /// acceptance creates, in one transaction. `Conflict` if it changed meanwhile.
    #[expect(clippy::too_many_arguments, reason = "one transaction's worth of changes")]
    async fn update_usage_request(
        &self,
        id: &str,
        expected: (&str, Option<&str>),
        new: (&str, Option<&str>),
        grant: Option<&GrantRow>,
        at: Timestamp,
        notifications: &[Notification],
        audit: NewAudit,
    ) -> Result<(), StoreError>;
}
