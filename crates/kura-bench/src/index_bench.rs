//! `kura-bench index`: builds a label index over the synthetic population and times
//! five-criteria cohort searches on it, and each search's parts alone.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kura_core::labels::Label;
use kura_index::{LabelIndex, parse_text};

use crate::figures::{RunFlags, count, days_32, grouped, mebibytes, number, percentile, process_memory};
use crate::population::{SplitMix64, Vocabulary, build_population};

/// `kura-bench index`: five-criteria cohort searches on a label index.
#[derive(Debug, Default, clap::Args)]
pub struct IndexArgs {
    /// People in the population [default: 1,000,000; with --smoke 10,000].
    #[arg(long, value_name = "N", value_parser = count)]
    pub patients: Option<usize>,
    /// Searches timed [default: 200; with --smoke 20].
    #[arg(long, value_name = "Q", value_parser = count)]
    pub queries: Option<usize>,
    /// The population's seed [default: 42].
    #[arg(long, value_name = "S", value_parser = number)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub run: RunFlags,
}

#[derive(Debug)]
pub struct IndexOptions {
    pub patients: usize,
    pub queries: usize,
    pub seed: u64,
    pub json: bool,
}

impl IndexOptions {
    pub fn from_args(args: &IndexArgs) -> anyhow::Result<Self> {
        let options = Self {
            patients: args.patients.unwrap_or(if args.run.smoke { 10_000 } else { 1_000_000 }),
            queries: args.queries.unwrap_or(if args.run.smoke { 20 } else { 200 }),
            seed: args.seed.unwrap_or(42),
            json: args.run.json,
        };
        if options.patients == 0 || options.queries == 0 {
            bail!("--patients and --queries must be at least 1");
        }
        Ok(options)
    }
}

/// A five-criteria search: a condition, a sex, an age range, a value comparison and a second
/// condition, as a researcher would narrow a cohort. Conditions come from the ones at least 5%
/// of people have, so that cohorts are not trivially empty.
pub(crate) fn search(vocabulary: &Vocabulary, random: &mut SplitMix64) -> Search {
    let common: Vec<&Label> =
        vocabulary.conditions.iter().filter(|(_, share)| *share >= 0.05).map(|(label, _)| label).collect();
    let first = common[random.below(common.len() as u64) as usize];
    let second = loop {
        let candidate = common[random.below(common.len() as u64) as usize];
        if candidate != first {
            break candidate;
        }
    };
    let sex = if random.chance(0.5) { &vocabulary.female } else { &vocabulary.male };
    let youngest = 18 + random.below(50);
    let oldest = youngest + 10 + random.below(30);
    let (code, _, low, high) = &vocabulary.observations[random.below(vocabulary.observations.len() as u64) as usize];
    let op = [">", ">=", "<", "<="][random.below(4) as usize];
    let threshold = (random.between(*low, *high) * 10.0).round() / 10.0;
    Search {
        labels: format!("{first} AND {sex} AND {second}"),
        age: format!("age:{youngest}..{oldest}"),
        value: format!("{code}{op}{threshold}"),
    }
}

/// The parts of one benchmark search, timed together and apart.
pub(crate) struct Search {
    /// The two conditions and the sex.
    pub(crate) labels: String,
    pub(crate) age: String,
    pub(crate) value: String,
}

impl Search {
    pub(crate) fn full(&self) -> String {
        format!("{} AND {} AND {}", self.labels, self.age, self.value)
    }
}

pub struct IndexReport {
    patients: usize,
    queries: usize,
    seed: u64,
    cores: usize,
    labels_per_subject: f64,
    values_per_subject: f64,
    generate: Duration,
    build: Duration,
    search_p50: Duration,
    search_p99: Duration,
    search_mean: Duration,
    search_max: Duration,
    /// The three label criteria of each search alone, its age range alone, its value alone.
    labels_p50: Duration,
    age_p50: Duration,
    value_p50: Duration,
    cohort_median: u64,
    heap_bytes: usize,
    rss_bytes: Option<u64>,
    peak_rss_bytes: Option<u64>,
}

