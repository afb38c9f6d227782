//! The store's side of moves between servers (issue 5), on SQLite and, when
//! `KURA_TEST_DATABASE_URL` is set, on PostgreSQL: the peer registry, one-time move-in tokens,
//! and the state machines of outgoing and incoming moves, which refuse every step out of order
//! so that a record is never active in two places.

use kura_core::audit::ChainVerifier;
use kura_core::custody::CustodyEvent;
use kura_core::ids::{AccountId, OrgId, RecordId};
use kura_core::party::{AccountKind, OrgKind, Party};
use kura_core::record::{PartCategory, RecordFormat, RecordState};
use kura_store::model::*;
use kura_store::{AccountStore, AuditStore, PeerStore, RecordStore, StoreError};

use kura_testkit::story::{audit, scratch, t};

fn ledger(event: CustodyEvent, owner: &Party) -> NewLedger {
    NewLedger {
        event,
        from_owner: None,
        to_owner: owner.clone(),
        transfer: None,
        actor: "system".into(),
        at: t(0),
        note: String::new(),
    }
}

fn record(id: &str, owner: &Party, institution: &OrgId) -> NewRecord {
    NewRecord {
        id: RecordId::parse(id).unwrap(),
        owner: owner.clone(),
        institution: institution.clone(),
        mrn: "MRN-1".into(),
        format: RecordFormat::Fhir,
        parts: vec![StoredPart { index: 0, category: PartCategory::Condition, resource_type: "Condition".into() }],
        labels: vec![],
        document_category: None,
        content: ContentRef {
            blob_key: format!("blob-{id}"),
            wrapped_key: vec![1, 2, 3],
            content_hash: "ab".into(),
            size: 3,
        },
        derived_from: None,
        provenance: "test".into(),
        held_under: None,
        values: vec![],
        subject_birth_day: None,
        created_at: t(0),
    }
}

fn conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Conflict(_)))
}

