//! The store conformance story: one sequence of operations every backend must get right, run on
//! SQLite and, when `KURA_TEST_DATABASE_URL` is set, on PostgreSQL.

use kura_core::audit::ChainVerifier;
use kura_core::custody::CustodyEvent;
use kura_core::ids::{AccountId, GrantId, OrgId, RecordId, TransferId};
use kura_core::labels::Label;
use kura_core::party::{AccountKind, OrgKind, Party};
use kura_core::policy::{Action, ActionSet, Anonymization, Grant, GrantTerms, RecordSelector};
use kura_core::record::{CategorySet, PartCategory, RecordFormat, RecordState};
use kura_store::model::*;
use kura_store::{
    AccountStore, AnalysisStore, AuditStore, DisclosureStore, GrantStore, NoticeStore, PartitionWrite, ProviderStore,
    RecordStore, ResearchStore, StoreError,
};
use kura_store_sql::{Backend, SqlStore};

use kura_testkit::story::{audit, scratch, t};

fn account(id: &str, username: &str, kind: AccountKind, org: Option<&OrgId>) -> Account {
    Account {
        id: AccountId::parse(id).unwrap(),
        username: username.into(),
        password_hash: "$argon2id$placeholder".into(),
        kind,
        org: org.cloned(),
        totp_secret: None,
        created_at: t(0),
    }
}

fn content(blob: &str) -> ContentRef {
    ContentRef { blob_key: blob.into(), wrapped_key: vec![1, 2, 3], content_hash: "ab".into(), size: 3 }
}

fn new_record(id: &str, owner: &Party, institution: &OrgId, held_under: Option<GrantId>) -> NewRecord {
    NewRecord {
        id: RecordId::parse(id).unwrap(),
        owner: owner.clone(),
        institution: institution.clone(),
        mrn: "MRN-1".into(),
        format: RecordFormat::Fhir,
        parts: vec![
            StoredPart { index: 0, category: PartCategory::Image, resource_type: "ImagingStudy".into() },
            StoredPart { index: 1, category: PartCategory::Condition, resource_type: "Condition".into() },
        ],
        labels: vec![Label::parse("icd10:E11").unwrap(), Label::parse("sex:female").unwrap()],
        document_category: None,
        content: content(&format!("blob{id}")),
        derived_from: None,
        provenance: "test".into(),
        held_under,
        values: vec![StoredValue { code: Label::parse("loinc:4548-4").unwrap(), value: 7.2, unit: "%".into() }],
        subject_birth_day: Some(-200),
        created_at: t(0),
    }
}

fn ledger(event: CustodyEvent, from: Option<&Party>, to: &Party) -> NewLedger {
    NewLedger {
        event,
        from_owner: from.cloned(),
        to_owner: to.clone(),
        transfer: None,
        actor: "system".into(),
        at: t(0),
        note: String::new(),
    }
}

async fn verify_chain(store: &SqlStore) -> Result<i64, kura_core::audit::ChainBreak> {
    let mut verifier = ChainVerifier::default();
    for row in store.audit_entries(None, 0, 100_000).await.unwrap() {
        verifier.push(&row.fields, &row.prev_hash, &row.hash)?;
    }
    Ok(verifier.head().1)
}

