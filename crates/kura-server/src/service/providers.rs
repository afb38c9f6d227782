//! External providers (issue 5): pulling a patient's resources from a FHIR R4 endpoint they
//! linked, as patient-owned, patient-entered records.
//!
//! A sync fetches everything first (FHIR search per resource type, following `next` links on
//! the same origin, within page, byte and time limits). Any failure there writes nothing but
//! the error on the link. Then it compares each resource, in a canonical JSON form, with what
//! earlier syncs stored (by content hash): new resources become records, changed ones get new
//! content, unchanged ones are left alone. All of that is one store transaction.
//!
//! The provider's bearer token is sealed under the master key and opened only to send it; it
//! never appears in a response, a log line, an audit entry or an error.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use kura_api_types as api;
use kura_core::custody::CustodyEvent;
use kura_core::ids::{OrgId, RecordId};
use kura_core::party::Party;
use kura_core::record::RecordFormat;
use kura_core::time::Timestamp;
use kura_store::StoreError;
use kura_store::model::*;
use reqwest::Url;

use super::error::{ServiceError, ServiceResult};
use super::ingest::{self, Ingested, NewBlobs};
use super::{content, ids};
use crate::outbound;
use crate::state::AppState;

/// The resource types pulled when the link does not name its own.
pub const DEFAULT_RESOURCE_TYPES: [&str; 7] = [
    "Observation",
    "Condition",
    "MedicationStatement",
    "MedicationRequest",
    "AllergyIntolerance",
    "Procedure",
    "Immunization",
];

/// The organisation row (migration 0005) that stands as the institution of pulled records; it
/// becomes their label `institution:external-providers`.
pub const EXTERNAL_PROVIDERS_ORG: &str = "external-providers";

/// Pages followed per resource type, bytes per page, bytes per sync and resources per sync.
const MAX_PAGES_PER_TYPE: usize = 100;
const MAX_PAGE_BYTES: usize = 16 * 1024 * 1024;
const MAX_SYNC_BYTES: usize = 128 * 1024 * 1024;
const MAX_RESOURCES: usize = 20_000;
/// Links the background task syncs per round.
const DUE_PER_ROUND: i64 = 20;

/// A provider's bearer token, opened for one sync. Never printed.
pub struct ProviderToken(String);

impl std::fmt::Debug for ProviderToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProviderToken(..)")
    }
}

fn token_context(link_id: &str) -> String {
    format!("provider-token/{link_id}")
}

/// Seals the token under a fresh key wrapped by the master key, bound to the link's id.
pub fn seal_token(state: &AppState, link_id: &str, token: &str) -> ServiceResult<SealedSecret> {
    let sealed = state.master.seal(&token_context(link_id), token.as_bytes()).map_err(|e| {
        tracing::error!(link = %link_id, error = %e, "sealing a provider token failed");
        ServiceError::Internal
    })?;
    Ok(SealedSecret { wrapped_key: sealed.wrapped_key, ciphertext: sealed.ciphertext })
}

fn open_token(state: &AppState, link: &ProviderLink) -> ServiceResult<ProviderToken> {
    let bytes = state
        .master
        .open(&token_context(&link.id), &link.token.wrapped_key, link.token.ciphertext.clone())
        .map_err(|e| {
            tracing::error!(link = %link.id, error = %e, "a provider token does not open");
            ServiceError::Internal
        })?;
    String::from_utf8(bytes).map(ProviderToken).map_err(|_| ServiceError::Internal)
}

/// A FHIR resource type name as the search path takes it (`Observation`).
pub fn is_resource_type(raw: &str) -> bool {
    let mut chars = raw.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase()) && raw.len() <= 64 && chars.all(|c| c.is_ascii_alphanumeric())
}

/// A FHIR logical id: 1 to 64 of `A-Z a-z 0-9 - .`.
pub fn is_fhir_id(raw: &str) -> bool {
    !raw.is_empty() && raw.len() <= 64 && raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// The JSON with every object's keys sorted and no insignificant whitespace, so that the same
/// resource always gives the same bytes (and content hash) whatever order the provider wrote.
pub fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    fn sorted(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::with_capacity(map.len());
                for key in keys {
                    out.insert(key.clone(), sorted(&map[key]));
                }
                serde_json::Value::Object(out)
            }
            serde_json::Value::Array(items) => serde_json::Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sorted(value)).unwrap_or_default()
}

/// One resource as fetched: its type, id and canonical bytes.
struct Fetched {
    resource_type: String,
    id: String,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fetched({}/{})", self.resource_type, self.id)
    }
}

