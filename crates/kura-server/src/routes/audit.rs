//! The audit log: patients read every entry about them; operators read all; anyone signed in
//! can have the hash chain verified.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use kura_api_types as api;
use kura_core::audit::ChainVerifier;
use kura_core::party::{AccountKind, Party};
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::time;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    /// Only entries after this sequence number.
    #[serde(default)]
    after: i64,
    /// At most this many entries (default 500, at most 5000).
    limit: Option<i64>,
}

async fn actor_name(state: &AppState, cache: &mut HashMap<String, String>, actor: &str) -> ApiResult<String> {
    if let Some(name) = cache.get(actor) {
        return Ok(name.clone());
    }
    let name = match Party::from_text(actor) {
        Some(Party::Account(id)) => state.store.account(&id).await?.map(|a| a.username).unwrap_or_default(),
        Some(Party::Organisation(id)) => state.store.org(&id).await?.map(|o| o.name).unwrap_or_default(),
        None => "Kura".to_owned(),
    };
    cache.insert(actor.to_owned(), name.clone());
    Ok(name)
}

/// The agent who made grant `raw` for its owner (`account:<id>`), or nothing when the owner (or
/// an institution's staff for it) made it. Grants made by agents act in the agent's name
/// (DESIGN.md I9), so the timeline names the agent on every entry under them.
async fn agent_of_grant(state: &AppState, cache: &mut HashMap<String, String>, raw: &str) -> ApiResult<String> {
    if raw.is_empty() {
        return Ok(String::new());
    }
    if let Some(agent) = cache.get(raw) {
        return Ok(agent.clone());
    }
    let row = match kura_core::ids::GrantId::parse(raw) {
        Ok(id) => state.store.grant(&id).await?,
        Err(_) => None,
    };
    let agent = row
        .filter(|r| matches!(r.grant.owner, Party::Account(_)) && r.created_by != r.grant.owner.to_text())
        .map(|r| r.created_by)
        .unwrap_or_default();
    cache.insert(raw.to_owned(), agent.clone());
    Ok(agent)
}

/// Audit entries: a patient's (or their agent's) own, or all for an operator, in order.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = api::AuditList), (status = 403, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Json<api::AuditList>> {
    let limit = query.limit.unwrap_or(500).clamp(1, 5000);
    let patient = match (&caller.delegation, caller.account.kind) {
        (Some(d), _) => Some(d.delegation.patient.clone()),
        (None, AccountKind::Patient) => Some(caller.account.id.clone()),
        (None, AccountKind::Operator) => None,
        _ => return Err(ApiError::forbidden("the audit log is open to patients (their own entries) and operators")),
    };
    let rows = state.store.audit_entries(patient.as_ref(), query.after, limit).await?;
    let mut names = HashMap::new();
    let mut grant_agents = HashMap::new();
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        let f = row.fields;
        let grant_made_by_agent = agent_of_grant(&state, &mut grant_agents, &f.grant).await?;
        entries.push(api::AuditEntryView {
            grant_made_by_agent,
            seq: f.seq,
            at: time::format(kura_core::time::Timestamp::from_millis(f.at_millis)),
            actor_name: actor_name(&state, &mut names, &f.actor).await?,
            actor: f.actor,
            on_behalf_of: f.on_behalf_of,
            action: f.action,
            record: f.record,
            grant: f.grant,
            outcome: f.outcome,
            detail: f.detail,
        });
    }
    Ok(Json(api::AuditList { entries }))
}

/// Walks the whole chain: every entry must follow the one before it and hash to what is stored.
/// An edited, removed or reordered entry is reported with its sequence number.
pub async fn verify_chain(state: &AppState) -> ApiResult<api::AuditVerification> {
    let mut verifier = ChainVerifier::default();
    let mut after = 0;
    let mut checked = 0;
    loop {
        let rows = state.store.audit_entries(None, after, 1000).await?;
        let Some(last) = rows.last() else { break };
        after = last.fields.seq;
        for row in &rows {
            if let Err(e) = verifier.push(&row.fields, &row.prev_hash, &row.hash) {
                return Ok(api::AuditVerification {
                    ok: false,
                    entries_checked: checked,
                    broken_at_seq: Some(e.seq),
                    reason: Some(e.reason.to_owned()),
                });
            }
            checked += 1;
        }
    }
    let (head_seq, head_hash) = state.store.audit_head().await?;
    let (hash, seq) = verifier.head();
    if head_seq != seq || head_hash != hash {
        return Ok(api::AuditVerification {
            ok: false,
            entries_checked: checked,
            broken_at_seq: Some(seq + 1),
            reason: Some("entries at the end of the log are missing".to_owned()),
        });
    }
    Ok(api::AuditVerification { ok: true, entries_checked: checked, broken_at_seq: None, reason: None })
}

/// Verifies the audit log's hash chain.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, body = api::AuditVerification)), security(("bearer" = [])))]
pub async fn verify(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<api::AuditVerification>> {
    Ok(Json(verify_chain(&state).await?))
}
