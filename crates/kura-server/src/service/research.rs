//! Research searches (Fig. 8): counts and handles of the people who opted in to being found,
//! released only past the threshold and the organisation's disclosure ledger.

use kura_api_types as api;
use kura_core::time::Timestamp;
use kura_store::model::{SearchLog, Study};
use kura_store::{PartitionWrite, StoreError};

use super::audit::{AuditExt, audit_entry};
use super::disclosure::{ATTEMPTS, differencing_refusal, org_ledger, refuse_differencing};
use super::error::{Refusal, ServiceError, ServiceResult};
use super::ids;
use crate::auth::Caller;
use crate::state::AppState;

const DAY_MS: i64 = 86_400_000;
/// i2b2 locks a query out after seven repeats in thirty days.
const REPEAT_WINDOW_DAYS: i64 = 30;

/// Runs `query` for `study` (approved, of the caller's organisation): a count and one handle
/// per person, or "fewer than k"; refused when repeated too often, or when it would single
/// people out set against what the organisation was told before.
pub async fn search(
    state: &AppState,
    caller: &Caller,
    study: &Study,
    query: &kura_index::Query,
) -> ServiceResult<api::SearchResponse> {
    let canonical = kura_index::to_text(query);
    let now = state.clock.now();
    let since = Timestamp::from_millis(now.as_millis() - REPEAT_WINDOW_DAYS * DAY_MS);
    if state.store.searches_since(&study.id, &canonical, since).await? >= state.config.search_repeat_limit {
        return Err(ServiceError::Refused {
            why: Refusal::TooMany,
            code: "query_limit",
            message: format!(
                "this study ran this query {} times in the last {REPEAT_WINDOW_DAYS} days; repeated queries can single people out",
                state.config.search_repeat_limit
            ),
        });
    }
    state.index.catch_up(state.store.as_ref()).await?;
    let matches = state.index.matches(query, now).await;
    let k = state.config.disclosure_k;
    let log = |disclosed_count| SearchLog {
        id: ids::new_id(),
        study: study.id.clone(),
        query_text: canonical.clone(),
        disclosed_count,
        at: now,
    };
    // The threshold first (`kura_index::disclosure::disclose`): below k nothing is released and
    // no handle is made.
    let handle_key = state.master.derive("study-handles");
    let count = matches.subjects.len() as u64;
    let handles = match kura_index::disclosure::disclose(count, k, || {
        matches.subjects.iter().map(|subject| kura_index::disclosure::handle(&handle_key, &study.id, subject)).collect()
    }) {
        kura_index::disclosure::Disclosed::Count { handles, .. } => handles,
        kura_index::disclosure::Disclosed::FewerThan { k } => {
            let detail = format!("study {}: fewer than {k} found: {canonical}", study.id);
            let audit = audit_entry(caller, now, "research_search", "done").detail(detail);
            state.store.record_search(&log(None), &[], None, audit).await?;
            return Ok(api::SearchResponse { query: canonical, count: None, fewer_than: Some(k), handles: Vec::new() });
        }
    };
    let released: Vec<(String, String)> = handles.into_iter().zip(matches.subjects.iter().cloned()).collect();
    let member_key = state.master.derive("analysis-members");
    let member_keys = kura_stats::MemberKeys::new(&member_key, study.org.as_str());
    for _ in 0..ATTEMPTS {
        let (version, partition) = org_ledger(state, &study.org).await?;
        let keys: Vec<u64> = matches.hashes.iter().map(|&hash| member_keys.key(hash)).collect();
        let Some(refined) = crate::analysis::off_the_runtime(|| partition.release_set(keys, k)) else {
            return Err(refuse_differencing(
                state,
                caller,
                study,
                "research_search",
                &canonical,
                differencing_refusal(k),
            )
            .await?);
        };
        let bytes = refined.to_bytes();
        let write = PartitionWrite { org: &study.org, expected_version: version, bytes: &bytes };
        let detail = format!("study {}: {count} found: {canonical}", study.id);
        let audit = audit_entry(caller, now, "research_search", "done").detail(detail);
        match state.store.record_search(&log(i64::try_from(count).ok()), &released, Some(write), audit).await {
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
            Ok(()) => {
                return Ok(api::SearchResponse {
                    query: canonical,
                    count: Some(count),
                    fewer_than: None,
                    handles: released.into_iter().map(|(handle, _)| handle).collect(),
                });
            }
        }
    }
    Err(ServiceError::Conflict("other releases to your organisation kept changing what it was told; try again".into()))
}
