//! `kura-bench ingest` and `kura-bench reads`: the whole server, in-process on `127.0.0.1:0`,
//! on a temporary SQLite database with the server's own durable settings (WAL,
//! `synchronous=FULL`), driven over real HTTP by clients running in the same process
//! (so clients and server share the machine's cores).
//!
//! - `ingest`: 8 clients upload a full-record set as one institution's staff: a synthetic FHIR
//!   R4 Bundle for each of 2,000 patients, and for one patient in 25 a DICOM image (the
//!   fixtures' CT or MR slice) and for another in 25 a PDF letter; every upload is parsed,
//!   labelled, encrypted, stored and audited, as in production. The **floor** writes the same
//!   bytes into a plain SQLite file with the same durability, one row per upload and one
//!   transaction per upload, from 8 tasks that queue on one lock as the server's writers do,
//!   with no processing at all.
//! - `reads`: a few patients own records (uploaded by one institution, linked, transferred to the
//!   patient) and grant `view` over all of them to a second institution, whose staff then reads
//!   them (`GET /api/v1/records/{id}`) from 1 client and from 32 clients, each logged in once
//!   and reading over a keep-alive connection of its own with a minimal HTTP/1.1 client
//!   ([`Getter`], as lean as `wrk`'s) rather than reqwest, whose own CPU on the shared cores
//!   showed in the figures.
//!
//! The bundles come from [`BundleGenerator`]: seeded, calibrated on the Synthea fixtures
//! (`fixtures/synthea-r4/`) by sampling their own resources, so the resource-type mix, the
//! codings and the sizes are Synthea's; ids are fresh, subject references point at the bundle's
//! own Patient, and quantities are perturbed by up to ±10%.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use kura_server::{App, Clock, Config};
use serde_json::{Value, json};

use crate::figures::{RunFlags, count, durable_sqlite, grouped, number, percentile};
use crate::population::SplitMix64;

/// `kura-bench ingest`: uploads over HTTP to an in-process server.
#[derive(Debug, Default, clap::Args)]
pub struct IngestArgs {
    /// Patients uploaded, one FHIR Bundle each [default: 2,000; with --smoke 24].
    #[arg(long, value_name = "N", value_parser = count)]
    pub bundles: Option<usize>,
    /// Clients uploading at once [default: 8].
    #[arg(long, value_name = "C", value_parser = count)]
    pub clients: Option<usize>,
    /// Resources per bundle [default: 20-200].
    #[arg(long, value_name = "MIN-MAX", value_parser = parse_range)]
    pub resources: Option<(usize, usize)>,
    /// The seed of the bundles [default: 42].
    #[arg(long, value_name = "S", value_parser = number)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub run: RunFlags,
}
/// `kura-bench reads`: consented reads over HTTP.
#[derive(Debug, Default, clap::Args)]
pub struct ReadsArgs {
    /// Records uploaded, then read [default: 300; with --smoke 16].
    #[arg(long, value_name = "N", value_parser = count)]
    pub records: Option<usize>,
    /// Seconds of reads at each client count [default: 10; with --smoke 0.5].
    #[arg(long, value_name = "S", value_parser = seconds)]
    pub seconds: Option<f64>,
    /// Resources per record [default: 20-200].
    #[arg(long, value_name = "MIN-MAX", value_parser = parse_range)]
    pub resources: Option<(usize, usize)>,
    /// The seed of the records [default: 7].
    #[arg(long, value_name = "S", value_parser = number)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub run: RunFlags,
}

const FHIR: &str = "application/fhir+json";
const DICOM: &str = "application/dicom";
const PDF: &str = "application/pdf";
/// One patient in this many also has a DICOM image uploaded, and another one a PDF letter.
const DOCUMENT_EVERY: usize = 25;
const OPERATOR_PASSWORD: &str = "operator-password-1";

/// A folder of the fixtures at the workspace root.
fn fixtures_dir(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures")).join(name)
}

// ---------------------------------------------------------------------------------------------
// Synthetic bundles

/// Generates FHIR R4 transaction Bundles from the Synthea fixtures' own resources.
pub struct BundleGenerator {
    patients: Vec<Value>,
    /// Every non-Patient resource of the fixtures: sampling uniformly keeps their type mix.
    resources: Vec<Value>,
    random: SplitMix64,
}

