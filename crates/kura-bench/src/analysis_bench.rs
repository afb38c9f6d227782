//! `kura-bench analysis`: times the analysis engine (`kura-stats`) on the synthetic population:
//! a histogram and the mean of HbA1c (`loinc:4548-4`) over a diabetic cohort and over everyone,
//! split into `compute` (cohort, cells, per-patient values), `control` (disclosure control with
//! a fresh partition, differencing defence included) and the whole engine end to end.
//!
//! Subjects are remembered in the partition by a member key: the server's own function
//! (`kura_stats::MemberKeys`, SipHash-2-4 of the subject's hash kept dense in the index), here
//! under a fixed key instead of the server's secret one.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use kura_index::LabelIndex;
use kura_stats::result::MeasureResult;
use kura_stats::{Computation, Context, KeyCache, Noise, Partition, Release, Shard, compute, control, parse_spec};
use serde_json::json;

use crate::figures::{RunFlags, count, days_32, grouped, mebibytes, number, percentile, process_memory};
use crate::population::{OBSERVATIONS, SplitMix64, Vocabulary, build_population};

/// `kura-bench analysis`: the analysis engine over the same population.
#[derive(Debug, Default, clap::Args)]
pub struct AnalysisArgs {
    /// People in the population [default: 1,000,000; with --smoke 10,000].
    #[arg(long, value_name = "N", value_parser = count)]
    pub patients: Option<usize>,
    /// Timed runs of each analysis [default: 30; with --smoke 5].
    #[arg(long, value_name = "R", value_parser = count)]
    pub runs: Option<usize>,
    /// The population's seed [default: 42].
    #[arg(long, value_name = "S", value_parser = number)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub run: RunFlags,
}

/// The observation code summarised, and its histogram's bin edges (bins `<5`, `[5,6)`, ...,
/// `>=11`, in %).
pub(crate) const CODE: &str = "4548-4";
pub(crate) const EDGES: [f64; 7] = [5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0];
/// The server's default disclosure threshold (`disclosure_k`).
pub(crate) const K: u32 = 10;
/// The benchmark's fixed key for member keys; the server's key is secret instead.
const MEMBER_KEY: [u8; 32] = *b"kura-bench member keys, not real";

/// The cohorts measured: a name for the report and the cohort query.
const COHORTS: [(&str, &str); 2] = [
    // Diabetes (SNOMED 44054006), which the generator gives 10% of people.
    ("diabetic", "snomed:44054006"),
    // Everyone born, which is every synthetic subject.
    ("everyone", "age:0.."),
];

#[derive(Debug)]
pub struct AnalysisOptions {
    pub patients: usize,
    pub runs: usize,
    pub seed: u64,
    pub json: bool,
}

impl AnalysisOptions {
    pub fn from_args(args: &AnalysisArgs) -> anyhow::Result<Self> {
        let options = Self {
            patients: args.patients.unwrap_or(if args.run.smoke { 10_000 } else { 1_000_000 }),
            runs: args.runs.unwrap_or(if args.run.smoke { 5 } else { 30 }),
            seed: args.seed.unwrap_or(42),
            json: args.run.json,
        };
        if options.patients == 0 || options.runs == 0 {
            bail!("--patients and --runs must be at least 1");
        }
        Ok(options)
    }
}

/// The member key the benchmark remembers subjects by: the server's function under a fixed key.
pub(crate) fn member_key(subject_hash: u64) -> u64 {
    static KEYS: std::sync::OnceLock<kura_stats::MemberKeys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| kura_stats::MemberKeys::new(&MEMBER_KEY, "kura-bench")).key(subject_hash)
}

/// The analysis measured: the cohort, then a histogram and the mean of HbA1c.
pub(crate) fn spec_json(cohort: &str) -> serde_json::Value {
    json!({
        "cohort": cohort,
        "measures": [{"type": "summary", "code": format!("loinc:{CODE}"), "statistics": ["mean"], "histogram": EDGES}],
    })
}

/// Noise for differential privacy; the spec spends no ε, so it is never drawn from.
pub(crate) struct SeededNoise(pub(crate) SplitMix64);

impl Noise for SeededNoise {
    fn uniform(&mut self) -> f64 {
        self.0.unit()
    }
}

/// The median, 99th percentile and largest of some wall-clock timings, and the median of the
/// same timings less the time the thread waited for a CPU (on a shared machine, other work
/// takes turns on the cores; the two medians show how much).
#[derive(Debug, Clone, Copy, Default)]
struct Timings {
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// `None` where the kernel does not tell (not Linux).
    on_cpu_p50: Option<Duration>,
}

