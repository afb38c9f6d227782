//! Records: upload (S101–S103), list, read with obligations, transfer to the patient
//! (S104–S105), copy, move and delete (S203), and the custody ledger.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use kura_api_types as api;
use kura_core::custody::TransferAgreement;
use kura_core::labels::Label;
use kura_core::party::{AccountKind, OrgKind};
use kura_core::policy::{Action, Anonymization, Basis, Decision, Permit, decide, may_filter_on, may_know_location};
use kura_core::record::{CategorySet, PartCategory, RecordFormat};
use kura_store::model::*;
use serde::Deserialize;

use super::ApiJson;
use super::convert::{self, category_from_api};
use super::{AuditExt, audit_entry, decide_on, deny, names, refuse};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::audit::audited;
use crate::service::records::check_local_id;
use crate::service::{content, records, transfer};
use crate::state::AppState;
use crate::time;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct UploadQuery {
    /// The institution's local patient id (MRN) the content is about.
    patient: String,
    /// For PDF uploads: `certificate` or `document` (the default).
    category: Option<api::Category>,
}

/// The institution (organisation) a staff member or machine uploads and transfers for.
async fn caller_institution(state: &AppState, caller: &Caller, what: &str) -> ApiResult<kura_store::model::Org> {
    caller.require(&[AccountKind::Staff, AccountKind::Machine], what)?;
    let org_id = caller.org().ok_or_else(|| ApiError::forbidden("your account does not act for an institution"))?;
    let org = state.store.org(org_id).await?.ok_or_else(ApiError::internal)?;
    if org.kind != OrgKind::Institution {
        return Err(ApiError::forbidden("only institutions upload and transfer records"));
    }
    Ok(org)
}

/// Upload a record: FHIR R4 JSON (resource or Bundle), DICOM Part 10 or PDF, as the raw body
/// with its Content-Type. Custody starts with the uploading institution.
#[utoipa::path(post, path = "/api/v1/records", tag = "records", params(UploadQuery),
    request_body(content = Vec<u8>, description = "FHIR JSON (application/fhir+json), DICOM (application/dicom) or PDF (application/pdf) bytes",
        content_type = "application/octet-stream"),
    responses((status = 201, body = api::UploadResponse), (status = 413, body = api::ErrorEnvelope),
        (status = 415, body = api::ErrorEnvelope), (status = 422, body = api::ErrorEnvelope),
        (status = 503, description = "the server holds as many upload bytes as it takes at once; see Retry-After",
            body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<api::UploadResponse>)> {
    let org = caller_institution(&state, &caller, "uploading records").await?;
    check_local_id(&query.patient)?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let format = kura_formats::format_for_content_type(content_type).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/fhir+json, application/json, application/dicom or application/pdf",
        )
    })?;
    let document_category = match (format, query.category.map(category_from_api)) {
        (RecordFormat::Pdf, None) => Some(PartCategory::Document),
        (RecordFormat::Pdf, Some(c @ (PartCategory::Document | PartCategory::Certificate))) => Some(c),
        (RecordFormat::Pdf, Some(_)) => return Err(ApiError::invalid("category must be certificate or document")),
        (_, Some(_)) => return Err(ApiError::invalid("category applies to PDF uploads only")),
        (_, None) => None,
    };
    // The reservation is held until the upload is answered: parsing and sealing copy the bytes.
    let (bytes, _reservation) = read_upload_body(&state, &headers, body).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request("the body is empty"));
    }
    let record =
        records::upload(&state, &caller, &org, query.patient.clone(), format, document_category, bytes).await?;
    Ok((
        StatusCode::CREATED,
        Json(api::UploadResponse {
            id: record.id.to_string(),
            owner: record.owner.to_text(),
            format: format.as_str().to_owned(),
            labels: record.labels.iter().map(|l| l.to_string()).collect(),
            parts: convert::parts_to_api(&RecordRow::from_new(&record), CategorySet::all()),
        }),
    ))
}

/// Reservations of upload bytes grow by this much at a time while a body without a declared
/// length arrives.
const UPLOAD_RESERVATION_STEP: usize = 1024 * 1024;

fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// Reads an upload's body within the server's budget of upload bytes in memory
/// (`Config::max_upload_bytes_in_flight`). A body declared no larger than
/// `Config::upload_spool_threshold_bytes` is read into memory, its declared length reserved
/// before a byte is read; an upload the budget cannot take now is answered 503 with
/// `Retry-After` rather than waiting with its bytes half read. A larger body, or one without a
/// declared length, is spooled to an encrypted file while it arrives (`crate::spool`), holding
/// no reservation however slowly it comes, and reserves its size once received, waiting a
/// little for the budget before answering 503. One over `max_upload_bytes` is 413. The
/// reservation returned is released when dropped.
async fn read_upload_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<(Bytes, tokio::sync::OwnedSemaphorePermit)> {
    use futures_util::StreamExt;
    let max = state.config.max_upload_bytes;
    let too_large = || {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("uploads are limited to {max} bytes"))
    };
    let busy =
        || ApiError::busy("the server is receiving as many upload bytes as it takes at once; try again shortly", 5);
    let reserve =
        |bytes: usize| std::sync::Arc::clone(&state.upload_kib).try_acquire_many_owned(kib(bytes)).map_err(|_| busy());
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| ApiError::bad_request("Content-Length is not a number"))?,
        ),
    };
    if declared.is_some_and(|length| length > max) {
        return Err(too_large());
    }
    let broke_off = |_| ApiError::bad_request("the upload broke off before its end");
    let mut chunks = body.into_data_stream();
    let threshold = state.config.upload_spool_threshold_bytes.min(max);
    if let Some(declared) = declared.filter(|length| *length <= threshold) {
        let mut reservation = reserve(declared)?;
        let mut reserved = declared;
        let mut buffer = Vec::with_capacity(declared);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(broke_off)?;
            let needed = buffer.len() + chunk.len();
            if needed > max {
                return Err(too_large());
            }
            if needed > reserved {
                let wanted = needed.max(reserved + UPLOAD_RESERVATION_STEP).min(max);
                reservation.merge(reserve(wanted - reserved)?);
                reserved = wanted;
            }
            buffer.extend_from_slice(&chunk);
        }
        return Ok((Bytes::from(buffer), reservation));
    }
    // Up to the threshold in memory; past it, everything goes to the spool.
    let failed = |e: std::io::Error| {
        tracing::error!(error = %e, "spooling an upload failed");
        ApiError::internal()
    };
    let mut buffer = Vec::new();
    let mut spool: Option<crate::spool::Spool> = None;
    let mut received = 0usize;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(broke_off)?;
        received += chunk.len();
        if received > max {
            return Err(too_large());
        }
        match &mut spool {
            Some(spool) => spool.write(&chunk).map_err(failed)?,
            None if received <= threshold => buffer.extend_from_slice(&chunk),
            None => {
                let mut new = crate::spool::Spool::create(&state.config.data_dir.join("spool")).map_err(failed)?;
                new.write(&std::mem::take(&mut buffer)).map_err(failed)?;
                new.write(&chunk).map_err(failed)?;
                spool = Some(new);
            }
        }
    }
    // Received whole: now its bytes come into memory to be parsed, within the budget.
    let permits = std::sync::Arc::clone(&state.upload_kib).acquire_many_owned(kib(received));
    let reservation = match tokio::time::timeout(std::time::Duration::from_secs(30), permits).await {
        Ok(Ok(reservation)) => reservation,
        _ => return Err(busy()),
    };
    let bytes = match spool {
        Some(spool) => tokio::task::spawn_blocking(move || spool.read_back())
            .await
            .map_err(|_| ApiError::internal())?
            .map_err(failed)?,
        None => buffer,
    };
    Ok((Bytes::from(bytes), reservation))
}

trait FromNew {
    fn from_new(record: &NewRecord) -> Self;
}

impl FromNew for RecordRow {
    fn from_new(r: &NewRecord) -> Self {
        RecordRow {
            id: r.id.clone(),
            owner: r.owner.clone(),
            institution: r.institution.clone(),
            mrn: r.mrn.clone(),
            format: r.format,
            state: kura_core::record::RecordState::Active,
            parts: r.parts.as_slice().into(),
            labels: r.labels.as_slice().into(),
            document_category: r.document_category,
            content_hash: Some(r.content.content_hash.clone()),
            size: r.content.size,
            derived_from: r.derived_from.clone(),
            provenance: r.provenance.clone(),
            held_under: r.held_under.clone(),
            locator: None,
            version: 1,
            created_at: r.created_at,
            updated_at: r.created_at,
        }
    }
}

