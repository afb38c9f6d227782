//! `kura-bench ledger`: what a research organisation's disclosure ledger (its
//! [`kura_stats::Partition`]) costs once it has been told about a million people.
//!
//! The ledger is built as an organisation's releases build it: a search matching everyone, then
//! sets that halve each atom (four in turn, sixteen atoms), then a cohort of a tenth of the
//! people, the size of an analysis's. Reported: the ledger's heap bytes and stored bytes (the
//! server reads and writes the whole ledger on every release), the time to read it back from and
//! write it to those bytes, and the time of one `release_set` of every person's key against it
//! (a search matching everyone; admitted, so the refined ledger is built too) and of one of the
//! analysis-sized cohort. Each time is the median of `--runs`. Member keys are the server's
//! ([`kura_stats::MemberKeys`] over [`kura_index::subject_hash`]), computed before any timing.

use std::hint::black_box;
use std::time::Instant;

use anyhow::{Context as _, bail};
use kura_stats::{MemberKeys, Partition};
use serde_json::json;

use crate::figures::{RunFlags, count, grouped};

/// `kura-bench ledger`: a research organisation's disclosure ledger over many people.
#[derive(Debug, Default, clap::Args)]
pub struct LedgerArgs {
    /// People in the ledger [default: 1,000,000; with --smoke 20,000].
    #[arg(long, value_name = "N", value_parser = count)]
    pub people: Option<usize>,
    /// Runs of each timing, of which the median is reported [default: 5; with --smoke 1].
    #[arg(long, value_name = "R", value_parser = count)]
    pub runs: Option<usize>,
    #[command(flatten)]
    pub run: RunFlags,
}

/// Sets that each halve every atom of the ledger, after the first search of everyone.
const HALVINGS: u32 = 4;
/// The analysis-sized cohort: one person in this many.
const COHORT_SHARE: usize = 10;
/// The disclosure threshold the releases are judged at (the server's default).
const K: u64 = 10;

#[derive(Debug)]
pub struct LedgerOptions {
    pub people: usize,
    pub runs: usize,
    pub json: bool,
}

impl LedgerOptions {
    pub fn from_args(args: &LedgerArgs) -> anyhow::Result<Self> {
        let options = Self {
            people: args.people.unwrap_or(if args.run.smoke { 20_000 } else { 1_000_000 }),
            runs: args.runs.unwrap_or(if args.run.smoke { 1 } else { 5 }),
            json: args.run.json,
        };
        if options.runs == 0 {
            bail!("--runs must be at least 1");
        }
        if options.people < COHORT_SHARE * K as usize * 2 {
            bail!("--people must be at least {}", COHORT_SHARE * K as usize * 2);
        }
        Ok(options)
    }
}

#[derive(Debug)]
pub struct LedgerReport {
    pub people: usize,
    pub runs: usize,
    pub members: usize,
    pub cohort: usize,
    pub heap_bytes: usize,
    pub stored_bytes: usize,
    /// Building the ledger: the first release of everyone, to an empty ledger.
    pub first_release_ms: f64,
    pub from_bytes_ms: f64,
    pub to_bytes_ms: f64,
    /// One `release_set` of every person's key against the built ledger.
    pub release_everyone_ms: f64,
    /// One `release_set` of the analysis-sized cohort against the built ledger.
    pub release_cohort_ms: f64,
}