pub fn run_index_benchmark(options: &IndexOptions) -> anyhow::Result<IndexReport> {
    let vocabulary = Vocabulary::new()?;
    let mut random = SplitMix64(options.seed);
    let births = (days_32(1925, 1, 1)?, days_32(2024, 12, 31)?);
    let today = days_32(2025, 1, 1)?;
    let population = build_population(&vocabulary, &mut random, births, options.patients);
    let index = &population.index;

    let mut timings = Vec::with_capacity(options.queries);
    let mut cohorts = Vec::with_capacity(options.queries);
    let (mut labels_only, mut age_only, mut value_only) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..options.queries {
        let search = search(&vocabulary, &mut random);
        let (elapsed, size) = time_search(index, &search.full(), today)?;
        timings.push(elapsed);
        cohorts.push(size);
        // The same search's parts alone, to show what each criterion costs.
        labels_only.push(time_search(index, &search.labels, today)?.0);
        age_only.push(time_search(index, &search.age, today)?.0);
        value_only.push(time_search(index, &search.value, today)?.0);
    }
    for parts in [&mut labels_only, &mut age_only, &mut value_only] {
        parts.sort_unstable();
    }
    timings.sort_unstable();
    cohorts.sort_unstable();
    let (rss_bytes, peak_rss_bytes) = process_memory();
    Ok(IndexReport {
        patients: options.patients,
        queries: options.queries,
        seed: options.seed,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        labels_per_subject: population.labels_per_subject,
        values_per_subject: population.values_per_subject,
        generate: population.generate,
        build: population.build,
        search_p50: percentile(&timings, 0.50),
        search_p99: percentile(&timings, 0.99),
        search_mean: timings.iter().sum::<Duration>() / u32::try_from(timings.len()).unwrap_or(u32::MAX),
        search_max: timings.last().copied().unwrap_or_default(),
        labels_p50: percentile(&labels_only, 0.50),
        age_p50: percentile(&age_only, 0.50),
        value_p50: percentile(&value_only, 0.50),
        cohort_median: percentile(&cohorts, 0.50),
        heap_bytes: index.heap_bytes(),
        rss_bytes,
        peak_rss_bytes,
    })
}

/// Parses and evaluates one search, timing the evaluation only.
fn time_search(index: &LabelIndex, text: &str, today: i32) -> anyhow::Result<(Duration, u64)> {
    let query = parse_text(text).with_context(|| format!("generated query {text:?}"))?;
    let started = Instant::now();
    let size = index.evaluate(&query, today).len();
    Ok((started.elapsed(), size))
}

impl IndexReport {
    fn subjects_per_second(&self) -> f64 {
        self.patients as f64 / self.build.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let micros = |duration: Duration| duration.as_secs_f64() * 1e6;
        serde_json::json!({
            "benchmark": "index",
            "patients": self.patients,
            "queries": self.queries,
            "criteria_per_query": 5,
            "seed": self.seed,
            "cores": self.cores,
            "labels_per_subject": self.labels_per_subject,
            "values_per_subject": self.values_per_subject,
            "generate_seconds": self.generate.as_secs_f64(),
            "build_seconds": self.build.as_secs_f64(),
            "subjects_per_second": self.subjects_per_second(),
            "search_p50_us": micros(self.search_p50),
            "search_p99_us": micros(self.search_p99),
            "search_mean_us": micros(self.search_mean),
            "search_max_us": micros(self.search_max),
            "labels_alone_p50_us": micros(self.labels_p50),
            "age_alone_p50_us": micros(self.age_p50),
            "value_alone_p50_us": micros(self.value_p50),
            "cohort_median": self.cohort_median,
            "heap_bytes": self.heap_bytes,
            "rss_bytes": self.rss_bytes,
            "peak_rss_bytes": self.peak_rss_bytes,
        })
    }