/// Records the caller may see, optionally only those carrying every `label` given
/// (`?label=icd10:E11&label=category:image`).
#[utoipa::path(get, path = "/api/v1/records", tag = "records",
    params(("label" = Option<Vec<String>>, Query, description = "repeatable; records must carry every label")),
    responses((status = 200, body = api::RecordList)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<api::RecordList>> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|_| ApiError::bad_request("the query string is malformed"))?;
    let labels = pairs
        .iter()
        .filter(|(k, _)| k == "label")
        .map(|(_, v)| Label::parse(v).map_err(|e| ApiError::invalid(format!("label '{v}': {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let now = state.clock.now();
    let own = caller.parties();
    let mut records = Vec::new();
    let mut listed_for_others = Vec::new();
    let mut display = names::DisplayNames::default();
    for record in state.store.candidate_records(&own, &labels).await? {
        let view = state.store.policy_view(&record).await?;
        let Decision::Allow(permit) = decide(&caller.actor, Action::View, &view, None, now) else { continue };
        // A filter on a label outside the caller's scope would tell, by which records match,
        // what the scope hides (a grantee of observations asking for a diagnosis).
        if !may_filter_on(&permit, &labels) {
            continue;
        }
        if !own.contains(&record.owner) {
            // Learning that another owner's record exists is an access: it goes to that
            // owner's timeline (DESIGN.md I7).
            listed_for_others.push(audited(&caller, now, &permit, "list"));
        }
        let mut summary = convert::summary(&record, &permit);
        names::name_summary(&mut summary, names::of_record(&state, &record, Some(&permit), &mut display).await?);
        records.push(summary);
    }
    if !listed_for_others.is_empty() {
        let mut pending = Vec::with_capacity(listed_for_others.len());
        for entry in listed_for_others {
            pending.push(state.reads_audit.submit(entry).await?);
        }
        for entry in pending {
            entry.durable().await?;
        }
    }
    Ok(Json(api::RecordList { records }))
}

/// A record's view as a response body, FHIR content included as the bytes it is kept as.
///
/// That content was parsed as JSON before it was stored (upload, move-in, import and provider
/// sync all parse it), or was written by our own serialiser when obligations rewrote it, and the
/// AEAD tag proves it is what was stored. So it is spliced into the body as it is, not parsed
/// again: checking a 160 KB bundle cost a read about as much as decrypting it.
pub struct RecordResponse {
    view: api::RecordView,
    fhir: Option<Vec<u8>>,
}

impl RecordResponse {
    /// The view with the names its reader may learn (`names.rs`).
    fn named(mut self, names: names::RecordNames) -> Self {
        names::name_view(&mut self.view, names);
        self
    }
}

impl axum::response::IntoResponse for RecordResponse {
    fn into_response(self) -> axum::response::Response {
        let mut head = Vec::with_capacity(1024);
        if serde_json::to_writer(&mut head, &self.view).is_err() {
            return ApiError::internal().into_response();
        }
        let Some(fhir) = self.fhir else {
            return ([(header::CONTENT_TYPE, "application/json")], head).into_response();
        };
        // The view is a JSON object with required members and no `content` member (it is
        // `None` and skipped), so the content goes in as its last member. The content is sent
        // as it is, after the view, rather than copied behind it: a bundle is 160 KB.
        if head.pop() != Some(b'}') {
            return ApiError::internal().into_response();
        }
        head.extend_from_slice(br#","content":"#);
        let pieces = Pieces([Bytes::from(head), Bytes::from(fhir), Bytes::from_static(b"}")].into());
        ([(header::CONTENT_TYPE, "application/json")], Body::new(pieces)).into_response()
    }
}

/// A response body sent as a few pieces of known length, each without being copied.
struct Pieces(std::collections::VecDeque<Bytes>);

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.get_mut().0.pop_front().map(|piece| Ok(http_body::Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.iter().map(|piece| piece.len() as u64).sum())
    }
}

fn record_view(
    record: &RecordRow,
    permit: Option<&Permit>,
    released: Option<content::Released>,
) -> ApiResult<RecordResponse> {
    let (fhir, content_base64, withheld) = match released {
        Some(content::Released { content: Some(bytes), .. }) if record.format == RecordFormat::Fhir => {
            (Some(bytes), None, None)
        }
        Some(content::Released { content: Some(bytes), .. }) => {
            (None, Some(base64::engine::general_purpose::STANDARD.encode(bytes)), None)
        }
        Some(content::Released { content: None, withheld }) => (None, None, withheld),
        None => (None, None, None),
    };
    let view = api::RecordView {
        id: record.id.to_string(),
        owner: record.owner.to_text(),
        institution: record.institution.to_string(),
        format: record.format.as_str().to_owned(),
        state: record.state.as_str().to_owned(),
        parts: permit.map(|p| convert::parts_to_api(record, p.obligations().keep_categories)).unwrap_or_default(),
        labels: permit.map(|p| convert::labels_for(record, p)).unwrap_or_default(),
        created_at: time::format(record.created_at),
        derived_from: record.derived_from.as_ref().map(|d| d.to_string()),
        provenance: record.provenance.clone(),
        access: permit.map(convert::access_to_api),
        content: None,
        content_base64,
        withheld,
        locator: record.locator.as_ref().map(|l| api::LocatorView {
            destination: l.destination.clone(),
            moved_at: time::format(l.moved_at),
            ordered_by: l.ordered_by.clone(),
        }),
    };
    Ok(RecordResponse { view, fhir })
}

/// A record's metadata and the content the caller's decision allows, with its obligations
/// applied (parts out of scope dropped, anonymization). A moved record answers with its
/// locator to those allowed to know it.
#[utoipa::path(get, path = "/api/v1/records/{id}", tag = "records", params(("id" = String, Path)),
    responses((status = 200, body = api::RecordView), (status = 404, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn get(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<RecordResponse> {
    let decided = decide_on(&state, &caller, &id, Action::View, None).await?;
    let now = state.clock.now();
    let permit = match decided.decision {
        Decision::Allow(permit) => permit,
        Decision::Deny(reason) => {
            if decided.record.state == kura_core::record::RecordState::Moving
                && caller.parties().contains(&decided.record.owner)
            {
                return Err(moving_conflict());
            }
            if let Some(locator) = &decided.record.locator
                && may_know_location(&caller.actor, &decided.view, locator.moved_at)
            {
                let entry = audit_entry(&caller, now, "view_locator", "allowed").record(&decided.record.id);
                state.store.append_audit(entry).await?;
                return record_view(&decided.record, None, None);
            }
            // An agent of the owner lacking `view` is told so; anyone else sees a missing record.
            return Err(refuse(&state, &caller, Action::View, &decided, reason).await);
        }
    };
    // The entry is committed while the content is opened; nothing is answered before it is
    // durable. Should opening fail, the log holds an allowed view that delivered nothing: the
    // log may say more than was seen, never less. Unlike changes (`audited_action`), a read's
    // entry does not look its grant up to name an agent who made it: the timeline does that when
    // it is shown (`routes/audit.rs`), so reads pay nothing for it.
    let entry = state.reads_audit.submit(audited(&caller, now, &permit, "view")).await?;
    let released = content::released(&state, &decided.record, &permit).await;
    entry.durable().await?;
    let names = names::of_record(&state, &decided.record, Some(&permit), &mut Default::default()).await?;
    Ok(record_view(&decided.record, Some(&permit), Some(released?))?.named(names))
}

/// The custody ledger of a record: every change of owner since upload. For its owner (or agent).
#[utoipa::path(get, path = "/api/v1/records/{id}/ledger", tag = "records", params(("id" = String, Path)),
    responses((status = 200, body = Vec<api::LedgerEntryView>), (status = 404, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn ledger(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<api::LedgerEntryView>>> {
    let decided = decide_on(&state, &caller, &id, Action::View, None).await?;
    let owner_view =
        matches!(&decided.decision, Decision::Allow(p) if matches!(p.basis(), Basis::Owner | Basis::Delegation(_)));
    let ended_owner = decided.record.state != kura_core::record::RecordState::Active
        && caller.parties().contains(&decided.record.owner);
    if !(owner_view || ended_owner || caller.account.kind == AccountKind::Operator) {
        if decided.decision.is_allowed() {
            // A grantee knows the record exists: say what it lacks, as for other refusals.
            let entry = audit_entry(&caller, state.clock.now(), "ledger_view", "denied")
                .record(&decided.record.id)
                .detail("not the owner");
            state.reads_audit.append(entry).await?;
            return Err(ApiError::forbidden(
                "the custody ledger is open to the record's owner, their agents and operators",
            ));
        }
        return Err(
            deny(&state, &caller, Action::View, &decided.record.id, kura_core::policy::DenyReason::NoBasis).await
        );
    }
    // Every reading of a record's history goes to its patient's timeline, the operator's too.
    let entry = audit_entry(&caller, state.clock.now(), "ledger_view", "allowed").record(&decided.record.id);
    state.reads_audit.append(entry).await?;
    let entries = state.store.ledger(&decided.record.id).await?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| api::LedgerEntryView {
                seq: e.seq,
                event: e.event,
                from_owner: e.from_owner,
                to_owner: e.to_owner,
                transfer: e.transfer,
                actor: e.actor,
                at: time::format(e.at),
                note: e.note,
            })
            .collect(),
    ))
}

/// Hands custody of a record to the patient linked to its local id, under the agreement's
/// terms: keep a view grant, move only some parts (the record splits), pseudonymize staff.
#[utoipa::path(post, path = "/api/v1/records/{id}/transfer", tag = "records", params(("id" = String, Path)),
    request_body = api::TransferRequest,
    responses((status = 200, body = api::TransferResponse), (status = 404, body = api::ErrorEnvelope),
        (status = 409, body = api::ErrorEnvelope), (status = 422, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn transfer(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<api::TransferRequest>,
) -> ApiResult<Json<api::TransferResponse>> {
    let org = caller_institution(&state, &caller, "transferring records").await?;
    let decided = decide_on(&state, &caller, &id, Action::Transfer, None).await?;
    let permit = match decided.decision.clone() {
        Decision::Allow(permit) => permit,
        Decision::Deny(reason) => return Err(refuse(&state, &caller, Action::Transfer, &decided, reason).await),
    };
    let agreement = TransferAgreement {
        retain_view: request.agreement.retain_view,
        parts: request.agreement.parts.as_deref().map(convert::categories_from_api),
        anonymize_staff: request.agreement.anonymize_staff,
    };
    let order = transfer::TransferOrder { carry_over_grants: &request.agreement.carry_over_grants, agreement };
    let done =
        transfer::transfer_to_patient(&state, &caller, &org, &decided.record, &decided.view, &permit, order).await?;
    Ok(Json(api::TransferResponse {
        transfer: done.transfer.to_string(),
        record: done.record.to_string(),
        owner: done.owner.to_text(),
        remainder: done.remainder.map(|r| r.to_string()),
        retained_grant: done.retained_grant.map(|g| g.to_string()),
        ended_grants: done.ended_grants.iter().map(ToString::to_string).collect(),
        carried_grants: done.carried_grants.iter().map(ToString::to_string).collect(),
    }))
}

/// Makes an in-server copy for the grantee, with the grant's obligations applied. The copy
/// opens only while the grant stands and is destroyed when it ends or is revoked.
#[utoipa::path(post, path = "/api/v1/records/{id}/copy", tag = "records", params(("id" = String, Path)),
    responses((status = 201, body = api::CopyResponse), (status = 404, body = api::ErrorEnvelope),
        (status = 422, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn copy(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<api::CopyResponse>)> {
    let decided = decide_on(&state, &caller, &id, Action::Copy, None).await?;
    let permit = match decided.decision.clone() {
        Decision::Allow(permit) => permit,
        Decision::Deny(reason) => return Err(refuse(&state, &caller, Action::Copy, &decided, reason).await),
    };
    let copy_id = records::copy_for_grantee(&state, &caller, &decided.record, &permit).await?;
    Ok((
        StatusCode::CREATED,
        Json(api::CopyResponse {
            id: match permit.basis() {
                // The grantee holds its copy under the grant: it is named like the record.
                Basis::Grant(grant) if permit.obligations().anonymization != Anonymization::None => {
                    crate::pseudonyms::Pseudonyms::new(&state.master).record(grant, &copy_id)
                }
                _ => copy_id.to_string(),
            },
            expires_at: permit.obligations().copies_expire_at.map(time::format),
        }),
    ))
}

/// Delivers the record's content (obligations applied) and removes it here; a locator stays.
/// With `peer` and `peer_token`, moves it instead into the patient's account at a registered
/// peer server (two-phase; see docs/portability-peers.md): the answer carries the locator.
#[utoipa::path(post, path = "/api/v1/records/{id}/move", tag = "records", params(("id" = String, Path)),
    request_body = api::MoveRequest,
    responses((status = 200, body = api::RecordView), (status = 404, body = api::ErrorEnvelope),
        (status = 409, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn move_record(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<api::MoveRequest>,
) -> ApiResult<RecordResponse> {
    let decided = decide_on(&state, &caller, &id, Action::Move, None).await?;
    if decided.record.state == kura_core::record::RecordState::Moving
        && caller.parties().contains(&decided.record.owner)
    {
        return Err(moving_conflict());
    }
    let permit = match decided.decision.clone() {
        Decision::Allow(permit) => permit,
        Decision::Deny(reason) => return Err(refuse(&state, &caller, Action::Move, &decided, reason).await),
    };
    let record = decided.record;
    if request.peer.is_some() && request.destination.is_some() {
        return Err(ApiError::invalid("give either destination or peer, not both"));
    }
    if let Some(peer) = request.peer.as_deref() {
        return move_to_peer(&state, &caller, record, &permit, peer, request.peer_token.as_deref()).await;
    }
    if request.peer_token.is_some() {
        return Err(ApiError::invalid("peer_token goes with peer"));
    }
    let (moved, released) = records::move_out(&state, &caller, record, &permit, request.destination).await?;
    let names = names::of_record(&state, &moved, Some(&permit), &mut Default::default()).await?;
    Ok(record_view(&moved, Some(&permit), Some(released))?.named(names))
}

/// What the owner hears about a record in the middle of a move to a peer server.
fn moving_conflict() -> ApiError {
    ApiError::conflict(
        "a move of this record to a peer server is in progress; the record is readable again here, or at the \
         peer, once the move completes or is undone",
    )
}

/// The peer form of a move: the owner (or their agent) moves a patient's record into the
/// patient's account at a registered peer server (`crate::service::peers` runs the protocol).
async fn move_to_peer(
    state: &AppState,
    caller: &Caller,
    record: RecordRow,
    permit: &Permit,
    peer_name: &str,
    token: Option<&str>,
) -> ApiResult<RecordResponse> {
    let moved = records::move_to_peer(state, caller, record, permit, peer_name, token).await?;
    record_view(&moved, None, None)
}

/// Deletes a record: its data key is destroyed, so its content is gone everywhere.
#[utoipa::path(delete, path = "/api/v1/records/{id}", tag = "records", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = api::ErrorEnvelope), (status = 409, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn delete(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let decided = decide_on(&state, &caller, &id, Action::Delete, None).await?;
    let permit = match decided.decision.clone() {
        Decision::Allow(permit) => permit,
        Decision::Deny(reason) => return Err(refuse(&state, &caller, Action::Delete, &decided, reason).await),
    };
    records::delete(&state, &caller, &decided.record, &permit).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;

    use super::*;

    /// The content goes out after the view as a piece of its own; what arrives must be one JSON
    /// document with the content as its `content` member, and its length known up front (a
    /// keep-alive client reads exactly Content-Length bytes).
    #[tokio::test]
    async fn a_record_answer_is_one_json_document_of_known_length() {
        let view = api::RecordView {
            id: "r1".into(),
            owner: "patient:p1".into(),
            institution: "org1".into(),
            format: "fhir".into(),
            state: "active".into(),
            parts: Vec::new(),
            labels: vec!["icd10:E11".into()],
            created_at: "2026-12-01T00:00:00Z".into(),
            derived_from: None,
            provenance: "upload".into(),
            access: None,
            content: None,
            content_base64: None,
            withheld: None,
            locator: None,
        };
        let fhir = br#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient"}}]}"#.to_vec();
        let response = RecordResponse { view, fhir: Some(fhir) }.into_response();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = response.into_body();
        let length = http_body::Body::size_hint(&body).exact().expect("an exact length");
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        assert_eq!(bytes.len() as u64, length);
        let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed["id"], "r1");
        assert_eq!(parsed["labels"][0], "icd10:E11");
        assert_eq!(parsed["content"]["entry"][0]["resource"]["resourceType"], "Patient");
    }
}
