//! Peer servers and moves between them (issue 5): the peer registry, patients' move-in tokens,
//! outgoing moves (the origin's side of the two-phase move) and incoming moves (the receiving
//! side). Each state change is one transaction with its ledger and audit entries.

use async_trait::async_trait;
use kura_core::ids::{AccountId, OrgId, RecordId};
use kura_core::time::Timestamp;
use kura_store::model::*;
use kura_store::{PeerStore, StoreError};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use crate::audit_chain::append_audit;
use crate::index_changes::note_change_of_record;
use crate::inserts::insert_org_row;
use crate::ledger::insert_ledger;
use crate::record_rows::insert_record_rows;
use crate::rows::{get, parse_id, ts};
use crate::{SqlStore, store_error};

const PEER_COLUMNS: &str = "name, base_url, public_key, org_id, created_by, created_at";

const OUT_COLUMNS: &str = "id, record_id, peer_name, peer_url, peer_key, state, content_hash, remote_id, ordered_by, \
                           on_behalf_of, created_at, updated_at";

const IN_COLUMNS: &str =
    "origin_key, move_id, peer_name, record_id, account_id, state, content_hash, created_at, updated_at";

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn peer_row(row: &AnyRow) -> Result<PeerRow, StoreError> {
    Ok(PeerRow {
        name: get(row, "name")?,
        base_url: get(row, "base_url")?,
        public_key: get(row, "public_key")?,
        org: parse_id(&get::<String>(row, "org_id")?, OrgId::parse)?,
        created_by: get(row, "created_by")?,
        created_at: ts(get(row, "created_at")?),
    })
}

fn outgoing_row(row: &AnyRow) -> Result<OutgoingMove, StoreError> {
    Ok(OutgoingMove {
        id: get(row, "id")?,
        record: parse_id(&get::<String>(row, "record_id")?, RecordId::parse)?,
        peer_name: get(row, "peer_name")?,
        peer_url: get(row, "peer_url")?,
        peer_key: get(row, "peer_key")?,
        state: OutgoingMoveState::parse(&get::<String>(row, "state")?).ok_or_else(|| corrupt("move state"))?,
        content_hash: get(row, "content_hash")?,
        remote_id: get(row, "remote_id")?,
        ordered_by: get(row, "ordered_by")?,
        on_behalf_of: get(row, "on_behalf_of")?,
        created_at: ts(get(row, "created_at")?),
        updated_at: ts(get(row, "updated_at")?),
    })
}

fn incoming_row(row: &AnyRow) -> Result<IncomingMove, StoreError> {
    Ok(IncomingMove {
        origin_key: get(row, "origin_key")?,
        move_id: get(row, "move_id")?,
        peer_name: get(row, "peer_name")?,
        record: get::<Option<String>>(row, "record_id")?.map(|r| parse_id(&r, RecordId::parse)).transpose()?,
        account: get::<Option<String>>(row, "account_id")?.map(|a| parse_id(&a, AccountId::parse)).transpose()?,
        state: IncomingMoveState::parse(&get::<String>(row, "state")?).ok_or_else(|| corrupt("move state"))?,
        content_hash: get(row, "content_hash")?,
        created_at: ts(get(row, "created_at")?),
        updated_at: ts(get(row, "updated_at")?),
    })
}

/// Sets a record's state from `from` to `to` (bumping its version); `Conflict` if it was not in
/// `from`.
async fn switch_record_state(
    conn: &mut AnyConnection,
    record: &str,
    from: &str,
    to: &str,
    at: Timestamp,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE records SET state = $1, version = version + 1, updated_at = $2 WHERE id = $3 AND state = $4",
    )
    .bind(to)
    .bind(at.as_millis())
    .bind(record)
    .bind(from)
    .execute(&mut *conn)
    .await
    .map_err(store_error)?;
    if done.rows_affected() != 1 {
        return Err(StoreError::Conflict("the record is not in the state this step expects"));
    }
    Ok(())
}

