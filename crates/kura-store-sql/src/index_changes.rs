//! The research index's change sequence: a row per change of a subject's facts, written inside
//! the transaction of the change, which the index followers read.

use kura_core::ids::OrgId;
use kura_core::time::Timestamp;
use kura_store::StoreError;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use crate::rows::{self, get};
use crate::writes::{self, Write};

/// Records that `subject`'s facts changed, inside the caller's transaction.
pub(crate) async fn note_change(conn: &mut AnyConnection, subject: &str, at: Timestamp) -> Result<(), StoreError> {
    writes::run(conn, &[change_write(subject, at)]).await
}

pub(crate) fn change_write(subject: &str, at: Timestamp) -> Write {
    Write::new("INSERT INTO index_changes (subject, at) VALUES ($1, $2)").text(subject).int(at.as_millis())
}

/// Records that the facts of the subject of the record in `row` (read with its `owner`,
/// `institution` and `mrn` columns) changed, inside the caller's transaction.
pub(crate) async fn note_change_of_record(
    conn: &mut AnyConnection,
    row: &AnyRow,
    at: Timestamp,
) -> Result<(), StoreError> {
    let owner = rows::party(&get::<String>(row, "owner")?)?;
    let institution = rows::parse_id(&get::<String>(row, "institution")?, OrgId::parse)?;
    let subject = kura_core::research::subject_of_record(&owner, &institution, &get::<String>(row, "mrn")?);
    note_change(conn, &subject, at).await
}