/// What the patient reads when a request to the provider failed, whatever the reason: the
/// same text for a refused address, a refused connection, a timeout, a broken connection and
/// any HTTP error status, so that a link cannot serve to map what listens where
/// (`crate::outbound`). The reason goes to the log.
fn provider_unreachable(link: &ProviderLink, at: &str, failure: outbound::Failure) -> String {
    tracing::warn!(link = %link.id, %failure, "a request to a provider failed");
    format!("{at}: {}", outbound::UNREACHABLE)
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

/// Fetches every resource of every type the link names. Errors say which type and page and
/// what went wrong (never the token, never content).
async fn fetch_everything(
    state: &AppState,
    link: &ProviderLink,
    token: &ProviderToken,
) -> Result<Vec<Fetched>, String> {
    let base = Url::parse(&format!("{}/", link.base_url)).map_err(|_| "the base URL does not parse".to_owned())?;
    let timeout = Duration::from_secs(state.config.provider_request_timeout_secs.max(1));
    let mut fetched = Vec::new();
    let mut total_bytes = 0usize;
    for resource_type in &link.resource_types {
        let mut url =
            base.join(resource_type).map_err(|_| format!("{resource_type}: the search URL does not parse"))?;
        url.query_pairs_mut().append_pair("patient", &link.provider_patient_id).append_pair("_count", "100");
        let mut page = 1usize;
        loop {
            let at = format!("{resource_type} page {page}");
            if page > MAX_PAGES_PER_TYPE {
                return Err(format!("{at}: more than {MAX_PAGES_PER_TYPE} pages; the sync stops there"));
            }
            let mut response = state
                .http
                .request(reqwest::Method::GET, url.as_str())
                .map_err(|failure| provider_unreachable(link, &at, failure))?
                .bearer_auth(&token.0)
                .header(reqwest::header::ACCEPT, "application/fhir+json")
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| provider_unreachable(link, &at, outbound::Failure::of(&e)))?;
            let status = response.status();
            if !status.is_success() {
                return Err(provider_unreachable(link, &at, outbound::Failure::Status(status.as_u16())));
            }
            let mut body = Vec::new();
            while let Some(chunk) =
                response.chunk().await.map_err(|e| provider_unreachable(link, &at, outbound::Failure::of(&e)))?
            {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_PAGE_BYTES {
                    return Err(format!("{at}: the page is larger than {MAX_PAGE_BYTES} bytes"));
                }
            }
            total_bytes += body.len();
            if total_bytes > MAX_SYNC_BYTES {
                return Err(format!("{at}: the provider sent more than {MAX_SYNC_BYTES} bytes in all"));
            }
            let bundle: serde_json::Value =
                serde_json::from_slice(&body).map_err(|_| format!("{at}: the answer is not JSON"))?;
            if bundle.get("resourceType").and_then(|t| t.as_str()) != Some("Bundle") {
                return Err(format!("{at}: the answer is not a FHIR Bundle"));
            }
            let entries = match bundle.get("entry") {
                None => &Vec::new(),
                Some(serde_json::Value::Array(entries)) => entries,
                Some(_) => return Err(format!("{at}: the Bundle's entry is not a list")),
            };
            for (n, entry) in entries.iter().enumerate() {
                let mode = entry.pointer("/search/mode").and_then(|m| m.as_str());
                if matches!(mode, Some("outcome" | "include")) {
                    continue;
                }
                let resource = entry.get("resource").filter(|r| r.is_object());
                let Some(resource) = resource else {
                    return Err(format!("{at}: entry {n} has no resource"));
                };
                let found_type = resource.get("resourceType").and_then(|t| t.as_str()).unwrap_or("");
                if found_type != resource_type {
                    return Err(format!("{at}: entry {n} is not a {resource_type}"));
                }
                let id = resource.get("id").and_then(|i| i.as_str()).filter(|i| is_fhir_id(i));
                let Some(id) = id else {
                    return Err(format!("{at}: entry {n} has no valid id"));
                };
                if fetched.len() >= MAX_RESOURCES {
                    return Err(format!("{at}: more than {MAX_RESOURCES} resources in all"));
                }
                fetched.push(Fetched {
                    resource_type: resource_type.clone(),
                    id: id.to_owned(),
                    bytes: canonical_json(resource),
                });
            }
            let next = bundle
                .get("link")
                .and_then(|l| l.as_array())
                .and_then(|links| links.iter().find(|l| l.get("relation").and_then(|r| r.as_str()) == Some("next")));
            let Some(next) = next else { break };
            let next = next
                .get("url")
                .and_then(|u| u.as_str())
                .and_then(|u| url.join(u).ok())
                .ok_or_else(|| format!("{at}: the next link has no valid url"))?;
            if !same_origin(&next, &base) {
                return Err(format!("{at}: the next link leaves the provider's origin; it is not followed"));
            }
            url = next;
            page += 1;
        }
    }
    Ok(fetched)
}

