//! Custody transfer from an institution to its patient (S104–S105), under the agreement's
//! terms: keep a view grant, move only some parts (the record splits), pseudonymize staff, and
//! carry some of the institution's grants over to the patient (DESIGN.md I10).

use kura_core::custody::{TransferAgreement, TransferPlan, plan_transfer};
use kura_core::ids::{GrantId, RecordId, TransferId};
use kura_core::party::Party;
use kura_core::policy::{
    Action, ActionSet, Anonymization, Grant, GrantTerms, Permit, RecordPolicyView, RecordSelector,
};
use kura_core::record::CategorySet;
use kura_store::model::{CarriedGrant, GrantRow, Org, RecordRow, SplitCommit, TransferCommit};

use super::audit::{AuditExt, audit_entry};
use super::error::{Refusal, ServiceError, ServiceResult};
use super::ingest::{self, NewBlobs};
use super::{content, ids, notify};
use crate::auth::Caller;
use crate::state::AppState;

/// What the institution ordered.
pub struct TransferOrder<'a> {
    /// The ids, as given, of the institution's grants over the record that pass to the patient.
    pub carry_over_grants: &'a [String],
    pub agreement: TransferAgreement,
}

/// What a transfer did.
pub struct Transferred {
    pub transfer: TransferId,
    /// The patient's record: the record itself, or the part split off it.
    pub record: RecordId,
    pub owner: Party,
    /// The institution's record left with the parts that stay, after a split.
    pub remainder: Option<RecordId>,
    pub retained_grant: Option<GrantId>,
    pub ended_grants: Vec<GrantId>,
    pub carried_grants: Vec<GrantId>,
}

/// Hands custody of `record` (which `permit` allows `institution` to transfer) to the patient
/// linked to its local id, in one store transaction; the content sealed for it is removed
/// again if anything fails before that transaction lands.
pub async fn transfer_to_patient(
    state: &AppState,
    caller: &Caller,
    institution: &Org,
    record: &RecordRow,
    view: &RecordPolicyView,
    permit: &Permit,
    order: TransferOrder<'_>,
) -> ServiceResult<Transferred> {
    let mut new_blobs = NewBlobs::default();
    let commit = match plan(state, caller, institution, record, view, permit, order, &mut new_blobs).await {
        Ok(commit) => commit,
        Err(e) => {
            new_blobs.discard(state).await;
            return Err(e);
        }
    };
    match new_blobs.commit(state, state.store.apply_transfer(&commit)).await {
        // The notice of destroyed copies is stored with the transfer when there were any; the
        // live stream does not carry it (the store does not say whether it was written).
        Ok(dead) => content::discard_blobs(state, dead).await,
        Err(e) => {
            return Err(ServiceError::store_conflict(e, "; the record was transferred or changed by another request"));
        }
    }
    tracing::info!(record = %record.id, transfer = %commit.transfer, "custody transferred");
    Ok(Transferred {
        record: commit.split.as_ref().map(|s| s.moving.id.clone()).unwrap_or_else(|| record.id.clone()),
        remainder: commit.split.as_ref().map(|_| record.id.clone()),
        retained_grant: commit.retained_view.map(|g| g.grant.id),
        carried_grants: commit.carried_grants.into_iter().map(|c| c.patients.grant.id).collect(),
        ended_grants: commit.ended_grants,
        owner: commit.patient,
        transfer: commit.transfer,
    })
}

