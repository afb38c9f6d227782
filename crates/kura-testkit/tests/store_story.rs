//! The store conformance story: one sequence of operations every backend must get right, run on
//! SQLite and, when `KURA_TEST_DATABASE_URL` is set, on PostgreSQL.

use kura_core::audit::ChainVerifier;
use kura_core::custody::CustodyEvent;
use kura_core::ids::{AccountId, GrantId, OrgId, RecordId, TransferId};
use kura_core::labels::Label;
use kura_core::party::{AccountKind, OrgKind, Party};
use kura_core::policy::{Action, ActionSet, Anonymization, Grant, GrantTerms, RecordSelector};
use kura_core::record::{CategorySet, PartCategory, RecordFormat, RecordState};
use kura_core::time::Timestamp;
use kura_store::model::*;
use kura_store::{Store, StoreError};
use kura_store_sql::SqlStore;

struct Scratch {
    store: SqlStore,
    _dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

async fn scratch() -> Scratch {
    let dir = tempfile::tempdir().unwrap();
    match std::env::var("KURA_TEST_DATABASE_URL") {
        Ok(admin) if !admin.is_empty() => {
            let (url, name) = kura_store_sql::create_scratch_database(&admin).await.unwrap();
            Scratch { store: SqlStore::connect(&url).await.unwrap(), _dir: dir, postgres: Some((admin, name)) }
        }
        _ => {
            let url = format!("sqlite:{}", dir.path().join("story.db").display());
            Scratch { store: SqlStore::connect(&url).await.unwrap(), _dir: dir, postgres: None }
        }
    }
}

impl Scratch {
    async fn finish(self) {
        if let Some((admin, name)) = self.postgres {
            self.store.close().await;
            kura_store_sql::drop_scratch_database(&admin, &name).await.unwrap();
        }
    }
}

fn t(millis: i64) -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000 + millis)
}

fn audit(action: &str, record: Option<&RecordId>) -> NewAudit {
    NewAudit {
        at: t(0),
        actor: "system".into(),
        on_behalf_of: String::new(),
        action: action.into(),
        record: record.cloned(),
        grant: None,
        outcome: "done".into(),
        detail: String::new(),
        subject: None,
    }
}

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
    if scratch.postgres.is_none() {
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
    store
        .insert_record(&record, ledger(CustodyEvent::Uploaded, None, &institution), audit("upload", Some(&record.id)))
        .await
        .unwrap();
    let row = store.record(&record.id).await.unwrap().unwrap();
    assert_eq!((row.owner.clone(), row.state, row.version), (institution.clone(), RecordState::Active, 1));
    assert_eq!(row.parts, record.parts);
    assert_eq!(row.labels, record.labels);
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
    assert_eq!(store.sweep_copies(t(50)).await.unwrap(), Vec::<String>::new());
    let destroyed = store.revoke_grant(&grant.grant.id, t(60), audit("revoke", None)).await.unwrap();
    assert_eq!(destroyed, vec!["blobrec-copy".to_owned()]);
    assert_eq!(store.record(&copy.id).await.unwrap().unwrap().state, RecordState::Deleted);
    assert!(matches!(
        store.revoke_grant(&grant.grant.id, t(61), audit("revoke", None)).await,
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
    assert!(store.sweep_copies(t(99)).await.unwrap().is_empty());
    assert_eq!(store.sweep_copies(t(100)).await.unwrap(), vec!["blobrec-copy2".to_owned()]);

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
    let stale = store
        .end_record(
            &permit,
            current.version + 1,
            RecordEnd::Deleted,
            ledger(CustodyEvent::Deleted, Some(&patient_party), &patient_party),
            audit("delete", Some(&record.id)),
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
        )
        .await
        .unwrap();
    assert_eq!(blob.as_deref(), Some("blobrec-1"));
    assert!(matches!(store.content_ref(&permit).await, Err(StoreError::NotFound)));
    assert_eq!(store.record(&record.id).await.unwrap().unwrap().state, RecordState::Deleted);

    // Machine client assertion ids cannot be replayed.
    store.use_assertion_id("client-1", "jti-1", t(1000), t(0)).await.unwrap();
    assert!(matches!(store.use_assertion_id("client-1", "jti-1", t(1000), t(1)).await, Err(StoreError::Conflict(_))));

    research_story(store, &hospital, &patient.id).await;

    // The audit chain verifies, and a tampered entry is found.
    let entries = verify_chain(store).await.unwrap();
    assert!(entries >= 15, "{entries} entries");
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
    assert!(store.subject_facts(&subject).await.unwrap().is_none());
    let before = store.last_index_change().await.unwrap();
    let on = Preferences { discoverable: true, contribute_statistics: false, updated_at: t(100) };
    store.set_preferences(&Party::Account(patient.clone()), &on, audit("preferences", None)).await.unwrap();
    let changes = store.index_changes_after(before, 100).await.unwrap();
    assert_eq!(changes.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(), [subject.as_str()]);
    assert_eq!(store.preferences(&Party::Account(patient.clone())).await.unwrap(), Some(on));
    // The patient's only record was deleted above, so there is still nothing to index.
    assert!(store.subject_facts(&subject).await.unwrap().is_none());
    let owner = Party::Account(patient.clone());
    let record = NewRecord { owner: owner.clone(), ..new_record("rec-research", &owner, hospital, None) };
    store
        .insert_record(&record, ledger(CustodyEvent::Uploaded, None, &owner), audit("upload", Some(&record.id)))
        .await
        .unwrap();
    let facts = store.subject_facts(&subject).await.unwrap().unwrap();
    assert_eq!(facts.labels, record.labels);
    assert_eq!(facts.values, vec![(Label::parse("loinc:4548-4").unwrap(), 7.2)]);
    assert_eq!(facts.birth_day, Some(-200));
    assert!(store.discoverable_subjects().await.unwrap().contains(&subject));

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
    };
    store.insert_study(&study, audit("study", None)).await.unwrap();
    let search = SearchLog {
        id: "s1".into(),
        study: study.id.clone(),
        query_text: "icd10:E11".into(),
        disclosed_count: None,
        at: t(200),
    };
    store.record_search(&search, &[("h1".into(), subject.clone())], audit("search", None)).await.unwrap();
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