#[tokio::test]
async fn store_conformance_story() {
    let scratch = scratch().await;
    let store = &scratch.store;
    if !scratch.is_postgres() {
        // Durability of the embedded default: WAL, and every commit synced (FULL = 2).
        use sqlx::Row;
        let pool = store.pool_for_tests();
        let mode: String = sqlx::query("PRAGMA journal_mode").fetch_one(pool).await.unwrap().get(0);
        let sync: i64 = sqlx::query("PRAGMA synchronous").fetch_one(pool).await.unwrap().get(0);
        assert_eq!((mode.as_str(), sync), ("wal", 2));
    }

    // Organisations and accounts; usernames are unique.
    let hospital = OrgId::parse("org-hospital").unwrap();
    store
        .create_org(
            &Org { id: hospital.clone(), name: "Hospital".into(), kind: OrgKind::Institution, created_at: t(0) },
            audit("org", None),
        )
        .await
        .unwrap();
    let patient = account("acc-patient", "alice", AccountKind::Patient, None);
    store.create_account(&patient, audit("register", None)).await.unwrap();
    let duplicate = account("acc-other", "alice", AccountKind::Patient, None);
    assert!(matches!(store.create_account(&duplicate, audit("register", None)).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.account_by_username("alice").await.unwrap().unwrap().id, patient.id);
    // What every request reads is kept between requests on SQLite (`cache.rs`); a change shows
    // in the next read all the same.
    assert!(store.account(&patient.id).await.unwrap().unwrap().totp_secret.is_none());
    store.set_totp_secret(&patient.id, Some("JBSWY3DPEHPK3PXP"), audit("totp", None)).await.unwrap();
    assert_eq!(store.account(&patient.id).await.unwrap().unwrap().totp_secret.as_deref(), Some("JBSWY3DPEHPK3PXP"));
    store.set_totp_secret(&patient.id, None, audit("totp", None)).await.unwrap();
    assert!(store.account(&patient.id).await.unwrap().unwrap().totp_secret.is_none());
    assert!(store.account_by_username("nobody").await.unwrap().is_none());

    // Link codes are one-time, expire, and a local id links to one patient only.
    let code = LinkCode {
        code_hash: "h1".into(),
        institution: hospital.clone(),
        mrn: "MRN-1".into(),
        expires_at: t(1000),
        created_at: t(0),
    };
    store.create_link_code(&code, audit("link", None)).await.unwrap();
    let linked = store.redeem_link_code("h1", &patient.id, t(10), audit("redeem", None)).await.unwrap();
    assert_eq!(linked, (hospital.clone(), "MRN-1".to_owned()));
    assert!(matches!(
        store.redeem_link_code("h1", &patient.id, t(10), audit("redeem", None)).await,
        Err(StoreError::NotFound)
    ));
    let expired = LinkCode { code_hash: "h2".into(), expires_at: t(5), ..code.clone() };
    store.create_link_code(&expired, audit("link", None)).await.unwrap();
    assert!(matches!(
        store.redeem_link_code("h2", &patient.id, t(10), audit("redeem", None)).await,
        Err(StoreError::NotFound)
    ));
    let bob = account("acc-bob", "bob", AccountKind::Patient, None);
    store.create_account(&bob, audit("register", None)).await.unwrap();
    let again = LinkCode { code_hash: "h3".into(), ..code.clone() };
    store.create_link_code(&again, audit("link", None)).await.unwrap();
    assert!(matches!(
        store.redeem_link_code("h3", &bob.id, t(10), audit("redeem", None)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.linked_patient(&hospital, "MRN-1").await.unwrap(), Some(patient.id.clone()));

    // Records round-trip with parts and labels and are found by owner and label.
    let institution = Party::Organisation(hospital.clone());
    let record = new_record("rec-1", &institution, &hospital, None);
    let changes_before = store.last_index_change().await.unwrap();
    store
        .insert_record(&record, ledger(CustodyEvent::Uploaded, None, &institution), audit("upload", Some(&record.id)))
        .await
        .unwrap();
    let changes = store.index_changes_after(changes_before, 100).await.unwrap();
    assert_eq!(changes.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(), ["local:org-hospital:MRN-1"]);
    // The same id again is a conflict, and a record of an unknown institution a bad reference;
    // neither leaves a row, an audit entry or an index change behind.
    let head_before = store.audit_head().await.unwrap();
    let uploaded = || ledger(CustodyEvent::Uploaded, None, &institution);
    let again = store.insert_record(&record, uploaded(), audit("upload", Some(&record.id))).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    let stranger = OrgId::parse("org-unknown").unwrap();
    let orphan = new_record("rec-orphan", &institution, &stranger, None);
    let outcome = store.insert_record(&orphan, uploaded(), audit("upload", Some(&orphan.id))).await;
    assert!(matches!(outcome, Err(StoreError::Invalid(_))), "{outcome:?}");
    assert!(store.record(&orphan.id).await.unwrap().is_none());
    assert_eq!(store.audit_head().await.unwrap(), head_before);
    assert_eq!(store.last_index_change().await.unwrap(), changes.last().unwrap().0);
    let row = store.record(&record.id).await.unwrap().unwrap();
    assert_eq!((row.owner.clone(), row.state, row.version), (institution.clone(), RecordState::Active, 1));
    assert_eq!(row.parts[..], record.parts[..]);
    assert_eq!(row.labels[..], record.labels[..]);
    let found = store
        .candidate_records(std::slice::from_ref(&institution), &[Label::parse("icd10:E11").unwrap()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    let none = store
        .candidate_records(std::slice::from_ref(&institution), &[Label::parse("icd10:I10").unwrap()])
        .await
        .unwrap();
    assert!(none.is_empty());

    // A transfer against a stale version changes nothing; the right one moves custody.
    let head_before = store.audit_head().await.unwrap();
    let patient_party = Party::Account(patient.id.clone());
    let commit = |version| TransferCommit {
        transfer: TransferId::parse("tr-1").unwrap(),
        record: record.id.clone(),
        expected_version: version,
        institution: institution.clone(),
        patient: patient_party.clone(),
        at: t(20),
        actor: "system".into(),
        whole_content: None,
        split: None,
        retained_view: None,
        ended_grants: Vec::new(),
        carried_grants: Vec::new(),
        copies_destroyed_notice: Vec::new(),
        audit: vec![audit("transfer", Some(&record.id))],
    };
    assert!(matches!(store.apply_transfer(&commit(7)).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.audit_head().await.unwrap(), head_before);
    assert_eq!(store.ledger(&record.id).await.unwrap().len(), 1);
    // Two transfers racing on the same version: exactly one wins.
    let (first, second) = (commit(1), commit(1));
    let (a, b) = tokio::join!(store.apply_transfer(&first), store.apply_transfer(&second));
    assert_eq!([a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(), 1, "{a:?} {b:?}");
    let row = store.record(&record.id).await.unwrap().unwrap();
    assert_eq!((row.owner.clone(), row.version), (patient_party.clone(), 2));
    let events: Vec<String> = store.ledger(&record.id).await.unwrap().into_iter().map(|e| e.event).collect();
    assert_eq!(events, ["uploaded", "transferred"]);

    // A grant, a copy held under it, and revocation destroying the copy in one go.
    let terms = GrantTerms::new(
        RecordSelector::Records(vec![record.id.clone()]),
        CategorySet::empty().with(PartCategory::Image),
        ActionSet::empty().with(Action::View).with(Action::Copy),
        Anonymization::Pseudonymized,
        t(0),
        Some(t(100_000)),
    )
    .unwrap();
    let grant = GrantRow {
        grant: Grant {
            id: GrantId::parse("gr-1").unwrap(),
            owner: patient_party.clone(),
            grantee: institution.clone(),
            terms,
            revoked_at: None,
        },
        study: None,
        purpose: "second opinion".into(),
        created_by: "account:acc-patient".into(),
        created_at: t(0),
    };
    store.insert_grant(&grant, audit("grant", Some(&record.id))).await.unwrap();
    assert_eq!(store.grant(&grant.grant.id).await.unwrap().unwrap(), grant);
    let view = store.policy_view(&row).await.unwrap();
    assert_eq!(view.grants, vec![grant.grant.clone()]);
    let copy = new_record("rec-copy", &institution, &hospital, Some(grant.grant.id.clone()));
    store
        .insert_record(
            &copy,
            ledger(CustodyEvent::Copied, Some(&patient_party), &institution),
            audit("copy", Some(&record.id)),
        )
        .await
        .unwrap();
    assert_eq!(store.sweep_copies(t(50)).await.unwrap().blobs, Vec::<String>::new());
    let destroyed = store.revoke_grant(&grant.grant.id, t(60), audit("revoke", None), &[]).await.unwrap();
    assert_eq!(destroyed, vec!["blobrec-copy".to_owned()]);
    assert!(store.policy_view(&row).await.unwrap().grants.is_empty(), "a revoked grant is gone at once");
    assert_eq!(store.record(&copy.id).await.unwrap().unwrap().state, RecordState::Deleted);
    assert!(matches!(
        store.revoke_grant(&grant.grant.id, t(61), audit("revoke", None), &[]).await,
        Err(StoreError::Conflict(_))
    ));

    // Expiry: the sweeper destroys a copy whose grant ran out.
    let short = GrantRow {
        grant: Grant {
            id: GrantId::parse("gr-2").unwrap(),
            terms: GrantTerms::new(
                RecordSelector::Labels(vec![]),
                CategorySet::all(),
                ActionSet::empty().with(Action::Copy),
                Anonymization::None,
                t(0),
                Some(t(100)),
            )
            .unwrap(),
            ..grant.grant.clone()
        },
        ..grant.clone()
    };
    store.insert_grant(&short, audit("grant", None)).await.unwrap();
    let copy2 = new_record("rec-copy2", &institution, &hospital, Some(short.grant.id.clone()));
    store
        .insert_record(&copy2, ledger(CustodyEvent::Copied, Some(&patient_party), &institution), audit("copy", None))
        .await
        .unwrap();
    assert!(store.sweep_copies(t(99)).await.unwrap().blobs.is_empty());
    let swept = store.sweep_copies(t(100)).await.unwrap();
    assert_eq!(swept.blobs, vec!["blobrec-copy2".to_owned()]);
    assert_eq!(swept.grant_owners.len(), 1, "the owner of the ended grant is named, to be told");

    // Deleting a record destroys its key; its content can no longer be reached.
    let current = store.record(&record.id).await.unwrap().unwrap();
    let view = store.policy_view(&current).await.unwrap();
    let owner = kura_core::policy::Actor::new(vec![patient_party.clone()]);
    let kura_core::policy::Decision::Allow(permit) =
        kura_core::policy::decide(&owner, Action::Delete, &view, None, t(70))
    else {
        panic!("the owner may delete");
    };
    assert_eq!(store.content_ref(&permit).await.unwrap().wrapped_key, vec![1, 2, 3]);
    // The notice of an end is written with it, or not at all.
    let notice = |id: &str| Notification {
        seq: 0,
        id: id.into(),
        recipient: "account:notice-reader".into(),
        kind: "record_deleted".into(),
        subject_ref: record.id.to_string(),
        message: "deleted".into(),
        created_at: t(50),
        read_at: None,
    };
    let stale = store
        .end_record(
            &permit,
            current.version + 1,
            RecordEnd::Deleted,
            ledger(CustodyEvent::Deleted, Some(&patient_party), &patient_party),
            audit("delete", Some(&record.id)),
            &[notice("n-stale")],
        )
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))));
    let blob = store
        .end_record(
            &permit,
            current.version,
            RecordEnd::Deleted,
            ledger(CustodyEvent::Deleted, Some(&patient_party), &patient_party),
            audit("delete", Some(&record.id)),
            &[notice("n-deleted")],
        )
        .await
        .unwrap();
    assert_eq!(blob.as_deref(), Some("blobrec-1"));
    let told: Vec<String> = store
        .notifications_for(&["account:notice-reader".into()], 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert!(told.contains(&"n-deleted".to_owned()) && !told.contains(&"n-stale".to_owned()), "{told:?}");
    assert!(matches!(store.content_ref(&permit).await, Err(StoreError::NotFound)));
    assert_eq!(store.record(&record.id).await.unwrap().unwrap().state, RecordState::Deleted);

    // Machine client assertion ids cannot be replayed.
    store.use_assertion_id("client-1", "jti-1", t(1000), t(0)).await.unwrap();
    assert!(matches!(store.use_assertion_id("client-1", "jti-1", t(1000), t(1)).await, Err(StoreError::Conflict(_))));

    research_story(store, &hospital, &patient.id).await;

    // A group commit of many entries (reads' entries share one) extends the chain in order,
    // across the insert's chunks, each entry about its record's patient.
    let before = store.audit_head().await.unwrap().0;
    let batch: Vec<NewAudit> = (0..100).map(|i| audit(&format!("view-{i}"), Some(&record.id))).collect();
    store.append_audits(&batch).await.unwrap();
    assert_eq!(store.audit_head().await.unwrap().0, before + 100);
    let appended = store.audit_entries(None, before, 1000).await.unwrap();
    let actions: Vec<&str> = appended.iter().map(|e| e.fields.action.as_str()).collect();
    assert_eq!(actions, (0..100).map(|i| format!("view-{i}")).collect::<Vec<_>>());
    assert!(appended.iter().all(|e| e.fields.subject == format!("account:{}", patient.id)));
    store.append_audits(&[]).await.unwrap();
    assert_eq!(store.audit_head().await.unwrap().0, before + 100);

    // SQLite on a file also appends from a thread of its own (the server's audit writer), into
    // the same chain as the async writes; PostgreSQL has no such path.
    let blocking = store.blocking_audit_writer();
    assert_eq!(blocking.is_some(), store.backend() == Backend::Sqlite);
    if let Some(mut write) = blocking {
        let batch: Vec<NewAudit> = (0..3).map(|i| audit(&format!("thread-{i}"), Some(&record.id))).collect();
        std::thread::spawn(move || write(&batch)).join().unwrap().unwrap();
        store.append_audit(audit("after-thread", Some(&record.id))).await.unwrap();
        let appended = store.audit_entries(None, before + 100, 10).await.unwrap();
        let actions: Vec<&str> = appended.iter().map(|e| e.fields.action.as_str()).collect();
        assert_eq!(actions, ["thread-0", "thread-1", "thread-2", "after-thread"]);
    }

    // The audit chain verifies, and a tampered entry is found.
    let entries = verify_chain(store).await.unwrap();
    assert!(entries >= 115, "{entries} entries");
    let patients_view = store.audit_entries(Some(&patient.id), 0, 1000).await.unwrap();
    assert!(patients_view.iter().any(|e| e.fields.action == "transfer"));
    assert!(patients_view.iter().all(|e| e.fields.action != "org"));
    sqlx::query("UPDATE audit_log SET detail = 'edited' WHERE seq = 3").execute(store.pool_for_tests()).await.unwrap();
    assert_eq!(verify_chain(store).await.unwrap_err().seq, 3);

    scratch.finish().await;
}

/// Research tables: opt-ins gate what the index may know, the change sequence names every
/// subject touched, handles resolve only within their study, requests change state once.
async fn research_story(store: &SqlStore, hospital: &OrgId, patient: &AccountId) {
    let subject = format!("account:{patient}");
    // Not opted in: nothing to index. Opting in is a change of the subject.
    assert!(store.subject_facts(&subject, Population::Discoverable).await.unwrap().is_none());
    let before = store.last_index_change().await.unwrap();
    let on =
        Preferences { discoverable: true, contribute_statistics: false, privacy_loss_cap: None, updated_at: t(100) };
    store.set_preferences(&Party::Account(patient.clone()), &on, audit("preferences", None)).await.unwrap();
    // The patient's choice also covers what the hospital still holds under the MRN linked to
    // them, so that subject changes too.
    let changes = store.index_changes_after(before, 100).await.unwrap();
    let linked = format!("local:{hospital}:MRN-1");
    assert_eq!(changes.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(), [subject.as_str(), linked.as_str()]);
    assert_eq!(store.preferences(&Party::Account(patient.clone())).await.unwrap(), Some(on));
    // The patient's only record was deleted above, so there is still nothing to index.
    assert!(store.subject_facts(&subject, Population::Discoverable).await.unwrap().is_none());
    let owner = Party::Account(patient.clone());
    let record = NewRecord { owner: owner.clone(), ..new_record("rec-research", &owner, hospital, None) };
    store
        .insert_record(&record, ledger(CustodyEvent::Uploaded, None, &owner), audit("upload", Some(&record.id)))
        .await
        .unwrap();
    let facts = store.subject_facts(&subject, Population::Discoverable).await.unwrap().unwrap();
    assert_eq!(facts.labels, record.labels);
    assert_eq!(facts.values, vec![(Label::parse("loinc:4548-4").unwrap(), 7.2)]);
    assert_eq!(facts.birth_day, Some(-200));
    assert!(store.subjects_in(Population::Discoverable).await.unwrap().contains(&subject));

    // Studies, searches and handles.
    let study = Study {
        id: "study-1".into(),
        org: hospital.clone(),
        title: "HbA1c".into(),
        purpose: "p".into(),
        ethics_reference: "IRB-1".into(),
        contact: "c".into(),
        created_by: "system".into(),
        created_at: t(0),
        review: StudyReview::pending(),
    };
    store.insert_study(&study, 20, audit("study", None)).await.unwrap();
    let search = SearchLog {
        id: "s1".into(),
        study: study.id.clone(),
        query_text: "icd10:E11".into(),
        disclosed_count: None,
        at: t(200),
    };
    store.record_search(&search, &[("h1".into(), subject.clone())], None, audit("search", None)).await.unwrap();
    assert_eq!(store.searches_since(&study.id, "icd10:E11", t(100)).await.unwrap(), 1);
    assert_eq!(store.searches_since(&study.id, "icd10:E11", t(300)).await.unwrap(), 0);
    assert_eq!(store.subject_of_handle(&study.id, "h1").await.unwrap(), Some(subject.clone()));
    assert_eq!(store.subject_of_handle("other-study", "h1").await.unwrap(), None);

    // A usage request with a notification; an answer applies once.
    let request = UsageRequest {
        id: "req-1".into(),
        study: study.id.clone(),
        requested_by: "account:researcher".into(),
        owner: owner.clone(),
        subject: subject.clone(),
        handle: "h1".into(),
        scope: CategorySet::all(),
        actions: ActionSet::empty().with(Action::View),
        anonymization: Anonymization::Pseudonymized,
        grant_days: 30,
        message: "m".into(),
        reward: Some(Reward { amount: "10".into(), currency: "EUR".into(), description: "voucher".into() }),
        reward_state: Some("offered".into()),
        state: "pending".into(),
        grant: None,
        answer_by: t(1000),
        created_at: t(0),
        updated_at: t(0),
    };
    let note = Notification {
        seq: 0,
        id: "n-1".into(),
        recipient: owner.to_text(),
        kind: "usage_request".into(),
        subject_ref: request.id.clone(),
        message: "a study asks".into(),
        created_at: t(0),
        read_at: None,
    };
    store
        .insert_usage_requests(
            std::slice::from_ref(&request),
            std::slice::from_ref(&note),
            vec![audit("request", None)],
        )
        .await
        .unwrap();
    assert_eq!(store.usage_request("req-1").await.unwrap(), Some(request.clone()));
    assert_eq!(store.usage_requests_for_owners(std::slice::from_ref(&owner)).await.unwrap().len(), 1);
    let inbox = store.notifications_for(&[owner.to_text()], 0, 10).await.unwrap();
    assert_eq!(inbox.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["n-1"]);
    store.mark_notification_read("n-1", &[owner.to_text()], t(5)).await.unwrap();
    assert!(matches!(
        store.mark_notification_read("n-1", &["account:someone".to_owned()], t(5)).await,
        Err(StoreError::NotFound)
    ));
    store
        .update_usage_request(
            "req-1",
            ("pending", Some("offered")),
            ("accepted", Some("accepted")),
            None,
            t(10),
            &[],
            audit("answer", None),
        )
        .await
        .unwrap();
    let again = store
        .update_usage_request(
            "req-1",
            ("pending", Some("offered")),
            ("declined", None),
            None,
            t(11),
            &[],
            audit("answer", None),
        )
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))));
    assert_eq!(store.usage_request("req-1").await.unwrap().unwrap().state, "accepted");
}