/// One timed section: its wall-clock time and how long the thread waited for a CPU meanwhile.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    waited: Option<Duration>,
}

impl Timings {
    fn of(samples: &[Sample]) -> Self {
        let mut walls: Vec<Duration> = samples.iter().map(|sample| sample.wall).collect();
        walls.sort_unstable();
        let mut on_cpu: Option<Vec<Duration>> =
            samples.iter().map(|sample| Some(sample.wall.saturating_sub(sample.waited?))).collect();
        if let Some(on_cpu) = &mut on_cpu {
            on_cpu.sort_unstable();
        }
        Self {
            p50: percentile(&walls, 0.50),
            p99: percentile(&walls, 0.99),
            max: walls.last().copied().unwrap_or_default(),
            on_cpu_p50: on_cpu.map(|on_cpu| percentile(&on_cpu, 0.50)),
        }
    }
}

/// A stopwatch that also reads how long this thread has waited on the run queue so far
/// (`/proc/thread-self/schedstat`, Linux), outside the timed span so that reading it is not
/// timed.
struct Stopwatch {
    started: Instant,
    waited_before: Option<Duration>,
}

impl Stopwatch {
    fn start() -> Self {
        let waited_before = run_queue_wait();
        Self { started: Instant::now(), waited_before }
    }

    fn stop(self) -> Sample {
        let wall = self.started.elapsed();
        let waited = run_queue_wait().zip(self.waited_before).map(|(after, before)| after.saturating_sub(before));
        Sample { wall, waited }
    }
}

/// The time this thread has spent waiting for a CPU, from the second field of
/// `/proc/thread-self/schedstat` (nanoseconds).
fn run_queue_wait() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().nth(1)?.parse().ok().map(Duration::from_nanos)
}

/// What one cohort's analysis released and cost.
struct CohortFigures {
    name: &'static str,
    query: &'static str,
    cohort: u64,
    /// Patients of the cohort with an HbA1c value (the summary's `n`).
    with_values: u64,
    mean: f64,
    bins_released: usize,
    compute: Timings,
    control: Timings,
    end_to_end: Timings,
    /// `compute`'s phases, done again one at a time (medians): the cohort query with its list
    /// of positions, a member key per member (the engine's `member_keys`, over the cores), each
    /// member's values of the code (the engine's `per_member_sums`).
    cohort_query: Duration,
    member_keys: Duration,
    /// The same keys read from the study's [`KeyCache`], as every analysis but its first does.
    member_keys_kept: Duration,
    values: Duration,
    /// `compute` of the warm-up run: the study's first analysis, whose member keys are hashed
    /// and kept.
    first_compute: Duration,
    /// What the server does next in memory (median of up to five runs): the participants'
    /// subject keys and the partition's bytes, both stored, built and freed.
    after_release: Duration,
}

pub struct AnalysisReport {
    patients: usize,
    runs: usize,
    seed: u64,
    cores: usize,
    build: Duration,
    cohorts: Vec<CohortFigures>,
    peak_rss_bytes: Option<u64>,
    /// The 1, 5 and 15 minute load averages when the runs ended (`/proc/loadavg`).
    load_average: Option<String>,
}

pub fn run_analysis_benchmark(options: &AnalysisOptions) -> anyhow::Result<AnalysisReport> {
    let vocabulary = Vocabulary::new()?;
    let mut random = SplitMix64(options.seed);
    let births = (days_32(1925, 1, 1)?, days_32(2024, 12, 31)?);
    let today = days_32(2025, 1, 1)?;
    let population = build_population(&vocabulary, &mut random, births, options.patients);
    let mut noise = SeededNoise(random);
    let mut cohorts = Vec::new();
    for (name, query) in COHORTS {
        cohorts.push(measure_cohort(&population.index, name, query, today, options.runs, &mut noise)?);
    }
    let everyone = cohorts.iter().find(|figures| figures.name == "everyone").map_or(0, |figures| figures.cohort);
    ensure!(everyone == options.patients as u64, "age:0.. matched {everyone} of {} subjects", options.patients);
    Ok(AnalysisReport {
        patients: options.patients,
        runs: options.runs,
        seed: options.seed,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        build: population.generate + population.build,
        cohorts,
        peak_rss_bytes: process_memory().1,
        load_average: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
    })
}

