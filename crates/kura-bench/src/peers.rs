//! `kura-bench peers`: Kura next to the tools a researcher would otherwise use, on the same
//! seeded population in the same run.
//!
//! - **Cohort search vs PostgreSQL.** The population is loaded into a scratch PostgreSQL database
//!   as OMOP/ATLAS-like tables (`persons(patient, birth)`, `labels(patient, label)`,
//!   `measurements(patient, code, value)`, indexed on `(birth, patient)`, `(label, patient)` and
//!   `(code, value, patient)`), and the `index` benchmark's five-criteria searches (the same
//!   generator and seed, so the same searches) run as SQL in two forms a competent user would
//!   write, `INTERSECT` of the criteria and `EXISTS` per criterion, next to `LabelIndex::evaluate`.
//!   The counts must agree. The database is dropped at the end, also after an error.
//! - **Aggregate vs DuckDB.** The analysis benchmark's histogram and mean of HbA1c, over a
//!   diabetic cohort and over everyone, by `kura_stats::compute` + `control` and by DuckDB (a
//!   Python script, `peers/duckdb_aggregate.py`, reading the same population from TSV files into
//!   memory). `n` and the mean must agree. DuckDB is installed with pip if missing (not with
//!   `--smoke`); the part is skipped, saying why, if it cannot be had.
//!
//! PostgreSQL is found at `KURA_BENCH_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); with `--smoke` an unreachable server skips
//! that part instead of failing.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use kura_core::time::civil_from_days;
use kura_index::{LabelIndex, SubjectFacts, parse_text};
use kura_stats::result::MeasureResult;
use kura_stats::{Context, Partition, Shard, compute, control, parse_spec};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Executor, Row};

use crate::analysis_bench::{CODE, EDGES, K, SeededNoise, member_key, spec_json};
use crate::figures::{RunFlags, count, days_32, grouped, number, percentile};
use crate::index_bench::{Search, search};
use crate::population::{SplitMix64, Vocabulary};

/// `kura-bench peers`: the index searches on PostgreSQL and the analysis on DuckDB.
#[derive(Debug, Default, clap::Args)]
pub struct PeersArgs {
    /// People in the population [default: 1,000,000; with --smoke 10,000].
    #[arg(long, value_name = "N", value_parser = count)]
    pub patients: Option<usize>,
    /// Searches timed [default: 50; with --smoke 20].
    #[arg(long, value_name = "Q", value_parser = count)]
    pub queries: Option<usize>,
    /// Timed runs of each aggregate [default: 20; with --smoke 5].
    #[arg(long, value_name = "R", value_parser = count)]
    pub runs: Option<usize>,
    /// The population's seed [default: 42].
    #[arg(long, value_name = "S", value_parser = number)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub run: RunFlags,
}

/// The PostgreSQL server used when `KURA_BENCH_POSTGRES_URL` is not set.
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The DuckDB peer, written next to the data it reads when it runs.
const DUCKDB_SCRIPT: &str = include_str!("../peers/duckdb_aggregate.py");

/// The cohorts of the aggregate, as in the analysis benchmark: a name, the Kura query, and the
/// DuckDB cohort (a label, or everyone born by the evaluation day).
const COHORTS: [(&str, &str, Option<&str>); 2] =
    [("diabetic", "snomed:44054006", Some("snomed:44054006")), ("everyone", "age:0..", None)];

#[derive(Debug)]
pub struct PeersOptions {
    pub patients: usize,
    pub queries: usize,
    pub runs: usize,
    pub seed: u64,
    pub json: bool,
    pub smoke: bool,
}

impl PeersOptions {
    pub fn from_args(args: &PeersArgs) -> anyhow::Result<Self> {
        let options = Self {
            patients: args.patients.unwrap_or(if args.run.smoke { 10_000 } else { 1_000_000 }),
            queries: args.queries.unwrap_or(if args.run.smoke { 20 } else { 50 }),
            runs: args.runs.unwrap_or(if args.run.smoke { 5 } else { 20 }),
            seed: args.seed.unwrap_or(42),
            json: args.run.json,
            smoke: args.run.smoke,
        };
        if options.patients == 0 || options.queries == 0 || options.runs == 0 {
            bail!("--patients, --queries and --runs must be at least 1");
        }
        Ok(options)
    }
}