#[tokio::test]
async fn peer_moves_follow_their_state_machines() {
    let scratch = scratch().await;
    let store = &scratch.store;

    // The registry: a peer with its organisation; names and keys are unique.
    let org = Org {
        id: OrgId::parse("org-east").unwrap(),
        name: "peer server east".into(),
        kind: OrgKind::Institution,
        created_at: t(0),
    };
    let east = PeerRow {
        name: "east".into(),
        base_url: "http://east".into(),
        public_key: "KEY-EAST".into(),
        org: org.id.clone(),
        created_by: "account:op".into(),
        created_at: t(0),
    };
    store.insert_peer(&east, &org, audit("peer_register", None)).await.unwrap();
    let other_org = Org { id: OrgId::parse("org-east-2").unwrap(), ..org.clone() };
    assert!(conflict(store.insert_peer(&east, &other_org, audit("peer_register", None)).await));
    assert_eq!(store.peer_by_key("KEY-EAST").await.unwrap(), Some(east.clone()));
    assert_eq!(store.peers().await.unwrap(), vec![east.clone()]);

    let patient = Account {
        id: AccountId::parse("acc-alice").unwrap(),
        username: "alice".into(),
        password_hash: String::new(),
        kind: AccountKind::Patient,
        org: None,
        totp_secret: None,
        created_at: t(0),
    };
    store.create_account(&patient, audit("register", None)).await.unwrap();
    let alice = Party::Account(patient.id.clone());

    // Outgoing: prepare checks the version; the record is `moving` until commit or abort.
    let one = record("rec-1", &alice, &org.id);
    store.insert_record(&one, ledger(CustodyEvent::Uploaded, &alice), audit("upload", Some(&one.id))).await.unwrap();
    let outgoing = OutgoingMove {
        id: "move-1".into(),
        record: one.id.clone(),
        peer_name: "east".into(),
        peer_url: "http://east".into(),
        peer_key: "KEY-EAST".into(),
        state: OutgoingMoveState::Preparing,
        content_hash: "ab".into(),
        remote_id: None,
        ordered_by: "account:acc-alice".into(),
        on_behalf_of: String::new(),
        created_at: t(1),
        updated_at: t(1),
    };
    assert!(conflict(store.prepare_move_out(&outgoing, 7, audit("move_prepare", Some(&one.id))).await));
    store.prepare_move_out(&outgoing, 1, audit("move_prepare", Some(&one.id))).await.unwrap();
    assert_eq!(store.record(&one.id).await.unwrap().unwrap().state, RecordState::Moving);
    let second = OutgoingMove { id: "move-2".into(), ..outgoing.clone() };
    assert!(conflict(store.prepare_move_out(&second, 2, audit("move_prepare", Some(&one.id))).await));
    assert!(conflict(store.confirm_move_out("move-1", t(2), audit("move_confirmed", Some(&one.id))).await));
    assert!(conflict(store.delete_peer("east", audit("peer_remove", None)).await), "a move is unfinished");

    // Abort: active again; the move cannot be committed afterwards.
    store.abort_move_out("move-1", t(2), audit("move_abort", Some(&one.id))).await.unwrap();
    assert_eq!(store.record(&one.id).await.unwrap().unwrap().state, RecordState::Active);
    let locator = Locator {
        destination: "http://east/api/v1/records/r".into(),
        moved_at: t(3),
        ordered_by: "account:acc-alice".into(),
    };
    assert!(conflict(
        store
            .commit_move_out(
                "move-1",
                "r",
                &locator,
                ledger(CustodyEvent::MovedOut, &alice),
                audit("move", Some(&one.id))
            )
            .await
    ));
    assert!(store.unfinished_moves_out().await.unwrap().is_empty());

    // Commit: the record ends with its locator and key destroyed; abort is refused afterwards.
    let version = store.record(&one.id).await.unwrap().unwrap().version;
    let third = OutgoingMove { id: "move-3".into(), ..outgoing.clone() };
    store.prepare_move_out(&third, version, audit("move_prepare", Some(&one.id))).await.unwrap();
    let blob = store
        .commit_move_out("move-3", "r", &locator, ledger(CustodyEvent::MovedOut, &alice), audit("move", Some(&one.id)))
        .await
        .unwrap();
    assert_eq!(blob.as_deref(), Some("blob-rec-1"));
    let row = store.record(&one.id).await.unwrap().unwrap();
    assert_eq!((row.state, row.locator), (RecordState::Moved, Some(locator.clone())));
    assert!(conflict(store.abort_move_out("move-3", t(4), audit("move_abort", Some(&one.id))).await));
    let unfinished = store.unfinished_moves_out().await.unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!((unfinished[0].state, unfinished[0].remote_id.as_deref()), (OutgoingMoveState::Committed, Some("r")));
    store.confirm_move_out("move-3", t(5), audit("move_confirmed", Some(&one.id))).await.unwrap();
    assert_eq!(store.move_out("move-3").await.unwrap().unwrap().state, OutgoingMoveState::Confirmed);

    // Incoming: a token is used once and only before it expires.
    let token = PeerToken {
        token_hash: "tok-1".into(),
        account: patient.id.clone(),
        expires_at: t(100),
        used_at: None,
        created_at: t(0),
    };
    store.insert_peer_token(&token, audit("peer_token_issue", None)).await.unwrap();
    let incoming = IncomingMove {
        origin_key: "KEY-EAST".into(),
        move_id: "in-1".into(),
        peer_name: "east".into(),
        record: Some(RecordId::parse("rec-in-1").unwrap()),
        account: Some(patient.id.clone()),
        state: IncomingMoveState::Pending,
        content_hash: "ab".into(),
        created_at: t(200),
        updated_at: t(200),
    };
    let arriving = record("rec-in-1", &alice, &org.id);
    let late = store.receive_move_in(&incoming, &arriving, "tok-1", audit("move_in_receive", None)).await;
    assert!(matches!(late, Err(StoreError::NotFound)), "expired token");
    let incoming = IncomingMove { created_at: t(10), updated_at: t(10), ..incoming };
    store.receive_move_in(&incoming, &arriving, "tok-1", audit("move_in_receive", None)).await.unwrap();
    assert_eq!(store.record(&arriving.id).await.unwrap().unwrap().state, RecordState::Pending);
    assert!(store.peer_token("tok-1").await.unwrap().unwrap().used_at.is_some());
    assert!(conflict(store.receive_move_in(&incoming, &arriving, "tok-1", audit("move_in_receive", None)).await));
    assert_eq!(store.pending_moves_in().await.unwrap().len(), 1);

    // Activation is idempotent; a discard of an active move is refused.
    let moved_in = ledger(CustodyEvent::MovedIn, &alice);
    store.activate_move_in("KEY-EAST", "in-1", moved_in.clone(), audit("move_in", None)).await.unwrap();
    store.activate_move_in("KEY-EAST", "in-1", moved_in.clone(), audit("move_in", None)).await.unwrap();
    assert_eq!(store.record(&arriving.id).await.unwrap().unwrap().state, RecordState::Active);
    let events: Vec<String> = store.ledger(&arriving.id).await.unwrap().into_iter().map(|e| e.event).collect();
    assert_eq!(events, ["moved_in"], "custody here starts with the move-in");
    assert!(conflict(store.discard_move_in("KEY-EAST", "in-1", "east", t(20), audit("move_in_discard", None)).await));

    // A discarded move (never seen) is remembered: activation is refused, a second discard is fine.
    assert_eq!(
        store.discard_move_in("KEY-EAST", "in-2", "east", t(20), audit("move_in_discard", None)).await.unwrap(),
        None
    );
    assert_eq!(store.move_in("KEY-EAST", "in-2").await.unwrap().unwrap().state, IncomingMoveState::Discarded);
    assert!(conflict(store.activate_move_in("KEY-EAST", "in-2", moved_in, audit("move_in", None)).await));
    store.discard_move_in("KEY-EAST", "in-2", "east", t(21), audit("move_in_discard", None)).await.unwrap();

    // Nothing is unfinished now, so the peer can go; the audit chain holds.
    store.delete_peer("east", audit("peer_remove", None)).await.unwrap();
    assert!(matches!(store.delete_peer("east", audit("peer_remove", None)).await, Err(StoreError::NotFound)));
    let mut verifier = ChainVerifier::default();
    for row in store.audit_entries(None, 0, 10_000).await.unwrap() {
        verifier.push(&row.fields, &row.prev_hash, &row.hash).unwrap();
    }

    scratch.finish().await;
}
