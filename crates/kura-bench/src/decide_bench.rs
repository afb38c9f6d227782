//! `kura-bench decide`: times `kura_core::policy::decide()`, the check every read and change of
//! record content goes through.
//!
//! The inputs look like a real record of a patient who shared it: an owner account, four part
//! categories, six labels and five grants by the owner (a matching grant to the caller's
//! institution over a record list, an expired one, one to another institution, one to another
//! account and a statistics grant to a research organisation), plus an in-server copy's
//! `held_under` case. The actors are an institution's staff member (two identities), the owner,
//! an agent under a delegation, and a stranger. Eight cases (action, part, actor) are cycled.
//!
//! Two timings: batches of 1,000 calls per `Instant` pair, divided by 1,000 (no timer overhead;
//! p50/p99 over the batches), and single calls each between two `Instant`s (which include the
//! timer's own cost, reported alongside).

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::bail;
use kura_core::ids::{AccountId, DelegationId, GrantId, OrgId, RecordId};
use kura_core::labels::Label;
use kura_core::party::Party;
use kura_core::policy::{
    Action, ActionSet, Actor, Anonymization, Decision, Delegation, Grant, GrantTerms, RecordPolicyView, RecordSelector,
    decide,
};
use kura_core::record::{CategorySet, PartCategory, RecordState};
use kura_core::time::{Period, Timestamp};
use serde_json::json;

use crate::figures::{RunFlags, count, grouped, percentile};

/// `kura-bench decide`: the policy check, `kura_core::policy::decide()`.
#[derive(Debug, Default, clap::Args)]
pub struct DecideArgs {
    /// Timed batches of 1,000 calls [default: 2,000; with --smoke 50].
    #[arg(long, value_name = "N", value_parser = count)]
    pub samples: Option<usize>,
    #[command(flatten)]
    pub run: RunFlags,
}

/// Calls per timed batch.
const BATCH: usize = 1_000;

#[derive(Debug)]
pub struct DecideOptions {
    /// Timed batches of [`BATCH`] calls; as many single calls are timed as `samples * 100`.
    pub samples: usize,
    pub json: bool,
}

impl DecideOptions {
    pub fn from_args(args: &DecideArgs) -> anyhow::Result<Self> {
        let options =
            Self { samples: args.samples.unwrap_or(if args.run.smoke { 50 } else { 2_000 }), json: args.run.json };
        if options.samples == 0 {
            bail!("--samples must be at least 1");
        }
        Ok(options)
    }
}

/// One decision to time.
struct Case {
    name: &'static str,
    actor: Actor,
    action: Action,
    record: RecordPolicyView,
    part: Option<PartCategory>,
}

const DAY: i64 = 86_400_000;

fn account(id: &str) -> anyhow::Result<Party> {
    Ok(Party::Account(AccountId::parse(id).map_err(|e| anyhow::anyhow!("{e}"))?))
}

fn org(id: &str) -> anyhow::Result<Party> {
    Ok(Party::Organisation(OrgId::parse(id).map_err(|e| anyhow::anyhow!("{e}"))?))
}

fn record_id(id: &str) -> anyhow::Result<RecordId> {
    RecordId::parse(id).map_err(|e| anyhow::anyhow!("{e}"))
}

fn label(text: &str) -> anyhow::Result<Label> {
    Label::parse(text).map_err(|e| anyhow::anyhow!("{e}"))
}

fn categories(list: &[PartCategory]) -> CategorySet {
    list.iter().copied().collect()
}

fn actions(list: &[Action]) -> ActionSet {
    list.iter().copied().collect()
}

#[allow(clippy::too_many_arguments)]
fn grant(
    id: &str,
    owner: &Party,
    grantee: Party,
    selector: RecordSelector,
    scope: CategorySet,
    granted: ActionSet,
    anonymization: Anonymization,
    period: (Timestamp, Option<Timestamp>),
) -> anyhow::Result<Grant> {
    Ok(Grant {
        id: GrantId::parse(id).map_err(|e| anyhow::anyhow!("{e}"))?,
        owner: owner.clone(),
        grantee,
        terms: GrantTerms::new(selector, scope, granted, anonymization, period.0, period.1)?,
        revoked_at: None,
    })
}

