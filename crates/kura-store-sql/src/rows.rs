//! Hand-written mapping between rows and the store's structs.

use kura_core::ids::{AccountId, DelegationId, GrantId, OrgId, RecordId};
use kura_core::labels::Label;
use kura_core::party::{AccountKind, OrgKind, Party};
use kura_core::policy::{ActionSet, Anonymization, Delegation, Grant, GrantTerms, RecordSelector};
use kura_core::record::{CategorySet, PartCategory, RecordFormat, RecordState};
use kura_core::time::{Period, Timestamp};
use kura_store::StoreError;
use kura_store::model::*;
use sqlx::Row;
use sqlx::any::AnyRow;

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn column_error(column: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("column {column}: {e}"))
}

/// A row of either access path: sqlx's (both backends) or the synchronous SQLite readers'
/// (`direct.rs`). The mappers below are written once against it.
pub(crate) trait Cells {
    fn text(&self, column: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, column: &str) -> Result<Option<i64>, StoreError>;
    fn real(&self, column: &str) -> Result<Option<f64>, StoreError>;
    fn bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

impl Cells for AnyRow {
    fn text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.try_get(column).map_err(|e| column_error(column, e))
    }
    fn int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.try_get(column).map_err(|e| column_error(column, e))
    }
    fn real(&self, column: &str) -> Result<Option<f64>, StoreError> {
        self.try_get(column).map_err(|e| column_error(column, e))
    }
    fn bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.try_get(column).map_err(|e| column_error(column, e))
    }
}

impl Cells for rusqlite::Row<'_> {
    fn text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.get(column).map_err(|e| column_error(column, e))
    }
    fn int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.get(column).map_err(|e| column_error(column, e))
    }
    fn real(&self, column: &str) -> Result<Option<f64>, StoreError> {
        self.get(column).map_err(|e| column_error(column, e))
    }
    fn bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(column).map_err(|e| column_error(column, e))
    }
}

/// A value one column holds: what [`get`] can read.
pub(crate) trait Cell: Sized {
    fn read(row: &(impl Cells + ?Sized), column: &str) -> Result<Self, StoreError>;
}

macro_rules! cells {
    ($($ty:ty => $method:ident),*) => {$(
        impl Cell for Option<$ty> {
            fn read(row: &(impl Cells + ?Sized), column: &str) -> Result<Self, StoreError> {
                row.$method(column)
            }
        }
        impl Cell for $ty {
            fn read(row: &(impl Cells + ?Sized), column: &str) -> Result<Self, StoreError> {
                row.$method(column)?.ok_or_else(|| column_error(column, "unexpected NULL"))
            }
        }
    )*};
}

cells!(String => text, i64 => int, f64 => real, Vec<u8> => bytes);

pub(crate) fn get<T: Cell>(row: &(impl Cells + ?Sized), column: &str) -> Result<T, StoreError> {
    T::read(row, column)
}

pub(crate) fn ts(millis: i64) -> Timestamp {
    Timestamp::from_millis(millis)
}

pub(crate) fn party(raw: &str) -> Result<Party, StoreError> {
    Party::from_text(raw).ok_or_else(|| corrupt("party"))
}

pub(crate) fn parse_id<T>(raw: &str, parse: fn(&str) -> Result<T, kura_core::ids::InvalidId>) -> Result<T, StoreError> {
    parse(raw).map_err(|_| corrupt("id"))
}

pub(crate) fn org(row: &(impl Cells + ?Sized)) -> Result<Org, StoreError> {
    Ok(Org {
        id: parse_id(&get::<String>(row, "id")?, OrgId::parse)?,
        name: get(row, "name")?,
        kind: OrgKind::parse(&get::<String>(row, "kind")?).ok_or_else(|| corrupt("org kind"))?,
        created_at: ts(get(row, "created_at")?),
    })
}

pub(crate) const ACCOUNT_COLUMNS: &str = "id, username, password_hash, kind, org_id, totp_secret, created_at";

pub(crate) fn account(row: &(impl Cells + ?Sized)) -> Result<Account, StoreError> {
    Ok(Account {
        id: parse_id(&get::<String>(row, "id")?, AccountId::parse)?,
        username: get(row, "username")?,
        password_hash: get(row, "password_hash")?,
        kind: AccountKind::parse(&get::<String>(row, "kind")?).ok_or_else(|| corrupt("account kind"))?,
        org: get::<Option<String>>(row, "org_id")?.map(|o| parse_id(&o, OrgId::parse)).transpose()?,
        totp_secret: get(row, "totp_secret")?,
        created_at: ts(get(row, "created_at")?),
    })
}

