//! Analyses (Fig. 9) inside the server: who an analysis may count and with which facts, decided
//! record by record through `decide`, and the standing statistics shown to every account.
//!
//! Two populations feed the engine (`kura-stats`): everyone who opted in to contribute to
//! statistics, whose every record counts (the statistics index, kept current like the search
//! index), and the people whose grants let this study compute statistics, whose facts are
//! gathered per analysis from exactly the records and categories their grants allow.

use std::collections::{HashMap, HashSet};

use kura_core::labels::Label;
use kura_core::party::Party;
use kura_core::policy::{Action, Actor, Decision, decide};
use kura_core::record::PartCategory;
use kura_core::time::Timestamp;
use kura_index::{Cohort, LabelIndex, SubjectFacts};
use kura_stats::spec::{Dimension, Measure, Profile};
use kura_stats::{AnalysisSpec, Context, Noise, Partition, Shard};
use kura_store::StoreError;
use kura_store::model::Study;

use crate::state::AppState;

/// The day (days since 1970-01-01) ages are computed at.
pub fn today_days(now: Timestamp) -> i32 {
    i32::try_from(now.as_millis().div_euclid(86_400_000)).unwrap_or(i32::MAX)
}

/// Uniform numbers from the operating system, for differential privacy's noise.
pub struct OsNoise;