/// The record, actors and cases, at `now`.
fn cases(now: Timestamp) -> anyhow::Result<Vec<Case>> {
    let patient = account("01jpatient0000000000000000")?;
    let id = record_id("01jrecord00000000000000000")?;
    let labels = [
        "snomed:44054006",
        "loinc:4548-4",
        "rxnorm:860975",
        "sex:female",
        "age:40-49",
        "institution:01jhospitala000000000000000",
    ]
    .iter()
    .map(|l| label(l))
    .collect::<anyhow::Result<Vec<_>>>()?;
    let ago = |days: i64| now.plus_millis(-days * DAY);
    let hence = |days: i64| now.plus_millis(days * DAY);
    let view_copy = actions(&[Action::View, Action::Copy]);
    let grants = vec![
        // To another institution, over every record with the diabetes label.
        grant(
            "g1",
            &patient,
            org("hospital-c")?,
            RecordSelector::Labels(vec![label("snomed:44054006")?]),
            categories(&[PartCategory::Observation, PartCategory::Condition]),
            view_copy,
            Anonymization::None,
            (ago(10), Some(hence(20))),
        )?,
        // The caller's institution, over a list holding this record: the one that applies.
        grant(
            "g2",
            &patient,
            org("hospital-b")?,
            RecordSelector::Records(vec![record_id("01jother0000000000000000000")?, id.clone()]),
            categories(&[PartCategory::Observation, PartCategory::Condition, PartCategory::Medication]),
            view_copy,
            Anonymization::None,
            (ago(3), Some(hence(27))),
        )?,
        // The caller's institution again, expired.
        grant(
            "g3",
            &patient,
            org("hospital-b")?,
            RecordSelector::Labels(vec![]),
            categories(&PartCategory::ALL),
            actions(&[Action::View, Action::Copy, Action::Move, Action::Delete]),
            Anonymization::Pseudonymized,
            (ago(90), Some(ago(60))),
        )?,
        // Another account (a relative), images only.
        grant(
            "g4",
            &patient,
            account("01jrelative000000000000000")?,
            RecordSelector::Labels(vec![]),
            categories(&[PartCategory::Image]),
            actions(&[Action::View]),
            Anonymization::None,
            (ago(1), None),
        )?,
        // A research organisation, statistics over anonymized data.
        grant(
            "g5",
            &patient,
            org("research-lab")?,
            RecordSelector::Labels(vec![label("snomed:44054006")?, label("loinc:4548-4")?]),
            categories(&PartCategory::ALL),
            actions(&[Action::Statistics]),
            Anonymization::Anonymized,
            (ago(100), Some(hence(265))),
        )?,
    ];
    let record = RecordPolicyView {
        id: id.clone(),
        owner: patient.clone(),
        state: RecordState::Active,
        categories: categories(&[
            PartCategory::Observation,
            PartCategory::Condition,
            PartCategory::Medication,
            PartCategory::Image,
        ]),
        labels: labels.into(),
        grants,
        held_under: None,
    };
    // An in-server copy held by hospital-b under g2.
    let mut copy = record.clone();
    copy.id = record_id("01jcopy000000000000000000")?;
    copy.owner = org("hospital-b")?;
    copy.held_under = Some(record.grants[1].clone());
    copy.grants = vec![];

    let staff = Actor::new(vec![account("01jstaff000000000000000000")?, org("hospital-b")?]);
    let owner = Actor::new(vec![patient.clone()]);
    let agent = Actor::new(vec![account("01jagent000000000000000000")?]).acting_for(Delegation {
        id: DelegationId::parse("d1").map_err(|e| anyhow::anyhow!("{e}"))?,
        agent: AccountId::parse("01jagent000000000000000000").map_err(|e| anyhow::anyhow!("{e}"))?,
        patient: AccountId::parse("01jpatient0000000000000000").map_err(|e| anyhow::anyhow!("{e}"))?,
        powers: actions(&[Action::View, Action::Copy, Action::ManageGrants]),
        period: Period::new(ago(400), Some(hence(3000))).map_err(|e| anyhow::anyhow!("{e:?}"))?,
        revoked_at: None,
        accepted_at: Some(ago(400)),
    });
    let stranger = Actor::new(vec![account("01jstranger000000000000000")?, org("hospital-z")?]);
    let case = |name, actor: &Actor, action, record: &RecordPolicyView, part| Case {
        name,
        actor: actor.clone(),
        action,
        record: record.clone(),
        part,
    };
    Ok(vec![
        case("grantee view (allowed, scope narrowed)", &staff, Action::View, &record, None),
        case("grantee view of one part (allowed)", &staff, Action::View, &record, Some(PartCategory::Medication)),
        case("grantee view of an image (denied)", &staff, Action::View, &record, Some(PartCategory::Image)),
        case("grantee delete (denied)", &staff, Action::Delete, &record, None),
        case("owner move (allowed)", &owner, Action::Move, &record, None),
        case("agent copy under delegation (allowed)", &agent, Action::Copy, &record, None),
        case("stranger view (denied)", &stranger, Action::View, &record, None),
        case("copy holder view (allowed)", &staff, Action::View, &copy, None),
    ])
}

fn run_case(case: &Case, now: Timestamp) -> Decision {
    decide(black_box(&case.actor), black_box(case.action), black_box(&case.record), black_box(case.part), now)
}