impl BundleGenerator {
    pub fn from_fixtures(seed: u64) -> anyhow::Result<Self> {
        let mut patients = Vec::new();
        let mut resources = Vec::new();
        let dir = fixtures_dir("synthea-r4");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        for path in paths {
            let bundle: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
            for entry in bundle["entry"].as_array().into_iter().flatten() {
                let resource = entry["resource"].clone();
                if resource["resourceType"] == "Patient" {
                    patients.push(resource);
                } else {
                    resources.push(resource);
                }
            }
        }
        ensure!(!patients.is_empty() && !resources.is_empty(), "no Synthea fixtures in {}", dir.display());
        Ok(Self { patients, resources, random: SplitMix64(seed) })
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.random.next_u64(), self.random.next_u64());
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }

    /// One bundle of `count` resources (a Patient and `count - 1` others), serialised.
    pub fn bundle(&mut self, count: usize) -> anyhow::Result<Vec<u8>> {
        let patient_id = self.uuid();
        let mut patient = self.patients[self.random.below(self.patients.len() as u64) as usize].clone();
        patient["id"] = json!(patient_id);
        let patient_url = format!("urn:uuid:{patient_id}");
        let mut entries = vec![json!({"fullUrl": patient_url, "resource": patient,
            "request": {"method": "POST", "url": "Patient"}})];
        for _ in 1..count.max(1) {
            let mut resource = self.resources[self.random.below(self.resources.len() as u64) as usize].clone();
            let id = self.uuid();
            resource["id"] = json!(id);
            for key in ["subject", "patient", "beneficiary"] {
                if resource.get(key).is_some() {
                    resource[key] = json!({"reference": patient_url});
                }
            }
            let factor = self.random.between(0.9, 1.1);
            if let Some(value) = resource.pointer_mut("/valueQuantity/value")
                && let Some(number) = value.as_f64()
            {
                *value = json!((number * factor * 100.0).round() / 100.0);
            }
            let kind = resource["resourceType"].as_str().unwrap_or("Basic").to_owned();
            entries.push(json!({"fullUrl": format!("urn:uuid:{id}"), "resource": resource,
                "request": {"method": "POST", "url": kind}}));
        }
        Ok(serde_json::to_vec(&json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}))?)
    }

    /// A bundle with a resource count uniform in `range`.
    pub fn sized_bundle(&mut self, range: (usize, usize)) -> anyhow::Result<(usize, Vec<u8>)> {
        let count = range.0 + self.random.below((range.1 - range.0 + 1) as u64) as usize;
        Ok((count, self.bundle(count)?))
    }
}

// ---------------------------------------------------------------------------------------------
// The server and a small HTTP client

struct Server {
    base: String,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Server {
    async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let mut config = Config::embedded(dir.path().join("data"));
        config.listen = addr;
        config.public_url = format!("http://{addr}");
        config.session_minutes = 24 * 60;
        let app = App::open(config, Clock::System).await.map_err(|e| anyhow::anyhow!(e))?;
        app.create_operator("operator", OPERATOR_PASSWORD).await.map_err(|e| anyhow::anyhow!(e))?;
        let task = tokio::spawn(kura_server::serve_on(app, listener));
        Ok(Self { base: format!("http://{addr}"), _dir: dir, task })
    }