/// Who a sync runs for, for the audit log: the caller (patient or agent), or `system` for the
/// background task.
#[derive(Debug, Clone)]
pub struct SyncActor {
    pub actor: String,
    pub on_behalf_of: String,
}

impl SyncActor {
    pub fn system() -> Self {
        Self { actor: "system".into(), on_behalf_of: String::new() }
    }

    fn audit(&self, link: &ProviderLink, at: Timestamp, action: &str, outcome: &str, detail: String) -> NewAudit {
        NewAudit {
            at,
            actor: self.actor.clone(),
            on_behalf_of: self.on_behalf_of.clone(),
            action: action.to_owned(),
            record: None,
            grant: None,
            outcome: outcome.to_owned(),
            detail,
            subject: Some(link.patient.clone()),
        }
    }
}

/// The parts, labels and facts of one external resource: ingested like an upload, then marked
/// patient-entered.
fn ingest(item: &Fetched, now: Timestamp) -> Result<Ingested, String> {
    let parsed = ingest::parse(RecordFormat::Fhir, &item.bytes, EXTERNAL_PROVIDERS_ORG, now, None)
        .map_err(|e| format!("{}/{} is not usable FHIR: {e}", item.resource_type, item.id))?;
    Ingested::of(parsed).patient_entered().map_err(|_| "label".to_owned())
}

fn provenance(link: &ProviderLink, item: &Fetched) -> String {
    format!("from external provider {} ({}): {}/{}", link.name, link.base_url, item.resource_type, item.id)
}

/// The answer to a sync that failed at the provider.
fn provider_failed(message: &str) -> ServiceError {
    ServiceError::Upstream { code: "provider_failed", message: format!("the sync failed and wrote nothing: {message}") }
}

/// The links being pulled in this process, so that a manual sync and the periodic one do not
/// fetch the same provider twice at once (the store refuses the second write anyway).
static SYNCING: std::sync::Mutex<Option<HashSet<String>>> = std::sync::Mutex::new(None);

/// Marks a link as being pulled until dropped.
struct SyncingGuard(String);

impl SyncingGuard {
    fn take(link: &str) -> Option<Self> {
        let mut syncing = SYNCING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        syncing.get_or_insert_with(HashSet::new).insert(link.to_owned()).then(|| SyncingGuard(link.to_owned()))
    }
}

impl Drop for SyncingGuard {
    fn drop(&mut self) {
        let mut syncing = SYNCING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(set) = syncing.as_mut() {
            set.remove(&self.0);
        }
    }
}

