//! What owners, their agents and grantees do to a record besides reading it: an in-server copy
//! for a grantee, a move out (delivered, or to a peer server) and deletion (S203). Each is
//! decided by the caller's permit, which the handler obtained from `decide`.

use kura_core::custody::CustodyEvent;
use kura_core::ids::RecordId;
use kura_core::party::Party;
use kura_core::policy::{Basis, Permit};
use kura_core::record::{PartCategory, RecordFormat};
use kura_core::time::Timestamp;
use kura_store::model::{Locator, NewLedger, NewRecord, Org, RecordEnd, RecordRow};

use super::audit::{AuditExt, audit_entry, audited_action};
use super::error::{ServiceError, ServiceResult};
use super::{content, ids, ingest, notify, peers};
use crate::auth::Caller;
use crate::state::AppState;

/// A local patient id (MRN) as institutions send it.
pub fn check_local_id(mrn: &str) -> ServiceResult<()> {
    if mrn.is_empty() || mrn.len() > 128 || !mrn.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ServiceError::Invalid(
            "patient must be the local patient id: 1 to 128 visible ASCII characters".into(),
        ));
    }
    Ok(())
}

/// Stores an institution's upload (parsed off the request's thread, within the server's limit
/// of parts per record) as a record it owns, with custody starting there.
pub async fn upload(
    state: &AppState,
    caller: &Caller,
    org: &Org,
    mrn: String,
    format: RecordFormat,
    document_category: Option<PartCategory>,
    bytes: impl AsRef<[u8]> + Clone + Send + 'static,
) -> ServiceResult<NewRecord> {
    let now = state.clock.now();
    // Parsing runs on a blocking thread, before and outside any store transaction.
    let parsed = ingest::parse_off_thread(format, bytes.clone(), org.id.to_string(), now, document_category).await?;
    let most = state.config.max_parts_per_record;
    if parsed.parts.len() > most {
        return Err(ServiceError::Invalid(format!(
            "the upload holds {} parts; one record may hold at most {most}: split it into several uploads",
            parsed.parts.len()
        )));
    }
    let id = ids::new_record_id()?;
    let owner = Party::Organisation(org.id.clone());
    let draft = ingest::Draft {
        owner: owner.clone(),
        institution: org.id.clone(),
        mrn,
        format,
        document_category,
        derived_from: None,
        provenance: format!("uploaded by {}", caller.audit_actor()),
        held_under: None,
        created_at: now,
    };
    let ledger = NewLedger {
        event: CustodyEvent::Uploaded,
        from_owner: None,
        to_owner: owner.clone(),
        transfer: None,
        actor: caller.audit_actor(),
        at: now,
        note: String::new(),
    };
    let audit = audit_entry(caller, now, "upload", "done").record(&id).detail(format.as_str());
    let record =
        ingest::insert(state, id.clone(), draft, ingest::Ingested::of(parsed), bytes.as_ref(), ledger, audit).await?;
    tracing::info!(record = %id, format = format.as_str(), parts = record.parts.len(), "record uploaded");
    Ok(record)
}

/// Makes an in-server copy of `record` for the grantee (or the owner), with the permit's
/// obligations applied; returns its id. Under a grant the copy is held under that grant.
pub async fn copy_for_grantee(
    state: &AppState,
    caller: &Caller,
    record: &RecordRow,
    permit: &Permit,
) -> ServiceResult<RecordId> {
    let (owner, held_under) = match permit.basis() {
        Basis::Grant(grant_id) => {
            let grant = state.store.grant(grant_id).await?.ok_or(ServiceError::Internal)?;
            (grant.grant.grantee, Some(grant_id.clone()))
        }
        _ => (record.owner.clone(), None),
    };
    let bytes = content::copyable(state, record, permit).await?;
    let now = state.clock.now();
    let parsed = ingest::parse(record.format, &bytes, record.institution.as_str(), now, record.document_category)?;
    let copy_id = ids::new_record_id()?;
    let draft = ingest::Draft {
        owner: owner.clone(),
        institution: record.institution.clone(),
        mrn: record.mrn.clone(),
        format: record.format,
        document_category: record.document_category,
        derived_from: Some(record.id.clone()),
        provenance: format!("copy of record {} for {}", record.id, owner.to_text()),
        held_under,
        created_at: now,
    };
    let ledger = NewLedger {
        event: CustodyEvent::Copied,
        from_owner: Some(record.owner.clone()),
        to_owner: owner,
        transfer: None,
        actor: caller.audit_actor(),
        at: now,
        note: format!("copy of record {}", record.id),
    };
    let audit = audited_action(state, caller, now, permit, "copy", format!("copy {copy_id}")).await?;
    // A copy is not counted again in research.
    let ingested = ingest::Ingested::of(parsed).without_research_facts();
    ingest::insert(state, copy_id.clone(), draft, ingested, &bytes, ledger, audit).await?;
    Ok(copy_id)
}