/// Tells the research index followers that the record's subject changed (a record became
/// active or stopped being so).
async fn note_record_change(conn: &mut AnyConnection, record: &str, at: Timestamp) -> Result<(), StoreError> {
    let row = sqlx::query("SELECT owner, institution, mrn FROM records WHERE id = $1")
        .bind(record)
        .fetch_one(&mut *conn)
        .await
        .map_err(store_error)?;
    note_change_of_record(conn, &row, at).await
}

async fn outgoing_in_tx(conn: &mut AnyConnection, move_id: &str) -> Result<OutgoingMove, StoreError> {
    let sql = format!("SELECT {OUT_COLUMNS} FROM peer_moves_out WHERE id = $1");
    let row = sqlx::query(&sql).bind(move_id).fetch_optional(&mut *conn).await.map_err(store_error)?;
    outgoing_row(&row.ok_or(StoreError::NotFound)?)
}

async fn set_outgoing_state(
    conn: &mut AnyConnection,
    move_id: &str,
    from: OutgoingMoveState,
    to: OutgoingMoveState,
    at: Timestamp,
) -> Result<(), StoreError> {
    let done = sqlx::query("UPDATE peer_moves_out SET state = $1, updated_at = $2 WHERE id = $3 AND state = $4")
        .bind(to.as_str())
        .bind(at.as_millis())
        .bind(move_id)
        .bind(from.as_str())
        .execute(&mut *conn)
        .await
        .map_err(store_error)?;
    if done.rows_affected() != 1 {
        return Err(StoreError::Conflict("the move is not in the state this step expects"));
    }
    Ok(())
}

async fn incoming_in_tx(
    conn: &mut AnyConnection,
    origin_key: &str,
    move_id: &str,
) -> Result<Option<IncomingMove>, StoreError> {
    let sql = format!("SELECT {IN_COLUMNS} FROM peer_moves_in WHERE origin_key = $1 AND move_id = $2");
    let row = sqlx::query(&sql).bind(origin_key).bind(move_id).fetch_optional(&mut *conn).await.map_err(store_error)?;
    row.as_ref().map(incoming_row).transpose()
}

