//! `kura-bench`: benchmarks for Kura's in-memory parts, run by hand or in CI.
//!
//! `kura-bench index [--patients N] [--queries Q] [--seed S] [--json] [--smoke]` builds a label
//! index over a seeded synthetic population and times five-criteria cohort searches on it. The
//! population is calibrated on the Synthea fixtures (`fixtures/synthea-r4/`): their SNOMED
//! condition codes and LOINC observation codes, with prevalences and value ranges smoothed to a
//! plausible population, since sixteen patients are too few to copy frequencies from.
//!
//! It owns nothing the server uses and must never touch a real data directory or the network.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kura_core::labels::Label;
use kura_core::time::days_from_civil;
use kura_index::{LabelIndex, SubjectFacts, parse_text};

const USAGE: &str = "usage: kura-bench index [--patients N] [--queries Q] [--seed S] [--json] [--smoke]";

/// SNOMED CT condition codes seen in the Synthea fixtures, with the share of the synthetic
/// population that has each. Draws are independent per code.
const CONDITIONS: [(&str, f64); 42] = [
    ("444814009", 0.45),       // viral sinusitis
    ("10509002", 0.35),        // acute bronchitis
    ("195662009", 0.35),       // acute viral pharyngitis
    ("38341003", 0.30),        // hypertension
    ("15777000", 0.25),        // prediabetes
    ("271737000", 0.20),       // anemia
    ("162864005", 0.20),       // body mass index 30+, obesity
    ("40055000", 0.12),        // chronic sinusitis
    ("72892002", 0.12),        // normal pregnancy
    ("44465007", 0.12),        // sprain of ankle
    ("44054006", 0.10),        // diabetes
    ("75498004", 0.10),        // acute bacterial sinusitis
    ("65363002", 0.10),        // otitis media
    ("43878008", 0.10),        // streptococcal sore throat
    ("24079001", 0.08),        // atopic dermatitis
    ("428251008", 0.08),       // history of appendectomy
    ("74400008", 0.08),        // appendicitis
    ("232353008", 0.08),       // perennial allergic rhinitis with seasonal variation
    ("38822007", 0.07),        // cystitis
    ("19169002", 0.06),        // miscarriage in first trimester
    ("65966004", 0.06),        // fracture of forearm
    ("283385000", 0.06),       // laceration of thigh
    ("201834006", 0.06),       // localized primary osteoarthritis of the hand
    ("284551006", 0.06),       // laceration of foot
    ("403190006", 0.06),       // first degree burn
    ("446096008", 0.06),       // perennial allergic rhinitis
    ("239873007", 0.06),       // osteoarthritis of knee
    ("62564004", 0.05),        // concussion with loss of consciousness
    ("39848009", 0.05),        // whiplash injury to neck
    ("370247008", 0.05),       // facial laceration
    ("233678006", 0.05),       // childhood asthma
    ("237602007", 0.05),       // metabolic syndrome X
    ("87433001", 0.04),        // pulmonary emphysema
    ("192127007", 0.04),       // child attention deficit disorder
    ("301011002", 0.04),       // Escherichia coli urinary tract infection
    ("53741008", 0.04),        // coronary heart disease
    ("302870006", 0.04),       // hypertriglyceridemia
    ("49436004", 0.03),        // atrial fibrillation
    ("368581000119106", 0.03), // neuropathy due to type 2 diabetes mellitus
    ("230690007", 0.02),       // stroke
    ("22298006", 0.02),        // myocardial infarction
    ("422034002", 0.02),       // diabetic retinopathy with type II diabetes mellitus
];