/// Runs the analysis `runs` times after one warm-up run, timing `compute` and `control` on
/// their own and the engine end to end, and checks the first release.
fn measure_cohort(
    index: &LabelIndex,
    name: &'static str,
    query: &'static str,
    today: i32,
    runs: usize,
    noise: &mut SeededNoise,
) -> anyhow::Result<CohortFigures> {
    let json = spec_json(query);
    let spec = parse_spec(&json).with_context(|| format!("the {name} spec"))?;
    // One study asking again and again, as the server runs it: its member keys are kept from its
    // first analysis (the warm-up run) on.
    let kept = KeyCache::default();
    let shards = [Shard::with_keys(index, index.everyone(), &kept)];
    let context = Context { k: K, today_days: today, member_key: &member_key };
    let code = index.code(&format!("loinc:{CODE}"));

    let (mut computes, mut controls, mut ends, mut afters) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut queries, mut keys, mut kept_keys, mut values) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut checked = None;
    let mut first_compute = Duration::ZERO;
    for run in 0..=runs {
        let watch = Stopwatch::start();
        let computation = compute(&spec, &shards, &context);
        let computed = watch.stop();
        let watch = Stopwatch::start();
        let release = control(&spec, &computation, &Partition::default(), K, noise)?;
        let controlled = watch.stop();
        if checked.is_none() {
            checked = Some(check_release(name, &computation, &release)?);
        }
        drop((computation, release));

        let watch = Stopwatch::start();
        let spec = parse_spec(&json)?;
        let computation = compute(&spec, &shards, &context);
        let release = control(&spec, &computation, &Partition::default(), K, noise)?;
        let text = serde_json::to_string(&release.result)?;
        let end_to_end = watch.stop();
        black_box(text.len());
        drop((computation, release));

        // compute's phases, one at a time.
        let started_phases = Instant::now();
        let cohort = index.evaluate_within(&spec.cohort, today, &shards[0].eligible);
        let positions = cohort.position_list();
        let queried = Instant::now();
        let mut keyed_members = vec![0u64; positions.len()];
        kura_stats::engine::member_keys(index, &positions, &member_key, None, &mut keyed_members);
        let folded = keyed_members.iter().fold(0, |folded, key| folded ^ key);
        let hashed = Instant::now();
        kura_stats::engine::member_keys(index, &positions, &member_key, Some(&kept), &mut keyed_members);
        ensure!(keyed_members.iter().fold(0, |folded, key| folded ^ key) == folded, "kept keys differ");
        let keyed = Instant::now();
        let mut total = 0.0;
        if let Some(code) = code {
            // The engine's own step: a column scan for large cohorts, subject by subject else.
            for (sum, count) in kura_stats::engine::per_member_sums(index, code, &positions) {
                if count > 0 {
                    total += sum / f64::from(count);
                }
            }
        }
        let valued = Instant::now();
        black_box((folded, total));

        if run == 0 {
            first_compute = computed.wall;
        } else {
            computes.push(computed);
            controls.push(controlled);
            ends.push(end_to_end);
            queries.push(queried - started_phases);
            keys.push(hashed - queried);
            kept_keys.push(keyed - hashed);
            values.push(valued - keyed);
        }
    }
    // What the server does next, in memory: list the participants (one string per patient) and
    // store the partition. Timed apart, with the freeing, so that the freed million strings
    // cannot slow what the loop above times.
    for _ in 0..runs.min(5) {
        let computation = compute(&spec, &shards, &context);
        let release = control(&spec, &computation, &Partition::default(), K, noise)?;
        let started = Instant::now();
        let participants = computation.participants(&shards);
        let bytes = release.partition.to_bytes();
        black_box((participants.len(), bytes.len()));
        drop((participants, bytes));
        afters.push(started.elapsed());
    }
    let (cohort, with_values, mean, bins_released) = checked.context("no run was checked")?;
    let median = |mut samples: Vec<Duration>| {
        samples.sort_unstable();
        percentile(&samples, 0.5)
    };
    Ok(CohortFigures {
        name,
        query,
        cohort,
        with_values,
        mean,
        bins_released,
        compute: Timings::of(&computes),
        control: Timings::of(&controls),
        end_to_end: Timings::of(&ends),
        cohort_query: median(queries),
        member_keys: median(keys),
        member_keys_kept: median(kept_keys),
        values: median(values),
        first_compute,
        after_release: median(afters),
    })
}