#[async_trait]
impl PeerStore for SqlStore {
    async fn insert_peer(&self, peer: &PeerRow, org: &Org, audit: NewAudit) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let taken = sqlx::query("SELECT name FROM peers WHERE name = $1 OR public_key = $2")
            .bind(&peer.name)
            .bind(&peer.public_key)
            .fetch_optional(tx.conn())
            .await
            .map_err(store_error)?;
        if taken.is_some() {
            return Err(StoreError::Conflict("a peer with this name or public key is registered already"));
        }
        insert_org_row(tx.conn(), org, false).await?;
        sqlx::query(
            "INSERT INTO peers (name, base_url, public_key, org_id, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&peer.name)
        .bind(&peer.base_url)
        .bind(&peer.public_key)
        .bind(peer.org.as_str())
        .bind(&peer.created_by)
        .bind(peer.created_at.as_millis())
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn peers(&self) -> Result<Vec<PeerRow>, StoreError> {
        let sql = format!("SELECT {PEER_COLUMNS} FROM peers ORDER BY name");
        self.fetch_all(sqlx::query(&sql)).await?.iter().map(peer_row).collect()
    }

    async fn peer(&self, name: &str) -> Result<Option<PeerRow>, StoreError> {
        let sql = format!("SELECT {PEER_COLUMNS} FROM peers WHERE name = $1");
        self.fetch_all(sqlx::query(&sql).bind(name)).await?.first().map(peer_row).transpose()
    }

    async fn peer_by_key(&self, public_key: &str) -> Result<Option<PeerRow>, StoreError> {
        let sql = format!("SELECT {PEER_COLUMNS} FROM peers WHERE public_key = $1");
        self.fetch_all(sqlx::query(&sql).bind(public_key)).await?.first().map(peer_row).transpose()
    }

    async fn delete_peer(&self, name: &str, audit: NewAudit) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let sql = format!("SELECT {PEER_COLUMNS} FROM peers WHERE name = $1");
        let row = sqlx::query(&sql).bind(name).fetch_optional(tx.conn()).await.map_err(store_error)?;
        let peer = peer_row(&row.ok_or(StoreError::NotFound)?)?;
        let open_out =
            sqlx::query("SELECT id FROM peer_moves_out WHERE peer_key = $1 AND state IN ('preparing', 'committed')")
                .bind(&peer.public_key)
                .fetch_optional(tx.conn())
                .await
                .map_err(store_error)?;
        let open_in = sqlx::query("SELECT move_id FROM peer_moves_in WHERE origin_key = $1 AND state = 'pending'")
            .bind(&peer.public_key)
            .fetch_optional(tx.conn())
            .await
            .map_err(store_error)?;
        if open_out.is_some() || open_in.is_some() {
            return Err(StoreError::Conflict("a move to or from this peer is not finished yet"));
        }
        sqlx::query("DELETE FROM peers WHERE name = $1").bind(name).execute(tx.conn()).await.map_err(store_error)?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn insert_peer_token(&self, token: &PeerToken, audit: NewAudit) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO peer_tokens (token_hash, account_id, expires_at, used_at, created_at) VALUES ($1, $2, $3, NULL, $4)",
        )
        .bind(&token.token_hash)
        .bind(token.account.as_str())
        .bind(token.expires_at.as_millis())
        .bind(token.created_at.as_millis())
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn peer_token(&self, token_hash: &str) -> Result<Option<PeerToken>, StoreError> {
        let rows = self
            .fetch_all(
                sqlx::query(
                    "SELECT token_hash, account_id, expires_at, used_at, created_at FROM peer_tokens WHERE token_hash = $1",
                )
                .bind(token_hash),
            )
            .await?;
        rows.first()
            .map(|row| {
                Ok(PeerToken {
                    token_hash: get(row, "token_hash")?,
                    account: parse_id(&get::<String>(row, "account_id")?, AccountId::parse)?,
                    expires_at: ts(get(row, "expires_at")?),
                    used_at: get::<Option<i64>>(row, "used_at")?.map(ts),
                    created_at: ts(get(row, "created_at")?),
                })
            })
            .transpose()
    }

