//! The policy core: grants, delegations, actors, and [`decide`].
//!
//! Access is denied unless the actor owns the record (directly, or as an agent within a
//! delegation) or holds an active grant that covers the action and the part. A [`Permit`] is
//! the only key to record content: it can be produced by [`decide`] alone, and the content
//! paths in the store ask for one.

use crate::ids::{AccountId, DelegationId, GrantId, RecordId};
use crate::labels::Label;
use crate::party::Party;
use crate::record::{CategorySet, PartCategory, RecordState};
use crate::time::{Period, Timestamp};

/// What an actor wants to do with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    View,
    Copy,
    Move,
    Delete,
    Statistics,
    /// Hand custody to the linked patient. Owners only; never grantable.
    Transfer,
    /// Create or revoke grants on the owner's records. Owners and delegated agents only.
    ManageGrants,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::View,
        Action::Copy,
        Action::Move,
        Action::Delete,
        Action::Statistics,
        Action::Transfer,
        Action::ManageGrants,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::View => "view",
            Action::Copy => "copy",
            Action::Move => "move",
            Action::Delete => "delete",
            Action::Statistics => "statistics",
            Action::Transfer => "transfer",
            Action::ManageGrants => "manage_grants",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == raw)
    }

    /// Whether a grant may carry this action.
    pub fn is_grantable(self) -> bool {
        matches!(self, Action::View | Action::Copy | Action::Move | Action::Delete | Action::Statistics)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of actions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ActionSet(u8);

impl ActionSet {
    pub const fn empty() -> Self {
        Self(0)
    }

    pub fn with(mut self, action: Action) -> Self {
        self.0 |= action.bit();
        self
    }

    pub fn contains(self, action: Action) -> bool {
        self.0 & action.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }

    pub fn to_text(self) -> String {
        self.iter().map(Action::as_str).collect::<Vec<_>>().join(",")
    }

    pub fn from_text(raw: &str) -> Option<Self> {
        raw.split(',').filter(|s| !s.is_empty()).map(Action::parse).collect()
    }
}

impl FromIterator<Action> for ActionSet {
    fn from_iter<I: IntoIterator<Item = Action>>(iter: I) -> Self {
        iter.into_iter().fold(Self::empty(), Self::with)
    }
}

impl std::fmt::Debug for ActionSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter().map(Action::as_str)).finish()
    }
}

/// How much identifying information a grantee may see. Ordered from least to most protective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Anonymization {
    None,
    Pseudonymized,
    Anonymized,
}

impl Anonymization {
    pub fn as_str(self) -> &'static str {
        match self {
            Anonymization::None => "none",
            Anonymization::Pseudonymized => "pseudonymized",
            Anonymization::Anonymized => "anonymized",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "none" => Some(Anonymization::None),
            "pseudonymized" => Some(Anonymization::Pseudonymized),
            "anonymized" => Some(Anonymization::Anonymized),
            _ => None,
        }
    }
}

/// Which of the owner's records a grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordSelector {
    /// These records.
    Records(Vec<RecordId>),
    /// Every record of the owner carrying all of these labels (none: every record).
    Labels(Vec<Label>),
}

impl RecordSelector {
    pub fn matches(&self, record: &RecordId, labels: &[Label]) -> bool {
        match self {
            RecordSelector::Records(ids) => ids.contains(record),
            RecordSelector::Labels(wanted) => wanted.iter().all(|l| labels.contains(l)),
        }
    }
}

