//! Analyses (Fig. 9): results, who took part, privacy loss. What an analysis releases is stored
//! by [`crate::DisclosureStore::insert_analysis`], with the organisation's partition.

use async_trait::async_trait;
use kura_core::party::Party;

use crate::StoreError;
use crate::model::*;

#[async_trait]
pub trait AnalysisStore: Send + Sync {
    async fn analysis(&self, id: &str) -> Result<Option<AnalysisRow>, StoreError>;
    /// Oldest first.
    async fn analyses_of_study(&self, study: &str) -> Result<Vec<AnalysisRow>, StoreError>;
    /// The analyses that included any of `subjects`, newest first.
    async fn participation(&self, subjects: &[String]) -> Result<Vec<Participation>, StoreError>;
    /// The privacy loss so far of each of `subjects` that has any.
    async fn privacy_loss(&self, subjects: &[String]) -> Result<Vec<(String, f64)>, StoreError>;
    /// Every party that set a privacy-loss cap, with it.
    async fn privacy_loss_caps(&self) -> Result<Vec<(Party, f64)>, StoreError>;
}