    async fn prepare_move_out(
        &self,
        outgoing: &OutgoingMove,
        expected_version: i64,
        audit: NewAudit,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE records SET state = 'moving', version = version + 1, updated_at = $1 \
             WHERE id = $2 AND state = 'active' AND version = $3",
        )
        .bind(outgoing.created_at.as_millis())
        .bind(outgoing.record.as_str())
        .bind(expected_version)
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict("the record changed concurrently; nothing was applied"));
        }
        sqlx::query(
            "INSERT INTO peer_moves_out (id, record_id, peer_name, peer_url, peer_key, state, content_hash, remote_id, \
             ordered_by, on_behalf_of, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $10, $10)",
        )
        .bind(&outgoing.id)
        .bind(outgoing.record.as_str())
        .bind(&outgoing.peer_name)
        .bind(&outgoing.peer_url)
        .bind(&outgoing.peer_key)
        .bind(outgoing.state.as_str())
        .bind(&outgoing.content_hash)
        .bind(&outgoing.ordered_by)
        .bind(&outgoing.on_behalf_of)
        .bind(outgoing.created_at.as_millis())
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn commit_move_out(
        &self,
        move_id: &str,
        remote_id: &str,
        locator: &Locator,
        ledger: NewLedger,
        audit: NewAudit,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        let outgoing = outgoing_in_tx(tx.conn(), move_id).await?;
        set_outgoing_state(
            tx.conn(),
            move_id,
            OutgoingMoveState::Preparing,
            OutgoingMoveState::Committed,
            locator.moved_at,
        )
        .await?;
        sqlx::query("UPDATE peer_moves_out SET remote_id = $1 WHERE id = $2")
            .bind(remote_id)
            .bind(move_id)
            .execute(tx.conn())
            .await
            .map_err(store_error)?;
        let row = sqlx::query("SELECT blob_key FROM records WHERE id = $1 AND state = 'moving'")
            .bind(outgoing.record.as_str())
            .fetch_optional(tx.conn())
            .await
            .map_err(store_error)?
            .ok_or(StoreError::Conflict("the record is not being moved"))?;
        let blob_key: Option<String> = get(&row, "blob_key")?;
        note_record_change(tx.conn(), outgoing.record.as_str(), locator.moved_at).await?;
        sqlx::query(
            "UPDATE records SET state = 'moved', wrapped_key = NULL, blob_key = NULL, moved_to = $1, moved_at = $2, \
             moved_by = $3, version = version + 1, updated_at = $2 WHERE id = $4",
        )
        .bind(&locator.destination)
        .bind(locator.moved_at.as_millis())
        .bind(&locator.ordered_by)
        .bind(outgoing.record.as_str())
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        insert_ledger(tx.conn(), &outgoing.record, &ledger).await?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await?;
        Ok(blob_key)
    }

    async fn abort_move_out(&self, move_id: &str, at: Timestamp, audit: NewAudit) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let outgoing = outgoing_in_tx(tx.conn(), move_id).await?;
        set_outgoing_state(tx.conn(), move_id, OutgoingMoveState::Preparing, OutgoingMoveState::Aborted, at).await?;
        switch_record_state(tx.conn(), outgoing.record.as_str(), "moving", "active", at).await?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn confirm_move_out(&self, move_id: &str, at: Timestamp, audit: NewAudit) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        set_outgoing_state(tx.conn(), move_id, OutgoingMoveState::Committed, OutgoingMoveState::Confirmed, at).await?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn move_out(&self, move_id: &str) -> Result<Option<OutgoingMove>, StoreError> {
        let sql = format!("SELECT {OUT_COLUMNS} FROM peer_moves_out WHERE id = $1");
        self.fetch_all(sqlx::query(&sql).bind(move_id)).await?.first().map(outgoing_row).transpose()
    }

    async fn unfinished_moves_out(&self) -> Result<Vec<OutgoingMove>, StoreError> {
        let sql = format!(
            "SELECT {OUT_COLUMNS} FROM peer_moves_out WHERE state IN ('preparing', 'committed') ORDER BY created_at, id"
        );
        self.fetch_all(sqlx::query(&sql)).await?.iter().map(outgoing_row).collect()
    }

    async fn receive_move_in(
        &self,
        incoming: &IncomingMove,
        record: &NewRecord,
        token_hash: &str,
        audit: NewAudit,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        if incoming_in_tx(tx.conn(), &incoming.origin_key, &incoming.move_id).await?.is_some() {
            return Err(StoreError::Conflict("this move was received already"));
        }
        let now = incoming.created_at.as_millis();
        let used = sqlx::query(
            "UPDATE peer_tokens SET used_at = $1 WHERE token_hash = $2 AND account_id = $3 AND used_at IS NULL \
             AND expires_at > $1",
        )
        .bind(now)
        .bind(token_hash)
        .bind(incoming.account.as_ref().map(|a| a.to_string()))
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        if used.rows_affected() != 1 {
            return Err(StoreError::NotFound);
        }
        insert_record_rows(tx.conn(), record).await?;
        switch_record_state(tx.conn(), record.id.as_str(), "active", "pending", incoming.created_at).await?;
        sqlx::query(
            "INSERT INTO peer_moves_in (origin_key, move_id, peer_name, record_id, account_id, state, content_hash, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $7)",
        )
        .bind(&incoming.origin_key)
        .bind(&incoming.move_id)
        .bind(&incoming.peer_name)
        .bind(record.id.as_str())
        .bind(incoming.account.as_ref().map(|a| a.to_string()))
        .bind(&incoming.content_hash)
        .bind(now)
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn move_in(&self, origin_key: &str, move_id: &str) -> Result<Option<IncomingMove>, StoreError> {
        let sql = format!("SELECT {IN_COLUMNS} FROM peer_moves_in WHERE origin_key = $1 AND move_id = $2");
        self.fetch_all(sqlx::query(&sql).bind(origin_key).bind(move_id)).await?.first().map(incoming_row).transpose()
    }

    async fn activate_move_in(
        &self,
        origin_key: &str,
        move_id: &str,
        ledger: NewLedger,
        audit: NewAudit,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let incoming = incoming_in_tx(tx.conn(), origin_key, move_id).await?.ok_or(StoreError::NotFound)?;
        let record = match (incoming.state, &incoming.record) {
            (IncomingMoveState::Active, _) => return Ok(()),
            (IncomingMoveState::Discarded, _) | (_, None) => {
                return Err(StoreError::Conflict("this move was abandoned by its origin"));
            }
            (IncomingMoveState::Pending, Some(record)) => record.clone(),
        };
        sqlx::query(
            "UPDATE peer_moves_in SET state = 'active', updated_at = $1 WHERE origin_key = $2 AND move_id = $3",
        )
        .bind(ledger.at.as_millis())
        .bind(origin_key)
        .bind(move_id)
        .execute(tx.conn())
        .await
        .map_err(store_error)?;
        switch_record_state(tx.conn(), record.as_str(), "pending", "active", ledger.at).await?;
        note_record_change(tx.conn(), record.as_str(), ledger.at).await?;
        insert_ledger(tx.conn(), &record, &ledger).await?;
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await
    }

    async fn discard_move_in(
        &self,
        origin_key: &str,
        move_id: &str,
        peer_name: &str,
        at: Timestamp,
        mut audit: NewAudit,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        let blob = match incoming_in_tx(tx.conn(), origin_key, move_id).await? {
            Some(IncomingMove { state: IncomingMoveState::Active, .. }) => {
                return Err(StoreError::Conflict("the record was activated here already"));
            }
            Some(IncomingMove { state: IncomingMoveState::Discarded, .. }) => return Ok(None),
            Some(IncomingMove { state: IncomingMoveState::Pending, record, .. }) => {
                sqlx::query(
                    "UPDATE peer_moves_in SET state = 'discarded', updated_at = $1 WHERE origin_key = $2 AND move_id = $3",
                )
                .bind(at.as_millis())
                .bind(origin_key)
                .bind(move_id)
                .execute(tx.conn())
                .await
                .map_err(store_error)?;
                let Some(record) = record else { return Err(corrupt("pending move without a record")) };
                let row = sqlx::query("SELECT blob_key FROM records WHERE id = $1 AND state = 'pending'")
                    .bind(record.as_str())
                    .fetch_optional(tx.conn())
                    .await
                    .map_err(store_error)?
                    .ok_or(StoreError::Conflict("the record is not pending"))?;
                sqlx::query(
                    "UPDATE records SET state = 'deleted', wrapped_key = NULL, blob_key = NULL, version = version + 1, \
                     updated_at = $1 WHERE id = $2",
                )
                .bind(at.as_millis())
                .bind(record.as_str())
                .execute(tx.conn())
                .await
                .map_err(store_error)?;
                audit.record = Some(record);
                get::<Option<String>>(&row, "blob_key")?
            }
            None => {
                sqlx::query(
                    "INSERT INTO peer_moves_in (origin_key, move_id, peer_name, record_id, account_id, state, \
                     content_hash, created_at, updated_at) VALUES ($1, $2, $3, NULL, NULL, 'discarded', '', $4, $4)",
                )
                .bind(origin_key)
                .bind(move_id)
                .bind(peer_name)
                .bind(at.as_millis())
                .execute(tx.conn())
                .await
                .map_err(store_error)?;
                None
            }
        };
        append_audit(tx.conn(), &audit).await?;
        tx.commit().await?;
        Ok(blob)
    }

    async fn pending_moves_in(&self) -> Result<Vec<IncomingMove>, StoreError> {
        let sql =
            format!("SELECT {IN_COLUMNS} FROM peer_moves_in WHERE state = 'pending' ORDER BY created_at, move_id");
        self.fetch_all(sqlx::query(&sql)).await?.iter().map(incoming_row).collect()
    }
}