/// The conditions of a grant, validated: what a new grant (or a narrowed one) must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantTerms {
    selector: RecordSelector,
    scope: CategorySet,
    actions: ActionSet,
    anonymization: Anonymization,
    period: Period,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidGrant {
    #[error("a grant needs at least one action")]
    NoActions,
    #[error("'{0}' cannot be granted; grants carry view, copy, move, delete or statistics")]
    NotGrantable(&'static str),
    #[error("a grant needs at least one part category in its scope")]
    EmptyScope,
    #[error("a grant over a list of records needs at least one record")]
    NoRecords,
    #[error("the grant's period ends before it begins")]
    EmptyPeriod,
}

impl GrantTerms {
    pub fn new(
        selector: RecordSelector,
        scope: CategorySet,
        actions: ActionSet,
        anonymization: Anonymization,
        not_before: Timestamp,
        expires_at: Option<Timestamp>,
    ) -> Result<Self, InvalidGrant> {
        if actions.is_empty() {
            return Err(InvalidGrant::NoActions);
        }
        if let Some(bad) = actions.iter().find(|a| !a.is_grantable()) {
            return Err(InvalidGrant::NotGrantable(bad.as_str()));
        }
        if scope.is_empty() {
            return Err(InvalidGrant::EmptyScope);
        }
        if matches!(&selector, RecordSelector::Records(ids) if ids.is_empty()) {
            return Err(InvalidGrant::NoRecords);
        }
        let period = Period::new(not_before, expires_at).map_err(|_| InvalidGrant::EmptyPeriod)?;
        Ok(Self { selector, scope, actions, anonymization, period })
    }

    pub fn selector(&self) -> &RecordSelector {
        &self.selector
    }
    pub fn scope(&self) -> CategorySet {
        self.scope
    }
    pub fn actions(&self) -> ActionSet {
        self.actions
    }
    pub fn anonymization(&self) -> Anonymization {
        self.anonymization
    }
    pub fn period(&self) -> Period {
        self.period
    }
}

/// A grant from an owner to a grantee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: GrantId,
    pub owner: Party,
    pub grantee: Party,
    pub terms: GrantTerms,
    pub revoked_at: Option<Timestamp>,
}

impl Grant {
    /// In force at `now`: inside its period and not revoked (revocation at `t` ends it at `t`).
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.terms.period.contains(now) && self.revoked_at.is_none_or(|t| now < t)
    }
}

/// A patient's appointment of an agent (or a guardian registered for the patient).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    pub id: DelegationId,
    pub agent: AccountId,
    pub patient: AccountId,
    /// What the agent may do as the patient; may include [`Action::ManageGrants`].
    pub powers: ActionSet,
    pub period: Period,
    pub revoked_at: Option<Timestamp>,
    /// When the delegation took effect: the patient's acceptance, or its creation when it needs
    /// none (a patient's own appointment, a guardian registered for a minor). `None` while it
    /// awaits the patient: until then the agent holds nothing (DESIGN.md I9).
    pub accepted_at: Option<Timestamp>,
}

impl Delegation {
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.accepted_at.is_some_and(|t| t <= now)
            && self.period.contains(now)
            && self.revoked_at.is_none_or(|t| now < t)
    }
}

/// Who is acting: the parties the caller is (a person's account, the organisation a member or
/// machine acts for), and, for an agent, the delegation it acts under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub identities: Vec<Party>,
    pub acting_for: Option<Delegation>,
}

impl Actor {
    pub fn new(identities: Vec<Party>) -> Self {
        Self { identities, acting_for: None }
    }

    pub fn acting_for(mut self, delegation: Delegation) -> Self {
        self.acting_for = Some(delegation);
        self
    }

    /// The parties whose rights this actor exercises for `action` at `now`: the patient's when
    /// acting under a delegation that covers the action, its own identities otherwise.
    fn effective_parties(&self, action: Action, now: Timestamp) -> Option<Vec<Party>> {
        match &self.acting_for {
            Some(d) if d.is_active(now) && d.powers.contains(action) => Some(vec![Party::Account(d.patient.clone())]),
            Some(_) => None,
            None => Some(self.identities.clone()),
        }
    }
}

/// What the policy needs to know about one record: loaded by the store, judged here.
#[derive(Debug, Clone)]
pub struct RecordPolicyView {
    pub id: RecordId,
    pub owner: Party,
    pub state: RecordState,
    /// The categories of the record's parts.
    pub categories: CategorySet,
    /// The record's own labels, shared with the record row rather than copied for each decision.
    pub labels: std::sync::Arc<[Label]>,
    /// Grants by the record's owner that may apply (the store may pass more; they are filtered).
    pub grants: Vec<Grant>,
    /// For an in-server copy: the grant it was made under. The copy opens only while it stands.
    pub held_under: Option<Grant>,
}