/// LOINC codes with numeric values in the fixtures: the share of people with any value, and the
/// range values are drawn from (uniformly, one decimal). Each such person has one to three values.
const OBSERVATIONS: [(&str, f64, f64, f64); 12] = [
    ("8302-2", 0.95, 50.0, 200.0),  // body height, cm
    ("29463-7", 0.95, 3.0, 150.0),  // body weight, kg
    ("39156-5", 0.90, 15.0, 45.0),  // body mass index, kg/m2
    ("72514-3", 0.90, 0.0, 10.0),   // pain severity, 0-10
    ("718-7", 0.60, 9.0, 18.0),     // hemoglobin, g/dL
    ("2093-3", 0.50, 120.0, 300.0), // total cholesterol, mg/dL
    ("2571-8", 0.50, 50.0, 400.0),  // triglycerides, mg/dL
    ("18262-6", 0.50, 50.0, 200.0), // LDL cholesterol, mg/dL
    ("2085-9", 0.50, 25.0, 100.0),  // HDL cholesterol, mg/dL
    ("4548-4", 0.35, 4.5, 12.0),    // hemoglobin A1c, %
    ("2339-0", 0.35, 60.0, 200.0),  // glucose, mg/dL
    ("38483-4", 0.35, 0.5, 2.0),    // creatinine, mg/dL
];

/// Institutions a subject's records come from; each subject has one or two.
const INSTITUTIONS: u64 = 50;

