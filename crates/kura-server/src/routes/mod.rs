//! The HTTP API. Each handler is registered through `routes!`, which also puts it in the
//! OpenAPI document, so a route cannot exist undocumented.

pub mod accounts;
mod analyses;
mod archive;
mod audit;
mod auth;
mod convert;
mod delegations;
mod grants;
mod inbox;
mod links;
mod names;
pub(crate) mod peers;
mod providers;
pub(crate) mod records;
mod research;
mod sealed;
mod system;
mod webhooks;

use kura_core::ids::RecordId;
use kura_core::policy::{Action, Decision, DenyReason, RecordPolicyView, decide};
use kura_core::record::PartCategory;
use kura_store::model::RecordRow;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::extract::{FromRequest, Request};

use crate::auth::Caller;
use crate::error::{ApiError, from_rejection};
use crate::state::AppState;

pub fn router(max_upload_bytes: usize) -> OpenApiRouter<AppState> {
    let _ = max_upload_bytes;
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(system::healthz))
        .routes(routes!(system::metrics))
        .routes(routes!(system::openapi))
        .routes(routes!(system::server_info))
        .routes(routes!(auth::login))
        .routes(routes!(auth::token))
        .routes(routes!(auth::register_patient))
        .routes(routes!(auth::totp_enroll))
        .routes(routes!(auth::totp_confirm))
        .routes(routes!(accounts::me))
        .routes(routes!(accounts::create_org, accounts::list_orgs))
        .routes(routes!(accounts::create_account))
        .routes(routes!(accounts::register_client))
        .routes(routes!(links::create_link_code, links::list_links))
        .routes(routes!(links::redeem_link_code))
        .routes(routes!(records::upload, records::list))
        .routes(routes!(records::get, records::delete))
        .routes(routes!(records::ledger))
        .routes(routes!(records::transfer))
        .routes(routes!(records::copy))
        .routes(routes!(records::move_record))
        .routes(routes!(sealed::create))
        .routes(routes!(sealed::key))
        .routes(routes!(sealed::list))
        .routes(routes!(grants::create, grants::list))
        .routes(routes!(grants::revoke))
        .routes(routes!(delegations::create, delegations::list))
        .routes(routes!(delegations::revoke))
        .routes(routes!(delegations::accept))
        .routes(routes!(audit::list))
        .routes(routes!(audit::verify))
        .routes(routes!(research::create_study, research::list_studies))
        .routes(routes!(research::review_study))
        .routes(routes!(research::close_study))
        .routes(routes!(research::disclosure))
        .routes(routes!(research::resume))
        .routes(routes!(research::search))
        .routes(routes!(research::create_requests, research::list_requests))
        .routes(routes!(research::answer))
        .routes(routes!(research::withdraw))
        .routes(routes!(research::reward_paid))
        .routes(routes!(research::reward_confirm))
        .routes(routes!(research::get_preferences, research::set_preferences))
        .routes(routes!(analyses::create, analyses::list))
        .routes(routes!(analyses::get))
        .routes(routes!(analyses::conditions))
        .routes(routes!(analyses::people_like_me))
        .routes(routes!(analyses::participation))
        .routes(routes!(inbox::list))
        .routes(routes!(inbox::mark_read))
        .routes(routes!(inbox::events))
        .routes(routes!(webhooks::create))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(archive::export))
        .routes(routes!(archive::move_to_archive))
        .routes(routes!(archive::import))
        .routes(routes!(providers::create, providers::list))
        .routes(routes!(providers::remove))
        .routes(routes!(providers::sync))
        .routes(routes!(peers::register, peers::list))
        .routes(routes!(peers::remove))
        .routes(routes!(peers::create_token))
        .routes(routes!(peers::receive))
        .routes(routes!(peers::status))
        .routes(routes!(peers::confirm))
        .routes(routes!(peers::abort))
        .routes(routes!(peers::outgoing))
        .fallback(|| async { ApiError::not_found("route") })
}

/// `Json<T>` whose rejections (malformed JSON, wrong content type, too large) use the envelope.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(from_rejection(rejection.status(), rejection.body_text())),
        }
    }
}

pub use crate::service::ids::new_id;

pub use crate::service::audit::{AuditExt, audit_entry};