/// Why access was allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Basis {
    Owner,
    Delegation(DelegationId),
    Grant(GrantId),
    /// The holder of an in-server copy, while the grant it was made under stands.
    CopyHolder(GrantId),
}

/// What the response path must do with content released under a permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Obligations {
    /// Parts outside this set must be dropped.
    pub keep_categories: CategorySet,
    /// The content must be anonymized at least to this level.
    pub anonymization: Anonymization,
    /// Copies made under this permit must stop opening at this instant.
    pub copies_expire_at: Option<Timestamp>,
}

impl Obligations {
    fn none() -> Self {
        Self { keep_categories: CategorySet::all(), anonymization: Anonymization::None, copies_expire_at: None }
    }
}

/// Permission to perform one action on one record, with its obligations. Only [`decide`] can
/// make one; content paths require it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    record: RecordId,
    action: Action,
    basis: Basis,
    obligations: Obligations,
}

impl Permit {
    pub fn record(&self) -> &RecordId {
        &self.record
    }
    pub fn action(&self) -> Action {
        self.action
    }
    pub fn basis(&self) -> &Basis {
        &self.basis
    }
    pub fn obligations(&self) -> Obligations {
        self.obligations
    }
}

/// Why access was denied. Never shown to outsiders: to them a denial looks like a missing record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The record has been moved or deleted.
    NotActive,
    /// The copy's grant expired or was revoked.
    CopyExpired,
    /// Neither ownership, a delegation nor a grant covers this.
    NoBasis,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NotActive => "not_active",
            DenyReason::CopyExpired => "copy_expired",
            DenyReason::NoBasis => "no_basis",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Permit),
    Deny(DenyReason),
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// Decides whether `actor` may perform `action` on `record` (or on one `part` category of it)
/// at `now`. Deny is the default.
///
/// Without a part, `view`, `copy` and `statistics` need the grant's scope to meet at least one
/// of the record's categories (the rest is dropped by obligation), while `move` and `delete`
/// need it to cover every category, since they act on the whole record. When several grants
/// apply, the least restrictive one is used: lowest anonymization, then widest coverage of the
/// record, then the smallest grant id, so that the choice is deterministic.
pub fn decide(
    actor: &Actor,
    action: Action,
    record: &RecordPolicyView,
    part: Option<PartCategory>,
    now: Timestamp,
) -> Decision {
    if record.state != RecordState::Active {
        return Decision::Deny(DenyReason::NotActive);
    }
    let Some(parties) = actor.effective_parties(action, now) else {
        return Decision::Deny(DenyReason::NoBasis);
    };
    if let Some(part) = part
        && !record.categories.contains(part)
    {
        return Decision::Deny(DenyReason::NoBasis);
    }
    let permit = |basis, obligations| Decision::Allow(Permit { record: record.id.clone(), action, basis, obligations });

    if parties.contains(&record.owner) {
        if let Some(copy_grant) = &record.held_under {
            // The holder of a copy may look at it and throw it away, only while the grant stands.
            if !copy_grant.is_active(now) {
                return Decision::Deny(DenyReason::CopyExpired);
            }
            if !matches!(action, Action::View | Action::Delete) {
                return Decision::Deny(DenyReason::NoBasis);
            }
            return permit(
                Basis::CopyHolder(copy_grant.id.clone()),
                Obligations {
                    keep_categories: CategorySet::all(),
                    anonymization: copy_grant.terms.anonymization,
                    copies_expire_at: copy_grant.terms.period.expires_at(),
                },
            );
        }
        let basis = match &actor.acting_for {
            Some(d) => Basis::Delegation(d.id.clone()),
            None => Basis::Owner,
        };
        return permit(basis, Obligations::none());
    }
    if record.held_under.is_some() {
        // Copies are the holder's alone; nobody can be granted access to them.
        return Decision::Deny(DenyReason::NoBasis);
    }

    let best = record
        .grants
        .iter()
        .filter(|g| g.owner == record.owner && parties.contains(&g.grantee))
        .filter(|g| g.is_active(now) && g.terms.actions.contains(action))
        .filter(|g| g.terms.selector.matches(&record.id, &record.labels))
        .filter(|g| covers(g.terms.scope, record.categories, action, part))
        .min_by(|a, b| {
            let coverage = |g: &Grant| g.terms.scope.intersection(record.categories).len();
            a.terms.anonymization.cmp(&b.terms.anonymization).then(coverage(b).cmp(&coverage(a))).then(a.id.cmp(&b.id))
        });
    match best {
        Some(g) => permit(
            Basis::Grant(g.id.clone()),
            Obligations {
                keep_categories: g.terms.scope.intersection(record.categories),
                anonymization: g.terms.anonymization,
                copies_expire_at: g.terms.period.expires_at(),
            },
        ),
        None => Decision::Deny(DenyReason::NoBasis),
    }
}