/// Everything the transfer writes, its new content sealed into `new_blobs`.
#[expect(clippy::too_many_arguments, reason = "the transfer's inputs, each of its own kind")]
async fn plan(
    state: &AppState,
    caller: &Caller,
    org: &Org,
    record: &RecordRow,
    view: &RecordPolicyView,
    permit: &Permit,
    order: TransferOrder<'_>,
    new_blobs: &mut NewBlobs,
) -> ServiceResult<TransferCommit> {
    // The grants the institution gave over this record: each ends with the transfer unless the
    // agreement carries it over to the patient (DESIGN.md I10).
    let institution_grants: Vec<Grant> = view
        .grants
        .iter()
        .filter(|g| {
            g.owner == record.owner && g.revoked_at.is_none() && g.terms.selector().matches(&record.id, &record.labels)
        })
        .cloned()
        .collect();
    let mut carry_over = Vec::new();
    for raw in order.carry_over_grants {
        let grant = institution_grants.iter().find(|g| g.id.as_str() == raw).ok_or_else(|| {
            ServiceError::Invalid(format!(
                "carry_over_grants: {raw} is not a grant in force of this record's owner over it"
            ))
        })?;
        if !carry_over.contains(&grant.id) {
            carry_over.push(grant.id.clone());
        }
    }
    let agreement = order.agreement;
    let patient =
        state.store.linked_patient(&record.institution, &record.mrn).await?.ok_or_else(|| ServiceError::Refused {
            why: Refusal::Conflict,
            code: "not_linked",
            message: "no patient account is linked to this record's local patient id; issue a link code first".into(),
        })?;
    let plan = plan_transfer(record.categories(), &agreement).map_err(|e| ServiceError::Invalid(e.to_string()))?;
    let now = state.clock.now();
    let plaintext = content::open(state, permit).await?;
    let staff_key = state.master.derive(&format!("staff-pseudonyms/{}", org.id));
    let anonymize = |bytes: Vec<u8>| -> ServiceResult<Vec<u8>> {
        if agreement.anonymize_staff {
            kura_formats::anonymize_staff(record.format, &bytes, &org.name, &staff_key).map_err(content::format_error)
        } else {
            Ok(bytes)
        }
    };
    let transfer_id = ids::new_transfer_id()?;
    let patient_party = Party::Account(patient.clone());
    let institution_party = record.owner.clone();
    let (patient_record, whole_content, split) = match plan {
        TransferPlan::Whole => {
            let replaced = if agreement.anonymize_staff {
                Some(new_blobs.seal(state, &record.id, &anonymize(plaintext)?).await?)
            } else {
                None
            };
            (record.id.clone(), replaced, None)
        }
        TransferPlan::Split { moving, staying } => {
            let select = |keep| -> ServiceResult<Vec<u8>> {
                kura_formats::select_parts(record.format, &plaintext, keep, record.document_category)
                    .map_err(content::format_error)?
                    .ok_or_else(|| {
                        ServiceError::Invalid("the record has no parts of the categories to transfer".into())
                    })
            };
            let moving_bytes = anonymize(select(moving)?)?;
            let staying_bytes = select(staying)?;
            let institution = record.institution.to_string();
            let moving_parsed =
                ingest::parse(record.format, &moving_bytes, &institution, now, record.document_category)?;
            let staying_parsed =
                ingest::parse(record.format, &staying_bytes, &institution, now, record.document_category)?;
            let new_id = ids::new_record_id()?;
            let draft = ingest::Draft {
                owner: patient_party.clone(),
                institution: record.institution.clone(),
                mrn: record.mrn.clone(),
                format: record.format,
                document_category: record.document_category,
                derived_from: Some(record.id.clone()),
                provenance: format!(
                    "split from record {} by transfer {} ({})",
                    record.id,
                    transfer_id,
                    moving.to_text()
                ),
                held_under: None,
                created_at: now,
            };
            let moving_record = ingest::prepare(
                state,
                new_blobs,
                new_id.clone(),
                draft,
                ingest::Ingested::of(moving_parsed),
                &moving_bytes,
            )
            .await?;
            let staying_content = new_blobs.seal(state, &record.id, &staying_bytes).await?;
            let staying = ingest::Ingested::of(staying_parsed);
            let split = SplitCommit {
                moving: moving_record,
                staying_values: staying.values,
                staying_parts: staying.parts,
                staying_labels: staying.labels,
                staying_content,
            };
            (new_id, None, Some(split))
        }
    };
    let retained_view = if agreement.retain_view {
        let terms = GrantTerms::new(
            RecordSelector::Records(vec![patient_record.clone()]),
            CategorySet::all(),
            ActionSet::empty().with(Action::View),
            Anonymization::None,
            now,
            None,
        )
        .map_err(|_| ServiceError::Internal)?;
        Some(GrantRow {
            grant: Grant {
                id: ids::new_grant_id()?,
                owner: patient_party.clone(),
                grantee: institution_party.clone(),
                terms,
                revoked_at: None,
            },
            study: None,
            purpose: format!("view retained by transfer {transfer_id}"),
            created_by: caller.audit_actor(),
            created_at: now,
        })
    } else {
        None
    };
    let mut ended_grants = Vec::new();
    let mut carried_grants = Vec::new();
    // A grant over this record alone ends with a whole transfer. After a split the institution
    // still owns the original record (the parts that stay), so its grants over it stand; the
    // copies taken under them held the moving parts too, and go all the same.
    for grant in &institution_grants {
        let only_this_record = split.is_none()
            && matches!(grant.terms.selector(), RecordSelector::Records(ids) if ids.iter().all(|id| *id == record.id));
        if carry_over.contains(&grant.id) {
            let terms = GrantTerms::new(
                RecordSelector::Records(vec![patient_record.clone()]),
                grant.terms.scope(),
                grant.terms.actions(),
                grant.terms.anonymization(),
                grant.terms.period().not_before(),
                grant.terms.period().expires_at(),
            )
            .map_err(|_| ServiceError::Internal)?;
            carried_grants.push(CarriedGrant {
                previous: grant.id.clone(),
                end_previous: only_this_record,
                patients: GrantRow {
                    grant: Grant {
                        id: ids::new_grant_id()?,
                        owner: patient_party.clone(),
                        grantee: grant.grantee.clone(),
                        terms,
                        revoked_at: None,
                    },
                    study: None,
                    purpose: format!("carried over from grant {} by transfer {transfer_id}", grant.id),
                    created_by: caller.audit_actor(),
                    created_at: now,
                },
            });
        } else if only_this_record {
            ended_grants.push(grant.id.clone());
        }
    }
    let terms = format!(
        "transfer {transfer_id}: retain_view={} parts={} anonymize_staff={}",
        agreement.retain_view,
        agreement.parts.map(|p| p.to_text()).unwrap_or_else(|| "all".into()),
        agreement.anonymize_staff
    );
    let mut audit = vec![audit_entry(caller, now, "transfer", "done").record(&record.id).detail(terms)];
    if split.is_some() {
        audit.push(
            audit_entry(caller, now, "split_off", "done")
                .record(&patient_record)
                .detail(format!("from record {}", record.id)),
        );
    }
    if let Some(grant) = &retained_view {
        audit.push(
            audit_entry(caller, now, "grant_create", "done")
                .record(&patient_record)
                .grant(&grant.grant.id)
                .detail("view retained by the institution"),
        );
    }
    for grant in &ended_grants {
        audit.push(
            audit_entry(caller, now, "grant_end", "done")
                .record(&patient_record)
                .grant(grant)
                .detail(format!("the institution's grant ended with transfer {transfer_id}")),
        );
    }
    for carried in &carried_grants {
        audit.push(
            audit_entry(caller, now, "grant_create", "done")
                .record(&patient_record)
                .grant(&carried.patients.grant.id)
                .detail(format!(
                    "carried over from the institution's grant {} to {}",
                    carried.previous,
                    carried.patients.grant.grantee.to_text()
                )),
        );
    }
    let copies_destroyed_notice = notify::to_owner_and_agents(
        state,
        &patient_party,
        "copy_destroyed",
        patient_record.as_str(),
        &format!(
            "Copies others held of your record {patient_record} under {}'s grants were destroyed when it passed to you.",
            institution_party.to_text()
        ),
        now,
    )
    .await?;
    Ok(TransferCommit {
        transfer: transfer_id.clone(),
        record: record.id.clone(),
        expected_version: record.version,
        institution: institution_party,
        patient: patient_party.clone(),
        at: now,
        actor: caller.audit_actor(),
        whole_content,
        retained_view,
        split,
        ended_grants,
        carried_grants,
        copies_destroyed_notice,
        audit,
    })
}