impl Noise for OsNoise {
    fn uniform(&mut self) -> f64 {
        let mut bytes = [0u8; 8];
        // Without randomness noise would be predictable; failing loudly is the only safe answer.
        getrandom::fill(&mut bytes).expect("the operating system provides random numbers");
        (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The people whose grants let `study` compute statistics, other than those already in the
/// statistics index, with the facts those grants allow: a record counts if `decide` permits
/// `statistics` on it to the study's organisation under one of the study's grants, now; its
/// observation values only if the permit keeps `observation` parts.
pub async fn granted_population(
    state: &AppState,
    study: &Study,
    contributors: &LabelIndex,
    now: Timestamp,
) -> Result<LabelIndex, StoreError> {
    let store = state.store.as_ref();
    let mut grants_by_subject: HashMap<String, HashSet<kura_core::ids::GrantId>> = HashMap::new();
    for request in store.usage_requests_of_study(&study.id).await? {
        if let Some(grant) = &request.grant {
            grants_by_subject.entry(request.subject.clone()).or_default().insert(grant.clone());
        }
    }
    let actor = Actor::new(vec![Party::Organisation(study.org.clone())]);
    let mut index = LabelIndex::new();
    for (subject, grants) in grants_by_subject {
        if contributors.contains(&subject) {
            continue;
        }
        let mut facts = SubjectFacts::default();
        for record in store.subject_records(&subject).await? {
            let mut view = store.policy_view(&record.record).await?;
            view.grants.retain(|grant| grants.contains(&grant.id));
            let Decision::Allow(permit) = decide(&actor, Action::Statistics, &view, None, now) else { continue };
            facts.labels.extend(record.record.labels.iter().cloned());
            if permit.obligations().keep_categories.contains(PartCategory::Observation) {
                facts.values.extend(record.values.iter().cloned());
            }
            facts.birth_date_days = facts.birth_date_days.max(record.birth_day);
        }
        if !facts.labels.is_empty() {
            index.upsert(&subject, &facts);
        }
    }
    Ok(index)
}

/// Who of the shard is eligible: everyone, less those whose privacy-loss cap an analysis
/// spending `epsilon` would pass.
pub async fn eligible(
    state: &AppState,
    index: &LabelIndex,
    epsilon: Option<f64>,
    caps: &HashMap<String, f64>,
) -> Result<Cohort, StoreError> {
    let everyone = index.everyone();
    let Some(epsilon) = epsilon else { return Ok(everyone) };
    if caps.is_empty() {
        return Ok(everyone);
    }
    let capped: Vec<(u32, String, f64)> = everyone
        .positions()
        .filter_map(|position| {
            let subject = index.subject_key(position)?;
            let owner = kura_core::research::owner_of_subject(subject)?;
            caps.get(&owner.to_text()).map(|&cap| (position, subject.to_owned(), cap))
        })
        .collect();
    let subjects: Vec<String> = capped.iter().map(|(_, s, _)| s.clone()).collect();
    let losses: HashMap<String, f64> = state.store.privacy_loss(&subjects).await?.into_iter().collect();
    let over = capped
        .into_iter()
        .filter(|(_, subject, cap)| losses.get(subject).copied().unwrap_or(0.0) + epsilon > *cap + 1e-12)
        .map(|(position, _, _)| position);
    Ok(everyone.and_not(&Cohort::from_positions(over)))
}

/// Runs an analysis's CPU-heavy part (tens of milliseconds over a million subjects) without
/// stalling the other tasks of the runtime thread it is called on: on a multi-threaded runtime
/// they move to another thread meanwhile (`block_in_place`); a single-threaded runtime (the
/// tests') just runs it.
pub fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// How many research organisations keep their member keys over the statistics index between
/// analyses.
const KEPT_ORGS: usize = 4;

/// The member keys over the statistics index of the research organisations that analysed last
/// ([`kura_stats::KeyCache`], about 16 bytes per person in the index each): an organisation's
/// next analysis reads its members' keys instead of hashing them again. At most [`KEPT_ORGS`]
/// are kept; the least recently analysing goes first.
#[derive(Default)]
pub struct OrgKeys(std::sync::Mutex<Vec<(String, std::sync::Arc<kura_stats::KeyCache>)>>);

impl OrgKeys {
    /// The cache of `org`'s member keys, new if it was not kept.
    pub fn of(&self, org: &str) -> std::sync::Arc<kura_stats::KeyCache> {
        // The list is only reordered under the lock, whole: a panic cannot leave it half-changed.
        let mut kept = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = match kept.iter().position(|(id, _)| id == org) {
            Some(i) => kept.remove(i),
            None => {
                if kept.len() >= KEPT_ORGS {
                    kept.remove(0);
                }
                (org.to_owned(), std::sync::Arc::default())
            }
        };
        let cache = std::sync::Arc::clone(&entry.1);
        kept.push(entry);
        cache
    }
}

/// Standing statistics of one condition over the statistics index, under the same disclosure
/// control as analyses (threshold and complementary suppression, within the condition's
/// tables); `None` below the threshold.
pub fn condition_statistics(
    index: &LabelIndex,
    condition: &Label,
    k: u32,
    now: Timestamp,
) -> Option<kura_api_types::ConditionStatistics> {
    let spec = AnalysisSpec {
        cohort: kura_index::Query::Label(condition.clone()),
        measures: vec![Measure::Distribution(Dimension::Sex), Measure::Distribution(Dimension::AgeBand { width: 10 })],
        profile: Profile::Threshold,
        epsilon: None,
    };
    let shards = [Shard::new(index, index.everyone())];
    let context = Context { k, today_days: today_days(now), member_key: &|_| 0 };
    let computation = kura_stats::compute(&spec, &shards, &context);
    let release = kura_stats::control(&spec, &computation, &Partition::default(), k, &mut OsNoise).ok()?;
    let patients = release.result.cohort?;
    let cells = |m: usize| match &release.result.measures[m] {
        kura_stats::result::MeasureResult::Distribution { cells, .. } => {
            cells.iter().map(|c| kura_api_types::CountCell { key: c.key.clone(), count: c.count }).collect()
        }
        _ => Vec::new(),
    };
    Some(kura_api_types::ConditionStatistics {
        condition: condition.code().to_owned(),
        patients,
        by_sex: cells(0),
        by_age: cells(1),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn each_organisation_keeps_its_own_keys_and_the_least_recent_goes_first() {
        let keys = OrgKeys::default();
        let a = keys.of("org-a");
        assert!(Arc::ptr_eq(&a, &keys.of("org-a")));
        let b = keys.of("org-b");
        assert!(!Arc::ptr_eq(&a, &b));
        for other in ["org-c", "org-d"] {
            keys.of(other);
        }
        // a was used after b, so the fifth organisation pushes b out and a stays.
        keys.of("org-a");
        keys.of("org-e");
        assert!(Arc::ptr_eq(&a, &keys.of("org-a")));
        let b_again = keys.of("org-b");
        assert!(!Arc::ptr_eq(&b, &b_again), "b was pushed out and starts empty");
        assert_eq!(keys.0.lock().unwrap().len(), KEPT_ORGS);
        assert!(Arc::ptr_eq(&b_again, &keys.of("org-b")));
    }
}