fn covers(scope: CategorySet, categories: CategorySet, action: Action, part: Option<PartCategory>) -> bool {
    match (part, action) {
        (Some(part), _) => scope.contains(part),
        (None, Action::Move | Action::Delete) => categories.is_subset_of(scope),
        (None, _) => !scope.intersection(categories).is_empty(),
    }
}

/// Whether `actor` may manage grants (and answer requests) for records owned by `owner`.
pub fn may_manage_grants_of(actor: &Actor, owner: &Party, now: Timestamp) -> bool {
    actor.effective_parties(Action::ManageGrants, now).is_some_and(|parties| parties.contains(owner))
}

/// Whether `actor` may learn where a moved record went: its last owner, or a grantee whose
/// grant on it was in force when it moved and let it view some part of it. A grant that covered
/// none of the record's categories never showed the record, so it does not reveal it now.
pub fn may_know_location(actor: &Actor, record: &RecordPolicyView, moved_at: Timestamp) -> bool {
    let Some(parties) = actor.effective_parties(Action::View, moved_at) else {
        return false;
    };
    parties.contains(&record.owner)
        || record.grants.iter().any(|g| {
            g.owner == record.owner
                && parties.contains(&g.grantee)
                && g.is_active(moved_at)
                && g.terms.actions.contains(Action::View)
                && g.terms.selector.matches(&record.id, &record.labels)
                && covers(g.terms.scope, record.categories, Action::View, None)
        })
}

/// Why an agent may not create a grant (DESIGN.md I9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AgentGrantRefusal {
    /// The grantee is the agent itself or the organisation it acts for: a grant to oneself would
    /// let the agent act without its delegation's limits and without acting-as.
    #[error("an agent cannot grant the patient's records to itself or to its own organisation")]
    GranteeIsAgent,
    /// The grant carries an action the delegation does not give the agent.
    #[error("your delegation does not include '{}', so a grant you make cannot carry it", .0.as_str())]
    BeyondPowers(Action),
}

/// Checks a grant an agent makes for the patient it acts for: it carries at most the agent's own
/// powers, and goes to neither the agent nor its organisation. `agent_identities` are the
/// parties the agent is in its own right.
pub fn check_agent_grant(
    delegation: &Delegation,
    agent_identities: &[Party],
    grantee: &Party,
    actions: ActionSet,
) -> Result<(), AgentGrantRefusal> {
    if agent_identities.contains(grantee) || *grantee == Party::Account(delegation.agent.clone()) {
        return Err(AgentGrantRefusal::GranteeIsAgent);
    }
    match actions.iter().find(|a| !delegation.powers.contains(*a)) {
        Some(missing) => Err(AgentGrantRefusal::BeyondPowers(missing)),
        None => Ok(()),
    }
}

/// How a refused action is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The caller may not know the record exists: answer as for a missing record.
    LooksMissing,
    /// The caller knows the record (it may view it, or acts for its owner) but lacks this power:
    /// say so, rather than pretend the record is gone.
    MissingPower(Action),
}

