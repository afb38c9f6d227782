//! The custody ledger's rows, written inside the transaction of the change they record.

use kura_core::ids::RecordId;
use kura_core::party::Party;
use kura_store::StoreError;
use kura_store::model::*;
use sqlx::AnyConnection;

use crate::writes::{self, Write};

pub(crate) async fn insert_ledger(
    conn: &mut AnyConnection,
    record: &RecordId,
    ledger: &NewLedger,
) -> Result<(), StoreError> {
    writes::run(conn, &[ledger_write(record, ledger)]).await
}

pub(crate) fn ledger_write(record: &RecordId, ledger: &NewLedger) -> Write {
    Write::new(
        "INSERT INTO custody_ledger (record_id, event, from_owner, to_owner, transfer_id, actor, at, note) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .text(record.as_str())
    .text(ledger.event.as_str())
    .opt_text(ledger.from_owner.as_ref().map(Party::to_text))
    .text(ledger.to_owner.to_text())
    .opt_text(ledger.transfer.as_ref().map(|t| t.to_string()))
    .text(&ledger.actor)
    .int(ledger.at.as_millis())
    .text(&ledger.note)
}