/// Delivers the record's content (obligations applied) and ends it here with a locator to
/// `destination` (or "delivered to" its receiver); returns the record as it now stands and
/// the content delivered.
pub async fn move_out(
    state: &AppState,
    caller: &Caller,
    record: RecordRow,
    permit: &Permit,
    destination: Option<String>,
) -> ServiceResult<(RecordRow, content::Released)> {
    let released = content::released(state, &record, permit).await?;
    let now = state.clock.now();
    let receiver = match permit.basis() {
        Basis::Grant(grant_id) => state.store.grant(grant_id).await?.ok_or(ServiceError::Internal)?.grant.grantee,
        _ => record.owner.clone(),
    };
    let destination = match destination {
        Some(d) if d.len() > 500 => return Err(ServiceError::Invalid("destination is at most 500 characters".into())),
        Some(d) => d,
        None => format!("delivered to {}", receiver.to_text()),
    };
    let locator = Locator { destination, moved_at: now, ordered_by: caller.audit_actor() };
    let ledger = NewLedger {
        event: CustodyEvent::MovedOut,
        from_owner: Some(record.owner.clone()),
        to_owner: receiver,
        transfer: None,
        actor: caller.audit_actor(),
        at: now,
        note: locator.destination.clone(),
    };
    let audit = audited_action(state, caller, now, permit, "move", String::new()).await?;
    let notices = notices_of_grantee_action(state, caller, &record, permit, "moved", now).await?;
    let blob = state
        .store
        .end_record(permit, record.version, RecordEnd::Moved(locator.clone()), ledger, audit, &notices)
        .await
        .map_err(|e| ServiceError::store_conflict(e, ""))?;
    content::discard_blobs(state, blob).await;
    notify::publish(state, notices);
    let mut moved = record;
    moved.state = kura_core::record::RecordState::Moved;
    moved.locator = Some(locator);
    Ok((moved, released))
}

/// The peer form of a move: the owner (or their agent) moves a patient's record into the
/// patient's account at a registered peer server (`crate::service::peers` runs the protocol).
pub async fn move_to_peer(
    state: &AppState,
    caller: &Caller,
    record: RecordRow,
    permit: &Permit,
    peer_name: &str,
    token: Option<&str>,
) -> ServiceResult<RecordRow> {
    if !matches!(permit.basis(), Basis::Owner | Basis::Delegation(_)) {
        return Err(ServiceError::Forbidden(
            "only the record's owner (or their agent) moves it to a peer server".into(),
        ));
    }
    if !peers::is_patient_owner(&record.owner) {
        return Err(ServiceError::Invalid(
            "only a patient's records move to a peer server; transfer it to the patient first".into(),
        ));
    }
    if record.held_under.is_some() {
        return Err(ServiceError::Invalid("an in-server copy cannot be moved to a peer server".into()));
    }
    let token = match token {
        Some(t) if !t.is_empty() && t.len() <= 200 => t,
        _ => {
            return Err(ServiceError::Invalid(
                "peer_token is required with peer: the patient obtains it at the peer with POST /api/v1/peer-tokens"
                    .into(),
            ));
        }
    };
    let peer = state
        .store
        .peer(peer_name)
        .await?
        .ok_or_else(|| ServiceError::Invalid(format!("no peer server named '{peer_name}' is registered here")))?;
    let plaintext = content::open(state, permit).await?;
    let locator = peers::move_to_peer(state, caller, &record, plaintext, &peer, token).await?;
    let mut moved = record;
    moved.state = kura_core::record::RecordState::Moved;
    moved.locator = Some(locator);
    Ok(moved)
}

/// Deletes a record: its data key is destroyed, so its content is gone everywhere.
pub async fn delete(state: &AppState, caller: &Caller, record: &RecordRow, permit: &Permit) -> ServiceResult<()> {
    let now = state.clock.now();
    let ledger = NewLedger {
        event: CustodyEvent::Deleted,
        from_owner: Some(record.owner.clone()),
        to_owner: record.owner.clone(),
        transfer: None,
        actor: caller.audit_actor(),
        at: now,
        note: "data key destroyed".into(),
    };
    let audit = audited_action(state, caller, now, permit, "delete", String::new()).await?;
    let notices = notices_of_grantee_action(state, caller, record, permit, "deleted", now).await?;
    let blob = state
        .store
        .end_record(permit, record.version, RecordEnd::Deleted, ledger, audit, &notices)
        .await
        .map_err(|e| ServiceError::store_conflict(e, ""))?;
    content::discard_blobs(state, blob).await;
    notify::publish(state, notices);
    Ok(())
}

/// The patient a record is about: its owner when a patient owns it, else the patient linked to
/// its local id at its institution.
async fn patient_of(state: &AppState, record: &RecordRow) -> ServiceResult<Option<Party>> {
    if let Party::Account(_) = &record.owner {
        return Ok(Some(record.owner.clone()));
    }
    Ok(state.store.linked_patient(&record.institution, &record.mrn).await?.map(Party::Account))
}

/// The notices telling the owner (and the agents who answer for them) that someone else deleted
/// or moved their record through a grant, and the patient that the holder of a copy of their
/// record destroyed it (DESIGN.md I7); written in the change's own transaction.
async fn notices_of_grantee_action(
    state: &AppState,
    caller: &Caller,
    record: &RecordRow,
    permit: &Permit,
    what: &str,
    now: Timestamp,
) -> ServiceResult<Vec<kura_store::model::Notification>> {
    let (recipient, kind, message) = match permit.basis() {
        Basis::Grant(_) => (
            Some(record.owner.clone()),
            format!("record_{what}"),
            format!("{} {what} your record {} under your grant.", caller.audit_actor(), record.id),
        ),
        Basis::CopyHolder(_) => {
            let source = match &record.derived_from {
                Some(id) => state.store.record(id).await?,
                None => None,
            };
            let patient = match &source {
                Some(source) => patient_of(state, source).await?,
                None => None,
            };
            (
                patient,
                "copy_destroyed".to_owned(),
                format!("{} destroyed its copy {} of your record.", caller.audit_actor(), record.id),
            )
        }
        Basis::Owner | Basis::Delegation(_) => (None, String::new(), String::new()),
    };
    let Some(recipient) = recipient else { return Ok(Vec::new()) };
    let about = record.derived_from.as_ref().unwrap_or(&record.id).to_string();
    notify::to_owner_and_agents(state, &recipient, &kind, &about, &message, now).await
}