/// How to answer `actor` when `action` on `record` was denied at `now`. Only callers who may
/// already see the record, or who act for its owner, learn that it exists (STYLE.md rule 5).
pub fn refusal(actor: &Actor, action: Action, record: &RecordPolicyView, now: Timestamp) -> Refusal {
    if record.state != RecordState::Active {
        return Refusal::LooksMissing;
    }
    if let Some(d) = &actor.acting_for
        && d.is_active(now)
        && record.owner == Party::Account(d.patient.clone())
        && !d.powers.contains(action)
    {
        return Refusal::MissingPower(action);
    }
    if action != Action::View && decide(actor, Action::View, record, None, now).is_allowed() {
        return Refusal::MissingPower(action);
    }
    Refusal::LooksMissing
}

/// Whether a label may be used, in a list filter or a list's output, by a caller whose access to
/// a record is limited to `keep_categories`. Labels are extracted from the whole record and
/// mostly cannot be traced to one part (`snomed:` codes come from conditions and procedures
/// alike), so only those that say nothing beyond the permitted scope qualify: the record's
/// format and institution (shown in every summary) and the categories inside the scope. A
/// diagnosis code never does, so a grantee limited to observations cannot learn diagnoses from
/// which records a filter matches.
pub fn label_within_scope(label: &Label, keep_categories: CategorySet) -> bool {
    match label.system() {
        "format" | "institution" => true,
        "category" => PartCategory::parse(label.code()).is_some_and(|c| keep_categories.contains(c)),
        _ => false,
    }
}

/// Whether `permit` lets a list filter on `labels`: the owner (or its agent) filters on any
/// label; anyone else only on labels inside the permit's scope ([`label_within_scope`]).
pub fn may_filter_on(permit: &Permit, labels: &[Label]) -> bool {
    match permit.basis {
        Basis::Owner | Basis::Delegation(_) => true,
        Basis::Grant(_) | Basis::CopyHolder(_) => {
            labels.iter().all(|l| label_within_scope(l, permit.obligations.keep_categories))
        }
    }
}

/// The age at which a guardianship registered for a minor ends at the latest.
pub const AGE_OF_MAJORITY: i64 = 18;

/// The instant a person born on `birth_day` (days since 1970-01-01) comes of age: the start of
/// their 18th birthday, UTC (29 February counts on to 1 March in other years).
pub fn coming_of_age(birth_day: i64) -> Timestamp {
    let (year, month, day) = crate::time::civil_from_days(birth_day);
    Timestamp::from_millis(crate::time::days_from_civil(year + AGE_OF_MAJORITY, month, day).saturating_mul(86_400_000))
}

/// How a new delegation starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelegationStart {
    /// In force at once, until the requested end: a patient's own appointment.
    Now,
    /// A guardian registered for a minor: in force at once, ending at majority at the latest.
    /// The minor sees it; the operator (not the minor) ends it early.
    MinorGuardianship { ends_at: Timestamp },
    /// A guardian registered for an adult, or for a patient of unknown age: nothing until the
    /// patient accepts it.
    AwaitsPatient,
}

/// Decides how a delegation starts (DESIGN.md I9): `appointed_by_patient` when the patient made
/// it, else the patient's birth day when a linked record gives one.
pub fn delegation_start(appointed_by_patient: bool, patient_birth_day: Option<i64>, now: Timestamp) -> DelegationStart {
    if appointed_by_patient {
        return DelegationStart::Now;
    }
    match patient_birth_day.map(coming_of_age) {
        Some(majority) if now < majority => DelegationStart::MinorGuardianship { ends_at: majority },
        _ => DelegationStart::AwaitsPatient,
    }
}

/// Who asks to end a delegation, as far as the rule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelegationEnder {
    Agent,
    Patient,
    Operator,
    /// Staff of the institution that registered it.
    Registrar,
    Other,
}

