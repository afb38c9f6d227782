//! Conversions between domain values and wire types.

use kura_api_types as api;
use kura_core::ids::{AccountId, OrgId};
use kura_core::party::Party;
use kura_core::policy::{Action, ActionSet, Anonymization, Basis, Permit, RecordSelector};
use kura_core::record::CategorySet;
use kura_store::model::{DelegationRow, GrantRow, RecordRow};

use crate::error::ApiError;
use crate::time;

pub(crate) use crate::archive::{category_from_api, category_to_api};

pub fn categories_from_api(items: &[api::Category]) -> CategorySet {
    items.iter().map(|c| category_from_api(*c)).collect()
}

pub fn categories_to_api(set: CategorySet) -> Vec<api::Category> {
    set.iter().map(category_to_api).collect()
}

pub fn anonymization_to_api(a: Anonymization) -> api::Anonymization {
    match a {
        Anonymization::None => api::Anonymization::None,
        Anonymization::Pseudonymized => api::Anonymization::Pseudonymized,
        Anonymization::Anonymized => api::Anonymization::Anonymized,
    }
}

pub fn anonymization_from_api(a: api::Anonymization) -> Anonymization {
    match a {
        api::Anonymization::None => Anonymization::None,
        api::Anonymization::Pseudonymized => Anonymization::Pseudonymized,
        api::Anonymization::Anonymized => Anonymization::Anonymized,
    }
}

pub fn grant_action_from_api(a: api::GrantAction) -> Action {
    match a {
        api::GrantAction::View => Action::View,
        api::GrantAction::Copy => Action::Copy,
        api::GrantAction::Move => Action::Move,
        api::GrantAction::Delete => Action::Delete,
        api::GrantAction::Statistics => Action::Statistics,
    }
}

pub fn grant_action_to_api(a: Action) -> Option<api::GrantAction> {
    match a {
        Action::View => Some(api::GrantAction::View),
        Action::Copy => Some(api::GrantAction::Copy),
        Action::Move => Some(api::GrantAction::Move),
        Action::Delete => Some(api::GrantAction::Delete),
        Action::Statistics => Some(api::GrantAction::Statistics),
        Action::Transfer | Action::ManageGrants => None,
    }
}

pub fn power_from_api(p: api::Power) -> Action {
    match p {
        api::Power::View => Action::View,
        api::Power::Copy => Action::Copy,
        api::Power::Move => Action::Move,
        api::Power::Delete => Action::Delete,
        api::Power::Statistics => Action::Statistics,
        api::Power::ManageGrants => Action::ManageGrants,
    }
}

fn power_to_api(a: Action) -> Option<api::Power> {
    match a {
        Action::View => Some(api::Power::View),
        Action::Copy => Some(api::Power::Copy),
        Action::Move => Some(api::Power::Move),
        Action::Delete => Some(api::Power::Delete),
        Action::Statistics => Some(api::Power::Statistics),
        Action::ManageGrants => Some(api::Power::ManageGrants),
        Action::Transfer => None,
    }
}

pub fn party_from_api(p: &api::PartyRef) -> Result<Party, ApiError> {
    let invalid = || ApiError::invalid("grantee id is malformed");
    match p {
        api::PartyRef::Org(id) => OrgId::parse(id).map(Party::Organisation).map_err(|_| invalid()),
        api::PartyRef::Account(id) => AccountId::parse(id).map(Party::Account).map_err(|_| invalid()),
    }
}

pub fn parts_to_api(record: &RecordRow, keep: CategorySet) -> Vec<api::PartView> {
    record
        .parts
        .iter()
        .filter(|p| keep.contains(p.category))
        .map(|p| api::PartView {
            index: p.index,
            category: category_to_api(p.category),
            resource_type: p.resource_type.clone(),
        })
        .collect()
}

pub fn access_to_api(permit: &Permit) -> api::AccessView {
    let (basis, grant) = match permit.basis() {
        Basis::Owner => ("owner", None),
        Basis::Delegation(_) => ("delegation", None),
        Basis::Grant(id) => ("grant", Some(id.to_string())),
        Basis::CopyHolder(id) => ("copy_holder", Some(id.to_string())),
    };
    let obligations = permit.obligations();
    api::AccessView {
        basis: basis.to_owned(),
        grant,
        anonymization: anonymization_to_api(obligations.anonymization),
        expires_at: obligations.copies_expire_at.map(time::format),
    }
}

/// Labels reveal diagnoses, so only the owner (or its agent) sees them.
pub fn labels_for(record: &RecordRow, permit: &Permit) -> Vec<String> {
    match permit.basis() {
        Basis::Owner | Basis::Delegation(_) => record.labels.iter().map(|l| l.to_string()).collect(),
        Basis::Grant(_) | Basis::CopyHolder(_) => Vec::new(),
    }
}

pub fn summary(record: &RecordRow, permit: &Permit) -> api::RecordSummary {
    api::RecordSummary {
        id: record.id.to_string(),
        owner: record.owner.to_text(),
        institution: record.institution.to_string(),
        format: record.format.as_str().to_owned(),
        state: record.state.as_str().to_owned(),
        parts: parts_to_api(record, permit.obligations().keep_categories),
        labels: labels_for(record, permit),
        created_at: time::format(record.created_at),
        access: access_to_api(permit),
    }
}

pub fn grant_view(row: &GrantRow, now: kura_core::time::Timestamp) -> api::GrantView {
    let grant = &row.grant;
    let (records, labels) = match grant.terms.selector() {
        RecordSelector::Records(ids) => (Some(ids.iter().map(|i| i.to_string()).collect()), Vec::new()),
        RecordSelector::Labels(labels) => (None, labels.iter().map(|l| l.to_string()).collect()),
    };
    api::GrantView {
        id: grant.id.to_string(),
        owner: grant.owner.to_text(),
        grantee: grant.grantee.to_text(),
        records,
        labels,
        scope: categories_to_api(grant.terms.scope()),
        actions: grant.terms.actions().iter().filter_map(grant_action_to_api).collect(),
        anonymization: anonymization_to_api(grant.terms.anonymization()),
        not_before: time::format(grant.terms.period().not_before()),
        expires_at: grant.terms.period().expires_at().map(time::format),
        revoked_at: grant.revoked_at.map(time::format),
        active: grant.is_active(now),
        purpose: row.purpose.clone(),
        study: row.study.clone(),
    }
}

pub fn delegation_view(row: &DelegationRow, now: kura_core::time::Timestamp) -> api::DelegationView {
    let d = &row.delegation;
    api::DelegationView {
        id: d.id.to_string(),
        agent: d.agent.to_string(),
        patient: d.patient.to_string(),
        kind: row.kind.as_str().to_owned(),
        powers: d.powers.iter().filter_map(power_to_api).collect(),
        not_before: time::format(d.period.not_before()),
        expires_at: d.period.expires_at().map(time::format),
        revoked_at: d.revoked_at.map(time::format),
        active: d.is_active(now),
        awaiting_acceptance: d.accepted_at.is_none() && d.revoked_at.is_none(),
        over_minor: row.over_minor,
    }
}

pub fn actions_from_api(items: &[api::GrantAction]) -> ActionSet {
    items.iter().map(|a| grant_action_from_api(*a)).collect()
}