/// The population as the rows of the three peer tables, tab-separated, as `COPY` and DuckDB's
/// `read_csv` take them. A subject's position in the index is its `patient` number.
#[derive(Default)]
struct Tables {
    persons: Vec<u8>,
    labels: Vec<u8>,
    measurements: Vec<u8>,
    label_rows: u64,
    value_rows: u64,
}

/// Generates the population exactly as [`crate::population::build_population`] does (same draws,
/// so the searches drawn after it are the `index` benchmark's), indexing it and writing its rows.
fn build(
    vocabulary: &Vocabulary,
    random: &mut SplitMix64,
    births: (i32, i32),
    patients: usize,
) -> (LabelIndex, Tables) {
    let mut index = LabelIndex::new();
    let mut tables = Tables::default();
    let mut facts = SubjectFacts::default();
    for patient in 0..patients {
        let key = format!("account:{:016x}{:016x}", random.next_u64(), random.next_u64());
        vocabulary.subject(random, births, &mut facts);
        index.upsert(&key, &facts);
        if let Some(birth) = facts.birth_date_days {
            let (year, month, day) = civil_from_days(i64::from(birth));
            let _ = writeln!(Rows(&mut tables.persons), "{patient}\t{year:04}-{month:02}-{day:02}");
        }
        let mut labels: Vec<&str> = facts.labels.iter().map(|label| label.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        for label in &labels {
            let _ = writeln!(Rows(&mut tables.labels), "{patient}\t{label}");
        }
        for (code, value) in &facts.values {
            let _ = writeln!(Rows(&mut tables.measurements), "{patient}\t{code}\t{value}");
        }
        tables.label_rows += labels.len() as u64;
        tables.value_rows += facts.values.len() as u64;
    }
    index.compact();
    (index, tables)
}

/// `fmt::Write` into a byte buffer, so rows are formatted without a `String` each.
struct Rows<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Rows<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

/// One benchmark search's criteria, pulled back out of its query text for SQL.
#[derive(Debug, PartialEq)]
struct Criteria {
    labels: [String; 3],
    /// Ages `youngest..=oldest` in whole years on the evaluation day.
    youngest: u32,
    oldest: u32,
    code: String,
    op: &'static str,
    threshold: String,
}

impl Criteria {
    fn of(search: &Search) -> anyhow::Result<Self> {
        let labels: Vec<String> = search.labels.split(" AND ").map(str::to_owned).collect();
        let labels: [String; 3] =
            labels.try_into().map_err(|labels| anyhow::anyhow!("expected three labels, got {labels:?}"))?;
        let (youngest, oldest) = search
            .age
            .strip_prefix("age:")
            .and_then(|range| range.split_once(".."))
            .with_context(|| format!("unexpected age criterion {:?}", search.age))?;
        let op = [">=", "<=", ">", "<"]
            .into_iter()
            .find(|op| search.value.contains(op))
            .with_context(|| format!("unexpected value criterion {:?}", search.value))?;
        let (code, threshold) = search.value.split_once(op).context("a value criterion")?;
        threshold.parse::<f64>().with_context(|| format!("threshold {threshold:?}"))?;
        Ok(Self {
            labels,
            youngest: youngest.parse()?,
            oldest: oldest.parse()?,
            code: code.to_owned(),
            op,
            threshold: threshold.to_owned(),
        })
    }

    /// Birth dates of people aged `youngest..=oldest` on `today`: after the first, up to and
    /// including the second. `today` is 1 January, so no 29 February is in play.
    fn births(&self, today: (i64, u32, u32)) -> (String, String) {
        let (year, month, day) = today;
        let date = |year: i64| format!("{year:04}-{month:02}-{day:02}");
        (date(year - i64::from(self.oldest) - 1), date(year - i64::from(self.youngest)))
    }

    /// The search as an ATLAS user would write it with set operations.
    fn intersect_sql(&self, today: (i64, u32, u32)) -> String {
        let [first, sex, second] = self.labels.each_ref().map(|label| quoted(label));
        let (after, until) = self.births(today);
        format!(
            "SELECT count(*) FROM (\
             SELECT patient FROM labels WHERE label = {first} \
             INTERSECT SELECT patient FROM labels WHERE label = {sex} \
             INTERSECT SELECT patient FROM labels WHERE label = {second} \
             INTERSECT SELECT patient FROM persons WHERE birth > DATE '{after}' AND birth <= DATE '{until}' \
             INTERSECT SELECT patient FROM measurements WHERE code = {code} AND value {op} {threshold}::float8\
             ) AS cohort",
            code = quoted(&self.code),
            op = self.op,
            threshold = self.threshold,
        )
    }

    /// The same search with one semi-join per criterion, which the planner may order.
    fn exists_sql(&self, today: (i64, u32, u32)) -> String {
        let [first, sex, second] = self.labels.each_ref().map(|label| quoted(label));
        let (after, until) = self.births(today);
        let has = |label: &str| {
            format!(" AND EXISTS (SELECT 1 FROM labels l WHERE l.patient = p.patient AND l.label = {label})")
        };
        format!(
            "SELECT count(*) FROM persons p WHERE p.birth > DATE '{after}' AND p.birth <= DATE '{until}'{}{}{} \
             AND EXISTS (SELECT 1 FROM measurements m WHERE m.patient = p.patient AND m.code = {code} \
             AND m.value {op} {threshold}::float8)",
            has(&first),
            has(&sex),
            has(&second),
            code = quoted(&self.code),
            op = self.op,
            threshold = self.threshold,
        )
    }
}

/// A SQL string literal.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Median, 99th percentile and largest of some timings.
#[derive(Debug, Clone, Copy, Default)]
struct Spread {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Spread {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self {
            p50: percentile(&samples, 0.50),
            p99: percentile(&samples, 0.99),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

/// What the PostgreSQL peer loaded and measured.
struct PostgresFigures {
    version: String,
    copy: Duration,
    index: Duration,
    intersect: Spread,
    exists: Spread,
}

/// The search figures: Kura's and, unless skipped, PostgreSQL's.
struct SearchFigures {
    kura: Spread,
    cohort_median: u64,
    postgres: Result<PostgresFigures, String>,
}

/// One cohort's aggregate: Kura's engine and, unless skipped, DuckDB's.
struct AggregateFigures {
    name: &'static str,
    cohort: u64,
    n: u64,
    mean: f64,
    /// `compute` + `control`, and `compute` alone.
    kura: Spread,
    kura_compute: Spread,
    duckdb: Option<(Spread, u64, f64, Vec<u64>)>,
}

pub struct PeersReport {
    patients: usize,
    queries: usize,
    runs: usize,
    seed: u64,
    cores: usize,
    label_rows: u64,
    value_rows: u64,
    build: Duration,
    searches: SearchFigures,
    aggregates: Vec<AggregateFigures>,
    duckdb: Result<DuckdbRun, String>,
}

/// How DuckDB was had and what loading cost.
struct DuckdbRun {
    version: String,
    threads: String,
    installed_now: bool,
    load: Duration,
}

pub fn run_peers_benchmark(options: &PeersOptions) -> anyhow::Result<PeersReport> {
    let vocabulary = Vocabulary::new()?;
    let mut random = SplitMix64(options.seed);
    let births = (days_32(1925, 1, 1)?, days_32(2024, 12, 31)?);
    let today = days_32(2025, 1, 1)?;
    let today_civil = civil_from_days(i64::from(today));
    let started = Instant::now();
    let (index, tables) = build(&vocabulary, &mut random, births, options.patients);
    let build = started.elapsed();
    let searches: Vec<Search> = (0..options.queries).map(|_| search(&vocabulary, &mut random)).collect();

    // Kura: each search once to warm up, then timed.
    let mut kura = Vec::new();
    let mut counts = Vec::new();
    for search in &searches {
        let query = parse_text(&search.full()).with_context(|| format!("generated query {:?}", search.full()))?;
        let count = index.evaluate(&query, today).len();
        let started = Instant::now();
        let again = index.evaluate(&query, today).len();
        kura.push(started.elapsed());
        ensure!(count == again, "the search {:?} counted {count}, then {again}", search.full());
        counts.push(count);
    }
    let mut sorted = counts.clone();
    sorted.sort_unstable();
    let criteria: Vec<Criteria> = searches.iter().map(Criteria::of).collect::<anyhow::Result<_>>()?;
    let postgres = match postgres_peer(&tables, &criteria, &counts, today_civil) {
        Ok(figures) => Ok(figures),
        Err(error) if options.smoke && error.is::<Unreachable>() => Err(format!("skipped: {error:#}")),
        Err(error) => return Err(error),
    };
    let searches = SearchFigures { kura: Spread::of(kura), cohort_median: percentile(&sorted, 0.5), postgres };

    let duckdb = duckdb_peer(&tables, options, today_civil);
    let (duckdb, duckdb_cohorts) = match duckdb {
        Ok((run, cohorts)) => (Ok(run), cohorts),
        Err(error) => (Err(format!("skipped: {error:#}")), Vec::new()),
    };
    let mut noise = SeededNoise(random);
    let mut aggregates = Vec::new();
    for (name, query, _) in COHORTS {
        let mut figures = kura_aggregate(&index, name, query, today, options.runs, &mut noise)?;
        if let Some(peer) = duckdb_cohorts.iter().find(|cohort| cohort["name"] == name) {
            figures.duckdb = Some(check_duckdb(&figures, peer)?);
        }
        aggregates.push(figures);
    }
    Ok(PeersReport {
        patients: options.patients,
        queries: options.queries,
        runs: options.runs,
        seed: options.seed,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        label_rows: tables.label_rows,
        value_rows: tables.value_rows,
        build,
        searches,
        aggregates,
        duckdb,
    })
}

/// PostgreSQL could not be reached at all (as opposed to failing once connected).
#[derive(Debug)]
struct Unreachable {
    url: String,
    source: sqlx::Error,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgreSQL at {} is unreachable: {}", self.url, self.source)
    }
}

impl std::error::Error for Unreachable {}

/// Loads the tables into a scratch database, runs the searches in both SQL forms (each once to
/// warm up, then timed), checks their counts against Kura's and drops the database.
fn postgres_peer(
    tables: &Tables,
    criteria: &[Criteria],
    counts: &[u64],
    today: (i64, u32, u32),
) -> anyhow::Result<PostgresFigures> {
    let url = std::env::var("KURA_BENCH_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let options = PgConnectOptions::from_str(&url).with_context(|| format!("KURA_BENCH_POSTGRES_URL {url:?}"))?;
        let mut admin = options.connect().await.map_err(|source| Unreachable { url: url.clone(), source })?;
        let name = format!("kura_bench_{:016x}", nonce());
        admin.execute(format!("CREATE DATABASE {name}").as_str()).await?;
        let result = async {
            let mut connection = options.clone().database(&name).connect().await?;
            let figures = postgres_run(&mut connection, tables, criteria, counts, today).await;
            connection.close().await?;
            figures
        }
        .await;
        let dropped = admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
        let figures = result?;
        dropped.with_context(|| format!("dropping the scratch database {name}"))?;
        Ok(figures)
    })
}

async fn postgres_run(
    connection: &mut PgConnection,
    tables: &Tables,
    criteria: &[Criteria],
    counts: &[u64],
    today: (i64, u32, u32),
) -> anyhow::Result<PostgresFigures> {
    let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&mut *connection).await?;
    let version = version.split_whitespace().next().unwrap_or_default().to_owned();
    // Unlogged: a scratch copy need not survive a crash, and loading skips the write-ahead log.
    // Queries run the same on it. work_mem is raised as an analyst would for set operations.
    connection
        .execute(
            "CREATE UNLOGGED TABLE persons (patient bigint NOT NULL, birth date NOT NULL); \
             CREATE UNLOGGED TABLE labels (patient bigint NOT NULL, label text NOT NULL); \
             CREATE UNLOGGED TABLE measurements (patient bigint NOT NULL, code text NOT NULL, \
             value double precision NOT NULL); \
             SET work_mem = '256MB'; SET maintenance_work_mem = '1GB'",
        )
        .await?;
    let started = Instant::now();
    for (table, rows) in
        [("persons", &tables.persons), ("labels", &tables.labels), ("measurements", &tables.measurements)]
    {
        let mut copy = connection.copy_in_raw(&format!("COPY {table} FROM STDIN")).await?;
        for chunk in rows.chunks(1 << 20) {
            copy.send(chunk).await?;
        }
        copy.finish().await.with_context(|| format!("COPY {table}"))?;
    }
    let copied = started.elapsed();
    let started = Instant::now();
    connection
        .execute(
            "ALTER TABLE persons ADD PRIMARY KEY (patient); \
             CREATE INDEX ON persons (birth, patient); \
             CREATE INDEX ON labels (label, patient); \
             CREATE INDEX ON measurements (code, value, patient)",
        )
        .await?;
    // Vacuum sets the visibility map, so the indexes answer alone (index-only scans).
    connection.execute("VACUUM ANALYZE persons, labels, measurements").await?;
    let indexed = started.elapsed();

    let (mut intersect, mut exists) = (Vec::new(), Vec::new());
    for (criteria, &expected) in criteria.iter().zip(counts) {
        for (form, sql, timings) in [
            ("INTERSECT", criteria.intersect_sql(today), &mut intersect),
            ("EXISTS", criteria.exists_sql(today), &mut exists),
        ] {
            let count = |row: sqlx::postgres::PgRow| row.try_get::<i64, _>(0);
            let warm = count(sqlx::raw_sql(&sql).fetch_one(&mut *connection).await?)?;
            let started = Instant::now();
            let timed = count(sqlx::raw_sql(&sql).fetch_one(&mut *connection).await?)?;
            timings.push(started.elapsed());
            ensure!(
                u64::try_from(warm).ok() == Some(expected) && warm == timed,
                "PostgreSQL's {form} form counted {warm} (then {timed}) where Kura counted {expected}: {sql}"
            );
        }
    }
    Ok(PostgresFigures {
        version,
        copy: copied,
        index: indexed,
        intersect: Spread::of(intersect),
        exists: Spread::of(exists),
    })
}

/// A number for scratch names that another run is unlikely to pick at the same moment.
fn nonce() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos() as u64);
    SplitMix64(nanos ^ u64::from(std::process::id()).rotate_left(32)).next_u64()
}