/// Checks that the analysis measured something: a released, non-empty cohort, patients with
/// values, a mean within the generator's range and histogram bins adding up to no more than
/// `n`. Returns the cohort size, `n`, the mean and how many bins were released.
fn check_release(name: &str, computation: &Computation, release: &Release) -> anyhow::Result<(u64, u64, f64, usize)> {
    let (low, high) = OBSERVATIONS
        .iter()
        .find(|(code, ..)| *code == CODE)
        .map(|&(_, _, low, high)| (low, high))
        .context("the generator has no HbA1c")?;
    let cohort = computation.cohort_size();
    ensure!(cohort > 0, "the {name} cohort is empty");
    ensure!(release.released, "the {name} cohort of {cohort} was not released");
    ensure!(release.result.cohort == Some(cohort), "the {name} cohort was released as {:?}", release.result.cohort);
    let Some(MeasureResult::Summary { n: Some(n), mean: Some(Some(mean)), histogram, .. }) =
        release.result.measures.first()
    else {
        bail!("the {name} cohort's summary was withheld: {:?}", release.result.measures.first());
    };
    ensure!(*n > 0 && *n <= cohort, "the {name} summary has n {n} for a cohort of {cohort}");
    ensure!((low..=high).contains(mean), "the {name} mean {mean} is outside the generator's {low}..{high}");
    let counts: Vec<u64> = histogram.iter().filter_map(|bin| bin.count).collect();
    ensure!(histogram.len() == EDGES.len() + 1, "the {name} histogram has {} bins", histogram.len());
    ensure!(!counts.is_empty() && counts.iter().sum::<u64>() <= *n, "the {name} histogram {counts:?} for n {n}");
    Ok((cohort, *n, *mean, counts.len()))
}

/// A duration in µs below a millisecond, else in ms.
fn shown(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 1_000.0 { format!("{micros:.0} µs") } else { format!("{:.1} ms", micros / 1_000.0) }
}