/// The median, in milliseconds, of `runs` timings of `work` on a fresh input from `input`.
fn median_ms<I, O>(runs: usize, mut input: impl FnMut() -> I, mut work: impl FnMut(I) -> O) -> f64 {
    let mut samples: Vec<f64> = (0..runs)
        .map(|_| {
            let input = input();
            let start = Instant::now();
            black_box(work(input));
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

pub fn run_ledger_benchmark(options: &LedgerOptions) -> anyhow::Result<LedgerReport> {
    let member_keys = MemberKeys::new(&[7; 32], "org-benchmark");
    let keys: Vec<u64> =
        (0..options.people).map(|i| member_keys.key(kura_index::subject_hash(&format!("account:{i}")))).collect();
    let start = Instant::now();
    let mut ledger =
        Partition::default().release_set(keys.clone(), K).context("the first release of everyone was refused")?;
    let first_release_ms = start.elapsed().as_secs_f64() * 1e3;
    for halving in 0..HALVINGS {
        let half: Vec<u64> =
            keys.iter().enumerate().filter(|(i, _)| (i >> halving) & 1 == 0).map(|(_, &k)| k).collect();
        ledger = ledger.release_set(half, K).with_context(|| format!("halving {halving} was refused"))?;
    }
    // The keys are hashes, so those divisible by ten are a random tenth: it cuts each of the
    // sixteen atoms into a tenth and the rest, all far above the threshold, and is admitted.
    let cohort: Vec<u64> = keys.iter().copied().filter(|key| key % COHORT_SHARE as u64 == 0).collect();
    ledger = ledger.release_set(cohort.clone(), K).context("the analysis-sized cohort was refused")?;

    let bytes = ledger.to_bytes();
    let from_bytes_ms = median_ms(options.runs, || (), |()| Partition::from_bytes(&bytes));
    let to_bytes_ms = median_ms(options.runs, || (), |()| ledger.to_bytes());
    let release_everyone_ms = median_ms(options.runs, || keys.clone(), |keys| ledger.release_set(keys, K));
    let release_cohort_ms = median_ms(options.runs, || cohort.clone(), |cohort| ledger.release_set(cohort, K));
    if ledger.release_set(keys.clone(), K).is_none() {
        bail!("a search of everyone, already released, was refused");
    }
    Ok(LedgerReport {
        people: options.people,
        runs: options.runs,
        members: ledger.members(),
        cohort: cohort.len(),
        heap_bytes: ledger.heap_bytes(),
        stored_bytes: bytes.len(),
        first_release_ms,
        from_bytes_ms,
        to_bytes_ms,
        release_everyone_ms,
        release_cohort_ms,
    })
}

impl LedgerReport {
    pub fn to_markdown(&self) -> String {
        let mib = |bytes: usize| format!("{:.1} MiB ({} bytes)", bytes as f64 / 1048576.0, grouped(bytes as u64));
        let mut out = format!(
            "Organisation ledger over {} people (a search of everyone, {HALVINGS} halvings, a cohort of 1 in \
             {COHORT_SHARE}; k = {K}); times are the median of {} runs.\n\n| figure | value |\n| --- | --- |\n",
            grouped(self.people as u64),
            self.runs
        );
        let mut row = |figure: &str, value: String| out.push_str(&format!("| {figure} | {value} |\n"));
        row("members", grouped(self.members as u64));
        row("heap bytes", mib(self.heap_bytes));
        row("stored bytes", mib(self.stored_bytes));
        row("first release of everyone (empty ledger)", format!("{:.1} ms", self.first_release_ms));
        row("read from stored bytes", format!("{:.1} ms", self.from_bytes_ms));
        row("write to stored bytes", format!("{:.1} ms", self.to_bytes_ms));
        row(
            &format!("release_set of {} keys", grouped(self.people as u64)),
            format!("{:.1} ms", self.release_everyone_ms),
        );
        row(
            &format!("release_set of {} keys", grouped(self.cohort as u64)),
            format!("{:.1} ms", self.release_cohort_ms),
        );
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "people": self.people,
            "runs": self.runs,
            "members": self.members,
            "cohort": self.cohort,
            "heap_bytes": self.heap_bytes,
            "stored_bytes": self.stored_bytes,
            "first_release_ms": self.first_release_ms,
            "from_bytes_ms": self.from_bytes_ms,
            "to_bytes_ms": self.to_bytes_ms,
            "release_everyone_ms": self.release_everyone_ms,
            "release_cohort_ms": self.release_cohort_ms,
        })
    }
}