/// Pulls the link's resources now and upserts them in one transaction. A failure at the
/// provider is recorded on the link and answered 502; nothing else is written. A sync of the
/// same link already running here is a 409.
pub async fn sync_link(state: &AppState, link: &ProviderLink, by: &SyncActor) -> ServiceResult<api::SyncReport> {
    let Some(_syncing) = SyncingGuard::take(&link.id) else {
        return Err(ServiceError::Conflict(
            "this provider is being pulled right now; nothing was written, try again shortly".into(),
        ));
    };
    let token = open_token(state, link)?;
    let fetched = fetch_everything(state, link, &token).await;
    drop(token);
    let now = state.clock.now();
    let fetched = match fetched {
        Ok(fetched) => fetched,
        Err(message) => return Err(record_failure(state, link, now, by, &message).await),
    };
    let known: HashMap<(String, String), ProviderResource> = state
        .store
        .provider_resources(&link.id)
        .await?
        .into_iter()
        .map(|r| ((r.resource_type.clone(), r.resource_id.clone()), r))
        .collect();
    let institution = OrgId::parse(EXTERNAL_PROVIDERS_ORG).map_err(|_| ServiceError::Internal)?;
    let owner = Party::Account(link.patient.clone());
    let mut seen = HashSet::new();
    let mut report = api::SyncReport {
        provider: link.id.clone(),
        fetched: 0,
        created: 0,
        updated: 0,
        unchanged: 0,
        skipped: 0,
        gone_at_provider: 0,
        records: Vec::new(),
        synced_at: crate::time::format(now),
    };
    let mut inserts = Vec::new();
    let mut updates = Vec::new();
    let mut audit = Vec::new();
    let mut new_blobs = NewBlobs::default();
    let outcome: ServiceResult<()> = async {
        for item in &fetched {
            // A resource listed twice (pages that overlap) counts once.
            if !seen.insert((item.resource_type.clone(), item.id.clone())) {
                continue;
            }
            report.fetched += 1;
            let hash = content::sha256_hex(&item.bytes);
            let known = known.get(&(item.resource_type.clone(), item.id.clone()));
            if known.is_some_and(|k| k.content_hash == hash) {
                report.unchanged += 1;
                continue;
            }
            let ingested = match ingest(item, now) {
                Ok(ingested) => ingested,
                Err(message) => return Err(record_failure(state, link, now, by, &message).await),
            };
            match known {
                Some(k) => {
                    let record = state.store.record(&k.record).await?;
                    let Some(record) =
                        record.filter(|r| r.state == kura_core::record::RecordState::Active && r.owner == owner)
                    else {
                        report.skipped += 1;
                        continue;
                    };
                    let sealed = new_blobs.seal(state, &record.id, &item.bytes).await?;
                    report.updated += 1;
                    report.records.push(record.id.to_string());
                    audit.push(
                        by.audit(link, now, "provider_update", "done", format!("{}/{}", item.resource_type, item.id))
                            .record_id(&record.id),
                    );
                    updates.push(ProviderUpdate {
                        resource_type: item.resource_type.clone(),
                        resource_id: item.id.clone(),
                        record: record.id.clone(),
                        expected_version: record.version,
                        content: sealed,
                        parts: ingested.parts,
                        labels: ingested.labels,
                        values: ingested.values,
                        subject_birth_day: ingested.birth_day,
                        provenance: provenance(link, item),
                        ledger: NewLedger {
                            event: CustodyEvent::Updated,
                            from_owner: Some(owner.clone()),
                            to_owner: owner.clone(),
                            transfer: None,
                            actor: by.actor.clone(),
                            at: now,
                            note: format!("updated from provider link {}", link.id),
                        },
                    });
                }
                None => {
                    let id = ids::new_record_id()?;
                    let draft = ingest::Draft {
                        owner: owner.clone(),
                        institution: institution.clone(),
                        mrn: link.id.clone(),
                        format: RecordFormat::Fhir,
                        document_category: None,
                        derived_from: None,
                        provenance: provenance(link, item),
                        held_under: None,
                        created_at: now,
                    };
                    let record =
                        ingest::prepare(state, &mut new_blobs, id.clone(), draft, ingested, &item.bytes).await?;
                    report.created += 1;
                    report.records.push(id.to_string());
                    audit.push(
                        by.audit(link, now, "provider_import", "done", format!("{}/{}", item.resource_type, item.id))
                            .record_id(&id),
                    );
                    inserts.push(ProviderInsert {
                        resource_type: item.resource_type.clone(),
                        resource_id: item.id.clone(),
                        record,
                        ledger: NewLedger {
                            event: CustodyEvent::Uploaded,
                            from_owner: None,
                            to_owner: owner.clone(),
                            transfer: None,
                            actor: by.actor.clone(),
                            at: now,
                            note: format!("pulled from provider link {}", link.id),
                        },
                    });
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        new_blobs.discard(state).await;
        return Err(e);
    }
    report.gone_at_provider = known.keys().filter(|k| !seen.contains(*k)).count() as u64;
    audit.insert(
        0,
        by.audit(
            link,
            now,
            "provider_sync",
            "done",
            format!(
                "provider link {}: fetched {}, created {}, updated {}, unchanged {}, skipped {}, gone at provider {}",
                link.id,
                report.fetched,
                report.created,
                report.updated,
                report.unchanged,
                report.skipped,
                report.gone_at_provider
            ),
        ),
    );
    let commit = ProviderSyncCommit { link: link.id.clone(), at: now, inserts, updates, audit };
    match new_blobs.commit(state, state.store.apply_provider_sync(&commit)).await {
        Ok(dead) => content::discard_blobs(state, dead).await,
        Err(e) => {
            return Err(match e {
                StoreError::NotFound => ServiceError::NotFound("provider link"),
                StoreError::Conflict(why) => {
                    ServiceError::Conflict(format!("{why}; nothing was written, sync again to pick up the changes"))
                }
                other => other.into(),
            });
        }
    }
    tracing::info!(
        link = %link.id,
        fetched = report.fetched,
        created = report.created,
        updated = report.updated,
        unchanged = report.unchanged,
        "provider synced"
    );
    Ok(report)
}

trait RecordIdExt {
    fn record_id(self, id: &RecordId) -> Self;
}

impl RecordIdExt for NewAudit {
    fn record_id(mut self, id: &RecordId) -> Self {
        self.record = Some(id.clone());
        self
    }
}

/// Writes the failure on the link (and the audit log) and returns the 502 to answer.
async fn record_failure(
    state: &AppState,
    link: &ProviderLink,
    now: Timestamp,
    by: &SyncActor,
    message: &str,
) -> ServiceError {
    tracing::warn!(link = %link.id, "provider sync failed; nothing written");
    let audit = by.audit(link, now, "provider_sync", "failed", format!("provider link {}: {message}", link.id));
    // A pull nobody is watching (the periodic one) tells the patient and their agents, once per
    // run of failures; whoever syncs by hand reads the error in the answer.
    let notifications = if by.actor == "system" && link.last_outcome.as_deref() != Some("failed") {
        let text = format!(
            "Pulling your records from the provider {} failed: {message}. Nothing was changed; Kura will try again.",
            link.name
        );
        let owner = Party::Account(link.patient.clone());
        match crate::service::notify::to_owner_and_agents(state, &owner, "provider_sync_failed", &link.id, &text, now)
            .await
        {
            Ok(notifications) => notifications,
            Err(e) => return e,
        }
    } else {
        Vec::new()
    };
    if let Err(e) = state.store.record_provider_failure(&link.id, now, message, &notifications, audit).await {
        return e.into();
    }
    crate::service::notify::publish(state, notifications);
    provider_failed(message)
}

/// Syncs the links whose last attempt is older than the configured interval; returns how many
/// were attempted. Failures are recorded on each link and do not stop the round.
pub async fn sync_due(state: &AppState) -> ServiceResult<usize> {
    let interval_ms = i64::try_from(state.config.provider_sync_interval_secs).unwrap_or(i64::MAX / 2000) * 1000;
    let before = state.clock.now().plus_millis(-interval_ms);
    let due = state.store.provider_links_due(before, DUE_PER_ROUND).await?;
    for link in &due {
        if let Err(e) = sync_link(state, link, &SyncActor::system()).await {
            tracing::warn!(link = %link.id, error = %e, "periodic provider sync failed");
        }
    }
    Ok(due.len())
}

pub async fn run(state: AppState) {
    let every = state.config.provider_sync_interval_secs.clamp(1, 60);
    let mut interval = tokio::time::interval(Duration::from_secs(every));
    loop {
        interval.tick().await;
        if let Err(e) = sync_due(&state).await {
            tracing::warn!(error = %e, "provider sync round failed; retrying next interval");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn canonical_json_ignores_key_order_and_whitespace() {
        let check = |a: serde_json::Value, b: serde_json::Value, same: bool| {
            assert_eq!(canonical_json(&a) == canonical_json(&b), same, "{a} vs {b}");
        };
        check(
            json!({"b": 1, "a": {"y": [1, {"d": 2, "c": 3}], "x": null}}),
            json!({"a": {"x": null, "y": [1, {"c": 3, "d": 2}]}, "b": 1}),
            true,
        );
        check(json!({"a": [1, 2]}), json!({"a": [2, 1]}), false);
        check(json!({"a": "1"}), json!({"a": 1}), false);
        assert_eq!(canonical_json(&json!({"b": 1, "a": 2})), br#"{"a":2,"b":1}"#);
    }

    #[test]
    fn one_sync_per_link_at_a_time() {
        let first = SyncingGuard::take("link-a").expect("free");
        assert!(SyncingGuard::take("link-a").is_none());
        let other = SyncingGuard::take("link-b");
        assert!(other.is_some());
        drop(first);
        assert!(SyncingGuard::take("link-a").is_some());
    }

    #[test]
    fn ids_and_type_names() {
        for (raw, id, kind) in [
            ("Observation", true, true),
            ("observation", true, false),
            ("abc-1.2", true, false),
            ("", false, false),
            ("a/b", false, false),
            ("Obs?x=1", false, false),
            (&"A".repeat(65), false, false),
        ] {
            assert_eq!((is_fhir_id(raw), is_resource_type(raw)), (id, kind), "{raw}");
        }
    }
}