#[derive(Debug)]
pub struct DecideReport {
    pub decisions: u64,
    pub batch_p50: Duration,
    pub batch_p99: Duration,
    pub single_p50: Duration,
    pub single_p99: Duration,
    pub single_max: Duration,
    pub timer_p50: Duration,
    /// Per case: name, allowed, per-decision p50 over batches of that case alone.
    pub per_case: Vec<(&'static str, bool, Duration)>,
}

pub fn run_decide_benchmark(options: &DecideOptions) -> anyhow::Result<DecideReport> {
    let now = Timestamp::from_millis(1_767_225_600_000); // 2026-01-01
    let cases = cases(now)?;
    let expected = [true, true, false, false, true, true, false, true];
    for (case, expected) in cases.iter().zip(expected) {
        if run_case(case, now).is_allowed() != expected {
            bail!("case {:?} decided unexpectedly", case.name);
        }
    }
    // Warm up.
    for n in 0..100_000 {
        black_box(run_case(&cases[n % cases.len()], now));
    }
    let mut decisions = 0_u64;
    let mut batches = Vec::with_capacity(options.samples);
    for sample in 0..options.samples {
        let start = Instant::now();
        for n in 0..BATCH {
            black_box(run_case(&cases[(sample + n) % cases.len()], now));
        }
        batches.push(start.elapsed() / BATCH as u32);
        decisions += BATCH as u64;
    }
    batches.sort_unstable();

    let singles_wanted = options.samples * 100;
    let mut singles = Vec::with_capacity(singles_wanted);
    let mut timer = Vec::with_capacity(singles_wanted);
    for n in 0..singles_wanted {
        let case = &cases[n % cases.len()];
        let start = Instant::now();
        black_box(run_case(case, now));
        singles.push(start.elapsed());
        let start = Instant::now();
        timer.push(black_box(start).elapsed());
        decisions += 1;
    }
    singles.sort_unstable();
    timer.sort_unstable();

    let mut per_case = Vec::new();
    for case in &cases {
        let mut samples: Vec<Duration> = (0..(options.samples / 10).max(5))
            .map(|_| {
                let start = Instant::now();
                for _ in 0..BATCH {
                    black_box(run_case(case, now));
                }
                start.elapsed() / BATCH as u32
            })
            .collect();
        decisions += (samples.len() * BATCH) as u64;
        samples.sort_unstable();
        per_case.push((case.name, run_case(case, now).is_allowed(), percentile(&samples, 0.5)));
    }
    Ok(DecideReport {
        decisions,
        batch_p50: percentile(&batches, 0.5),
        batch_p99: percentile(&batches, 0.99),
        single_p50: percentile(&singles, 0.5),
        single_p99: percentile(&singles, 0.99),
        single_max: singles.last().copied().unwrap_or_default(),
        timer_p50: percentile(&timer, 0.5),
        per_case,
    })
}

fn ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl DecideReport {
    pub fn p50_met(&self) -> bool {
        self.single_p50 <= Duration::from_micros(2) && self.batch_p50 <= Duration::from_micros(2)
    }

    pub fn p99_met(&self) -> bool {
        self.single_p99 <= Duration::from_micros(10)
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "benchmark": "decide",
            "decisions": self.decisions,
            "batch_size": BATCH,
            "batch_ns_per_decision_p50": ns(self.batch_p50),
            "batch_ns_per_decision_p99": ns(self.batch_p99),
            "single_ns_p50": ns(self.single_p50),
            "single_ns_p99": ns(self.single_p99),
            "single_ns_max": ns(self.single_max),
            "timer_ns_p50": ns(self.timer_p50),
            "per_case_ns_p50": self.per_case.iter().map(|(name, allowed, p50)| {
                json!({"case": name, "allowed": allowed, "ns": ns(*p50)})
            }).collect::<Vec<_>>(),
            "target_p50_ns": 2_000,
            "target_p99_ns": 10_000,
            "p50_met": self.p50_met(),
            "p99_met": self.p99_met(),
        })
    }

    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        out.push_str("| figure | value |\n| --- | --- |\n");
        out.push_str(&format!("| decisions timed | {} |\n", grouped(self.decisions)));
        out.push_str(&format!(
            "| per decision, batches of {BATCH}: p50 / p99 | {} ns / {} ns |\n",
            ns(self.batch_p50),
            ns(self.batch_p99)
        ));
        out.push_str(&format!(
            "| single call: p50 / p99 / max | {} ns / {} ns / {} ns |\n",
            ns(self.single_p50),
            ns(self.single_p99),
            ns(self.single_max)
        ));
        out.push_str(&format!("| timer overhead (empty `Instant` pair) p50 | {} ns |\n", ns(self.timer_p50)));
        for (name, allowed, p50) in &self.per_case {
            let outcome = if *allowed { "allow" } else { "deny" };
            out.push_str(&format!("| case: {name} [{outcome}] p50 | {} ns |\n", ns(*p50)));
        }
        out.push_str(&format!(
            "| target p50 ≤ 2 µs / p99 ≤ 10 µs | {} / {} |\n",
            if self.p50_met() { "met" } else { "missed" },
            if self.p99_met() { "met" } else { "missed" }
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_decides_as_expected() {
        let report = run_decide_benchmark(&DecideOptions { samples: 3, json: false }).expect("runs");
        assert!(report.decisions > 3_000);
        assert_eq!(report.per_case.len(), 8);
        assert!(report.to_markdown().contains("single call"));
    }
}