/// A scratch folder, removed when dropped.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Has DuckDB for Python (installing it with pip unless `--smoke`), writes the tables and runs
/// the script. Returns how it ran and its per-cohort figures.
fn duckdb_peer(
    tables: &Tables,
    options: &PeersOptions,
    today: (i64, u32, u32),
) -> anyhow::Result<(DuckdbRun, Vec<serde_json::Value>)> {
    let importable =
        || Command::new("python3").args(["-c", "import duckdb"]).output().is_ok_and(|output| output.status.success());
    let mut installed_now = false;
    if !importable() {
        ensure!(!options.smoke, "DuckDB for Python is not installed (--smoke does not install it)");
        eprintln!("kura-bench peers: installing DuckDB: python3 -m pip install --quiet duckdb");
        let status = Command::new("python3").args(["-m", "pip", "install", "--quiet", "duckdb"]).status();
        ensure!(
            status.as_ref().is_ok_and(|status| status.success()) && importable(),
            "installing DuckDB with pip failed ({status:?})"
        );
        installed_now = true;
    }
    let folder = ScratchDir(std::env::temp_dir().join(format!("kura-bench-peers-{:016x}", nonce())));
    std::fs::create_dir_all(&folder.0)?;
    let write = |name: &str, bytes: &[u8]| -> anyhow::Result<PathBuf> {
        let path = folder.0.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    write("persons.tsv", &tables.persons)?;
    write("labels.tsv", &tables.labels)?;
    write("measurements.tsv", &tables.measurements)?;
    let script = write("duckdb_aggregate.py", DUCKDB_SCRIPT.as_bytes())?;
    let (year, month, day) = today;
    let cohorts: Vec<serde_json::Value> = COHORTS
        .iter()
        .map(|(name, _, label)| match label {
            Some(label) => json!({"name": name, "label": label}),
            None => json!({"name": name}),
        })
        .collect();
    let config = json!({
        "dir": folder.0,
        "runs": options.runs,
        "code": format!("loinc:{CODE}"),
        "edges": EDGES,
        "today": format!("{year:04}-{month:02}-{day:02}"),
        "cohorts": cohorts,
    });
    let output = Command::new("python3").arg(&script).arg(config.to_string()).output()?;
    ensure!(
        output.status.success(),
        "the DuckDB script failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).context("the DuckDB script's JSON")?;
    let run = DuckdbRun {
        version: report["duckdb_version"].as_str().unwrap_or("?").to_owned(),
        threads: report["threads"].to_string(),
        installed_now,
        load: Duration::from_secs_f64(report["load_seconds"].as_f64().unwrap_or(0.0)),
    };
    Ok((run, report["cohorts"].as_array().cloned().unwrap_or_default()))
}

/// Kura's engine on one cohort: `compute` + `control` from an empty partition, `runs` times
/// after a warm-up, and the released `n` and mean.
fn kura_aggregate(
    index: &LabelIndex,
    name: &'static str,
    query: &str,
    today: i32,
    runs: usize,
    noise: &mut SeededNoise,
) -> anyhow::Result<AggregateFigures> {
    let spec = parse_spec(&spec_json(query)).with_context(|| format!("the {name} spec"))?;
    let shards = [Shard::new(index, index.everyone())];
    let context = Context { k: K, today_days: today, member_key: &member_key };
    let (mut both, mut computes) = (Vec::new(), Vec::new());
    let mut released = None;
    for run in 0..=runs {
        let started = Instant::now();
        let computation = compute(&spec, &shards, &context);
        let computed = started.elapsed();
        let release = control(&spec, &computation, &Partition::default(), K, noise)?;
        let elapsed = started.elapsed();
        if run == 0 {
            let Some(MeasureResult::Summary { n: Some(n), mean: Some(Some(mean)), .. }) =
                release.result.measures.first()
            else {
                bail!("the {name} summary was withheld: {:?}", release.result.measures.first());
            };
            released = Some((computation.cohort_size(), *n, *mean));
        } else {
            both.push(elapsed);
            computes.push(computed);
        }
    }
    let (cohort, n, mean) = released.context("no warm-up run")?;
    Ok(AggregateFigures {
        name,
        cohort,
        n,
        mean,
        kura: Spread::of(both),
        kura_compute: Spread::of(computes),
        duckdb: None,
    })
}

/// DuckDB's figures for a cohort, checked against Kura's: the same cohort and `n`, and the mean
/// within Kura's rounding (4 decimals).
fn check_duckdb(kura: &AggregateFigures, peer: &serde_json::Value) -> anyhow::Result<(Spread, u64, f64, Vec<u64>)> {
    let number = |field: &str| peer[field].as_u64().with_context(|| format!("DuckDB's {field}: {peer}"));
    let (cohort, n) = (number("cohort")?, number("n")?);
    let mean = peer["mean"].as_f64().with_context(|| format!("DuckDB's mean: {peer}"))?;
    ensure!(
        cohort == kura.cohort && n == kura.n && (mean - kura.mean).abs() <= 1e-4,
        "DuckDB and Kura disagree on the {} cohort: cohort {cohort} vs {}, n {n} vs {}, mean {mean} vs {}",
        kura.name,
        kura.cohort,
        kura.n,
        kura.mean
    );
    let bins: Vec<u64> = peer["bins"].as_array().into_iter().flatten().filter_map(serde_json::Value::as_u64).collect();
    ensure!(bins.len() == EDGES.len() + 1 && bins.iter().sum::<u64>() == n, "DuckDB's bins {bins:?} for n {n}");
    let millis = |field: &str| Duration::from_secs_f64(peer[field].as_f64().unwrap_or(0.0) / 1e3);
    Ok((Spread { p50: millis("p50_ms"), p99: millis("p99_ms"), max: millis("p99_ms") }, n, mean, bins))
}

/// A duration in µs below a millisecond, else in ms.
fn shown(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 1_000.0 { format!("{micros:.0} µs") } else { format!("{:.1} ms", micros / 1_000.0) }
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// How many times slower `peer` is than `kura`.
fn ratio(peer: Duration, kura: Duration) -> f64 {
    peer.as_secs_f64() / kura.as_secs_f64().max(1e-9)
}

impl PeersReport {
    pub fn to_json(&self) -> serde_json::Value {
        let spread = |spread: &Spread| json!({"p50_ms": millis(spread.p50), "p99_ms": millis(spread.p99), "max_ms": millis(spread.max)});
        let kura = &self.searches.kura;
        let postgres = match &self.searches.postgres {
            Ok(figures) => {
                let best = figures.intersect.p50.min(figures.exists.p50);
                json!({
                    "version": figures.version,
                    "copy_seconds": figures.copy.as_secs_f64(),
                    "index_and_vacuum_seconds": figures.index.as_secs_f64(),
                    "intersect": spread(&figures.intersect),
                    "exists": spread(&figures.exists),
                    "best_p50_over_kura_p50": ratio(best, kura.p50),
                })
            }
            Err(skipped) => json!({"skipped": skipped}),
        };
        let aggregates: Vec<serde_json::Value> = self
            .aggregates
            .iter()
            .map(|figures| {
                json!({
                    "name": figures.name,
                    "cohort": figures.cohort,
                    "n": figures.n,
                    "mean": figures.mean,
                    "kura_compute_control": spread(&figures.kura),
                    "kura_compute": spread(&figures.kura_compute),
                    "duckdb": figures.duckdb.as_ref().map(|(timings, _, mean, bins)| json!({
                        "p50_ms": millis(timings.p50),
                        "p99_ms": millis(timings.p99),
                        "mean": mean,
                        "bins": bins,
                        "kura_p50_over_duckdb_p50": ratio(figures.kura.p50, timings.p50),
                    })),
                })
            })
            .collect();
        let duckdb = match &self.duckdb {
            Ok(run) => json!({
                "version": run.version,
                "threads": run.threads,
                "installed_now": run.installed_now,
                "load_seconds": run.load.as_secs_f64(),
            }),
            Err(skipped) => json!({"skipped": skipped}),
        };
        json!({
            "benchmark": "peers",
            "patients": self.patients,
            "queries": self.queries,
            "runs": self.runs,
            "seed": self.seed,
            "cores": self.cores,
            "label_rows": self.label_rows,
            "value_rows": self.value_rows,
            "build_seconds": self.build.as_secs_f64(),
            "search": {
                "kura": spread(kura),
                "cohort_median": self.searches.cohort_median,
                "postgres": postgres,
            },
            "aggregate": aggregates,
            "duckdb": duckdb,
        })
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "kura-bench peers: seed {}, {} cores, {} subjects ({} label rows, {} value rows) generated and \
             indexed in {:.2} s\n\n",
            self.seed,
            self.cores,
            grouped(self.patients as u64),
            grouped(self.label_rows),
            grouped(self.value_rows),
            self.build.as_secs_f64(),
        );
        let pair = |spread: &Spread| format!("{} / {}", shown(spread.p50), shown(spread.p99));
        let kura = &self.searches.kura;
        let _ = writeln!(
            out,
            "**Cohort search**: {} five-criteria searches of the `index` benchmark (same seed), each run once \
             to warm up, then timed; counts agree between Kura and PostgreSQL (median cohort {})\n",
            self.queries,
            grouped(self.searches.cohort_median),
        );
        out.push_str("| engine | p50 / p99 | p50 vs Kura |\n| --- | --- | --- |\n");
        let _ = writeln!(out, "| Kura `LabelIndex::evaluate` | {} | 1× |", pair(kura));
        match &self.searches.postgres {
            Ok(figures) => {
                for (form, spread) in [("INTERSECT", &figures.intersect), ("EXISTS", &figures.exists)] {
                    let _ = writeln!(
                        out,
                        "| PostgreSQL {} ({form}) | {} | {:.0}× slower |",
                        figures.version,
                        pair(spread),
                        ratio(spread.p50, kura.p50)
                    );
                }
                let _ = writeln!(
                    out,
                    "\nPostgreSQL load: COPY {:.1} s, indexes + VACUUM ANALYZE {:.1} s (unlogged tables, \
                     work_mem 256MB)\n",
                    figures.copy.as_secs_f64(),
                    figures.index.as_secs_f64()
                );
            }
            Err(skipped) => {
                let _ = writeln!(out, "| PostgreSQL | {skipped} | |\n");
            }
        }
        let _ = writeln!(
            out,
            "**Aggregate**: histogram ({} bins) + mean of loinc:{CODE}, one value per patient (the mean of \
             its distinct values), {} runs after a warm-up; n and means agree\n",
            EDGES.len() + 1,
            self.runs
        );
        match &self.duckdb {
            Ok(run) => {
                let _ = writeln!(
                    out,
                    "DuckDB {} ({} threads{}), in memory, loaded from TSV in {:.1} s\n",
                    run.version,
                    run.threads,
                    if run.installed_now { ", installed with pip by this run" } else { "" },
                    run.load.as_secs_f64()
                );
            }
            Err(skipped) => {
                let _ = writeln!(out, "DuckDB: {skipped}\n");
            }
        }
        out.push_str(
            "| cohort | size / n | mean | Kura compute + control p50 / p99 | Kura compute p50 | DuckDB p50 / p99 \
             | Kura vs DuckDB (p50) |\n| --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for figures in &self.aggregates {
            let (duckdb, versus) = match &figures.duckdb {
                Some((timings, ..)) => (pair(timings), format!("{:.2}×", ratio(figures.kura.p50, timings.p50))),
                None => ("n/a".to_owned(), "n/a".to_owned()),
            };
            let _ = writeln!(
                out,
                "| {} | {} / {} | {:.4} | {} | {} | {duckdb} | {versus} |",
                figures.name,
                grouped(figures.cohort),
                grouped(figures.n),
                figures.mean,
                pair(&figures.kura),
                shown(figures.kura_compute.p50),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::population::build_population;

    use super::*;

    #[test]
    fn options() {
        let check = |arguments: &[&str], expected: Result<(usize, usize, usize, bool), &str>| {
            let got = crate::figures::parse_flags::<PeersArgs>(arguments)
                .and_then(|args| PeersOptions::from_args(&args).map_err(|error| error.to_string()))
                .map(|options| (options.patients, options.queries, options.runs, options.smoke));
            match (got, expected) {
                (Ok(got), Ok(expected)) => assert_eq!(got, expected, "{arguments:?}"),
                (Err(got), Err(expected)) => assert!(got.contains(expected), "{arguments:?}: {got}"),
                (got, expected) => panic!("{arguments:?}: {got:?}, expected {expected:?}"),
            }
        };
        check(&[], Ok((1_000_000, 50, 20, false)));
        check(&["--smoke"], Ok((10_000, 20, 5, true)));
        check(&["--patients", "2_000", "--queries", "3", "--runs", "2"], Ok((2_000, 3, 2, false)));
        check(&["--runs", "0"], Err("--patients, --queries and --runs must be at least 1"));
        check(&["--fast"], Err("unexpected argument '--fast'"));
    }

    #[test]
    fn the_population_is_the_index_benchmarks() {
        let vocabulary = Vocabulary::new().unwrap();
        let births = (days_32(1925, 1, 1).unwrap(), days_32(2024, 12, 31).unwrap());
        let (mut ours, mut theirs) = (SplitMix64(5), SplitMix64(5));
        let (index, tables) = build(&vocabulary, &mut ours, births, 500);
        let population = build_population(&vocabulary, &mut theirs, births, 500);
        assert_eq!(ours.0, theirs.0, "the same draws");
        assert_eq!((index.len(), population.index.len()), (500, 500));
        assert_eq!(tables.persons.iter().filter(|&&byte| byte == b'\n').count(), 500);
        assert!(tables.label_rows > 500 * 5 && tables.value_rows > 500 * 5);
    }

    #[test]
    fn searches_become_sql() {
        let search = Search {
            labels: "snomed:44054006 AND sex:female AND snomed:38341003".to_owned(),
            age: "age:40..60".to_owned(),
            value: "loinc:4548-4>=7.5".to_owned(),
        };
        let criteria = Criteria::of(&search).unwrap();
        assert_eq!((criteria.youngest, criteria.oldest, criteria.op), (40, 60, ">="));
        assert_eq!((criteria.code.as_str(), criteria.threshold.as_str()), ("loinc:4548-4", "7.5"));
        assert_eq!(criteria.births((2025, 1, 1)), ("1964-01-01".to_owned(), "1985-01-01".to_owned()));
        let sql = criteria.intersect_sql((2025, 1, 1));
        assert!(sql.contains("label = 'sex:female'") && sql.contains("value >= 7.5::float8"), "{sql}");
        let sql = criteria.exists_sql((2025, 1, 1));
        assert!(sql.contains("p.birth > DATE '1964-01-01' AND p.birth <= DATE '1985-01-01'"), "{sql}");
        assert_eq!(quoted("it's"), "'it''s'");
    }
}
