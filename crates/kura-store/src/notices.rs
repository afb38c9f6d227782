//! Notifications (the inbox), organisations' webhooks and their deliveries.

use async_trait::async_trait;
use kura_core::ids::OrgId;
use kura_core::time::Timestamp;

use crate::StoreError;
use crate::model::*;

#[async_trait]
pub trait NoticeStore: Send + Sync {
    /// Writes notifications with the audit entry of what they tell, in one transaction.
    async fn insert_notifications(
        &self,
        notifications: &[Notification],
        audit: Option<NewAudit>,
    ) -> Result<(), StoreError>;
    async fn notifications_for(
        &self,
        recipients: &[String],
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<Notification>, StoreError>;
    async fn mark_notification_read(&self, id: &str, recipients: &[String], at: Timestamp) -> Result<(), StoreError>;
    async fn insert_webhook(&self, webhook: &Webhook, audit: NewAudit) -> Result<(), StoreError>;
    async fn webhooks_of(&self, org: &OrgId) -> Result<Vec<Webhook>, StoreError>;
    async fn webhook(&self, id: &str) -> Result<Option<Webhook>, StoreError>;
    async fn due_deliveries(&self, now: Timestamp, limit: i64) -> Result<Vec<WebhookDelivery>, StoreError>;
    async fn update_delivery(&self, delivery: &WebhookDelivery) -> Result<(), StoreError>;
    async fn deliveries_of(&self, webhook: &str) -> Result<Vec<WebhookDelivery>, StoreError>;
    async fn notification(&self, id: &str) -> Result<Option<Notification>, StoreError>;
}
