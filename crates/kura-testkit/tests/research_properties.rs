//! Properties of research discovery over the real store and index (DESIGN.md I5, I6): through
//! any sequence of uploads, deletions and changes of mind, a search counts exactly the people
//! who opted in and carry the labels; counts below k are never released.

use kura_core::custody::CustodyEvent;
use kura_core::ids::{AccountId, OrgId, RecordId};
use kura_core::labels::Label;
use kura_core::party::{AccountKind, OrgKind, Party};
use kura_core::time::Timestamp;
use kura_index::disclosure::{Disclosed, disclose};
use kura_server::research_index::ResearchIndex;
use kura_store::model::*;
use kura_store::{AccountStore, RecordStore, ResearchStore};
use kura_store_sql::SqlStore;
use proptest::prelude::*;

const LABELS: [&str; 4] = ["snomed:1", "snomed:2", "sex:female", "icd10:E11"];
const PEOPLE: usize = 12;

#[derive(Debug, Clone)]
enum Step {
    /// Person p gets a record with these labels (indexes into LABELS).
    Upload(usize, Vec<usize>),
    /// Person p opts in or out.
    Prefer(usize, bool),
    /// Person p's first record is deleted.
    Delete(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..PEOPLE, proptest::collection::vec(0..LABELS.len(), 1..3)).prop_map(|(p, l)| Step::Upload(p, l)),
        (0..PEOPLE, any::<bool>()).prop_map(|(p, b)| Step::Prefer(p, b)),
        (0..PEOPLE).prop_map(Step::Delete),
    ]
}

fn audit() -> NewAudit {
    NewAudit {
        at: Timestamp::from_millis(0),
        actor: "system".into(),
        on_behalf_of: String::new(),
        action: "test".into(),
        record: None,
        grant: None,
        outcome: "done".into(),
        detail: String::new(),
        subject: None,
    }
}

/// The model: who opted in, and each person's live records' labels.
#[derive(Default, Clone)]
struct Model {
    opted_in: [bool; PEOPLE],
    records: Vec<Vec<(String, Vec<usize>)>>,
}

impl Model {
    fn count(&self, wanted: &[usize]) -> u64 {
        (0..PEOPLE)
            .filter(|p| self.opted_in[*p])
            .filter(|p| {
                let held: Vec<usize> = self.records[*p].iter().flat_map(|(_, l)| l.clone()).collect();
                !self.records[*p].is_empty() && wanted.iter().all(|w| held.contains(w))
            })
            .count() as u64
    }
}