fn main() -> anyhow::Result<()> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    match arguments.first().map(String::as_str) {
        Some("index") => {
            let options = IndexOptions::parse(&arguments[1..])?;
            let report = run_index_benchmark(&options)?;
            if options.json {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                print!("{}", report.to_markdown());
            }
            Ok(())
        }
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

#[derive(Debug)]
struct IndexOptions {
    patients: usize,
    queries: usize,
    seed: u64,
    json: bool,
}

impl IndexOptions {
    fn parse(arguments: &[String]) -> anyhow::Result<Self> {
        let mut options = Self { patients: 1_000_000, queries: 200, seed: 42, json: false };
        let mut rest = arguments.iter();
        while let Some(argument) = rest.next() {
            let mut number = |name: &str| -> anyhow::Result<u64> {
                let text = rest.next().with_context(|| format!("{name} needs a number\n{USAGE}"))?;
                text.replace('_', "").parse().with_context(|| format!("{name} {text:?} is not a number"))
            };
            match argument.as_str() {
                "--patients" => options.patients = usize::try_from(number("--patients")?)?,
                "--queries" => options.queries = usize::try_from(number("--queries")?)?,
                "--seed" => options.seed = number("--seed")?,
                "--json" => options.json = true,
                "--smoke" => {
                    options.patients = 10_000;
                    options.queries = 20;
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        if options.patients == 0 || options.queries == 0 {
            bail!("--patients and --queries must be at least 1");
        }
        Ok(options)
    }
}

/// SplitMix64: tiny, fast and well mixed, which is all a reproducible synthetic population needs.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..bound`, by multiply-shift (bias below 2^-64 per draw).
    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    fn chance(&mut self, probability: f64) -> bool {
        self.unit() < probability
    }

    fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }
}

/// The vocabulary as parsed labels, so generating a subject only clones them.
struct Vocabulary {
    conditions: Vec<(Label, f64)>,
    observations: Vec<(Label, f64, f64, f64)>,
    female: Label,
    male: Label,
    patient: Label,
    condition: Label,
    observation: Label,
    institutions: Vec<Label>,
}

impl Vocabulary {
    fn new() -> anyhow::Result<Self> {
        let label = |text: String| Label::parse(&text).with_context(|| format!("bad label {text}"));
        Ok(Self {
            conditions: CONDITIONS
                .iter()
                .map(|&(code, share)| Ok((label(format!("snomed:{code}"))?, share)))
                .collect::<anyhow::Result<_>>()?,
            observations: OBSERVATIONS
                .iter()
                .map(|&(code, share, low, high)| Ok((label(format!("loinc:{code}"))?, share, low, high)))
                .collect::<anyhow::Result<_>>()?,
            female: label("sex:female".to_owned())?,
            male: label("sex:male".to_owned())?,
            patient: label("type:Patient".to_owned())?,
            condition: label("type:Condition".to_owned())?,
            observation: label("type:Observation".to_owned())?,
            institutions: (0..INSTITUTIONS)
                .map(|n| label(format!("institution:org-{n:02}")))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// Fills `facts` with one synthetic subject, reusing its buffers.
    fn subject(&self, random: &mut SplitMix64, births: (i32, i32), facts: &mut SubjectFacts) {
        facts.labels.clear();
        facts.values.clear();
        facts.labels.push(self.patient.clone());
        facts.labels.push(if random.chance(0.5) { self.female.clone() } else { self.male.clone() });
        facts.labels.push(self.institutions[random.below(INSTITUTIONS) as usize].clone());
        if random.chance(0.3) {
            facts.labels.push(self.institutions[random.below(INSTITUTIONS) as usize].clone());
        }
        let span = u64::try_from(births.1 - births.0).unwrap_or(0) + 1;
        facts.birth_date_days = Some(births.0 + i32::try_from(random.below(span)).unwrap_or(0));
        let mut any_condition = false;
        for (label, share) in &self.conditions {
            if random.chance(*share) {
                facts.labels.push(label.clone());
                any_condition = true;
            }
        }
        if any_condition {
            facts.labels.push(self.condition.clone());
        }
        for (code, share, low, high) in &self.observations {
            if !random.chance(*share) {
                continue;
            }
            facts.labels.push(code.clone());
            for _ in 0..=random.below(3) {
                let value = (random.between(*low, *high) * 10.0).round() / 10.0;
                facts.values.push((code.clone(), value));
            }
        }
        if !facts.values.is_empty() {
            facts.labels.push(self.observation.clone());
        }
    }

    /// A five-criteria search: a condition, a sex, an age range, a value comparison and a second
    /// condition, as a researcher would narrow a cohort. Conditions come from the ones at least
    /// 5% of people have, so that cohorts are not trivially empty.
    fn search(&self, random: &mut SplitMix64) -> Search {
        let common: Vec<&Label> =
            self.conditions.iter().filter(|(_, share)| *share >= 0.05).map(|(label, _)| label).collect();
        let first = common[random.below(common.len() as u64) as usize];
        let second = loop {
            let candidate = common[random.below(common.len() as u64) as usize];
            if candidate != first {
                break candidate;
            }
        };
        let sex = if random.chance(0.5) { &self.female } else { &self.male };
        let youngest = 18 + random.below(50);
        let oldest = youngest + 10 + random.below(30);
        let (code, _, low, high) = &self.observations[random.below(self.observations.len() as u64) as usize];
        let op = [">", ">=", "<", "<="][random.below(4) as usize];
        let threshold = (random.between(*low, *high) * 10.0).round() / 10.0;
        Search {
            labels: format!("{first} AND {sex} AND {second}"),
            age: format!("age:{youngest}..{oldest}"),
            value: format!("{code}{op}{threshold}"),
        }
    }
}

/// The parts of one benchmark search, timed together and apart.
struct Search {
    /// The two conditions and the sex.
    labels: String,
    age: String,
    value: String,
}

impl Search {
    fn full(&self) -> String {
        format!("{} AND {} AND {}", self.labels, self.age, self.value)
    }
}

struct IndexReport {
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

fn run_index_benchmark(options: &IndexOptions) -> anyhow::Result<IndexReport> {
    let vocabulary = Vocabulary::new()?;
    let mut random = SplitMix64(options.seed);
    let births = (days_32(1925, 1, 1)?, days_32(2024, 12, 31)?);
    let today = days_32(2025, 1, 1)?;

    let mut index = LabelIndex::new();
    let mut facts = SubjectFacts::default();
    let (mut generate, mut build) = (Duration::ZERO, Duration::ZERO);
    let (mut labels, mut values) = (0usize, 0usize);
    for _ in 0..options.patients {
        let started = Instant::now();
        let key = format!("account:{:016x}{:016x}", random.next_u64(), random.next_u64());
        vocabulary.subject(&mut random, births, &mut facts);
        labels += facts.labels.len();
        values += facts.values.len();
        let generated = Instant::now();
        index.upsert(&key, &facts);
        build += generated.elapsed();
        generate += generated - started;
    }
    let started = Instant::now();
    index.compact();
    build += started.elapsed();

    let mut timings = Vec::with_capacity(options.queries);
    let mut cohorts = Vec::with_capacity(options.queries);
    let (mut labels_only, mut age_only, mut value_only) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..options.queries {
        let search = vocabulary.search(&mut random);
        let (elapsed, size) = time_search(&index, &search.full(), today)?;
        timings.push(elapsed);
        cohorts.push(size);
        // The same search's parts alone, to show what each criterion costs.
        labels_only.push(time_search(&index, &search.labels, today)?.0);
        age_only.push(time_search(&index, &search.age, today)?.0);
        value_only.push(time_search(&index, &search.value, today)?.0);
    }
    for parts in [&mut labels_only, &mut age_only, &mut value_only] {
        parts.sort_unstable();
    }
    timings.sort_unstable();
    cohorts.sort_unstable();
    let (rss_bytes, peak_rss_bytes) = process_memory();
    let patients = options.patients as f64;
    Ok(IndexReport {
        patients: options.patients,
        queries: options.queries,
        seed: options.seed,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        labels_per_subject: labels as f64 / patients,
        values_per_subject: values as f64 / patients,
        generate,
        build,
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

fn days_32(year: i64, month: u32, day: u32) -> anyhow::Result<i32> {
    Ok(i32::try_from(days_from_civil(year, month, day))?)
}

/// The nearest-rank percentile of sorted samples.
fn percentile<T: Copy + Default>(sorted: &[T], share: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = (share * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Resident and peak resident memory of this process, from `/proc/self/status` (Linux only).
fn process_memory() -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (None, None);
    };
    let field = |name: &str| {
        status.lines().find_map(|line| {
            let kilobytes = line.strip_prefix(name)?.trim().strip_suffix("kB")?.trim();
            kilobytes.parse::<u64>().ok().map(|kilobytes| kilobytes * 1024)
        })
    };
    (field("VmRSS:"), field("VmHWM:"))
}

impl IndexReport {
    fn subjects_per_second(&self) -> f64 {
        self.patients as f64 / self.build.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    fn to_json(&self) -> serde_json::Value {
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

    fn to_markdown(&self) -> String {
        let micros = |duration: Duration| format!("{:.0} µs", duration.as_secs_f64() * 1e6);
        let mebibytes =
            |bytes: Option<u64>| bytes.map_or("n/a".to_owned(), |bytes| format!("{:.0} MiB", bytes as f64 / 1048576.0));
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

/// `1234567` as `1,234,567`.
fn grouped(number: u64) -> String {
    let digits = number.to_string();
    let mut out = String::new();
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let check = |arguments: &[&str], expected: Result<(usize, usize, u64, bool), &str>| {
            let arguments: Vec<String> = arguments.iter().map(|argument| (*argument).to_owned()).collect();
            let got = IndexOptions::parse(&arguments)
                .map(|options| (options.patients, options.queries, options.seed, options.json))
                .map_err(|error| error.to_string());
            assert_eq!(got, expected.map_err(str::to_owned), "{arguments:?}");
        };
        check(&[], Ok((1_000_000, 200, 42, false)));
        check(&["--smoke"], Ok((10_000, 20, 42, false)));
        check(&["--patients", "1_000", "--queries", "5", "--seed", "7", "--json"], Ok((1_000, 5, 7, true)));
        check(&["--patients"], Err(&format!("--patients needs a number\n{USAGE}")));
        check(&["--patients", "x"], Err("--patients \"x\" is not a number"));
        check(&["--queries", "0"], Err("--patients and --queries must be at least 1"));
        check(&["--fast"], Err(&format!("unknown argument \"--fast\"\n{USAGE}")));
    }

    #[test]
    fn figures_are_formatted() {
        let check = |number: u64, expected: &str| assert_eq!(grouped(number), expected);
        check(0, "0");
        check(999, "999");
        check(1_000, "1,000");
        check(1_234_567, "1,234,567");
        let samples = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!((percentile(&samples, 0.5), percentile(&samples, 0.99), percentile(&samples, 0.0)), (5, 10, 1));
        assert_eq!(percentile::<u64>(&[], 0.5), 0);
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
            (facts, vocabulary.search(&mut random).full())
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3).1, draw(4).1);
        let (facts, search) = draw(3);
        let birth = facts.birth_date_days.unwrap();
        assert!(births.0 <= birth && birth <= births.1);
        assert!(parse_text(&search).is_ok(), "{search}");
    }
}
