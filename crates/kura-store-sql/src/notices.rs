//! Notifications (the inbox), organisations' webhooks and their deliveries
//! (`kura_store::NoticeStore`).

use async_trait::async_trait;
use kura_core::ids::OrgId;
use kura_core::time::Timestamp;
use kura_store::model::*;
use kura_store::{NoticeStore, StoreError};
use sqlx::any::AnyRow;

use crate::audit_chain::append_audit;
use crate::dialect::placeholders;
use crate::inserts::insert_notifications;
use crate::rows::{self, get, ts};
use crate::{SqlStore, store_error};

const NOTIFICATION_COLUMNS: &str = "seq, id, recipient, kind, subject_ref, message, created_at, read_at";

fn notification_row(row: &AnyRow) -> Result<Notification, StoreError> {
    Ok(Notification {
        seq: get(row, "seq")?,
        id: get(row, "id")?,
        recipient: get(row, "recipient")?,
        kind: get(row, "kind")?,
        subject_ref: get(row, "subject_ref")?,
        message: get(row, "message")?,
        created_at: ts(get(row, "created_at")?),
        read_at: get::<Option<i64>>(row, "read_at")?.map(ts),
    })
}

const WEBHOOK_COLUMNS: &str = "id, org_id, url, secret, created_by, created_at, revoked_at";

fn webhook_row(row: &AnyRow) -> Result<Webhook, StoreError> {
    Ok(Webhook {
        id: get(row, "id")?,
        org: rows::parse_id(&get::<String>(row, "org_id")?, OrgId::parse)?,
        url: get(row, "url")?,
        secret: get(row, "secret")?,
        created_by: get(row, "created_by")?,
        created_at: ts(get(row, "created_at")?),
        revoked_at: get::<Option<i64>>(row, "revoked_at")?.map(ts),
    })
}

const DELIVERY_COLUMNS: &str = "id, webhook_id, notification_id, attempts, state, next_attempt_at, last_status, last_error, created_at, updated_at";

fn delivery_row(row: &AnyRow) -> Result<WebhookDelivery, StoreError> {
    Ok(WebhookDelivery {
        id: get(row, "id")?,
        webhook: get(row, "webhook_id")?,
        notification: get(row, "notification_id")?,
        attempts: get(row, "attempts")?,
        state: get(row, "state")?,
        next_attempt_at: ts(get(row, "next_attempt_at")?),
        last_status: get(row, "last_status")?,
        last_error: get(row, "last_error")?,
        created_at: ts(get(row, "created_at")?),
        updated_at: ts(get(row, "updated_at")?),
    })
}

#[async_trait]
impl NoticeStore for SqlStore {
    async fn insert_notifications(
        &self,
        notifications: &[Notification],
        audit: Option<NewAudit>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        if let Some(audit) = &audit {
            append_audit(tx.conn(), audit).await?;
        }
        insert_notifications(tx.conn(), notifications).await?;
        tx.commit().await
    }

    async fn notifications_for(
        &self,
        recipients: &[String],
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<Notification>, StoreError> {
        if recipients.is_empty() {
            return Ok(Vec::new());
        }
        let n = recipients.len();
        let sql = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE recipient IN ({}) AND seq > ${} ORDER BY seq LIMIT ${}",
            placeholders(1, n),
            n + 1,
            n + 2
        );
        let mut query = sqlx::query(&sql);
        for r in recipients {
            query = query.bind(r.clone());
        }
        let rows = self.fetch_all(query.bind(after_seq).bind(limit)).await?;
        rows.iter().map(notification_row).collect()
    }

    async fn mark_notification_read(&self, id: &str, recipients: &[String], at: Timestamp) -> Result<(), StoreError> {
        let found =
            self.notification(id).await?.filter(|n| recipients.contains(&n.recipient)).ok_or(StoreError::NotFound)?;
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE notifications SET read_at = COALESCE(read_at, $1) WHERE id = $2")
            .bind(at.as_millis())
            .bind(found.id)
            .execute(tx.conn())
            .await
            .map_err(store_error)?;
        tx.commit().await
    }

    async fn insert_webhook(&self, webhook: &Webhook, audit: NewAudit) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(&format!("INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, NULL)"))
            .bind(&webhook.id)
            .bind(webhook.org.as_str())
            .bind(&webhook.url)
            .bind(&webhook.secret)
            .bind(&webhook.created_by)
            .bind(webhook.created_at.as_millis())
            .execute(tx.conn())
            .await
            .map_err(store_error)?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn webhooks_of(&self, org: &OrgId) -> Result<Vec<Webhook>, StoreError> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE org_id = $1 ORDER BY created_at, id");
        let rows = self.fetch_all(sqlx::query(&sql).bind(org.to_string())).await?;
        rows.iter().map(webhook_row).collect()
    }

    async fn webhook(&self, id: &str) -> Result<Option<Webhook>, StoreError> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1");
        let rows = self.fetch_all(sqlx::query(&sql).bind(id.to_owned())).await?;
        rows.first().map(webhook_row).transpose()
    }

    async fn due_deliveries(&self, now: Timestamp, limit: i64) -> Result<Vec<WebhookDelivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at LIMIT $2"
        );
        let rows = self.fetch_all(sqlx::query(&sql).bind(now.as_millis()).bind(limit)).await?;
        rows.iter().map(delivery_row).collect()
    }

    async fn update_delivery(&self, d: &WebhookDelivery) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE webhook_deliveries SET attempts = $1, state = $2, next_attempt_at = $3, last_status = $4, last_error = $5, \
             updated_at = $6 WHERE id = $7",
        )
        .bind(d.attempts)
        .bind(&d.state)
        .bind(d.next_attempt_at.as_millis())
        .bind(d.last_status)
        .bind(d.last_error.clone())
        .bind(d.updated_at.as_millis())
        .bind(&d.id)
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        tx.commit().await
    }

    async fn deliveries_of(&self, webhook: &str) -> Result<Vec<WebhookDelivery>, StoreError> {
        let sql =
            format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY created_at, id");
        let rows = self.fetch_all(sqlx::query(&sql).bind(webhook.to_owned())).await?;
        rows.iter().map(delivery_row).collect()
    }

    async fn notification(&self, id: &str) -> Result<Option<Notification>, StoreError> {
        let sql = format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = $1");
        let rows = self.fetch_all(sqlx::query(&sql).bind(id.to_owned())).await?;
        rows.first().map(notification_row).transpose()
    }
}