/// Whether `who` may end a delegation. The patient ends anything over them (declining a
/// pending one included) except a minor's guardianship, which the operator ends; the agent may
/// always step down.
pub fn may_end_delegation(who: DelegationEnder, over_minor: bool) -> bool {
    match who {
        DelegationEnder::Agent | DelegationEnder::Operator | DelegationEnder::Registrar => true,
        DelegationEnder::Patient => !over_minor,
        DelegationEnder::Other => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AccountId, DelegationId, OrgId, RecordId};

    fn account(raw: &str) -> AccountId {
        AccountId::parse(raw).unwrap()
    }

    fn delegation(powers: &[Action], accepted_at: Option<Timestamp>) -> Delegation {
        Delegation {
            id: DelegationId::parse("d1").unwrap(),
            agent: account("agent"),
            patient: account("minor"),
            powers: powers.iter().copied().collect(),
            period: Period::new(Timestamp::from_millis(0), None).unwrap(),
            revoked_at: None,
            accepted_at,
        }
    }

    fn record(owner: Party, categories: &[PartCategory], grants: Vec<Grant>) -> RecordPolicyView {
        RecordPolicyView {
            id: RecordId::parse("r1").unwrap(),
            owner,
            state: RecordState::Active,
            categories: categories.iter().copied().collect(),
            labels: Vec::new().into(),
            grants,
            held_under: None,
        }
    }

    fn grant(owner: Party, grantee: Party, scope: &[PartCategory], actions: &[Action]) -> Grant {
        Grant {
            id: GrantId::parse("g1").unwrap(),
            owner,
            grantee,
            terms: GrantTerms::new(
                RecordSelector::Labels(Vec::new()),
                scope.iter().copied().collect(),
                actions.iter().copied().collect(),
                Anonymization::None,
                Timestamp::from_millis(0),
                None,
            )
            .unwrap(),
            revoked_at: None,
        }
    }

    #[test]
    fn an_agent_grants_at_most_its_powers_and_never_to_itself() {
        let d = delegation(&[Action::View, Action::Copy, Action::ManageGrants], Some(Timestamp::from_millis(0)));
        let me = [Party::Account(account("agent"))];
        let my_org = Party::Organisation(OrgId::parse("org1").unwrap());
        let friend = Party::Account(account("friend"));
        let actions = |a: &[Action]| a.iter().copied().collect::<ActionSet>();
        let check = |identities: &[Party], grantee: &Party, a: &[Action], expected| {
            assert_eq!(check_agent_grant(&d, identities, grantee, actions(a)), expected, "{grantee:?} {a:?}");
        };
        check(&me, &friend, &[Action::View, Action::Copy], Ok(()));
        check(&me, &me[0], &[Action::View], Err(AgentGrantRefusal::GranteeIsAgent));
        check(&[me[0].clone(), my_org.clone()], &my_org, &[Action::View], Err(AgentGrantRefusal::GranteeIsAgent));
        check(&me, &friend, &[Action::View, Action::Delete], Err(AgentGrantRefusal::BeyondPowers(Action::Delete)));
        check(&me, &friend, &[Action::Move], Err(AgentGrantRefusal::BeyondPowers(Action::Move)));
    }

    #[test]
    fn a_pending_delegation_gives_nothing() {
        let now = Timestamp::from_millis(10);
        assert!(!delegation(&[Action::View], None).is_active(now));
        assert!(!delegation(&[Action::View], Some(Timestamp::from_millis(11))).is_active(now));
        assert!(delegation(&[Action::View], Some(Timestamp::from_millis(10))).is_active(now));
        let minor = Party::Account(account("minor"));
        let actor = Actor::new(vec![Party::Account(account("agent"))]).acting_for(delegation(&[Action::View], None));
        assert!(
            !decide(&actor, Action::View, &record(minor, &[PartCategory::Condition], vec![]), None, now).is_allowed()
        );
    }

    #[test]
    fn refusals_name_the_power_only_to_those_who_know_the_record() {
        let now = Timestamp::from_millis(10);
        let owner = Party::Account(account("minor"));
        let viewer = Party::Account(account("viewer"));
        let r = record(
            owner.clone(),
            &[PartCategory::Condition],
            vec![grant(owner.clone(), viewer.clone(), &[PartCategory::Condition], &[Action::View])],
        );
        let check =
            |actor: &Actor, action, expected| assert_eq!(refusal(actor, action, &r, now), expected, "{action:?}");
        let grantee = Actor::new(vec![viewer]);
        check(&grantee, Action::Delete, Refusal::MissingPower(Action::Delete));
        check(&grantee, Action::Copy, Refusal::MissingPower(Action::Copy));
        let stranger = Actor::new(vec![Party::Account(account("stranger"))]);
        check(&stranger, Action::Delete, Refusal::LooksMissing);
        check(&stranger, Action::View, Refusal::LooksMissing);
        let guardian = Actor::new(vec![Party::Account(account("agent"))])
            .acting_for(delegation(&[Action::View], Some(Timestamp::from_millis(0))));
        check(&guardian, Action::Delete, Refusal::MissingPower(Action::Delete));
        let pending = Actor::new(vec![Party::Account(account("agent"))]).acting_for(delegation(&[Action::View], None));
        check(&pending, Action::Delete, Refusal::LooksMissing);
    }

    #[test]
    fn only_a_grant_that_showed_the_record_reveals_where_it_moved() {
        let owner = Party::Account(account("alice"));
        let viewer = Party::Organisation(OrgId::parse("sakura").unwrap());
        let moved_at = Timestamp::from_millis(10);
        let knows = |scope: &[PartCategory], actions: &[Action]| {
            let r = record(
                owner.clone(),
                &[PartCategory::Condition, PartCategory::Observation],
                vec![grant(owner.clone(), viewer.clone(), scope, actions)],
            );
            may_know_location(&Actor::new(vec![viewer.clone()]), &r, moved_at)
        };
        assert!(knows(&[PartCategory::Observation], &[Action::View]), "a grant viewing one part");
        assert!(!knows(&[PartCategory::Document], &[Action::View, Action::Copy]), "documents only, none held");
        assert!(!knows(&[PartCategory::Condition], &[Action::Statistics]), "no view power");
        let r = record(owner.clone(), &[PartCategory::Condition], Vec::new());
        assert!(may_know_location(&Actor::new(vec![owner.clone()]), &r, moved_at), "the last owner");
        assert!(!may_know_location(&Actor::new(vec![viewer.clone()]), &r, moved_at), "no grant");
    }

    #[test]
    fn only_labels_inside_the_scope_filter_a_grantees_list() {
        let observations: CategorySet = [PartCategory::Observation].into_iter().collect();
        let check = |raw: &str, expected: bool| {
            assert_eq!(label_within_scope(&Label::parse(raw).unwrap(), observations), expected, "{raw}");
        };
        check("condition:icd10:E11", false);
        check("icd10:E11", false);
        check("loinc:4548-4", false);
        check("sex:female", false);
        check("category:condition", false);
        check("category:observation", true);
        check("format:fhir", true);
        check("institution:org1", true);
    }

    #[test]
    fn a_guardianship_over_a_minor_ends_at_majority_and_an_adult_must_accept() {
        let birth = crate::time::days_from_civil(2016, 6, 26);
        let majority = coming_of_age(birth);
        assert_eq!(majority.as_millis(), crate::time::days_from_civil(2034, 6, 26) * 86_400_000);
        let now = Timestamp::from_millis(crate::time::days_from_civil(2026, 12, 4) * 86_400_000);
        assert_eq!(delegation_start(false, Some(birth), now), DelegationStart::MinorGuardianship { ends_at: majority });
        let adult = crate::time::days_from_civil(1989, 2, 24);
        assert_eq!(delegation_start(false, Some(adult), now), DelegationStart::AwaitsPatient);
        assert_eq!(delegation_start(false, None, now), DelegationStart::AwaitsPatient);
        assert_eq!(delegation_start(true, None, now), DelegationStart::Now);
        assert_eq!(delegation_start(false, Some(birth), majority), DelegationStart::AwaitsPatient);
    }

    #[test]
    fn the_patient_ends_any_delegation_but_a_minors_guardianship() {
        assert!(may_end_delegation(DelegationEnder::Patient, false));
        assert!(!may_end_delegation(DelegationEnder::Patient, true));
        assert!(may_end_delegation(DelegationEnder::Operator, true));
        assert!(may_end_delegation(DelegationEnder::Agent, true));
        assert!(!may_end_delegation(DelegationEnder::Other, false));
    }
}
