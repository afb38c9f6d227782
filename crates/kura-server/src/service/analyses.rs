//! Analyses (Fig. 9): an analysis of an approved study over the records it may use for
//! statistics, within the study's and the organisation's privacy budgets, released only past
//! disclosure control and the organisation's ledger (`crate::analysis` decides eligibility and
//! builds the shards; `kura-stats` computes and controls).

use std::collections::HashMap;

use kura_stats::{AnalysisError, Context, Shard};
use kura_store::model::{AnalysisRow, Study};
use kura_store::{PartitionWrite, StoreError};

use super::audit::{AuditExt, audit_entry};
use super::disclosure::{ATTEMPTS, org_ledger, refuse_differencing};
use super::error::{Refusal, ServiceError, ServiceResult};
use super::ids;
use crate::analysis::{self, OsNoise};
use crate::auth::Caller;
use crate::state::AppState;

/// Runs `spec` (parsed from `raw_spec`) for `study` and stores the analysis with what it
/// released; refused past either privacy budget (`privacy_budget`) or for differencing.
pub async fn run(
    state: &AppState,
    caller: &Caller,
    study: &Study,
    spec: &kura_stats::AnalysisSpec,
    raw_spec: &serde_json::Value,
) -> ServiceResult<AnalysisRow> {
    if let Some(epsilon) = spec.epsilon {
        let within = |who: &str, spent: f64, budget: f64| {
            if spent + epsilon > budget + 1e-12 {
                return Err(ServiceError::Refused {
                    why: Refusal::Conflict,
                    code: "privacy_budget",
                    message: format!("{who} spent ε {spent} of a budget of {budget}; ε {epsilon} more would pass it"),
                });
            }
            Ok(())
        };
        let spent: f64 = state.store.analyses_of_study(&study.id).await?.iter().filter_map(|a| a.epsilon).sum();
        within("this study has", spent, state.config.study_epsilon_budget)?;
        let spent = state.store.org_epsilon_spent(&study.org).await?;
        within("your organisation's studies have", spent, state.config.org_epsilon_budget)?;
    }
    for _ in 0..ATTEMPTS {
        match attempt(state, caller, study, spec, raw_spec).await {
            Err(RunError::Store(StoreError::Conflict(_))) => continue,
            Err(RunError::Store(e)) => return Err(e.into()),
            Err(RunError::Refused(e)) => return Err(e),
            Ok(row) => return Ok(row),
        }
    }
    Err(ServiceError::Conflict("other releases to your organisation kept changing what it was told; try again".into()))
}

enum RunError {
    Store(StoreError),
    Refused(ServiceError),
}

impl From<StoreError> for RunError {
    fn from(e: StoreError) -> Self {
        RunError::Store(e)
    }
}

async fn attempt(
    state: &AppState,
    caller: &Caller,
    study: &Study,
    spec: &kura_stats::AnalysisSpec,
    raw_spec: &serde_json::Value,
) -> Result<AnalysisRow, RunError> {
    let now = state.clock.now();
    let k = u32::try_from(state.config.disclosure_k).unwrap_or(u32::MAX);
    let (version, partition) = org_ledger(state, &study.org).await?;
    let caps: HashMap<String, f64> = match spec.epsilon {
        Some(_) => state.store.privacy_loss_caps().await?.into_iter().map(|(p, c)| (p.to_text(), c)).collect(),
        None => HashMap::new(),
    };
    state.statistics.catch_up(state.store.as_ref()).await?;
    let contributors = state.statistics.read().await;
    let granted = analysis::granted_population(state, study, &contributors, now).await?;
    // The statistics index lives on, so the organisation's member keys over it are kept between
    // its analyses; the granted population's index is built for this analysis alone.
    let kept_keys = state.org_keys.of(study.org.as_str());
    let shards = [
        Shard::with_keys(
            &contributors,
            analysis::eligible(state, &contributors, spec.epsilon, &caps).await?,
            &kept_keys,
        ),
        Shard::new(&granted, analysis::eligible(state, &granted, spec.epsilon, &caps).await?),
    ];
    let key = state.master.derive("analysis-members");
    let keys = kura_stats::MemberKeys::new(&key, study.org.as_str());
    let member_key = |subject_hash: u64| keys.key(subject_hash);
    let context = Context { k, today_days: analysis::today_days(now), member_key: &member_key };
    let outcome = analysis::off_the_runtime(|| {
        let computation = kura_stats::compute(spec, &shards, &context);
        kura_stats::control(spec, &computation, &partition, k, &mut OsNoise).map(|release| {
            let participants = if release.released { computation.participants(&shards) } else { Vec::new() };
            let bytes = release.partition.to_bytes();
            (computation.cohort_size(), release, participants, bytes)
        })
    });
    drop(contributors);
    let (cohort_size, release, participants, bytes) = match outcome {
        Ok(released) => released,
        Err(e @ AnalysisError::Differencing { .. }) => {
            let answer = ServiceError::Refused { why: Refusal::Conflict, code: "differencing", message: e.to_string() };
            let refusal = refuse_differencing(state, caller, study, "analysis", &spec.describe(), answer).await;
            return Err(RunError::Refused(refusal.unwrap_or_else(|e| e)));
        }
    };
    let row = AnalysisRow {
        id: ids::new_id(),
        study: study.id.clone(),
        requested_by: caller.audit_actor(),
        spec: raw_spec.to_string(),
        result: serde_json::to_string(&release.result).map_err(|_| StoreError::Corrupt("result".into()))?,
        measures: spec.describe(),
        epsilon: spec.epsilon.filter(|_| release.released),
        participants: i64::try_from(cohort_size).unwrap_or(i64::MAX),
        created_at: now,
    };
    let audit = audit_entry(caller, now, "analysis", "done")
        .detail(format!("study {} analysis {}: {}", study.id, row.id, row.measures));
    let write = PartitionWrite { org: &study.org, expected_version: version, bytes: &bytes };
    state.store.insert_analysis(&row, &participants, write, audit).await?;
    Ok(row)
}
