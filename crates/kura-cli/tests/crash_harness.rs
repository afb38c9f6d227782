//! The crash harness: a real `kura serve` child process takes concurrent uploads, grants and
//! reads, and is killed with SIGKILL at random points (20 times on SQLite, 10 on PostgreSQL when
//! `KURA_TEST_DATABASE_URL` is set), then started again on the same data. After every restart:
//!
//! - every upload answered 201 before the kill is listed and reads back byte-identical;
//! - every record listed is explained: acknowledged, or an upload that was still unanswered when
//!   the server died (and then its content is that upload's), never anything else, so the count
//!   of records lies between the acknowledged and the acknowledged plus the unanswered;
//! - every grant answered 201 is listed, and every grant listed was acknowledged or unanswered;
//! - the audit log has exactly one `upload` entry per record and one `grant_create` entry per
//!   grant (no change without its entry, no entry without its change), and its chain verifies;
//! - a grantee lists only records that exist, and reads their content.
//!
//! The kill points come from a seeded generator; the seed is printed, and `KURA_CRASH_SEED=<n>`
//! replays the same choices (the interleaving of requests still depends on timing).
//! `KURA_CRASH_ROUNDS` raises the number of kills.
//!
//! It lives in kura-cli because it needs the `kura` binary (`CARGO_BIN_EXE_kura`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use kura_api_types as api;
use serde_json::{Value, json};

const KILLS_ON_SQLITE: usize = 20;
const KILLS_ON_POSTGRES: usize = 10;
/// The load before a kill lasts between these many milliseconds.
const LOAD_MILLIS: (u64, u64) = (150, 1000);
const UPLOADERS: usize = 3;
const PASSWORD: &str = "crash-harness-Passw0rd";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_sigkill_and_the_audit_chain_verifies() {
    let started = Instant::now();
    let seed = std::env::var("KURA_CRASH_SEED").ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    let scratch = tempfile::tempdir().expect("temp dir");
    let postgres = match std::env::var("KURA_TEST_DATABASE_URL") {
        Ok(admin_url) if !admin_url.is_empty() => Some(ScratchPostgres::create(&admin_url).await),
        _ => None,
    };
    let kills = std::env::var("KURA_CRASH_ROUNDS")
        .ok()
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(if postgres.is_some() { KILLS_ON_POSTGRES } else { KILLS_ON_SQLITE });
    let backend = if postgres.is_some() { "PostgreSQL" } else { "SQLite" };
    eprintln!("crash harness on {backend}: seed {seed} (replay with KURA_CRASH_SEED={seed}), {kills} kills");

    let data_dir = scratch.path().join("data");
    let launcher = Launcher {
        data_dir: data_dir.clone(),
        database_url: postgres.as_ref().map(|p| p.url.clone()),
        logs: scratch.path().to_owned(),
    };
    launcher.bootstrap_operator();
    let mut rng = SplitMix64(seed);
    let payloads = Payloads::load();
    let mut known = Known::default();

    let mut server = launcher.start(0).await;
    // Unanswered uploads and grants the server turned out to have committed before the kill.
    let mut kept_unanswered = (0, 0);
    let ids = set_up_organisations(&server).await;
    for round in 1..=kills {
        let sessions = Sessions::log_in(&server).await;
        if round > 1 {
            let kept = verify(&server, &sessions, &ids, &mut known, &mut rng, false).await;
            kept_unanswered.0 += kept.uploads;
            kept_unanswered.1 += kept.grants;
        }
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = start_load(&server, &sessions, &ids, &payloads, &known, &ledger, &stop, round, &mut rng);
        let load = Duration::from_millis(LOAD_MILLIS.0 + rng.below(LOAD_MILLIS.1 - LOAD_MILLIS.0));
        tokio::time::sleep(load).await;
        server.kill();
        stop.store(true, Ordering::SeqCst);
        for task in tasks {
            task.await.expect("a load task panicked");
        }
        let ledger = std::mem::take(&mut *ledger.lock().expect("ledger"));
        if !ledger.failures.is_empty() {
            server.print_log_tail();
            panic!("round {round} (seed {seed}): answers before the kill were wrong:\n{}", ledger.failures.join("\n"));
        }
        eprintln!(
            "round {round}: killed after {} ms; {} uploads and {} grants acknowledged, {} and {} unanswered, {} reads",
            load.as_millis(),
            ledger.uploads_acked.len(),
            ledger.grants_acked.len(),
            ledger.uploads_unanswered.len(),
            ledger.grants_unanswered.len(),
            ledger.reads
        );
        known.absorb(ledger);
        server = launcher.start(round).await;
    }
    let sessions = Sessions::log_in(&server).await;
    let kept = verify(&server, &sessions, &ids, &mut known, &mut rng, true).await;
    server.kill();
    eprintln!(
        "crash harness on {backend}: {kills} kills, {} records and {} grants survived intact ({} uploads and {} \
         grants unanswered at a kill had been committed), {:.1} s",
        known.records.len(),
        known.grants.len(),
        kept_unanswered.0 + kept.uploads,
        kept_unanswered.1 + kept.grants,
        started.elapsed().as_secs_f64()
    );
    assert!(!known.records.is_empty(), "the load acknowledged no upload at all: the harness checked nothing");
    drop(server);
    if let Some(postgres) = postgres {
        postgres.drop_now();
    }
}