async fn run(steps: Vec<Step>, queries: Vec<Vec<usize>>, k: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::connect(&format!("sqlite:{}", dir.path().join("p.db").display())).await.unwrap();
    let org = OrgId::parse("hospital").unwrap();
    store
        .create_org(
            &Org {
                id: org.clone(),
                name: "H".into(),
                kind: OrgKind::Institution,
                created_at: Timestamp::from_millis(0),
            },
            audit(),
        )
        .await
        .unwrap();
    let people: Vec<AccountId> = (0..PEOPLE).map(|p| AccountId::parse(&format!("person-{p}")).unwrap()).collect();
    for (p, id) in people.iter().enumerate() {
        let account = Account {
            id: id.clone(),
            username: format!("person{p}"),
            password_hash: String::new(),
            kind: AccountKind::Patient,
            org: None,
            totp_secret: None,
            created_at: Timestamp::from_millis(0),
        };
        store.create_account(&account, audit()).await.unwrap();
    }
    let index = ResearchIndex::build(&store, kura_store::model::Population::Discoverable).await.unwrap();
    let mut model = Model { records: vec![Vec::new(); PEOPLE], ..Model::default() };
    for (n, step) in steps.into_iter().enumerate() {
        match step {
            Step::Upload(p, labels) => {
                let owner = Party::Account(people[p].clone());
                let id = format!("r{n}");
                let record = NewRecord {
                    id: RecordId::parse(&id).unwrap(),
                    owner: owner.clone(),
                    institution: org.clone(),
                    mrn: format!("m{p}"),
                    format: kura_core::record::RecordFormat::Fhir,
                    parts: vec![StoredPart {
                        index: 0,
                        category: kura_core::record::PartCategory::Condition,
                        resource_type: "Condition".into(),
                    }],
                    labels: labels.iter().map(|l| Label::parse(LABELS[*l]).unwrap()).collect(),
                    document_category: None,
                    content: ContentRef {
                        blob_key: id.clone(),
                        wrapped_key: vec![1],
                        content_hash: String::new(),
                        size: 1,
                    },
                    derived_from: None,
                    provenance: String::new(),
                    held_under: None,
                    values: Vec::new(),
                    subject_birth_day: None,
                    created_at: Timestamp::from_millis(0),
                };
                let ledger = NewLedger {
                    event: CustodyEvent::Uploaded,
                    from_owner: None,
                    to_owner: owner,
                    transfer: None,
                    actor: "system".into(),
                    at: Timestamp::from_millis(0),
                    note: String::new(),
                };
                store.insert_record(&record, ledger, audit()).await.unwrap();
                model.records[p].push((id, labels));
            }
            Step::Prefer(p, on) => {
                let prefs = Preferences {
                    discoverable: on,
                    contribute_statistics: false,
                    privacy_loss_cap: None,
                    updated_at: Timestamp::from_millis(0),
                };
                store.set_preferences(&Party::Account(people[p].clone()), &prefs, audit()).await.unwrap();
                model.opted_in[p] = on;
            }
            Step::Delete(p) => {
                let Some((id, _)) = model.records[p].first().cloned() else { continue };
                let row = store.record(&RecordId::parse(&id).unwrap()).await.unwrap().unwrap();
                let view = store.policy_view(&row).await.unwrap();
                let owner = kura_core::policy::Actor::new(vec![row.owner.clone()]);
                let kura_core::policy::Decision::Allow(permit) = kura_core::policy::decide(
                    &owner,
                    kura_core::policy::Action::Delete,
                    &view,
                    None,
                    Timestamp::from_millis(0),
                ) else {
                    panic!("the owner may delete");
                };
                let ledger = NewLedger {
                    event: CustodyEvent::Deleted,
                    from_owner: Some(row.owner.clone()),
                    to_owner: row.owner.clone(),
                    transfer: None,
                    actor: "system".into(),
                    at: Timestamp::from_millis(0),
                    note: String::new(),
                };
                store.end_record(&permit, row.version, RecordEnd::Deleted, ledger, audit(), &[]).await.unwrap();
                model.records[p].remove(0);
            }
        }
        index.catch_up(&store).await.unwrap();
        for wanted in &queries {
            let query = kura_index::Query::All(
                wanted.iter().map(|l| kura_index::Query::Label(Label::parse(LABELS[*l]).unwrap())).collect(),
            );
            let found = index.matches(&query, Timestamp::from_millis(0)).await;
            assert_eq!((found.subjects.len() as u64), model.count(wanted), "after step {n}, query {wanted:?}");
            // Every subject found opted in.
            for subject in &found.subjects {
                let p: usize = subject.trim_start_matches("account:person-").parse().unwrap();
                assert!(model.opted_in[p], "{subject} did not opt in");
            }
            match disclose(found.subjects.len() as u64, k, || found.subjects.clone()) {
                Disclosed::Count { count, handles } => assert!(count >= k && handles.len() as u64 == count),
                Disclosed::FewerThan { k: told } => assert!((found.subjects.len() as u64) < k && told == k),
            }
        }
    }
    // A fresh index built from the store agrees with the one that followed the changes.
    let rebuilt = ResearchIndex::build(&store, kura_store::model::Population::Discoverable).await.unwrap();
    for wanted in &queries {
        let query = kura_index::Query::All(
            wanted.iter().map(|l| kura_index::Query::Label(Label::parse(LABELS[*l]).unwrap())).collect(),
        );
        assert_eq!(rebuilt.matches(&query, Timestamp::from_millis(0)).await.subjects.len() as u64, model.count(wanted));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn searches_count_exactly_the_opted_in(
        steps in proptest::collection::vec(step(), 10..40),
        queries in proptest::collection::vec(proptest::collection::vec(0..LABELS.len(), 1..3), 1..4),
        k in 1u64..5,
    ) {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run(steps, queries, k));
    }
}