pub(crate) fn machine_client(row: &(impl Cells + ?Sized)) -> Result<MachineClient, StoreError> {
    Ok(MachineClient {
        client_id: get(row, "client_id")?,
        account: parse_id(&get::<String>(row, "account_id")?, AccountId::parse)?,
        org: parse_id(&get::<String>(row, "org_id")?, OrgId::parse)?,
        public_key_pem: get(row, "public_key_pem")?,
        algorithm: get(row, "algorithm")?,
        created_at: ts(get(row, "created_at")?),
    })
}

pub(crate) const RECORD_COLUMNS: &str = "id, owner, institution, mrn, format, state, document_category, content_hash, size, \
     derived_from, provenance, held_under, moved_to, moved_at, moved_by, version, created_at, updated_at";

/// Maps the record's own row; parts and labels are filled in by the caller.
pub(crate) fn record(row: &(impl Cells + ?Sized)) -> Result<RecordRow, StoreError> {
    let moved_at: Option<i64> = get(row, "moved_at")?;
    let locator = match (get::<Option<String>>(row, "moved_to")?, moved_at) {
        (Some(destination), Some(at)) => Some(Locator {
            destination,
            moved_at: ts(at),
            ordered_by: get::<Option<String>>(row, "moved_by")?.unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(RecordRow {
        id: parse_id(&get::<String>(row, "id")?, RecordId::parse)?,
        owner: party(&get::<String>(row, "owner")?)?,
        institution: parse_id(&get::<String>(row, "institution")?, OrgId::parse)?,
        mrn: get(row, "mrn")?,
        format: RecordFormat::parse(&get::<String>(row, "format")?).ok_or_else(|| corrupt("format"))?,
        state: RecordState::parse(&get::<String>(row, "state")?).ok_or_else(|| corrupt("state"))?,
        parts: Vec::new().into(),
        labels: Vec::new().into(),
        document_category: get::<Option<String>>(row, "document_category")?
            .map(|c| PartCategory::parse(&c).ok_or_else(|| corrupt("category")))
            .transpose()?,
        content_hash: get(row, "content_hash")?,
        size: get(row, "size")?,
        derived_from: get::<Option<String>>(row, "derived_from")?.map(|r| parse_id(&r, RecordId::parse)).transpose()?,
        provenance: get(row, "provenance")?,
        held_under: get::<Option<String>>(row, "held_under")?.map(|g| parse_id(&g, GrantId::parse)).transpose()?,
        locator,
        version: get(row, "version")?,
        created_at: ts(get(row, "created_at")?),
        updated_at: ts(get(row, "updated_at")?),
    })
}

pub(crate) fn part(row: &(impl Cells + ?Sized)) -> Result<StoredPart, StoreError> {
    Ok(StoredPart {
        index: u32::try_from(get::<i64>(row, "idx")?).map_err(|_| corrupt("part index"))?,
        category: PartCategory::parse(&get::<String>(row, "category")?).ok_or_else(|| corrupt("category"))?,
        resource_type: get(row, "resource_type")?,
    })
}

pub(crate) fn label(row: &(impl Cells + ?Sized)) -> Result<Label, StoreError> {
    Label::parse(&get::<String>(row, "label")?).map_err(|_| corrupt("label"))
}

/// Selectors are stored as a kind and a space-separated list (ids and labels hold no spaces).
pub(crate) fn selector_to_text(selector: &RecordSelector) -> (&'static str, String) {
    match selector {
        RecordSelector::Records(ids) => ("records", ids.iter().map(|i| i.as_str()).collect::<Vec<_>>().join(" ")),
        RecordSelector::Labels(labels) => ("labels", labels.iter().map(|l| l.as_str()).collect::<Vec<_>>().join(" ")),
    }
}

fn selector_from_text(kind: &str, text: &str) -> Result<RecordSelector, StoreError> {
    let items = text.split(' ').filter(|s| !s.is_empty());
    match kind {
        "records" => items.map(|i| parse_id(i, RecordId::parse)).collect::<Result<_, _>>().map(RecordSelector::Records),
        "labels" => items
            .map(|l| Label::parse(l).map_err(|_| corrupt("label")))
            .collect::<Result<_, _>>()
            .map(RecordSelector::Labels),
        _ => Err(corrupt("selector kind")),
    }
}

pub(crate) const GRANT_COLUMNS: &str = "id, owner, grantee, selector_kind, selector, scope, actions, anonymization, \
     not_before, expires_at, revoked_at, purpose, created_by, created_at, study_id";

pub(crate) fn grant(row: &(impl Cells + ?Sized)) -> Result<GrantRow, StoreError> {
    let terms = GrantTerms::new(
        selector_from_text(&get::<String>(row, "selector_kind")?, &get::<String>(row, "selector")?)?,
        CategorySet::from_text(&get::<String>(row, "scope")?).ok_or_else(|| corrupt("scope"))?,
        ActionSet::from_text(&get::<String>(row, "actions")?).ok_or_else(|| corrupt("actions"))?,
        Anonymization::parse(&get::<String>(row, "anonymization")?).ok_or_else(|| corrupt("anonymization"))?,
        ts(get(row, "not_before")?),
        get::<Option<i64>>(row, "expires_at")?.map(ts),
    )
    .map_err(|e| StoreError::Corrupt(format!("grant terms: {e}")))?;
    Ok(GrantRow {
        grant: Grant {
            id: parse_id(&get::<String>(row, "id")?, GrantId::parse)?,
            owner: party(&get::<String>(row, "owner")?)?,
            grantee: party(&get::<String>(row, "grantee")?)?,
            terms,
            revoked_at: get::<Option<i64>>(row, "revoked_at")?.map(ts),
        },
        study: get(row, "study_id")?,
        purpose: get(row, "purpose")?,
        created_by: get(row, "created_by")?,
        created_at: ts(get(row, "created_at")?),
    })
}

pub(crate) const DELEGATION_COLUMNS: &str = "id, agent, patient, kind, powers, not_before, expires_at, revoked_at, created_by, created_at, accepted_at, over_minor";

pub(crate) fn delegation(row: &(impl Cells + ?Sized)) -> Result<DelegationRow, StoreError> {
    let period = Period::new(ts(get(row, "not_before")?), get::<Option<i64>>(row, "expires_at")?.map(ts))
        .map_err(|_| corrupt("delegation period"))?;
    Ok(DelegationRow {
        delegation: Delegation {
            id: parse_id(&get::<String>(row, "id")?, DelegationId::parse)?,
            agent: parse_id(&get::<String>(row, "agent")?, AccountId::parse)?,
            patient: parse_id(&get::<String>(row, "patient")?, AccountId::parse)?,
            powers: ActionSet::from_text(&get::<String>(row, "powers")?).ok_or_else(|| corrupt("powers"))?,
            period,
            revoked_at: get::<Option<i64>>(row, "revoked_at")?.map(ts),
            accepted_at: get::<Option<i64>>(row, "accepted_at")?.map(ts),
        },
        over_minor: get::<i64>(row, "over_minor")? != 0,
        kind: DelegationKind::parse(&get::<String>(row, "kind")?).ok_or_else(|| corrupt("delegation kind"))?,
        created_by: get(row, "created_by")?,
        created_at: ts(get(row, "created_at")?),
    })
}

pub(crate) fn ledger_entry(row: &(impl Cells + ?Sized)) -> Result<LedgerEntry, StoreError> {
    Ok(LedgerEntry {
        seq: get(row, "seq")?,
        record: parse_id(&get::<String>(row, "record_id")?, RecordId::parse)?,
        event: get(row, "event")?,
        from_owner: get(row, "from_owner")?,
        to_owner: get(row, "to_owner")?,
        transfer: get(row, "transfer_id")?,
        actor: get(row, "actor")?,
        at: ts(get(row, "at")?),
        note: get(row, "note")?,
    })
}

pub(crate) fn audit(row: &(impl Cells + ?Sized)) -> Result<AuditRow, StoreError> {
    Ok(AuditRow {
        fields: kura_core::audit::AuditFields {
            seq: get(row, "seq")?,
            at_millis: get(row, "at")?,
            actor: get(row, "actor")?,
            on_behalf_of: get(row, "on_behalf_of")?,
            action: get(row, "action")?,
            record: get(row, "record_id")?,
            grant: get(row, "grant_id")?,
            outcome: get(row, "outcome")?,
            detail: get(row, "detail")?,
            subject: get::<Option<String>>(row, "subject_patient")?.map(|s| format!("account:{s}")).unwrap_or_default(),
        },
        prev_hash: get(row, "prev_hash")?,
        hash: get(row, "hash")?,
    })
}

pub(crate) const ANALYSIS_COLUMNS: &str =
    "id, study_id, requested_by, spec, result, measures, epsilon, participants, created_at";

pub(crate) fn analysis(row: &(impl Cells + ?Sized)) -> Result<AnalysisRow, StoreError> {
    Ok(AnalysisRow {
        id: get(row, "id")?,
        study: get(row, "study_id")?,
        requested_by: get(row, "requested_by")?,
        spec: get(row, "spec")?,
        result: get(row, "result")?,
        measures: get(row, "measures")?,
        epsilon: get(row, "epsilon")?,
        participants: get(row, "participants")?,
        created_at: ts(get(row, "created_at")?),
    })
}
