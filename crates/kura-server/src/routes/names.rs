//! Who and which a response names, as its reader may learn it (DESIGN.md I5b). The owner (or
//! their agent) sees the record's own ids. A grantee under `pseudonymized` or `anonymized` sees
//! no internal id: the record, the records it derives from, the owner and the institution appear
//! as pseudonyms of the grant it reads under (`crate::pseudonyms`), and the record's provenance
//! and locator are not shown. A grantee under `none` sees the owner's name, never their
//! internal id, and no provenance.

use std::collections::HashMap;

use kura_api_types as api;
use kura_core::ids::GrantId;
use kura_core::party::Party;
use kura_core::policy::{Anonymization, Basis, Permit};
use kura_store::model::{GrantRow, RecordRow};

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::pseudonyms::Pseudonyms;
use crate::state::AppState;

/// The names one response gives a record.
pub(super) struct RecordNames {
    id: String,
    owner: String,
    institution: String,
    derived_from: Option<String>,
    /// Provenance is the owner's history (it names records and parties by id), shown to the
    /// owner only.
    owners_view: bool,
    /// A locator is shown to grantees who may know the record's ids.
    hidden: bool,
}

/// Display names looked up once per response.
#[derive(Default)]
pub(super) struct DisplayNames(HashMap<String, String>);

impl DisplayNames {
    async fn of(&mut self, state: &AppState, party: &Party) -> ApiResult<String> {
        let key = party.to_text();
        if let Some(name) = self.0.get(&key) {
            return Ok(name.clone());
        }
        let name = match party {
            Party::Account(id) => state.store.account(id).await?.map(|a| a.username),
            Party::Organisation(id) => state.store.org(id).await?.map(|o| o.name),
        }
        .unwrap_or_else(|| "(unknown)".to_owned());
        self.0.insert(key, name.clone());
        Ok(name)
    }
}

/// The grant a grantee reads under, and whether it hides identities.
fn grantee_reading(permit: &Permit) -> Option<(&GrantId, bool)> {
    match permit.basis() {
        Basis::Grant(grant) | Basis::CopyHolder(grant) => {
            Some((grant, permit.obligations().anonymization != Anonymization::None))
        }
        Basis::Owner | Basis::Delegation(_) => None,
    }
}

pub(super) async fn of_record(
    state: &AppState,
    record: &RecordRow,
    permit: Option<&Permit>,
    names: &mut DisplayNames,
) -> ApiResult<RecordNames> {
    let own = RecordNames {
        id: record.id.to_string(),
        owner: record.owner.to_text(),
        institution: record.institution.to_string(),
        derived_from: record.derived_from.as_ref().map(|d| d.to_string()),
        owners_view: true,
        hidden: false,
    };
    let Some((grant, hidden)) = permit.and_then(grantee_reading) else { return Ok(own) };
    if hidden {
        let keys = Pseudonyms::new(&state.master);
        return Ok(RecordNames {
            id: keys.record(grant, &record.id),
            owner: keys.party(grant, &record.owner.to_text()),
            institution: keys.party(grant, &format!("org:{}", record.institution)),
            derived_from: record.derived_from.as_ref().map(|d| keys.record(grant, d)),
            owners_view: false,
            hidden: true,
        });
    }
    // The institution stays named by its id: it is no one's personal identifier, and looking
    // its name up would cost every consented read a query.
    Ok(RecordNames { owner: names.of(state, &record.owner).await?, owners_view: false, ..own })
}

pub(super) fn name_view(view: &mut api::RecordView, names: RecordNames) {
    view.id = names.id;
    view.owner = names.owner;
    view.institution = names.institution;
    view.derived_from = names.derived_from;
    if !names.owners_view {
        view.provenance = String::new();
    }
    if names.hidden {
        view.locator = None;
    }
}

pub(super) fn name_summary(summary: &mut api::RecordSummary, names: RecordNames) {
    summary.id = names.id;
    summary.owner = names.owner;
    summary.institution = names.institution;
}

/// A grant as the caller may see it: its owner (or agent) sees it whole; its grantee sees the
/// owner and the records it names by pseudonym under `pseudonymized`/`anonymized`, by name
/// under `none`.
pub(super) async fn name_grant(
    state: &AppState,
    caller: &Caller,
    row: &GrantRow,
    view: &mut api::GrantView,
    names: &mut DisplayNames,
) -> ApiResult<()> {
    if caller.parties().contains(&row.grant.owner) {
        return Ok(());
    }
    let grant = &row.grant.id;
    if row.grant.terms.anonymization() != Anonymization::None {
        let keys = Pseudonyms::new(&state.master);
        view.owner = keys.party(grant, &row.grant.owner.to_text());
        if let kura_core::policy::RecordSelector::Records(ids) = row.grant.terms.selector() {
            view.records = Some(ids.iter().map(|id| keys.record(grant, id)).collect());
        }
    } else {
        view.owner = names.of(state, &row.grant.owner).await?;
    }
    Ok(())
}