    fn stop(self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(base: &str) -> anyhow::Result<Self> {
        Ok(Self { http: reqwest::Client::builder().build()?, base: base.to_owned(), token: None })
    }

    async fn login(base: &str, username: &str, password: &str) -> anyhow::Result<Self> {
        let mut client = Self::new(base)?;
        let body =
            client.send_json("/api/v1/auth/login", json!({"username": username, "password": password}), 200).await?;
        client.token = Some(body["token"].as_str().context("no token")?.to_owned());
        Ok(client)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    async fn expect(response: reqwest::Response, status: u16) -> anyhow::Result<Value> {
        let got = response.status().as_u16();
        let bytes = response.bytes().await?;
        if got != status {
            bail!("status {got} (wanted {status}): {}", String::from_utf8_lossy(&bytes));
        }
        Ok(if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? })
    }

    async fn send_json(&self, path: &str, body: Value, status: u16) -> anyhow::Result<Value> {
        let response = self.request(reqwest::Method::POST, path).json(&body).send().await?;
        Self::expect(response, status).await
    }

    async fn upload(&self, mrn: &str, content_type: &str, bytes: Vec<u8>) -> anyhow::Result<String> {
        let response = self
            .request(reqwest::Method::POST, &format!("/api/v1/records?patient={mrn}"))
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await?;
        let body = Self::expect(response, 201).await?;
        Ok(body["id"].as_str().context("no record id")?.to_owned())
    }
}

/// An institution and the username and password of its staff member.
async fn institution(operator: &Client, name: &str) -> anyhow::Result<(String, String, String)> {
    let org = operator.send_json("/api/v1/orgs", json!({"name": name, "kind": "institution"}), 201).await?;
    let id = org["id"].as_str().context("no org id")?.to_owned();
    let username = format!("{}-staff", name.to_lowercase().replace(' ', "-"));
    let password = format!("{username}-password");
    operator
        .send_json(
            "/api/v1/accounts",
            json!({"username": username, "password": password, "kind": "staff", "org": id}),
            201,
        )
        .await?;
    Ok((id, username, password))
}

/// Runs `work(client, item)` over `items` from `clients` tasks pulling from a shared queue;
/// returns each item's latency. `items` may be shared with the caller, so that a timed run
/// does not start by copying them.
async fn in_parallel<T, F, Fut>(
    clients: &[Client],
    items: impl Into<Arc<Vec<T>>>,
    work: F,
) -> anyhow::Result<Vec<Duration>>
where
    T: Clone + Send + Sync + 'static,
    F: Fn(Client, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let items = items.into();
    let next = Arc::new(AtomicUsize::new(0));
    let work = Arc::new(work);
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        let (client, items, next, work) = (client.clone(), items.clone(), next.clone(), work.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(index) else { break };
                let start = Instant::now();
                work(client.clone(), item.clone()).await?;
                latencies.push(start.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut all = Vec::new();
    while let Some(result) = tasks.join_next().await {
        all.extend(result??);
    }
    Ok(all)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// `--seconds`: a number of seconds, such as 10 or 0.5.
fn seconds(text: &str) -> anyhow::Result<f64> {
    text.parse().with_context(|| format!("{text:?} is not a number"))
}

/// `--resources MIN-MAX`.
fn parse_range(text: &str) -> anyhow::Result<(usize, usize)> {
    let (low, high) = text.split_once('-').with_context(|| format!("{text:?} is not MIN-MAX"))?;
    let range = (low.parse()?, high.parse()?);
    ensure!(range.0 >= 1 && range.0 <= range.1, "{text:?}: need 1 <= MIN <= MAX");
    Ok(range)
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// Ingest

#[derive(Debug)]
pub struct IngestOptions {
    pub bundles: usize,
    pub clients: usize,
    pub resources: (usize, usize),
    pub seed: u64,
    pub json: bool,
}

impl IngestOptions {
    pub fn from_args(args: &IngestArgs) -> anyhow::Result<Self> {
        let options = Self {
            bundles: args.bundles.unwrap_or(if args.run.smoke { 24 } else { 2_000 }),
            clients: args.clients.unwrap_or(8),
            resources: args.resources.unwrap_or((20, 200)),
            seed: args.seed.unwrap_or(42),
            json: args.run.json,
        };
        ensure!(options.bundles > 0 && options.clients > 0, "--bundles and --clients must be at least 1");
        Ok(options)
    }
}

#[derive(Debug)]
pub struct IngestReport {
    pub clients: usize,
    pub bundles: usize,
    pub resources: u64,
    /// DICOM images and PDF letters uploaded in the same run, beside the bundles.
    pub dicom: usize,
    pub pdf: usize,
    /// Every upload's bytes, bundles, images and letters.
    pub bytes: u64,
    pub wall: Duration,
    pub upload_p50: Duration,
    pub upload_p99: Duration,
    pub floor_wall: Duration,
    pub floor_p50: Duration,
    /// Single-threaded `kura_formats::parse_upload` over the same bundles (parsing and labels).
    pub parse_wall: Duration,
    /// Single-threaded `serde_json` parse alone of the same bundles.
    pub json_wall: Duration,
}

pub fn run_ingest_benchmark(options: &IngestOptions) -> anyhow::Result<IngestReport> {
    let mut generator = BundleGenerator::from_fixtures(options.seed)?;
    let read = |name: &str| {
        std::fs::read(fixtures_dir("dicom").join(name)).with_context(|| format!("reading fixtures/dicom/{name}"))
    };
    let images = [read("CT_small.dcm")?, read("MR_small.dcm")?];
    // Every patient's bundle, and for one patient in 25 an image, for another a letter.
    let mut uploads: Vec<(String, &'static str, Vec<u8>)> = Vec::with_capacity(options.bundles + options.bundles / 10);
    let mut resources = 0_u64;
    let (mut dicom, mut pdf) = (0, 0);
    for n in 0..options.bundles {
        let mrn = format!("MRN-{n:05}");
        let (count, bytes) = generator.sized_bundle(options.resources)?;
        resources += count as u64;
        uploads.push((mrn.clone(), FHIR, bytes));
        if n % DOCUMENT_EVERY == 0 {
            uploads.push((mrn.clone(), DICOM, images[dicom % images.len()].clone()));
            dicom += 1;
        }
        if n % DOCUMENT_EVERY == DOCUMENT_EVERY / 2 {
            let letter = format!("Discharge letter for {mrn}: type 2 diabetes mellitus, HbA1c 7.9 percent");
            uploads.push((mrn, PDF, kura_testkit::pdf_with_text(&letter)));
            pdf += 1;
        }
    }
    let uploads = Arc::new(uploads);
    let bytes: u64 = uploads.iter().map(|(_, _, b)| b.len() as u64).sum();
    let bundles: Vec<&[u8]> =
        uploads.iter().filter(|(_, kind, _)| *kind == FHIR).map(|(_, _, bytes)| bytes.as_slice()).collect();

    // What parsing alone costs, on one core.
    let start = Instant::now();
    for bundle in &bundles {
        std::hint::black_box(serde_json::from_slice::<Value>(bundle)?);
    }
    let json_wall = start.elapsed();
    let format = kura_formats::format_for_content_type(FHIR).context("FHIR format")?;
    let now = kura_core::time::Timestamp::from_millis(1_767_225_600_000);
    let context =
        kura_formats::IngestContext { institution: "01jbenchinstitution000000000", now, document_category: None };
    let start = Instant::now();
    for bundle in &bundles {
        std::hint::black_box(kura_formats::parse_upload(format, bundle, &context).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let parse_wall = start.elapsed();

    let runtime = runtime()?;
    let (wall, mut latencies) = runtime.block_on(async {
        let server = Server::start().await?;
        let operator = Client::login(&server.base, "operator", OPERATOR_PASSWORD).await?;
        let (_, username, password) = institution(&operator, "Aoba General Hospital").await?;
        let mut clients = Vec::new();
        for _ in 0..options.clients {
            clients.push(Client::login(&server.base, &username, &password).await?);
        }
        let start = Instant::now();
        let latencies = in_parallel(
            &clients,
            uploads.clone(),
            |client, (mrn, kind, bytes): (String, &'static str, Vec<u8>)| async move {
                client.upload(&mrn, kind, bytes).await.map(|_| ())
            },
        )
        .await?;
        let wall = start.elapsed();
        server.stop();
        anyhow::Ok((wall, latencies))
    })?;
    latencies.sort_unstable();
    let (floor_wall, mut floor_latencies) = runtime.block_on(ingest_floor(uploads.clone(), options.clients))?;
    floor_latencies.sort_unstable();
    Ok(IngestReport {
        clients: options.clients,
        bundles: bundles.len(),
        resources,
        dicom,
        pdf,
        bytes,
        wall,
        upload_p50: percentile(&latencies, 0.5),
        upload_p99: percentile(&latencies, 0.99),
        floor_wall,
        floor_p50: percentile(&floor_latencies, 0.5),
        parse_wall,
        json_wall,
    })
}

/// The same bytes into a plain SQLite file: WAL, `synchronous=FULL`, one row per upload as a
/// BLOB, one transaction per upload, from `clients` tasks queueing on one write lock (as the
/// server's SQLite writers do), with no processing.
async fn ingest_floor(
    items: Arc<Vec<(String, &'static str, Vec<u8>)>>,
    clients: usize,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let dir = tempfile::tempdir()?;
    let pool = durable_sqlite(&dir.path().join("floor.db"), 8).await?;
    sqlx::query("CREATE TABLE bundles (id INTEGER PRIMARY KEY, mrn TEXT NOT NULL, body BLOB NOT NULL)")
        .execute(&pool)
        .await?;
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (pool, lock, items, next) = (pool.clone(), lock.clone(), items.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some((mrn, _, body)) = items.get(index) else { break };
                let began = Instant::now();
                let _guard = lock.lock().await;
                let mut transaction = pool.begin().await?;
                sqlx::query("INSERT INTO bundles (mrn, body) VALUES (?, ?)")
                    .bind(mrn)
                    .bind(body.as_slice())
                    .execute(&mut *transaction)
                    .await?;
                transaction.commit().await?;
                latencies.push(began.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(result) = tasks.join_next().await {
        latencies.extend(result??);
    }
    let wall = start.elapsed();
    pool.close().await;
    Ok((wall, latencies))
}

impl IngestReport {
    fn per_second(&self, amount: f64, wall: Duration) -> f64 {
        amount / wall.as_secs_f64().max(1e-9)
    }

    pub fn resources_per_second(&self) -> f64 {
        self.per_second(self.resources as f64, self.wall)
    }

    pub fn floor_resources_per_second(&self) -> f64 {
        self.per_second(self.resources as f64, self.floor_wall)
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "benchmark": "ingest",
            "clients": self.clients,
            "bundles": self.bundles,
            "resources": self.resources,
            "dicom_uploads": self.dicom,
            "pdf_uploads": self.pdf,
            "bytes": self.bytes,
            "wall_s": self.wall.as_secs_f64(),
            "resources_per_s": self.resources_per_second(),
            "bundles_per_s": self.per_second(self.bundles as f64, self.wall),
            "mb_per_s": self.per_second(self.bytes as f64 / 1e6, self.wall),
            "upload_ms_p50": millis(self.upload_p50),
            "upload_ms_p99": millis(self.upload_p99),
            "floor_wall_s": self.floor_wall.as_secs_f64(),
            "floor_resources_per_s": self.floor_resources_per_second(),
            "floor_mb_per_s": self.per_second(self.bytes as f64 / 1e6, self.floor_wall),
            "floor_commit_ms_p50": millis(self.floor_p50),
            "kura_over_floor": self.resources_per_second() / self.floor_resources_per_second(),
            "parse_one_core_resources_per_s": self.per_second(self.resources as f64, self.parse_wall),
            "json_only_one_core_resources_per_s": self.per_second(self.resources as f64, self.json_wall),
            "target_resources_per_s": 10_000,
            "target_met": self.resources_per_second() >= 10_000.0,
        })
    }

    pub fn to_markdown(&self) -> String {
        let rate = |amount: f64, wall: Duration| self.per_second(amount, wall);
        let mut out = String::from("| figure | value |\n| --- | --- |\n");
        let mut row = |name: &str, value: String| out.push_str(&format!("| {name} | {value} |\n"));
        row("clients", self.clients.to_string());
        row(
            "bundles / resources / bytes of all uploads",
            format!(
                "{} / {} / {:.1} MB",
                grouped(self.bundles as u64),
                grouped(self.resources),
                self.bytes as f64 / 1e6
            ),
        );
        row("mean resources per bundle", format!("{:.0}", self.resources as f64 / self.bundles as f64));
        row("DICOM images / PDF letters in the same run", format!("{} / {}", self.dicom, self.pdf));
        row("Kura wall time", format!("{:.2} s", self.wall.as_secs_f64()));
        row("Kura resources/s", format!("{:.0}", self.resources_per_second()));
        row(
            "Kura bundles/s, MB/s",
            format!("{:.1}, {:.1}", rate(self.bundles as f64, self.wall), rate(self.bytes as f64 / 1e6, self.wall)),
        );
        row(
            "upload latency p50 / p99",
            format!("{:.1} ms / {:.1} ms", millis(self.upload_p50), millis(self.upload_p99)),
        );
        row(
            "floor (plain SQLite, WAL+FULL, 1 tx/upload) wall",
            format!("{:.2} s ({:.1} ms/commit p50)", self.floor_wall.as_secs_f64(), millis(self.floor_p50)),
        );
        row(
            "floor resources/s, MB/s",
            format!("{:.0}, {:.1}", self.floor_resources_per_second(), rate(self.bytes as f64 / 1e6, self.floor_wall)),
        );
        row("Kura / floor", format!("{:.2}", self.resources_per_second() / self.floor_resources_per_second()));
        row(
            "parse + labels alone, one core (resources/s)",
            format!("{:.0} ({:.2} s)", rate(self.resources as f64, self.parse_wall), self.parse_wall.as_secs_f64()),
        );
        row(
            "serde_json parse alone, one core (resources/s)",
            format!("{:.0} ({:.2} s)", rate(self.resources as f64, self.json_wall), self.json_wall.as_secs_f64()),
        );
        row(
            "target ≥ 10,000 resources/s",
            if self.resources_per_second() >= 10_000.0 { "met".into() } else { "missed".into() },
        );
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Reads

#[derive(Debug)]
pub struct ReadsOptions {
    pub records: usize,
    pub seconds: f64,
    pub resources: (usize, usize),
    pub seed: u64,
    pub json: bool,
}

impl ReadsOptions {
    pub fn from_args(args: &ReadsArgs) -> anyhow::Result<Self> {
        let options = Self {
            records: args.records.unwrap_or(if args.run.smoke { 16 } else { 300 }),
            seconds: args.seconds.unwrap_or(if args.run.smoke { 0.5 } else { 10.0 }),
            resources: args.resources.unwrap_or((20, 200)),
            seed: args.seed.unwrap_or(7),
            json: args.run.json,
        };
        ensure!(options.records > 0 && options.seconds > 0.0, "--records and --seconds must be positive");
        Ok(options)
    }
}

/// Reads at one concurrency.
#[derive(Debug, Clone)]
pub struct ReadRun {
    pub clients: usize,
    pub requests: u64,
    pub wall: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub mean_bytes: f64,
}

impl ReadRun {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn to_json(&self) -> Value {
        json!({"clients": self.clients, "requests": self.requests, "wall_s": self.wall.as_secs_f64(),
               "req_per_s": self.per_second(), "ms_p50": millis(self.p50), "ms_p99": millis(self.p99),
               "mean_response_bytes": self.mean_bytes})
    }
}

#[derive(Debug)]
pub struct ReadsReport {
    pub records: usize,
    pub mean_record_bytes: f64,
    pub mean_resources: f64,
    pub runs: Vec<ReadRun>,
}

pub fn run_reads_benchmark(options: &ReadsOptions) -> anyhow::Result<ReadsReport> {
    const PATIENTS: usize = 4;
    let mut generator = BundleGenerator::from_fixtures(options.seed)?;
    let mut uploads = Vec::with_capacity(options.records);
    let mut resources = 0;
    for n in 0..options.records {
        let (count, bytes) = generator.sized_bundle(options.resources)?;
        resources += count;
        uploads.push((format!("MRN-{}", n % PATIENTS), bytes));
    }
    let mean_record_bytes = uploads.iter().map(|(_, b)| b.len()).sum::<usize>() as f64 / uploads.len() as f64;
    let runtime = runtime()?;
    let runs = runtime.block_on(async {
        let server = Server::start().await?;
        let operator = Client::login(&server.base, "operator", OPERATOR_PASSWORD).await?;
        let (_, aoba_user, aoba_password) = institution(&operator, "Aoba General Hospital").await?;
        let (sakura, sakura_user, sakura_password) = institution(&operator, "Sakura Clinic").await?;
        let aoba = Client::login(&server.base, &aoba_user, &aoba_password).await?;
        // Patients register, and link to their MRN at Aoba.
        let mut patients = Vec::new();
        for n in 0..PATIENTS {
            let (username, password) = (format!("patient-{n}"), format!("patient-{n}-secret-password"));
            Client::new(&server.base)?
                .send_json("/api/v1/auth/register", json!({"username": username, "password": password}), 201)
                .await?;
            let patient = Client::login(&server.base, &username, &password).await?;
            let code = aoba.send_json("/api/v1/links", json!({"mrn": format!("MRN-{n}")}), 201).await?;
            patient.send_json("/api/v1/links/redeem", json!({"code": code["code"]}), 200).await?;
            patients.push(patient);
        }
        // Aoba uploads the records and transfers them to their patients.
        let uploaders: Vec<Client> = (0..4).map(|_| aoba.clone()).collect();
        let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
        let collected = ids.clone();
        in_parallel(&uploaders, uploads, move |client, (mrn, bytes): (String, Vec<u8>)| {
            let ids = collected.clone();
            async move {
                let id = client.upload(&mrn, FHIR, bytes).await?;
                client.send_json(&format!("/api/v1/records/{id}/transfer"), json!({"agreement": {}}), 200).await?;
                ids.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push(id);
                Ok(())
            }
        })
        .await?;
        let ids: Arc<Vec<String>> =
            Arc::new(std::mem::take(&mut *ids.lock().map_err(|_| anyhow::anyhow!("poisoned"))?));
        // Each patient grants Sakura `view` over all their records, every category.
        for patient in &patients {
            patient
                .send_json(
                    "/api/v1/grants",
                    json!({"grantee": {"org": sakura}, "scope": kura_core::record::PartCategory::ALL.map(|c| c.as_str()), "actions": ["view"],
                           "purpose": "continuity of care"}),
                    201,
                )
                .await?;
        }
        let mut readers = Vec::new();
        for _ in 0..32 {
            readers.push(Client::login(&server.base, &sakura_user, &sakura_password).await?);
        }
        // Warm-up, then 1 and 32 clients.
        let warm = Duration::from_secs_f64((options.seconds / 10.0).clamp(0.1, 1.0));
        read_for(&readers[..4], &ids, warm).await?;
        let mut runs = Vec::new();
        for clients in [1, 32] {
            runs.push(read_for(&readers[..clients], &ids, Duration::from_secs_f64(options.seconds)).await?);
        }
        server.stop();
        anyhow::Ok(runs)
    })?;
    Ok(ReadsReport {
        records: options.records,
        mean_record_bytes,
        mean_resources: resources as f64 / options.records as f64,
        runs,
    })
}

/// Every client reads records in its own pseudo-random order until `duration` is over, each on a
/// keep-alive connection of its own ([`Getter`]).
async fn read_for(clients: &[Client], ids: &Arc<Vec<String>>, duration: Duration) -> anyhow::Result<ReadRun> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (n, client) in clients.iter().enumerate() {
        let ids = ids.clone();
        let mut getter = Getter::connect(client).await?;
        tasks.spawn(async move {
            let mut random = SplitMix64(n as u64 + 1);
            let (mut latencies, mut bytes) = (Vec::new(), 0_u64);
            while Instant::now() < deadline {
                let id = &ids[random.below(ids.len() as u64) as usize];
                let began = Instant::now();
                let (status, body) = getter.get(&format!("/api/v1/records/{id}")).await?;
                latencies.push(began.elapsed());
                ensure!(status == 200, "read {id}: status {status}: {}", String::from_utf8_lossy(body));
                ensure!(body.first() == Some(&b'{'), "read {id}: the answer is not a JSON object");
                bytes += body.len() as u64;
            }
            anyhow::Ok((latencies, bytes))
        });
    }
    let (mut latencies, mut bytes) = (Vec::new(), 0_u64);
    while let Some(result) = tasks.join_next().await {
        let (some, more) = result??;
        latencies.extend(some);
        bytes += more;
    }
    let wall = start.elapsed();
    latencies.sort_unstable();
    Ok(ReadRun {
        clients: clients.len(),
        requests: latencies.len() as u64,
        wall,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        mean_bytes: bytes as f64 / latencies.len().max(1) as f64,
    })
}

/// The load generator of `reads`: HTTP/1.1 GETs with the client's bearer token on one keep-alive
/// TCP connection, each answer read whole (status line, headers, a `Content-Length` body). As
/// lean as `wrk`'s, so that the cores the clients share with the server go to the server:
/// reqwest spent a few percent of all CPU per read on URL parsing, its pool and its connection
/// task (PERFORMANCE.md).
struct Getter {
    stream: tokio::net::TcpStream,
    request_head: String,
    buffer: Vec<u8>,
    /// Bytes of `buffer` that belong to the previous answer.
    consumed: usize,
}

impl Getter {
    async fn connect(client: &Client) -> anyhow::Result<Self> {
        let authority = client.base.strip_prefix("http://").context("the server's address is not http://")?;
        let stream = tokio::net::TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        let token = client.token.as_deref().context("the reader is not logged in")?;
        let request_head = format!("Host: {authority}\r\nAuthorization: Bearer {token}\r\n\r\n");
        Ok(Self { stream, request_head, buffer: Vec::with_capacity(64 * 1024), consumed: 0 })
    }

    /// GETs `path`: the status and the body.
    async fn get(&mut self, path: &str) -> anyhow::Result<(u16, &[u8])> {
        use tokio::io::AsyncWriteExt as _;
        self.buffer.drain(..self.consumed);
        self.consumed = 0;
        let request = format!("GET {path} HTTP/1.1\r\n{}", self.request_head);
        self.stream.write_all(request.as_bytes()).await?;
        let (status, body_at, length) = loop {
            if let Some(head) = parse_head(&self.buffer)? {
                break head;
            }
            self.fill().await?;
        };
        while self.buffer.len() < body_at + length {
            self.fill().await?;
        }
        self.consumed = body_at + length;
        Ok((status, &self.buffer[body_at..self.consumed]))
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        use tokio::io::AsyncReadExt as _;
        if self.buffer.capacity() - self.buffer.len() < 16 * 1024 {
            self.buffer.reserve(64 * 1024);
        }
        let read = self.stream.read_buf(&mut self.buffer).await?;
        ensure!(read > 0, "the server closed the connection");
        Ok(())
    }
}

/// An answer's status, where its body starts and its length, once its head is all in `bytes`.
fn parse_head(bytes: &[u8]) -> anyhow::Result<Option<(u16, usize, usize)>> {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&bytes[..end]).context("an answer's head is not text")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.strip_prefix("HTTP/1.1 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP/1.1 status line: {head:?}"))?;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':').with_context(|| format!("not a header: {line:?}"))?;
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse::<usize>().context("Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("the answer is {}-encoded; the reads client reads Content-Length bodies only", value.trim());
        }
    }
    Ok(Some((status, end + 4, length.unwrap_or(0))))
}

impl ReadsReport {
    fn run(&self, clients: usize) -> Option<&ReadRun> {
        self.runs.iter().find(|run| run.clients == clients)
    }

    /// p50 ≤ 0.5 ms, p99 ≤ 2 ms (at one client) and ≥ 10,000 req/s at 32 clients.
    pub fn targets(&self) -> (bool, bool, bool) {
        let one = self.run(1);
        let many = self.run(32);
        (
            one.is_some_and(|r| r.p50 <= Duration::from_micros(500)),
            one.is_some_and(|r| r.p99 <= Duration::from_millis(2)),
            many.is_some_and(|r| r.per_second() >= 10_000.0),
        )
    }

    pub fn to_json(&self) -> Value {
        let (p50, p99, throughput) = self.targets();
        json!({
            "benchmark": "reads",
            "records": self.records,
            "mean_record_bytes": self.mean_record_bytes,
            "mean_resources_per_record": self.mean_resources,
            "runs": self.runs.iter().map(ReadRun::to_json).collect::<Vec<_>>(),
            "target_p50_ms": 0.5, "target_p99_ms": 2.0, "target_req_per_s_32": 10_000,
            "p50_met": p50, "p99_met": p99, "throughput_met": throughput,
        })
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "records: {} (mean {:.0} resources, {:.0} KB of FHIR JSON each), read by a grantee institution\n\n",
            self.records,
            self.mean_resources,
            self.mean_record_bytes / 1e3
        );
        out.push_str(
            "| clients | requests | req/s | p50 | p99 | mean response |\n| --- | --- | --- | --- | --- | --- |\n",
        );
        for run in &self.runs {
            out.push_str(&format!(
                "| {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.0} KB |\n",
                run.clients,
                grouped(run.requests),
                run.per_second(),
                millis(run.p50),
                millis(run.p99),
                run.mean_bytes / 1e3
            ));
        }
        let (p50, p99, throughput) = self.targets();
        let verdict = |met: bool| if met { "met" } else { "missed" };
        out.push_str(&format!(
            "\ntargets: p50 ≤ 0.5 ms {}, p99 ≤ 2 ms {}, ≥ 10,000 req/s at 32 clients {}\n",
            verdict(p50),
            verdict(p99),
            verdict(throughput)
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reads_client_finds_status_and_body_or_refuses() {
        let answer = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\nContent-Length: 2\r\n\r\n{}next";
        let (status, body_at, length) = parse_head(answer).expect("valid").expect("whole head");
        assert_eq!((status, &answer[body_at..body_at + length]), (404, &b"{}"[..]));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n").expect("valid so far").is_none());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[test]
    fn bundles_are_seeded_and_sized() {
        let mut one = BundleGenerator::from_fixtures(1).expect("fixtures");
        let mut two = BundleGenerator::from_fixtures(1).expect("fixtures");
        let (count, bytes) = one.sized_bundle((20, 30)).expect("bundle");
        assert_eq!(two.sized_bundle((20, 30)).expect("bundle"), (count, bytes.clone()));
        assert!((20..=30).contains(&count));
        let bundle: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(bundle["entry"].as_array().expect("entries").len(), count);
        assert_eq!(bundle["entry"][0]["resource"]["resourceType"], "Patient");
        assert_eq!(parse_range("20-200").expect("range"), (20, 200));
        assert!(parse_range("5-2").is_err());
    }
}