/// Deletes a record the way the server does: the owner's permit, the expected version, a ledger
/// entry.
async fn delete_record(store: &SqlStore, id: &RecordId) {
    let row = store.record(id).await.unwrap().unwrap();
    let view = store.policy_view(&row).await.unwrap();
    let owner = kura_core::policy::Actor::new(vec![row.owner.clone()]);
    let kura_core::policy::Decision::Allow(permit) =
        kura_core::policy::decide(&owner, Action::Delete, &view, None, t(0))
    else {
        panic!("the owner may delete");
    };
    let ledger = ledger(CustodyEvent::Deleted, Some(&row.owner), &row.owner);
    store.end_record(&permit, row.version, RecordEnd::Deleted, ledger, audit("delete", Some(id)), &[]).await.unwrap();
}

fn analysis_row(id: &str, study: &str, epsilon: Option<f64>, participants: i64, at: i64) -> AnalysisRow {
    AnalysisRow {
        id: id.into(),
        study: study.into(),
        requested_by: "account:acc-researcher".into(),
        spec: format!(r#"{{"analysis":"{id}"}}"#),
        result: r#"{"count":12}"#.into(),
        measures: "count, mean(loinc:4548-4)".into(),
        epsilon,
        participants,
        created_at: t(at),
    }
}

/// Analyses: the statistics population follows its own opt-in, an analysis reads records whatever
/// the opt-ins, and storing an analysis writes participation, privacy loss and the study's
/// partition together or not at all.
#[tokio::test]
async fn analysis_story() {
    let scratch = scratch().await;
    let store = &scratch.store;
    let hospital = OrgId::parse("org-hospital").unwrap();
    let institution = Party::Organisation(hospital.clone());
    store
        .create_org(
            &Org { id: hospital.clone(), name: "Hospital".into(), kind: OrgKind::Institution, created_at: t(0) },
            audit("org", None),
        )
        .await
        .unwrap();
    let alice = account("acc-alice", "alice", AccountKind::Patient, None);
    let bob = account("acc-bob", "bob", AccountKind::Patient, None);
    for person in [&alice, &bob] {
        store.create_account(person, audit("register", None)).await.unwrap();
    }
    let alice_party = Party::Account(alice.id.clone());
    let bob_party = Party::Account(bob.id.clone());
    let alice_subject = alice_party.to_text();
    let bob_subject = bob_party.to_text();
    let local_7 = format!("local:{hospital}:MRN-7");
    let local_8 = format!("local:{hospital}:MRN-8");

    // Alice: two records (one deleted below). The hospital: local patients MRN-7 and MRN-8, and
    // an in-server copy for MRN-7 held under a grant, which is nobody's subject.
    let two_values = vec![
        StoredValue { code: Label::parse("loinc:4548-4").unwrap(), value: 7.2, unit: "%".into() },
        StoredValue { code: Label::parse("loinc:2345-7").unwrap(), value: 5.5, unit: "mmol/L".into() },
    ];
    let records = [
        NewRecord { values: two_values, ..new_record("rec-alice", &alice_party, &hospital, None) },
        NewRecord { created_at: t(1), ..new_record("rec-alice-gone", &alice_party, &hospital, None) },
        NewRecord {
            mrn: "MRN-7".into(),
            subject_birth_day: Some(3000),
            ..new_record("rec-h7", &institution, &hospital, None)
        },
        NewRecord {
            mrn: "MRN-7".into(),
            ..new_record("rec-h7-copy", &institution, &hospital, Some(GrantId::parse("gr-x").unwrap()))
        },
        NewRecord { mrn: "MRN-8".into(), values: vec![], ..new_record("rec-h8", &institution, &hospital, None) },
    ];
    for record in &records {
        let ledger = ledger(CustodyEvent::Uploaded, None, &record.owner);
        store.insert_record(record, ledger, audit("upload", Some(&record.id))).await.unwrap();
    }
    delete_record(store, &records[1].id).await;

    // Alice may be found but is not counted; the hospital's patients are counted but not found.
    let prefs = |discoverable, contribute_statistics, privacy_loss_cap| Preferences {
        discoverable,
        contribute_statistics,
        privacy_loss_cap,
        updated_at: t(100),
    };
    store.set_preferences(&alice_party, &prefs(true, false, Some(4.0)), audit("preferences", None)).await.unwrap();
    store.set_preferences(&institution, &prefs(false, true, Some(2.0)), audit("preferences", None)).await.unwrap();
    store.set_preferences(&bob_party, &prefs(false, true, Some(1.5)), audit("preferences", None)).await.unwrap();
    let sorted = |mut subjects: Vec<String>| {
        subjects.sort();
        subjects
    };
    assert_eq!(
        sorted(store.subjects_in(Population::Discoverable).await.unwrap()),
        std::slice::from_ref(&alice_subject)
    );
    assert_eq!(
        sorted(store.subjects_in(Population::Statistics).await.unwrap()),
        [bob_subject.clone(), local_7.clone(), local_8.clone()]
    );
    assert!(store.subject_facts(&alice_subject, Population::Statistics).await.unwrap().is_none());
    assert!(store.subject_facts(&alice_subject, Population::Discoverable).await.unwrap().is_some());
    assert!(store.subject_facts(&local_7, Population::Discoverable).await.unwrap().is_none());
    let facts = store.subject_facts(&local_7, Population::Statistics).await.unwrap().unwrap();
    assert_eq!((facts.labels, facts.birth_day), (records[2].labels.clone(), Some(3000)));
    // Bob opted in but has no records: nothing to count.
    assert!(store.subject_facts(&bob_subject, Population::Statistics).await.unwrap().is_none());

    // An analysis reads the subject's active, non-copy records whatever the opt-ins (Alice is not
    // in the statistics population), each with its values and birth day.
    let alice_records = store.subject_records(&alice_subject).await.unwrap();
    assert_eq!(alice_records.iter().map(|r| r.record.id.as_str()).collect::<Vec<_>>(), ["rec-alice"]);
    let only = &alice_records[0];
    // The same row `record()` loads (`RecordRow` has no `PartialEq`; its `Debug` shows every field).
    let loaded = store.record(&records[0].id).await.unwrap().unwrap();
    assert_eq!(format!("{:?}", only.record), format!("{loaded:?}"));
    assert_eq!((only.record.parts.len(), &only.record.labels[..]), (2, &records[0].labels[..]));
    assert_eq!(
        only.values,
        [(Label::parse("loinc:2345-7").unwrap(), 5.5), (Label::parse("loinc:4548-4").unwrap(), 7.2)]
    );
    assert_eq!(only.birth_day, Some(-200));
    let local_records = store.subject_records(&local_7).await.unwrap();
    assert_eq!(local_records.iter().map(|r| r.record.id.as_str()).collect::<Vec<_>>(), ["rec-h7"]);
    assert_eq!(local_records[0].birth_day, Some(3000));
    let local_8_records = store.subject_records(&local_8).await.unwrap();
    assert_eq!(
        local_8_records.iter().map(|r| (r.record.id.as_str(), r.values.len())).collect::<Vec<_>>(),
        [("rec-h8", 0)]
    );
    for unknown in [bob_subject.as_str(), "account:nobody", "held:org-x:org-hospital:MRN-7", "local:org-hospital", "x"]
    {
        assert!(store.subject_records(unknown).await.unwrap().is_empty(), "{unknown}");
    }

    // Preferences carry the cap; every party with one is listed, and clearing it removes it.
    assert_eq!(store.preferences(&bob_party).await.unwrap().unwrap().privacy_loss_cap, Some(1.5));
    store.set_preferences(&alice_party, &prefs(true, false, None), audit("preferences", None)).await.unwrap();
    assert_eq!(store.preferences(&alice_party).await.unwrap(), Some(prefs(true, false, None)));
    assert_eq!(store.privacy_loss_caps().await.unwrap(), [(bob_party.clone(), 1.5), (institution.clone(), 2.0)]);

    // Two differentially private analyses: participation and privacy loss add up, the partition
    // moves from none to version 1 to version 2.
    let study = Study {
        id: "study-a".into(),
        org: hospital.clone(),
        title: "Diabetes outcomes".into(),
        purpose: "p".into(),
        ethics_reference: "IRB-7".into(),
        contact: "c".into(),
        created_by: "system".into(),
        created_at: t(0),
        review: StudyReview::pending(),
    };
    store.insert_study(&study, 20, audit("study", None)).await.unwrap();
    assert_eq!(store.org_partition(&hospital).await.unwrap(), None);
    let write = |expected_version, bytes| PartitionWrite { org: &hospital, expected_version, bytes };
    let first = analysis_row("an-1", &study.id, Some(0.5), 2, 1000);
    // A subject listed twice takes part once.
    let cohort = [alice_subject.clone(), local_7.clone(), alice_subject.clone()];
    let head = store.audit_head().await.unwrap();
    store.insert_analysis(&first, &cohort, write(None, b"p1"), audit("analysis", None)).await.unwrap();
    assert_eq!(store.audit_head().await.unwrap().0, head.0 + 1);
    assert_eq!(store.org_partition(&hospital).await.unwrap(), Some(OrgPartition { version: 1, bytes: b"p1".to_vec() }));
    assert_eq!(store.analysis("an-1").await.unwrap(), Some(first.clone()));
    let second = analysis_row("an-2", &study.id, Some(0.25), 3, 2000);
    let cohort = [alice_subject.clone(), local_7.clone(), local_8.clone()];
    store.insert_analysis(&second, &cohort, write(Some(1), b"p2"), audit("analysis", None)).await.unwrap();
    let everyone = [alice_subject.clone(), bob_subject.clone(), local_7.clone(), local_8.clone()];
    let loss_after_two = vec![(alice_subject.clone(), 0.75), (local_7.clone(), 0.75), (local_8.clone(), 0.25)];
    assert_eq!(store.privacy_loss(&everyone).await.unwrap(), loss_after_two);
    assert!(store.privacy_loss(&[]).await.unwrap().is_empty());

    // A stale partition version, or a first partition where there already is one: Conflict, and
    // nothing at all is written.
    let head = store.audit_head().await.unwrap();
    let third = analysis_row("an-3", &study.id, Some(1.0), 2, 3000);
    let cohort = [alice_subject.clone(), bob_subject.clone()];
    for stale in [Some(1), Some(3), None] {
        let outcome = store.insert_analysis(&third, &cohort, write(stale, b"p3"), audit("analysis", None)).await;
        assert!(matches!(outcome, Err(StoreError::Conflict(_))), "{stale:?}: {outcome:?}");
    }
    assert_eq!(store.audit_head().await.unwrap(), head);
    assert_eq!(store.analysis("an-3").await.unwrap(), None);
    assert!(store.participation(std::slice::from_ref(&bob_subject)).await.unwrap().is_empty());
    assert_eq!(store.privacy_loss(&everyone).await.unwrap(), loss_after_two);
    assert_eq!(store.org_partition(&hospital).await.unwrap(), Some(OrgPartition { version: 2, bytes: b"p2".to_vec() }));

    // Without ε an analysis is recorded but costs no privacy loss.
    let third = AnalysisRow { epsilon: None, ..third };
    store.insert_analysis(&third, &cohort[..1], write(Some(2), b"p3"), audit("analysis", None)).await.unwrap();
    assert_eq!(store.privacy_loss(&everyone).await.unwrap(), loss_after_two);
    assert_eq!(store.analyses_of_study(&study.id).await.unwrap(), [first.clone(), second.clone(), third.clone()]);
    assert!(store.analyses_of_study("study-unknown").await.unwrap().is_empty());

    // A patient's timeline: newest first, one row per analysis and subject, with the study title.
    let timeline = store.participation(&[alice_subject.clone(), local_7.clone()]).await.unwrap();
    let row = |analysis: &AnalysisRow, subject: &str| Participation {
        analysis: analysis.id.clone(),
        study: study.id.clone(),
        study_title: "Diabetes outcomes".into(),
        subject: subject.into(),
        measures: analysis.measures.clone(),
        epsilon: analysis.epsilon,
        at: analysis.created_at,
    };
    assert_eq!(
        timeline,
        [
            row(&third, &alice_subject),
            row(&second, &alice_subject),
            row(&second, &local_7),
            row(&first, &alice_subject),
            row(&first, &local_7),
        ]
    );

    // A cohort far larger than one statement's worth of rows, in another study of the same
    // organisation: it refines the organisation's one partition, so a first partition is refused.
    let other = Study { id: "study-b".into(), title: "Large".into(), ..study.clone() };
    store.insert_study(&other, 20, audit("study", None)).await.unwrap();
    let many: Vec<String> = (0..1201).map(|i| format!("account:p{i:05}")).collect();
    let big = analysis_row("an-big", &other.id, Some(0.125), 1201, 4000);
    let outcome = store.insert_analysis(&big, &many, write(None, &[7u8; 4096]), audit("analysis", None)).await;
    assert!(matches!(outcome, Err(StoreError::Conflict(_))), "{outcome:?}");
    store.insert_analysis(&big, &many, write(Some(3), &[7u8; 4096]), audit("analysis", None)).await.unwrap();
    let losses = store.privacy_loss(&many).await.unwrap();
    assert_eq!(losses.len(), 1201);
    assert!(losses.iter().zip(&many).all(|((subject, loss), expected)| subject == expected && *loss == 0.125));
    assert_eq!(store.participation(&many).await.unwrap().len(), 1201);
    assert_eq!(
        store.org_partition(&hospital).await.unwrap(),
        Some(OrgPartition { version: 4, bytes: vec![7u8; 4096] })
    );
    assert_eq!(store.org_epsilon_spent(&hospital).await.unwrap(), 0.5 + 0.25 + 0.125);
    assert_eq!(store.org_epsilon_spent(&OrgId::parse("org-unknown").unwrap()).await.unwrap(), 0.0);

    assert!(verify_chain(store).await.is_ok());
    scratch.finish().await;
}

fn provider_link(id: &str, patient: &AccountId) -> ProviderLink {
    ProviderLink {
        id: id.into(),
        patient: patient.clone(),
        name: "Aoba portal".into(),
        base_url: "http://127.0.0.1:9/fhir".into(),
        provider_patient_id: "p1".into(),
        resource_types: vec!["Condition".into(), "Observation".into()],
        token: SealedSecret { wrapped_key: vec![9; 8], ciphertext: vec![7; 8] },
        created_by: format!("account:{patient}"),
        created_at: t(0),
        last_sync_at: None,
        last_success_at: None,
        last_outcome: None,
        last_error: None,
        removed_at: None,
    }
}

fn provider_insert(record: &str, owner: &Party, resource_id: &str) -> ProviderInsert {
    let external = OrgId::parse("external-providers").unwrap();
    ProviderInsert {
        resource_type: "Condition".into(),
        resource_id: resource_id.into(),
        record: new_record(record, owner, &external, None),
        ledger: ledger(CustodyEvent::Uploaded, None, owner),
    }
}

fn provider_update(record: &str, owner: &Party, expected_version: i64, blob: &str) -> ProviderUpdate {
    ProviderUpdate {
        resource_type: "Condition".into(),
        resource_id: "c1".into(),
        record: RecordId::parse(record).unwrap(),
        expected_version,
        content: ContentRef { content_hash: "cd".into(), ..content(blob) },
        parts: vec![StoredPart { index: 0, category: PartCategory::PatientEntered, resource_type: "Condition".into() }],
        labels: vec![Label::parse("category:patient_entered").unwrap()],
        values: Vec::new(),
        subject_birth_day: None,
        provenance: "from external provider".into(),
        ledger: ledger(CustodyEvent::Updated, Some(owner), owner),
    }
}

/// External providers: a sync is all or nothing, and the link keeps its status.
/// Studies wait for review; an organisation holds a limited number open; a review applies once;
/// a search that released handles refines the organisation's partition in its own transaction
/// and lists each subject's match for their timeline.
#[tokio::test]
async fn study_review_and_search_matches_story() {
    let scratch = scratch().await;
    let store = &scratch.store;
    let lab = OrgId::parse("org-lab").unwrap();
    let org = Org { id: lab.clone(), name: "Lab".into(), kind: OrgKind::Research, created_at: t(0) };
    store.create_org(&org, audit("org", None)).await.unwrap();
    let study = |id: &str| Study {
        id: id.into(),
        org: lab.clone(),
        title: format!("Study {id}"),
        purpose: "p".into(),
        ethics_reference: "IRB".into(),
        contact: "c".into(),
        created_by: "system".into(),
        created_at: t(10),
        review: StudyReview::pending(),
    };
    store.insert_study(&study("s1"), 2, audit("study", None)).await.unwrap();
    store.insert_study(&study("s2"), 2, audit("study", None)).await.unwrap();
    let head = store.audit_head().await.unwrap();
    let over = store.insert_study(&study("s3"), 2, audit("study", None)).await;
    assert!(matches!(over, Err(StoreError::Conflict(_))), "{over:?}");
    assert_eq!((store.study("s3").await.unwrap(), store.audit_head().await.unwrap()), (None, head));
    assert_eq!(store.studies_in_state(Some(StudyState::Pending)).await.unwrap().len(), 2);

    // Approval applies once; a closed study frees its place.
    let approved =
        StudyReview { state: StudyState::Approved, by: Some("account:op".into()), at: Some(t(20)), note: None };
    store.review_study("s1", StudyState::Pending, &approved, &[], audit("review", None)).await.unwrap();
    let again = store.review_study("s1", StudyState::Pending, &approved, &[], audit("review", None)).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(store.study("s1").await.unwrap().unwrap().review, approved);
    let closed = StudyReview {
        state: StudyState::Closed,
        by: Some("account:op".into()),
        at: Some(t(30)),
        note: Some("done".into()),
    };
    store.review_study("s2", StudyState::Pending, &closed, &[], audit("review", None)).await.unwrap();
    assert_eq!(store.study("s2").await.unwrap().unwrap().review, closed);
    store.insert_study(&study("s3"), 2, audit("study", None)).await.unwrap();
    let states: Vec<_> = store.studies_of(&lab).await.unwrap().iter().map(|s| s.review.state).collect();
    assert_eq!(states, [StudyState::Approved, StudyState::Closed, StudyState::Pending]);

    // A search with handles writes the partition and the matches together; a stale version
    // writes nothing at all.
    let search = |id: &str, at| SearchLog {
        id: id.into(),
        study: "s1".into(),
        query_text: "q".into(),
        disclosed_count: Some(2),
        at: t(at),
    };
    let handles = [("h1".to_owned(), "account:a".to_owned()), ("h2".to_owned(), "account:b".to_owned())];
    let write = |expected_version, bytes| Some(PartitionWrite { org: &lab, expected_version, bytes });
    store.record_search(&search("q1", 100), &handles, write(None, b"one"), audit("search", None)).await.unwrap();
    let head = store.audit_head().await.unwrap();
    let stale = store.record_search(&search("q2", 200), &handles, write(None, b"two"), audit("search", None)).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    assert_eq!(store.audit_head().await.unwrap(), head);
    assert_eq!(store.searches_since("s1", "q", t(0)).await.unwrap(), 1);
    store
        .record_search(&search("q2", 200), &handles[..1], write(Some(1), b"two"), audit("search", None))
        .await
        .unwrap();
    assert_eq!(store.org_partition(&lab).await.unwrap(), Some(OrgPartition { version: 2, bytes: b"two".to_vec() }));
    let matched = |search: &str, subject: &str, at| SearchMatch {
        search: search.into(),
        study: "s1".into(),
        study_title: "Study s1".into(),
        org: lab.clone(),
        subject: subject.into(),
        at: t(at),
    };
    assert_eq!(
        store.search_matches(&["account:a".into(), "account:b".into()], 10).await.unwrap(),
        [matched("q2", "account:a", 200), matched("q1", "account:a", 100), matched("q1", "account:b", 100)]
    );
    assert_eq!(store.search_matches(&["account:b".into()], 10).await.unwrap(), [matched("q1", "account:b", 100)]);
    assert_eq!(store.search_matches(&["account:a".into()], 1).await.unwrap().len(), 1);
    assert!(verify_chain(store).await.is_ok());
    scratch.finish().await;
}

#[tokio::test]
async fn provider_story() {
    let scratch = scratch().await;
    let store = &scratch.store;
    let patient = AccountId::parse("p-1").unwrap();
    let owner = Party::Account(patient.clone());
    store.insert_provider_link(&provider_link("L1", &patient), audit("provider_link", None)).await.unwrap();
    assert_eq!(store.provider_links_of(&patient).await.unwrap().len(), 1);
    assert_eq!(store.provider_links_due(t(1), 10).await.unwrap().len(), 1, "a new link is due");

    let sync = |inserts: Vec<ProviderInsert>, updates: Vec<ProviderUpdate>| ProviderSyncCommit {
        link: "L1".into(),
        at: t(10),
        inserts,
        updates,
        audit: vec![audit("provider_sync", None)],
    };
    let dead = store.apply_provider_sync(&sync(vec![provider_insert("r1", &owner, "c1")], vec![])).await.unwrap();
    assert!(dead.is_empty());
    let mapped = store.provider_resources("L1").await.unwrap();
    assert_eq!(mapped.len(), 1);
    assert_eq!((mapped[0].record.as_str(), mapped[0].content_hash.as_str()), ("r1", "ab"));
    let link = store.provider_link("L1").await.unwrap().unwrap();
    assert_eq!((link.last_outcome.as_deref(), link.last_success_at), (Some("ok"), Some(t(10))));
    assert!(store.provider_links_due(t(10), 10).await.unwrap().is_empty(), "synced at t(10)");

    // The same resource mapped twice (a concurrent sync), or a stale version: nothing at all.
    let head = store.audit_head().await.unwrap();
    let twice = sync(vec![provider_insert("r2", &owner, "c2"), provider_insert("r3", &owner, "c1")], vec![]);
    assert!(matches!(store.apply_provider_sync(&twice).await, Err(StoreError::Conflict(_))));
    let stale = sync(vec![provider_insert("r4", &owner, "c4")], vec![provider_update("r1", &owner, 7, "new")]);
    assert!(matches!(store.apply_provider_sync(&stale).await, Err(StoreError::Conflict(_))));
    for id in ["r2", "r3", "r4"] {
        assert!(store.record(&RecordId::parse(id).unwrap()).await.unwrap().is_none(), "{id} not written");
    }
    assert_eq!(store.provider_resources("L1").await.unwrap().len(), 1);
    assert_eq!(store.audit_head().await.unwrap(), head);

    // An update replaces the content, bumps the version and returns the old blob.
    let dead = store.apply_provider_sync(&sync(vec![], vec![provider_update("r1", &owner, 1, "new")])).await.unwrap();
    assert_eq!(dead, vec!["blobr1".to_owned()]);
    let r1 = store.record(&RecordId::parse("r1").unwrap()).await.unwrap().unwrap();
    assert_eq!((r1.version, r1.content_hash.as_deref()), (2, Some("cd")));
    assert_eq!(r1.categories().to_text(), "patient_entered");
    let events: Vec<String> = store.ledger(&r1.id).await.unwrap().into_iter().map(|e| e.event).collect();
    assert_eq!(events, ["uploaded", "updated"]);
    assert_eq!(store.provider_resources("L1").await.unwrap()[0].content_hash, "cd");

    // A failure is kept on the link; removal ends pulls but keeps the records.
    store
        .record_provider_failure("L1", t(20), "Condition page 1: HTTP 500", &[], audit("provider_sync", None))
        .await
        .unwrap();
    let link = store.provider_link("L1").await.unwrap().unwrap();
    assert_eq!(link.last_outcome.as_deref(), Some("failed"));
    assert_eq!(link.last_error.as_deref(), Some("Condition page 1: HTTP 500"));
    assert_eq!(link.last_success_at, Some(t(10)));
    store.remove_provider_link("L1", t(30), audit("provider_unlink", None)).await.unwrap();
    assert!(matches!(
        store.remove_provider_link("L1", t(31), audit("provider_unlink", None)).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.provider_links_of(&patient).await.unwrap().is_empty());
    assert!(store.provider_links_due(t(100_000), 10).await.unwrap().is_empty());
    let late = sync(vec![provider_insert("r5", &owner, "c5")], vec![]);
    assert!(matches!(store.apply_provider_sync(&late).await, Err(StoreError::NotFound)));
    assert!(store.record(&r1.id).await.unwrap().is_some());
    assert!(verify_chain(store).await.is_ok());
    scratch.finish().await;
}

/// A hospital and one patient (`acc-patient`), as the smaller stories start.
async fn hospital_and_patient(store: &SqlStore) -> (OrgId, Party) {
    let hospital = OrgId::parse("org-hospital").unwrap();
    let org = Org { id: hospital.clone(), name: "Hospital".into(), kind: OrgKind::Institution, created_at: t(0) };
    store.create_org(&org, audit("org", None)).await.unwrap();
    let patient = account("acc-patient", "alice", AccountKind::Patient, None);
    store.create_account(&patient, audit("register", None)).await.unwrap();
    (hospital, Party::Account(patient.id))
}

/// A full bundle has hundreds of parts, labels and values, written in multi-row statements of
/// up to 64 rows: every row arrives, in order, with repeated labels kept once.
#[tokio::test]
async fn a_large_record_keeps_every_part_label_and_value() {
    let scratch = scratch().await;
    let store = &scratch.store;
    let (hospital, owner) = hospital_and_patient(store).await;
    let on = Preferences { discoverable: true, contribute_statistics: true, privacy_loss_cap: None, updated_at: t(1) };
    store.set_preferences(&owner, &on, audit("preferences", None)).await.unwrap();

    // 64 + 64 + 32 + 16 + 4 + 1 parts; labels with every code twice; 97 values.
    let parts: Vec<StoredPart> = (0..181)
        .map(|i| StoredPart {
            index: i,
            category: if i % 2 == 0 { PartCategory::Condition } else { PartCategory::Observation },
            resource_type: format!("Type{i}"),
        })
        .collect();
    let codes: Vec<Label> = (0..70).map(|i| Label::parse(&format!("snomed:{}", 1000 + i)).unwrap()).collect();
    let labels: Vec<Label> = codes.iter().chain(codes.iter()).cloned().collect();
    let values: Vec<StoredValue> = (0..97)
        .map(|i| StoredValue {
            code: Label::parse("loinc:4548-4").unwrap(),
            value: 5.0 + f64::from(i) / 10.0,
            unit: "%".into(),
        })
        .collect();
    let record = NewRecord {
        parts: parts.clone(),
        labels,
        values: values.clone(),
        ..new_record("rec-large", &owner, &hospital, None)
    };
    store
        .insert_record(&record, ledger(CustodyEvent::Uploaded, None, &owner), audit("upload", Some(&record.id)))
        .await
        .unwrap();

    let stored = store.record(&record.id).await.unwrap().unwrap();
    assert_eq!(stored.parts[..], parts[..]);
    let mut stored_labels = stored.labels.to_vec();
    stored_labels.sort();
    let mut expected_labels = codes.clone();
    expected_labels.sort();
    assert_eq!(stored_labels, expected_labels);
    let facts = store.subject_facts(&owner.to_text(), Population::Discoverable).await.unwrap();
    let mut stored_values: Vec<f64> = facts.unwrap().values.into_iter().map(|(_, v)| v).collect();
    stored_values.sort_by(f64::total_cmp);
    assert_eq!(stored_values, values.iter().map(|v| v.value).collect::<Vec<_>>());
}

/// I4 with reads racing the change: a read that starts after a revocation was acknowledged never
/// sees the grant, however many reads ran (and were kept, on SQLite) while it was revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_started_after_a_revocation_sees_the_grant() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let scratch = scratch().await;
    let store = scratch.store.clone();
    let (hospital, owner) = hospital_and_patient(&store).await;
    let record = new_record("rec-1", &owner, &hospital, None);
    store.insert_record(&record, ledger(CustodyEvent::Uploaded, None, &owner), audit("upload", None)).await.unwrap();
    let terms = GrantTerms::new(
        RecordSelector::Records(vec![record.id.clone()]),
        CategorySet::all(),
        ActionSet::empty().with(Action::View),
        Anonymization::None,
        t(0),
        None,
    )
    .unwrap();
    let grant = Grant {
        id: GrantId::parse("gr-1").unwrap(),
        owner: owner.clone(),
        grantee: Party::Organisation(hospital.clone()),
        terms,
        revoked_at: None,
    };
    let row = GrantRow {
        grant: grant.clone(),
        study: None,
        purpose: "second opinion".into(),
        created_by: "account:acc-patient".into(),
        created_at: t(0),
    };
    store.insert_grant(&row, audit("grant", None)).await.unwrap();
    let stored = store.record(&record.id).await.unwrap().unwrap();

    let revoked = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (store, stored, revoked) = (store.clone(), stored.clone(), Arc::clone(&revoked));
        readers.push(tokio::spawn(async move {
            let (mut before, mut after) = (0, 0);
            while after < 50 {
                let started_after = revoked.load(Ordering::SeqCst);
                let grants = store.policy_view(&stored).await.unwrap().grants;
                if started_after {
                    assert!(grants.is_empty(), "a read that started after the revocation saw the grant");
                    after += 1;
                } else {
                    before += usize::from(!grants.is_empty());
                }
                tokio::task::yield_now().await;
            }
            before
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    store.revoke_grant(&grant.id, t(10), audit("revoke", None), &[]).await.unwrap();
    revoked.store(true, Ordering::SeqCst);
    let mut saw_the_grant = 0;
    for reader in readers {
        saw_the_grant += reader.await.unwrap();
    }
    assert!(saw_the_grant > 0, "the readers ran before the revocation too");
}