/// Loads a record by a caller-supplied id; malformed ids are simply not found.
pub async fn load_record(state: &AppState, raw_id: &str) -> Result<Option<RecordRow>, ApiError> {
    match RecordId::parse(raw_id) {
        Ok(id) => Ok(state.store.record(&id).await?),
        Err(_) => Ok(None),
    }
}

/// A record and the decision on it.
pub struct Decided {
    pub record: RecordRow,
    pub view: RecordPolicyView,
    pub decision: Decision,
}

/// Loads the record and decides `action` on it for `caller`. A missing record and a denial both
/// end as the same 404, with the denial written to the audit log.
pub async fn decide_on(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
    action: Action,
    part: Option<PartCategory>,
) -> Result<Decided, ApiError> {
    let now = state.clock.now();
    // A pseudonymous id (crate::pseudonyms) stands for a record read under one grant, and is
    // decided under that grant alone: read under another grant it would link the two grants'
    // pseudonyms of the record.
    let pseudonym = match raw_id.starts_with(crate::pseudonyms::RECORD_PREFIX) {
        true => crate::pseudonyms::Pseudonyms::new(&state.master).resolve(raw_id),
        false => None,
    };
    let resolved;
    let (raw_id, only_grant) = match &pseudonym {
        Some((grant, record)) => {
            resolved = record.to_string();
            (resolved.as_str(), Some(grant))
        }
        None => (raw_id, None),
    };
    let Some(record) = load_record(state, raw_id).await? else {
        state.metrics.decision(false);
        if let Ok(id) = RecordId::parse(raw_id) {
            let entry = audit_entry(caller, now, action.as_str(), "denied").record(&id).detail(LOOKS_MISSING);
            state.reads_audit.append(entry).await?;
        }
        return Err(ApiError::not_found("record"));
    };
    let mut view = state.store.policy_view(&record).await?;
    if let Some(grant) = only_grant {
        view.grants.retain(|g| &g.id == grant);
        view.held_under = view.held_under.filter(|g| &g.id == grant);
    }
    let decision = decide(&caller.actor, action, &view, part, now);
    state.metrics.decision(decision.is_allowed());
    Ok(Decided { record, view, decision })
}

/// Writes the denial to the audit log and answers it: 403 naming the missing power to a caller
/// who may know the record exists (it may view it, or acts for its owner), 404 to anyone else
/// (`kura_core::policy::refusal`).
pub async fn refuse(
    state: &AppState,
    caller: &Caller,
    action: Action,
    decided: &Decided,
    reason: DenyReason,
) -> ApiError {
    let now = state.clock.now();
    match kura_core::policy::refusal(&caller.actor, action, &decided.view, now) {
        kura_core::policy::Refusal::LooksMissing => deny(state, caller, action, &decided.record.id, reason).await,
        kura_core::policy::Refusal::MissingPower(missing) => {
            let entry = audit_entry(caller, now, action.as_str(), "denied")
                .record(&decided.record.id)
                .detail(format!("missing power: {}", missing.as_str()));
            if let Err(e) = state.reads_audit.append(entry).await {
                return e.into();
            }
            let for_owner = caller
                .actor
                .acting_for
                .as_ref()
                .is_some_and(|d| decided.record.owner == kura_core::party::Party::Account(d.patient.clone()));
            let whose = if for_owner { "your delegation" } else { "your access to this record" };
            ApiError::forbidden(format!("{whose} does not include '{}'", missing.as_str()))
        }
    }
}

/// The detail of a denial answered 404, whether the record exists or not: the caller reads their
/// own entries in the audit log, and a reason there ("no grant") would tell an existing record
/// from a missing one (DESIGN.md I2).
const LOOKS_MISSING: &str = "no such record, or no access to it";

/// Writes the denial to the audit log and answers 404, the same as for a record that does not
/// exist (`reason` is not written: see [`LOOKS_MISSING`]).
pub async fn deny(
    state: &AppState,
    caller: &Caller,
    action: Action,
    record: &RecordId,
    _reason: DenyReason,
) -> ApiError {
    let entry = audit_entry(caller, state.clock.now(), action.as_str(), "denied").record(record).detail(LOOKS_MISSING);
    if let Err(e) = state.reads_audit.append(entry).await {
        return e.into();
    }
    ApiError::not_found("record")
}