    pub fn to_markdown(&self) -> String {
        let micros = |duration: Duration| format!("{:.0} µs", duration.as_secs_f64() * 1e6);
        let rows = [
            ("subjects", grouped(self.patients as u64)),
            (
                "labels / values per subject (mean)",
                format!("{:.1} / {:.1}", self.labels_per_subject, self.values_per_subject),
            ),
            ("build (upserts, then compact)", format!("{:.2} s", self.build.as_secs_f64())),
            ("build rate", format!("{} subjects/s", grouped(self.subjects_per_second() as u64))),
            ("searches", format!("{} × 5 criteria", self.queries)),
            ("search p50", micros(self.search_p50)),
            ("search p99", micros(self.search_p99)),
            ("search mean / max", format!("{} / {}", micros(self.search_mean), micros(self.search_max))),
            ("3 labels alone, p50", micros(self.labels_p50)),
            ("age range alone, p50", micros(self.age_p50)),
            ("value comparison alone, p50", micros(self.value_p50)),
            ("cohort size (median)", grouped(self.cohort_median)),
            ("heap_bytes", mebibytes(Some(self.heap_bytes as u64))),
            ("process RSS (VmRSS)", mebibytes(self.rss_bytes)),
            ("peak RSS (VmHWM)", mebibytes(self.peak_rss_bytes)),
        ];
        let mut out = format!(
            "kura-bench index: seed {}, {} cores, generating took {:.2} s\n\n| figure | value |\n| --- | --- |\n",
            self.seed,
            self.cores,
            self.generate.as_secs_f64()
        );
        for (figure, value) in rows {
            out.push_str(&format!("| {figure} | {value} |\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use kura_index::SubjectFacts;

    use super::*;

    #[test]
    fn options() {
        let check = |arguments: &[&str], expected: Result<(usize, usize, u64, bool), &str>| {
            let got = crate::figures::parse_flags::<IndexArgs>(arguments)
                .and_then(|args| IndexOptions::from_args(&args).map_err(|error| error.to_string()))
                .map(|options| (options.patients, options.queries, options.seed, options.json));
            match (got, expected) {
                (Ok(got), Ok(expected)) => assert_eq!(got, expected, "{arguments:?}"),
                (Err(got), Err(expected)) => assert!(got.contains(expected), "{arguments:?}: {got}"),
                (got, expected) => panic!("{arguments:?}: {got:?}, expected {expected:?}"),
            }
        };
        check(&[], Ok((1_000_000, 200, 42, false)));
        check(&["--smoke"], Ok((10_000, 20, 42, false)));
        check(&["--patients", "1_000", "--queries", "5", "--seed", "7", "--json"], Ok((1_000, 5, 7, true)));
        // An option given wins over --smoke's size, wherever it stands.
        check(&["--patients", "300", "--smoke"], Ok((300, 20, 42, false)));
        check(&["--patients"], Err("a value is required for '--patients <N>'"));
        check(&["--patients", "x"], Err("\"x\" is not a number"));
        check(&["--queries", "0"], Err("--patients and --queries must be at least 1"));
        check(&["--fast"], Err("unexpected argument '--fast'"));
    }

    #[test]
    fn a_small_run_reports_sane_figures() {
        let options = IndexOptions { patients: 2_000, queries: 5, seed: 1, json: true };
        let report = run_index_benchmark(&options).unwrap();
        assert_eq!((report.patients, report.queries), (2_000, 5));
        assert!(report.labels_per_subject > 5.0 && report.values_per_subject > 5.0);
        assert!(report.search_p50 <= report.search_p99 && report.search_p99 <= report.search_max);
        assert!(report.heap_bytes > 2_000 * 100);
        let json = report.to_json();
        assert_eq!(json["patients"], 2_000);
        assert!(report.to_markdown().contains("| search p99 |"));
    }

    #[test]
    fn the_population_is_reproducible() {
        let vocabulary = Vocabulary::new().unwrap();
        let births = (days_32(1925, 1, 1).unwrap(), days_32(2024, 12, 31).unwrap());
        let draw = |seed: u64| {
            let mut random = SplitMix64(seed);
            let mut facts = SubjectFacts::default();
            vocabulary.subject(&mut random, births, &mut facts);
            (facts, search(&vocabulary, &mut random).full())
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3).1, draw(4).1);
        let (facts, search) = draw(3);
        let birth = facts.birth_date_days.unwrap();
        assert!(births.0 <= birth && birth <= births.1);
        assert!(parse_text(&search).is_ok(), "{search}");
    }
}