impl AnalysisReport {
    pub fn to_json(&self) -> serde_json::Value {
        let millis = |duration: Duration| (duration.as_secs_f64() * 1e6).round() / 1e3;
        let timings = |timings: &Timings| {
            json!({
                "p50_ms": millis(timings.p50),
                "p99_ms": millis(timings.p99),
                "max_ms": millis(timings.max),
                "on_cpu_p50_ms": timings.on_cpu_p50.map(millis),
            })
        };
        let cohorts: Vec<serde_json::Value> = self
            .cohorts
            .iter()
            .map(|figures| {
                json!({
                    "name": figures.name,
                    "query": figures.query,
                    "cohort": figures.cohort,
                    "with_values": figures.with_values,
                    "mean": figures.mean,
                    "bins_released": figures.bins_released,
                    "compute": timings(&figures.compute),
                    "control": timings(&figures.control),
                    "end_to_end": timings(&figures.end_to_end),
                    "phase_cohort_query_ms": millis(figures.cohort_query),
                    "phase_member_keys_ms": millis(figures.member_keys),
                    "phase_member_keys_kept_ms": millis(figures.member_keys_kept),
                    "first_analysis_compute_ms": millis(figures.first_compute),
                    "phase_values_ms": millis(figures.values),
                    "after_release_ms": millis(figures.after_release),
                })
            })
            .collect();
        json!({
            "benchmark": "analysis",
            "patients": self.patients,
            "runs": self.runs,
            "seed": self.seed,
            "cores": self.cores,
            "k": K,
            "measure": format!("histogram({} bins) + mean of loinc:{CODE}", EDGES.len() + 1),
            "member_key": "the server's (siphash-2-4 of the subject hash), under a fixed key",
            "build_seconds": self.build.as_secs_f64(),
            "cohorts": cohorts,
            "peak_rss_bytes": self.peak_rss_bytes,
            "load_average": self.load_average,
        })
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "kura-bench analysis: seed {}, {} cores, {} subjects generated and indexed in {:.2} s, \
             {} runs per cohort after one warm-up, k {K}, peak RSS {}\n\
             measure: histogram ({} bins) + mean of loinc:{CODE} (HbA1c); control starts from an empty partition\n\
             member_key: the server's (SipHash-2-4 of the subject's hash in the index), under a fixed key\n\
             on CPU: wall time less the time this thread waited for a core (other processes' turns); \
             load average at the end: {}\n\n",
            self.seed,
            self.cores,
            grouped(self.patients as u64),
            self.build.as_secs_f64(),
            self.runs,
            mebibytes(self.peak_rss_bytes),
            EDGES.len() + 1,
            self.load_average.as_deref().unwrap_or("n/a"),
        );
        const FIGURES: [&str; 13] = [
            "cohort query",
            "cohort size",
            "with an HbA1c value (n)",
            "mean released / bins released",
            "**compute** p50 / p99 (on CPU p50)",
            "**control** p50 / p99 (on CPU p50)",
            "**end to end** p50 / p99 (on CPU p50)",
            "compute of the study's first analysis (keys hashed and kept)",
            "compute phase: cohort query and its positions, p50",
            "compute phase: member keys hashed (over the cores), p50",
            "compute phase: member keys kept from the study's earlier analyses, p50",
            "compute phase: per-patient values, p50",
            "after release: participant keys + partition bytes, built and freed, p50",
        ];
        let pair = |timings: &Timings| match timings.on_cpu_p50 {
            Some(on_cpu) => format!("{} / {} ({})", shown(timings.p50), shown(timings.p99), shown(on_cpu)),
            None => format!("{} / {}", shown(timings.p50), shown(timings.p99)),
        };
        let columns: Vec<[String; FIGURES.len()]> = self
            .cohorts
            .iter()
            .map(|figures| {
                [
                    format!("`{}`", figures.query),
                    grouped(figures.cohort),
                    grouped(figures.with_values),
                    format!("{:.2} % / {}", figures.mean, figures.bins_released),
                    pair(&figures.compute),
                    pair(&figures.control),
                    pair(&figures.end_to_end),
                    shown(figures.first_compute),
                    shown(figures.cohort_query),
                    shown(figures.member_keys),
                    shown(figures.member_keys_kept),
                    shown(figures.values),
                    shown(figures.after_release),
                ]
            })
            .collect();
        out.push_str("| figure |");
        for figures in &self.cohorts {
            out.push_str(&format!(" {} |", figures.name));
        }
        out.push_str("\n| --- |");
        out.push_str(&" --- |".repeat(self.cohorts.len()));
        out.push('\n');
        for (row, figure) in FIGURES.iter().enumerate() {
            out.push_str(&format!("| {figure} |"));
            for column in &columns {
                out.push_str(&format!(" {} |", column[row]));
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let check = |arguments: &[&str], expected: Result<(usize, usize, u64, bool), &str>| {
            let got = crate::figures::parse_flags::<AnalysisArgs>(arguments)
                .and_then(|args| AnalysisOptions::from_args(&args).map_err(|error| error.to_string()))
                .map(|options| (options.patients, options.runs, options.seed, options.json));
            match (got, expected) {
                (Ok(got), Ok(expected)) => assert_eq!(got, expected, "{arguments:?}"),
                (Err(got), Err(expected)) => assert!(got.contains(expected), "{arguments:?}: {got}"),
                (got, expected) => panic!("{arguments:?}: {got:?}, expected {expected:?}"),
            }
        };
        check(&[], Ok((1_000_000, 30, 42, false)));
        check(&["--smoke"], Ok((10_000, 5, 42, false)));
        check(&["--patients", "2_000", "--runs", "3", "--seed", "7", "--json"], Ok((2_000, 3, 7, true)));
        check(&["--runs"], Err("a value is required for '--runs <R>'"));
        check(&["--runs", "0"], Err("--patients and --runs must be at least 1"));
        check(&["--queries", "5"], Err("unexpected argument '--queries'"));
    }

    #[test]
    fn member_keys_are_stable_and_distinct() {
        let (one, two) = (kura_index::subject_hash("account:1"), kura_index::subject_hash("account:2"));
        assert_eq!(member_key(one), member_key(one));
        assert_ne!(member_key(one), member_key(two));
    }

    #[test]
    fn a_small_run_reports_sane_figures() {
        let options = AnalysisOptions { patients: 3_000, runs: 2, seed: 1, json: false };
        let report = run_analysis_benchmark(&options).unwrap();
        let [diabetic, everyone] = &report.cohorts[..] else { panic!("two cohorts") };
        assert_eq!(everyone.cohort, 3_000);
        // The generator gives 10% diabetes and 35% an HbA1c value, independently.
        assert!((150..450).contains(&diabetic.cohort), "{}", diabetic.cohort);
        assert!((700..1_400).contains(&everyone.with_values), "{}", everyone.with_values);
        assert!((7.5..9.0).contains(&everyone.mean), "{}", everyone.mean);
        assert!(diabetic.compute.p50 <= diabetic.compute.p99 && diabetic.compute.p99 <= diabetic.compute.max);
        let json = report.to_json();
        assert_eq!(json["cohorts"][1]["cohort"], 3_000);
        let markdown = report.to_markdown();
        assert!(
            markdown.contains("| **control** p50 / p99 (on CPU p50) |") && markdown.contains("SipHash-2-4"),
            "{markdown}"
        );
    }
}
