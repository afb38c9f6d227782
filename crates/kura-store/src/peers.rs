//! Peer servers and moves between them (issue 5). A record moving out is `moving` between
//! `prepare_move_out` and `commit_move_out` / `abort_move_out`; a record moving in is
//! `pending` between `receive_move_in` and `activate_move_in` / `discard_move_in`.

use async_trait::async_trait;
use kura_core::time::Timestamp;

use crate::StoreError;
use crate::model::*;

#[async_trait]
pub trait PeerStore: Send + Sync {
    /// Registers a peer with the organisation that stands for it. `Conflict` if the name or the
    /// key is registered already.
    async fn insert_peer(&self, peer: &PeerRow, org: &Org, audit: NewAudit) -> Result<(), StoreError>;
    async fn peers(&self) -> Result<Vec<PeerRow>, StoreError>;
    async fn peer(&self, name: &str) -> Result<Option<PeerRow>, StoreError>;
    async fn peer_by_key(&self, public_key: &str) -> Result<Option<PeerRow>, StoreError>;
    /// `NotFound` if unknown; `Conflict` while a move to or from it is unresolved.
    async fn delete_peer(&self, name: &str, audit: NewAudit) -> Result<(), StoreError>;
    async fn insert_peer_token(&self, token: &PeerToken, audit: NewAudit) -> Result<(), StoreError>;
    async fn peer_token(&self, token_hash: &str) -> Result<Option<PeerToken>, StoreError>;
    /// Phase 0: records the move and marks the record `moving`. `Conflict` if the record is not
    /// active at `expected_version`.
    async fn prepare_move_out(
        &self,
        outgoing: &OutgoingMove,
        expected_version: i64,
        audit: NewAudit,
    ) -> Result<(), StoreError>;
    /// Phase 2: ends the `moving` record with its locator (its data key destroyed) and marks
    /// the move `committed` with the peer's id for it. `Conflict` unless the move is
    /// `preparing`. Returns the blob key to remove.
    async fn commit_move_out(
        &self,
        move_id: &str,
        remote_id: &str,
        locator: &Locator,
        ledger: NewLedger,
        audit: NewAudit,
    ) -> Result<Option<String>, StoreError>;
    /// Undoes a `preparing` move: the record is active again. `Conflict` unless `preparing`.
    async fn abort_move_out(&self, move_id: &str, at: Timestamp, audit: NewAudit) -> Result<(), StoreError>;
    /// The peer activated the record: `committed` → `confirmed`. `Conflict` unless `committed`.
    async fn confirm_move_out(&self, move_id: &str, at: Timestamp, audit: NewAudit) -> Result<(), StoreError>;
    async fn move_out(&self, move_id: &str) -> Result<Option<OutgoingMove>, StoreError>;
    /// Moves still `preparing` or `committed`, oldest first.
    async fn unfinished_moves_out(&self) -> Result<Vec<OutgoingMove>, StoreError>;
    /// Phase 1 on the receiving side: uses the token (`NotFound` if unknown, used or expired at
    /// `incoming.created_at`), stores `record` as `pending` and the move. `Conflict` if the
    /// move is known already.
    async fn receive_move_in(
        &self,
        incoming: &IncomingMove,
        record: &NewRecord,
        token_hash: &str,
        audit: NewAudit,
    ) -> Result<(), StoreError>;
    async fn move_in(&self, origin_key: &str, move_id: &str) -> Result<Option<IncomingMove>, StoreError>;
    /// Phase 3 on the receiving side: the `pending` record becomes active. Already active is
    /// fine (nothing written); `Conflict` if discarded, `NotFound` if unknown.
    async fn activate_move_in(
        &self,
        origin_key: &str,
        move_id: &str,
        ledger: NewLedger,
        audit: NewAudit,
    ) -> Result<(), StoreError>;
    /// The origin abandoned the move: a `pending` record is deleted (its key destroyed) and a
    /// move never seen is remembered as discarded so that a late copy is refused. `Conflict` if
    /// it is active. Returns the blob key to remove.
    async fn discard_move_in(
        &self,
        origin_key: &str,
        move_id: &str,
        peer_name: &str,
        at: Timestamp,
        audit: NewAudit,
    ) -> Result<Option<String>, StoreError>;
    /// Incoming moves still `pending`, oldest first.
    async fn pending_moves_in(&self) -> Result<Vec<IncomingMove>, StoreError>;
}