// ---------------------------------------------------------------------------------------------
// The server child process

struct Launcher {
    data_dir: PathBuf,
    database_url: Option<String>,
    logs: PathBuf,
}

impl Launcher {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kura"));
        command.args(args).arg("--data-dir").arg(&self.data_dir);
        if let Some(url) = &self.database_url {
            command.arg("--database-url").arg(url);
        }
        command.env_remove("KURA_MASTER_KEY").env_remove("KURA_DATABASE_URL").env("RUST_LOG", "warn");
        command
    }

    /// `kura operator bootstrap`: the operator, offline, before the first start.
    fn bootstrap_operator(&self) {
        let mut child = self
            .command(&["operator", "bootstrap", "--username", "operator", "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kura operator bootstrap");
        child.stdin.take().expect("stdin").write_all(PASSWORD.as_bytes()).expect("write the password");
        let output = child.wait_with_output().expect("kura operator bootstrap");
        assert!(output.status.success(), "operator bootstrap: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// `kura serve` on a port the system picks, read back from what it prints; ready once
    /// `/healthz` answers.
    async fn start(&self, round: usize) -> Server {
        let log = self.logs.join(format!("serve-{round}.log"));
        let mut child = self
            .command(&["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("server log"))
            .spawn()
            .expect("run kura serve");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        // Reads the address from the first line, then drains the pipe until the process ends.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("Kura is listening on ") {
                    let _ = sender.send(rest.split_whitespace().next().unwrap_or("").to_owned());
                }
            }
        });
        let mut server = Server { child: Some(child), base: String::new(), log, http: client() };
        let address =
            tokio::task::spawn_blocking(move || receiver.recv_timeout(Duration::from_secs(60))).await.expect("join");
        let Ok(address) = address else {
            server.print_log_tail();
            panic!("the server did not start (round {round})");
        };
        server.base = address;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = server.http.get(format!("{}/healthz", server.base)).send().await
                && response.status().is_success()
            {
                return server;
            }
            if Instant::now() > deadline {
                server.print_log_tail();
                panic!("the server did not become healthy (round {round})");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client")
}

struct Server {
    child: Option<Child>,
    base: String,
    log: PathBuf,
    http: reqwest::Client,
}

impl Server {
    /// SIGKILL (`Child::kill` on Unix), and the process reaped: its locks are released.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn print_log_tail(&self) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("last lines of {}:", self.log.display());
        for line in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("  {line}");
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, token: &str, path: &str) -> T {
        let response = self.http.get(self.url(path)).bearer_auth(token).send().await.expect("GET");
        let status = response.status();
        let body = response.bytes().await.expect("body");
        assert!(status.is_success(), "GET {path}: {status} {}", error_code(&body));
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {path}: unreadable answer: {e}"))
    }

    async fn post_json<T: serde::de::DeserializeOwned>(&self, token: Option<&str>, path: &str, body: &Value) -> T {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("POST");
        let status = response.status();
        let body = response.bytes().await.expect("body");
        assert!(status.is_success(), "POST {path}: {status} {}", error_code(&body));
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("POST {path}: unreadable answer: {e}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The error envelope's code, never a body that could hold content.
fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A scratch PostgreSQL database next to the one `KURA_TEST_DATABASE_URL` names, dropped at the
/// end, also when the test fails (on drop, from a thread with a runtime of its own).
struct ScratchPostgres {
    admin_url: String,
    name: String,
    url: String,
    dropped: bool,
}

impl ScratchPostgres {
    async fn create(admin_url: &str) -> Self {
        let (url, name) = kura_store_sql::create_scratch_database(admin_url).await.expect("scratch database");
        Self { admin_url: admin_url.to_owned(), name, url, dropped: false }
    }

    fn drop_database(&self) -> Result<(), String> {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            runtime.block_on(kura_store_sql::drop_scratch_database(&admin_url, &name)).map_err(|e| e.to_string())
        })
        .join()
        .map_err(|_| "the thread dropping the database panicked".to_owned())?
    }

    fn drop_now(mut self) {
        self.dropped = true;
        self.drop_database().expect("drop the scratch database");
    }
}

impl Drop for ScratchPostgres {
    fn drop(&mut self) {
        if !self.dropped {
            let _ = self.drop_database();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Accounts

/// Aoba General Hospital uploads and grants; Sakura Clinic is the grantee.
struct Ids {
    aoba: String,
    sakura: String,
}

async fn set_up_organisations(server: &Server) -> Ids {
    let operator = log_in(server, "operator").await;
    let mut org_ids = Vec::new();
    for name in ["Aoba General Hospital", "Sakura Clinic"] {
        let org: api::OrgView =
            server.post_json(Some(&operator), "/api/v1/orgs", &json!({"name": name, "kind": "institution"})).await;
        org_ids.push(org.id);
    }
    for (username, org) in [("dr.tanaka", &org_ids[0]), ("dr.sato", &org_ids[1])] {
        let request = json!({"username": username, "password": PASSWORD, "kind": "staff", "org": org});
        let _: api::AccountView = server.post_json(Some(&operator), "/api/v1/accounts", &request).await;
    }
    Ids { aoba: org_ids[0].clone(), sakura: org_ids[1].clone() }
}

async fn log_in(server: &Server, username: &str) -> String {
    let request = json!({"username": username, "password": PASSWORD});
    let response: api::LoginResponse = server.post_json(None, "/api/v1/auth/login", &request).await;
    response.token
}

/// Bearer tokens, taken again after every start.
struct Sessions {
    operator: String,
    tanaka: String,
    sato: String,
}

impl Sessions {
    async fn log_in(server: &Server) -> Self {
        Self {
            operator: log_in(server, "operator").await,
            tanaka: log_in(server, "dr.tanaka").await,
            sato: log_in(server, "dr.sato").await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What was sent and what came back

/// Uploads by kind. FHIR bundles are made unique per upload (their `id`), so that a record the
/// server kept from an unanswered upload is matched to exactly that upload.
struct Payloads {
    small_bundle: Value,
    large_bundle: Value,
    dicom: Arc<Vec<u8>>,
}

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(path)
}

impl Payloads {
    fn load() -> Self {
        let read_json = |name: &str| -> Value {
            let bytes = std::fs::read(fixture(name)).expect("fixture");
            serde_json::from_slice(&bytes).expect("fixture JSON")
        };
        let large_bundle = read_json("synthea-r4/patient-01.json");
        // The Patient and a few resources after it: a small bundle, quick to parse.
        let mut small_bundle = read_json("synthea-r4/patient-02.json");
        if let Some(entries) = small_bundle["entry"].as_array_mut() {
            entries.truncate(8);
        }
        let dicom = Arc::new(std::fs::read(fixture("dicom/MR_small.dcm")).expect("DICOM fixture"));
        Self { small_bundle, large_bundle, dicom }
    }

    /// Upload number `n` of a round: FHIR mostly, some large, DICOM and PDF.
    fn make(&self, choice: u64, tag: &str) -> Upload {
        match choice % 10 {
            0..=4 | 9 => {
                let mut bundle = if choice % 10 == 9 { self.large_bundle.clone() } else { self.small_bundle.clone() };
                bundle["id"] = json!(tag);
                Upload {
                    tag: tag.to_owned(),
                    content_type: "application/fhir+json",
                    format: "fhir",
                    bytes: Arc::new(serde_json::to_vec(&bundle).expect("JSON")),
                }
            }
            5..=6 => Upload {
                tag: tag.to_owned(),
                content_type: "application/dicom",
                format: "dicom",
                bytes: Arc::clone(&self.dicom),
            },
            _ => Upload {
                tag: tag.to_owned(),
                content_type: "application/pdf",
                format: "pdf",
                bytes: Arc::new(letter_pdf(tag)),
            },
        }
    }
}

/// A small PDF letter with one line of text, unique per `tag`.
fn letter_pdf(tag: &str) -> Vec<u8> {
    let text = format!("BT /F1 12 Tf 72 720 Td (Referral letter {tag}: follow-up in clinic) Tj ET");
    format!(
        "%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n2 0 obj << /Length {} >>\nstream\n{text}\nendstream\nendobj\n\
         trailer << /Root 1 0 R >>\n%%EOF\n",
        text.len()
    )
    .into_bytes()
}

#[derive(Clone)]
struct Upload {
    /// Unique per upload; the content is unique too, except for DICOM (the same file each time).
    tag: String,
    content_type: &'static str,
    format: &'static str,
    bytes: Arc<Vec<u8>>,
}

/// What one round's load saw before the kill.
#[derive(Default)]
struct Ledger {
    /// Record id → the upload answered 201 for it.
    uploads_acked: BTreeMap<String, Upload>,
    /// Uploads sent and never answered, by tag: the server may or may not have kept them.
    uploads_unanswered: BTreeMap<String, Upload>,
    /// Grant id → its purpose, answered 201.
    grants_acked: BTreeMap<String, String>,
    /// Purposes of grants sent and never answered.
    grants_unanswered: BTreeSet<String>,
    reads: usize,
    /// Wrong answers received before the kill.
    failures: Vec<String>,
}

/// What is known to be stored, as of the last verification.
#[derive(Default)]
struct Known {
    records: BTreeMap<String, Upload>,
    grants: BTreeMap<String, String>,
    /// The last round's ledger, until the next verification decides about its unanswered
    /// requests.
    pending: Ledger,
}

impl Known {
    fn absorb(&mut self, ledger: Ledger) {
        self.pending = ledger;
    }

    /// Records the readers may read during load: those known to be stored.
    fn readable(&self) -> Vec<(String, Upload)> {
        self.records.iter().map(|(id, upload)| (id.clone(), upload.clone())).collect()
    }
}

/// The content a record view carries, as the bytes the server keeps: FHIR spliced in as it is
/// stored, DICOM and PDF in base64.
fn content_of(body: &[u8]) -> Result<(api::RecordView, Option<Vec<u8>>), String> {
    let view: api::RecordView = serde_json::from_slice(body).map_err(|e| format!("unreadable record view: {e}"))?;
    let content = match (&view.content, &view.content_base64) {
        (Some(raw), _) => Some(raw.get().as_bytes().to_vec()),
        (None, Some(encoded)) => Some(
            base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| "content_base64 is not base64")?,
        ),
        (None, None) => None,
    };
    Ok((view, content))
}

// ---------------------------------------------------------------------------------------------
// Load

#[expect(clippy::too_many_arguments, reason = "one round's whole context, passed once")]
fn start_load(
    server: &Server,
    sessions: &Sessions,
    ids: &Ids,
    payloads: &Payloads,
    known: &Known,
    ledger: &Arc<Mutex<Ledger>>,
    stop: &Arc<AtomicBool>,
    round: usize,
    rng: &mut SplitMix64,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for uploader in 0..UPLOADERS {
        let uploads: Vec<Upload> =
            (0..64).map(|n| payloads.make(rng.next(), &format!("crash-{round}-{uploader}-{n}"))).collect();
        tasks.push(tokio::spawn(upload_until_stopped(
            server.http.clone(),
            server.url("/api/v1/records?patient=AOBA-100001"),
            sessions.tanaka.clone(),
            uploads,
            Arc::clone(ledger),
            Arc::clone(stop),
        )));
    }
    tasks.push(tokio::spawn(grant_until_stopped(
        server.http.clone(),
        server.url("/api/v1/grants"),
        sessions.tanaka.clone(),
        ids.sakura.clone(),
        round,
        Arc::clone(ledger),
        Arc::clone(stop),
    )));
    tasks.push(tokio::spawn(read_until_stopped(
        server.http.clone(),
        server.base.clone(),
        sessions.tanaka.clone(),
        known.readable(),
        rng.next(),
        Arc::clone(ledger),
        Arc::clone(stop),
    )));
    tasks.push(tokio::spawn(list_until_stopped(
        server.http.clone(),
        server.base.clone(),
        sessions.sato.clone(),
        Arc::clone(ledger),
        Arc::clone(stop),
    )));
    tasks
}

async fn upload_until_stopped(
    http: reqwest::Client,
    url: String,
    token: String,
    uploads: Vec<Upload>,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) {
    for upload in uploads {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let key = upload.tag.clone();
        ledger.lock().expect("ledger").uploads_unanswered.insert(key.clone(), upload.clone());
        let sent = http
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", upload.content_type)
            .body(upload.bytes.as_ref().clone())
            .send()
            .await;
        let Ok(response) = sent else { return };
        let status = response.status();
        let Ok(body) = response.bytes().await else { return };
        let mut ledger = ledger.lock().expect("ledger");
        ledger.uploads_unanswered.remove(&key);
        if status == reqwest::StatusCode::CREATED {
            match serde_json::from_slice::<api::UploadResponse>(&body) {
                Ok(answer) if answer.format == upload.format => {
                    ledger.uploads_acked.insert(answer.id, upload);
                }
                Ok(answer) => {
                    ledger.failures.push(format!("upload of {} answered as {}", upload.format, answer.format))
                }
                Err(e) => ledger.failures.push(format!("upload answered 201 with an unreadable body: {e}")),
            }
        } else {
            ledger.failures.push(format!("upload of {} answered {status} {}", upload.format, error_code(&body)));
        }
    }
}

async fn grant_until_stopped(
    http: reqwest::Client,
    url: String,
    token: String,
    sakura: String,
    round: usize,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) {
    for n in 0.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let purpose = format!("crash harness grant {round}-{n}");
        let request = json!({
            "grantee": {"org": sakura},
            "labels": ["category:document"],
            "scope": ["document"],
            "actions": ["view"],
            "purpose": purpose,
        });
        ledger.lock().expect("ledger").grants_unanswered.insert(purpose.clone());
        let Ok(response) = http.post(&url).bearer_auth(&token).json(&request).send().await else { return };
        let status = response.status();
        let Ok(body) = response.bytes().await else { return };
        {
            let mut ledger = ledger.lock().expect("ledger");
            ledger.grants_unanswered.remove(&purpose);
            match serde_json::from_slice::<api::GrantView>(&body) {
                Ok(grant) if status == reqwest::StatusCode::CREATED && grant.purpose == purpose => {
                    ledger.grants_acked.insert(grant.id, purpose);
                }
                _ => ledger.failures.push(format!("grant answered {status} {}", error_code(&body))),
            }
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// Dr. Tanaka reads records known to be stored; each answer must carry their exact content.
async fn read_until_stopped(
    http: reqwest::Client,
    base: String,
    token: String,
    records: Vec<(String, Upload)>,
    seed: u64,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = SplitMix64(seed);
    while !stop.load(Ordering::SeqCst) && !records.is_empty() {
        let (id, upload) = &records[rng.below(records.len() as u64) as usize];
        let Ok(response) = http.get(format!("{base}/api/v1/records/{id}")).bearer_auth(&token).send().await else {
            return;
        };
        let status = response.status();
        let Ok(body) = response.bytes().await else { return };
        let mut ledger = ledger.lock().expect("ledger");
        ledger.reads += 1;
        if let Err(problem) = check_content(status, &body, upload) {
            ledger.failures.push(format!("reading record {id} during load: {problem}"));
        }
    }
}

/// Dr. Sato lists what Sakura Clinic is granted, and reads the first record listed.
async fn list_until_stopped(
    http: reqwest::Client,
    base: String,
    token: String,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let Ok(response) = http.get(format!("{base}/api/v1/records")).bearer_auth(&token).send().await else { return };
        let status = response.status();
        let Ok(body) = response.bytes().await else { return };
        let list = match serde_json::from_slice::<api::RecordList>(&body) {
            Ok(list) if status.is_success() => list,
            _ => {
                ledger.lock().expect("ledger").failures.push(format!("grantee's list answered {status}"));
                return;
            }
        };
        ledger.lock().expect("ledger").reads += 1;
        let Some(first) = list.records.first() else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let Ok(response) = http.get(format!("{base}/api/v1/records/{}", first.id)).bearer_auth(&token).send().await
        else {
            return;
        };
        let status = response.status();
        let Ok(body) = response.bytes().await else { return };
        let mut ledger = ledger.lock().expect("ledger");
        ledger.reads += 1;
        match content_of(&body) {
            Ok((_, Some(_))) if status.is_success() => {}
            _ => ledger.failures.push(format!("grantee's read of listed record {} answered {status}", first.id)),
        }
    }
}

fn check_content(status: reqwest::StatusCode, body: &[u8], upload: &Upload) -> Result<(), String> {
    if !status.is_success() {
        return Err(format!("answered {status} {}", error_code(body)));
    }
    let (view, content) = content_of(body)?;
    if view.format != upload.format || view.state != "active" {
        return Err(format!("format {} state {}, uploaded as {} (active)", view.format, view.state, upload.format));
    }
    match content {
        Some(content) if content == *upload.bytes => Ok(()),
        Some(content) => Err(format!(
            "content differs from what was uploaded ({} bytes read, {} uploaded)",
            content.len(),
            upload.bytes.len()
        )),
        None => Err("no content".to_owned()),
    }
}

// ---------------------------------------------------------------------------------------------
// Verification after a restart

async fn verify(
    server: &Server,
    sessions: &Sessions,
    ids: &Ids,
    known: &mut Known,
    rng: &mut SplitMix64,
    everything: bool,
) -> Kept {
    let mut failures = Vec::new();
    let pending = std::mem::take(&mut known.pending);

    // The audit chain.
    let verification: api::AuditVerification = server.get_json(&sessions.operator, "/api/v1/audit/verify").await;
    if !verification.ok {
        failures.push(format!(
            "the audit chain does not verify: broken at {:?}: {}",
            verification.broken_at_seq,
            verification.reason.unwrap_or_default()
        ));
    }

    // Records: the acknowledged all there, anything else explained by one unanswered upload.
    let list: api::RecordList = server.get_json(&sessions.tanaka, "/api/v1/records").await;
    let aoba = format!("org:{}", ids.aoba);
    let listed: BTreeMap<String, api::RecordSummary> =
        list.records.into_iter().filter(|r| r.owner == aoba).map(|r| (r.id.clone(), r)).collect();
    let mut expected: BTreeMap<String, Upload> = known.records.clone();
    expected.extend(pending.uploads_acked.iter().map(|(id, upload)| (id.clone(), upload.clone())));
    for id in expected.keys() {
        if !listed.contains_key(id) {
            failures.push(format!("record {id} was acknowledged (201) but is not listed after the restart"));
        }
    }
    let mut to_read: Vec<String> = pending.uploads_acked.keys().cloned().collect();
    let mut unanswered: Vec<Upload> = pending.uploads_unanswered.values().cloned().collect();
    let unexplained: Vec<String> = listed.keys().filter(|id| !expected.contains_key(*id)).cloned().collect();
    for id in &unexplained {
        let body = read_record(server, &sessions.tanaka, id).await;
        let found = match content_of(&body.1) {
            Ok((view, Some(content))) if body.0.is_success() => unanswered
                .iter()
                .position(|u| u.format == view.format && *u.bytes == content)
                .map(|at| unanswered.swap_remove(at)),
            _ => None,
        };
        match found {
            Some(upload) => {
                expected.insert(id.clone(), upload);
            }
            None => failures.push(format!(
                "record {id} is listed but matches no acknowledged or unanswered upload ({} were unanswered)",
                pending.uploads_unanswered.len()
            )),
        }
    }
    // Earlier rounds' records were read after their own restart; a sample of them again, all
    // at the end.
    let older: Vec<&String> = known.records.keys().collect();
    if everything {
        to_read.extend(older.into_iter().cloned());
    } else {
        for _ in 0..older.len().min(8) {
            to_read.push(older[rng.below(older.len() as u64) as usize].clone());
        }
    }
    for id in &to_read {
        if let Some(upload) = expected.get(id)
            && listed.contains_key(id)
        {
            let (status, body) = read_record(server, &sessions.tanaka, id).await;
            if let Err(problem) = check_content(status, &body, upload) {
                failures.push(format!("record {id} after the restart: {problem}"));
            }
        }
    }

    // Grants: the same for grants, matched by their unique purposes.
    let grants: api::GrantList = server.get_json(&sessions.tanaka, "/api/v1/grants").await;
    let grants: BTreeMap<String, api::GrantView> =
        grants.grants.into_iter().filter(|g| g.owner == aoba).map(|g| (g.id.clone(), g)).collect();
    let mut expected_grants = known.grants.clone();
    expected_grants.extend(pending.grants_acked.iter().map(|(id, purpose)| (id.clone(), purpose.clone())));
    for (id, purpose) in &expected_grants {
        match grants.get(id) {
            Some(grant) if grant.purpose == *purpose && grant.active => {}
            Some(_) => failures.push(format!("grant {id} is listed with other terms or inactive after the restart")),
            None => failures.push(format!("grant {id} was acknowledged (201) but is not listed after the restart")),
        }
    }
    let mut unanswered_grants = pending.grants_unanswered.clone();
    let unexplained: Vec<&api::GrantView> = grants.values().filter(|g| !expected_grants.contains_key(&g.id)).collect();
    for grant in unexplained {
        let id = &grant.id;
        if unanswered_grants.remove(&grant.purpose) {
            expected_grants.insert(id.clone(), grant.purpose.clone());
        } else {
            failures.push(format!("grant {id} is listed but matches no acknowledged or unanswered grant"));
        }
    }

    // The audit log: one upload entry per record, one grant_create entry per grant.
    let mut uploads_audited = BTreeMap::<String, usize>::new();
    let mut grants_audited = BTreeMap::<String, usize>::new();
    let mut after = 0;
    loop {
        let page: api::AuditList =
            server.get_json(&sessions.operator, &format!("/api/v1/audit?after={after}&limit=5000")).await;
        let Some(last) = page.entries.last() else { break };
        after = last.seq;
        for entry in &page.entries {
            match (entry.action.as_str(), entry.outcome.as_str()) {
                ("upload", "done") => *uploads_audited.entry(entry.record.clone()).or_default() += 1,
                ("grant_create", "done") => *grants_audited.entry(entry.grant.clone()).or_default() += 1,
                _ => {}
            }
        }
    }
    let listed_ids: BTreeSet<&String> = listed.keys().collect();
    let audited_ids: BTreeSet<&String> = uploads_audited.keys().collect();
    if listed_ids != audited_ids || uploads_audited.values().any(|n| *n != 1) {
        failures.push(format!(
            "records and their upload audit entries differ: {} listed, {} audited ({} without an entry, {} entries \
             without a record)",
            listed_ids.len(),
            uploads_audited.len(),
            listed_ids.difference(&audited_ids).count(),
            audited_ids.difference(&listed_ids).count()
        ));
    }
    let grant_ids: BTreeSet<&String> = grants.keys().collect();
    let audited_grants: BTreeSet<&String> = grants_audited.keys().collect();
    if grant_ids != audited_grants || grants_audited.values().any(|n| *n != 1) {
        failures.push(format!(
            "grants and their grant_create audit entries differ: {} listed, {} audited",
            grant_ids.len(),
            audited_grants.len()
        ));
    }

    // The grantee lists only stored records, and reads them.
    let granted: api::RecordList = server.get_json(&sessions.sato, "/api/v1/records").await;
    for record in granted.records.iter().take(if everything { usize::MAX } else { 4 }) {
        if !listed.contains_key(&record.id) {
            failures.push(format!("the grantee lists record {}, which its owner does not", record.id));
            continue;
        }
        let (status, body) = read_record(server, &sessions.sato, &record.id).await;
        match content_of(&body) {
            Ok((_, Some(_))) if status.is_success() => {}
            _ => failures.push(format!("the grantee cannot read listed record {}: {status}", record.id)),
        }
    }

    if !failures.is_empty() {
        server.print_log_tail();
        panic!("after the restart:\n{}", failures.join("\n"));
    }
    let kept = Kept {
        uploads: pending.uploads_unanswered.len() - unanswered.len(),
        grants: pending.grants_unanswered.len() - unanswered_grants.len(),
    };
    known.records = expected;
    known.grants = expected_grants;
    kept
}

/// How many of the last round's unanswered requests the server had committed.
struct Kept {
    uploads: usize,
    grants: usize,
}

async fn read_record(server: &Server, token: &str, id: &str) -> (reqwest::StatusCode, Vec<u8>) {
    let response =
        server.http.get(server.url(&format!("/api/v1/records/{id}"))).bearer_auth(token).send().await.expect("GET");
    let status = response.status();
    (status, response.bytes().await.expect("body").to_vec())
}

// ---------------------------------------------------------------------------------------------

/// SplitMix64: a seeded generator for kill points and choices, so that a seed replays them.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
