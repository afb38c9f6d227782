//! `kura demo`: seeds a complete scenario into a fresh data directory, then serves it.
//!
//! The server runs in this process; seeding drives it through its own HTTP API over a real
//! listener with the same [`Client`] the other commands use, so the demo exercises what users
//! do: two hospitals and a research organisation with one member each, patients from the
//! Synthea fixtures who register and link their accounts with codes from Aoba General Hospital,
//! uploads (FHIR bundles, two DICOM files, a generated PDF certificate), transfers of custody
//! (whole with a retained view, and partial with staff pseudonyms), a patient's grant to Sakura
//! Clinic, and a guardian who grants for a minor with `kura-act-as`.
//!
//! Every account gets a random password, printed at the end on purpose: the demo is for trying
//! Kura out, never for real patients.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use kura_api_types as api;
use serde_json::{Value, json};

use super::DataDirArg;
use crate::client::{Client, decode};
use crate::local;
use crate::output::Table;
use crate::secrets::{self, Secret};

#[derive(Debug, Args)]
#[command(after_help = "The demo prints every account with its password: it is for trying Kura \
    out, not for real patients.")]
pub struct DemoArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// The address to serve on after seeding [default: 127.0.0.1:8080, or KURA_LISTEN].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Seed only; do not serve afterwards (serve later with `kura serve --data-dir DIR`).
    #[arg(long)]
    seed_only: bool,
    /// Print one JSON object with the URL, accounts, passwords and record ids to stdout.
    #[arg(long)]
    json: bool,
    /// Delete an existing database in the data directory first (kura.db*, blobs/, master.key).
    #[arg(long)]
    reset: bool,
    /// The fixtures folder (synthea-r4/ and dicom/).
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures"))]
    fixtures: PathBuf,
}

pub const AOBA: &str = "Aoba General Hospital";
pub const SAKURA: &str = "Sakura Clinic";
pub const TOHOKU: &str = "Tohoku Medical Research";

/// The Synthea patients of the scenario, in the order of their roles in it.
const PATIENT_FIXTURES: [&str; 4] = [
    // Adult with imaging: CT, MR and a certificate; transfers whole, grants Sakura the images.
    "patient-01.json",
    // Adult whose conditions and observations move to them, staff names pseudonymized.
    "patient-03.json",
    // Adult whose records stay with Aoba for now.
    "patient-08.json",
    // The minor (born 2016), with a guardian.
    "patient-06.json",
];
const MINOR_INDEX: usize = 3;

/// While seeding, the server's own info logs would tear through the progress bar; only
/// warnings and errors pass until it is done.
static SEEDING: AtomicBool = AtomicBool::new(true);

fn init_logging() {
    use tracing_subscriber::prelude::*;
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let quiet_while_seeding = tracing_subscriber::filter::dynamic_filter_fn(|meta, _| {
        !SEEDING.load(Ordering::Relaxed) || *meta.level() <= tracing::Level::WARN
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(env)
        .with_filter(quiet_while_seeding);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// One account of the scenario, with its password (shown deliberately).
struct DemoAccount {
    username: String,
    password: Secret,
    role: &'static str,
    organisation: Option<&'static str>,
    account_id: String,
    mrns: BTreeMap<String, String>,
}

impl DemoAccount {
    fn to_json(&self) -> Value {
        let mut value = json!({
            "username": self.username,
            "password": self.password.expose(),
            "role": self.role,
            "organisation": self.organisation,
            "account_id": self.account_id,
        });
        if self.role == "patient" {
            value["mrns"] = json!(self.mrns);
        }
        value
    }
}

/// What seeding made.
#[derive(Default)]
struct Seeded {
    accounts: Vec<DemoAccount>,
    records: Vec<String>,
    grants: Vec<String>,
    delegations: Vec<String>,
}

pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    let flags: Vec<(&'static str, String)> = args.listen.map(|a| ("listen", a.to_string())).into_iter().collect();
    let mut config = args.data.load(flags)?;
    // The demo always runs on the embedded database of its data directory, which --reset clears.
    config.database_url = kura_server::Config::embedded(&config.data_dir).database_url;
    let listen = config.listen;
    let data_dir = config.data_dir.clone();
    prepare_data_dir(&data_dir, args.reset)?;
    let fixtures = Fixtures::find(&args.fixtures)?;
    init_logging();

    let app = local::open(config).await?;
    let data_dir = std::fs::canonicalize(&data_dir).unwrap_or(data_dir);

    let operator_password = secrets::generate_password()?;
    let operator_id = app
        .create_operator("operator", operator_password.expose())
        .await
        .map_err(|e| anyhow!("cannot create the demo operator: {e}"))?;

    // Seeding talks HTTP to this very process: on the address to serve on, or on a free
    // loopback port when only seeding.
    let bind_to = if args.seed_only { "127.0.0.1:0".parse()? } else { listen };
    let listener =
        tokio::net::TcpListener::bind(bind_to).await.with_context(|| format!("cannot listen on {bind_to}"))?;
    let bound = listener.local_addr()?;
    let seeding_url = format!("http://{}", loopback_for(bound));
    let url = if args.seed_only { format!("http://{}", listen) } else { format!("http://{bound}") };
    let server = tokio::spawn(kura_server::serve_on(app.clone(), listener));

    let progress = if args.json { ProgressBar::hidden() } else { ProgressBar::new(0) };
    progress.set_style(
        ProgressStyle::with_template("seeding {spinner} [{bar:30}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let operator = DemoAccount {
        username: "operator".into(),
        password: operator_password,
        role: "operator",
        organisation: None,
        account_id: operator_id,
        mrns: BTreeMap::new(),
    };
    let mut seeder = Seeder { server: seeding_url, progress, seeded: Seeded::default() };
    let outcome = seeder.seed(operator, &fixtures).await;
    seeder.progress.finish_and_clear();
    if let Err(e) = outcome {
        server.abort();
        return Err(e.context(format!(
            "the demo could not be seeded; the data directory {} is incomplete (run again with --reset)",
            data_dir.display()
        )));
    }
    let seeded = seeder.seeded;

    if args.json {
        let value = json!({
            "url": url,
            "data_dir": data_dir,
            "accounts": seeded.accounts.iter().map(DemoAccount::to_json).collect::<Vec<_>>(),
            "records": seeded.records,
            "grants": seeded.grants,
            "delegations": seeded.delegations,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_summary(&seeded, &url, &data_dir);
    }

    if args.seed_only {
        server.abort();
        let _ = server.await;
        app.store().close().await;
        if !args.json {
            println!();
            println!("seeded only; serve it with: kura serve --data-dir {} --listen {}", data_dir.display(), listen);
        }
        return Ok(ExitCode::SUCCESS);
    }

    SEEDING.store(false, Ordering::Relaxed);
    if !args.json {
        println!();
        println!("Kura is serving the demo at {url}  (Ctrl-C to stop)");
        println!("try: kura login --server {url} --username {}", example_patient(&seeded));
    }
    tracing::info!(%url, "demo seeded; serving");
    match server.await {
        Ok(result) => result.map_err(|e| anyhow!(e))?,
        Err(e) => bail!("the server stopped: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// A wildcard address (0.0.0.0, ::) is not one to connect to; use loopback on its port.
fn loopback_for(address: std::net::SocketAddr) -> std::net::SocketAddr {
    let mut address = address;
    if address.ip().is_unspecified() {
        address.set_ip(if address.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    address
}

fn example_patient(seeded: &Seeded) -> String {
    seeded.accounts.iter().find(|a| a.role == "patient").map(|a| a.username.clone()).unwrap_or_default()
}

fn print_summary(seeded: &Seeded, url: &str, data_dir: &Path) {
    println!("Kura demo seeded in {}", data_dir.display());
    println!();
    let mut table = Table::new(["USERNAME", "PASSWORD", "ROLE", "ORGANISATION", "ACCOUNT ID", "MRN"]);
    for a in &seeded.accounts {
        let mrns = a.mrns.iter().map(|(org, mrn)| format!("{mrn} ({org})")).collect::<Vec<_>>().join(", ");
        table.row(vec![
            a.username.clone(),
            a.password.expose().to_owned(),
            a.role.to_owned(),
            a.organisation.unwrap_or("-").to_owned(),
            a.account_id.clone(),
            if mrns.is_empty() { "-".to_owned() } else { mrns },
        ]);
    }
    println!("{}", table.render());
    println!();
    println!(
        "{} records, {} grants, {} delegation(s); server URL {url}",
        seeded.records.len(),
        seeded.grants.len(),
        seeded.delegations.len()
    );
}

/// Refuses a data directory that already holds a database, unless `reset` clears it first.
fn prepare_data_dir(dir: &Path, reset: bool) -> Result<()> {
    if !dir.join("kura.db").exists() {
        return Ok(());
    }
    if !reset {
        bail!(
            "{} already holds a Kura database; pick another --data-dir, or pass --reset to delete it \
             (kura.db*, blobs/ and master.key)",
            dir.display()
        );
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("kura.db") || name == "master.key" {
            std::fs::remove_file(entry.path()).with_context(|| format!("cannot delete {}", entry.path().display()))?;
        }
    }
    let blobs = dir.join("blobs");
    if blobs.exists() {
        std::fs::remove_dir_all(&blobs).with_context(|| format!("cannot delete {}", blobs.display()))?;
    }
    Ok(())
}

/// The fixture files the scenario reads, checked before anything is created.
struct Fixtures {
    patients: Vec<PathBuf>,
    ct: PathBuf,
    mr: PathBuf,
}

impl Fixtures {
    fn find(root: &Path) -> Result<Self> {
        let patients: Vec<PathBuf> = PATIENT_FIXTURES.iter().map(|f| root.join("synthea-r4").join(f)).collect();
        let ct = root.join("dicom").join("CT_small.dcm");
        let mr = root.join("dicom").join("MR_small.dcm");
        for path in patients.iter().chain([&ct, &mr]) {
            if !path.is_file() {
                bail!(
                    "the demo fixture {} is missing; point --fixtures at the folder holding synthea-r4/ and dicom/",
                    path.display()
                );
            }
        }
        Ok(Self { patients, ct, mr })
    }
}

/// What the scenario needs to know about a Synthea patient.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FixturePatient {
    username: String,
    display_name: String,
    family: String,
    birth_date: String,
}

/// Name and birth date from the Patient resource of a Synthea bundle.
fn fixture_patient(bundle: &Value) -> Result<FixturePatient> {
    let patient = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == "Patient")
        .ok_or_else(|| anyhow!("the bundle has no Patient resource"))?;
    let name = &patient["name"][0];
    let given = name["given"][0].as_str().unwrap_or("patient");
    let family = name["family"].as_str().unwrap_or("");
    let letters = |s: &str| s.chars().filter(|c| c.is_ascii_alphabetic()).collect::<String>().to_ascii_lowercase();
    let username = match (letters(given), letters(family)) {
        (g, f) if !g.is_empty() && !f.is_empty() => format!("{g}.{f}"),
        (g, _) if g.len() >= 3 => g,
        _ => bail!("the Patient resource has no usable name"),
    };
    let strip_digits = |s: &str| s.chars().filter(|c| !c.is_ascii_digit()).collect::<String>();
    Ok(FixturePatient {
        username,
        display_name: format!("{} {}", strip_digits(given), strip_digits(family)).trim().to_owned(),
        family: strip_digits(family),
        birth_date: patient["birthDate"].as_str().unwrap_or("").to_owned(),
    })
}

/// The day a person born on `birth_date` (YYYY-MM-DD) turns 18, as RFC 3339; `None` if that is
/// not in the future or the date is unreadable.
fn coming_of_age(birth_date: &str, now: jiff::Timestamp) -> Option<String> {
    let date: jiff::civil::Date = birth_date.parse().ok()?;
    let adult = date.checked_add(jiff::Span::new().years(18)).ok()?;
    let at = adult.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    (at > now).then(|| at.to_string())
}

struct Seeder {
    server: String,
    progress: ProgressBar,
    seeded: Seeded,
}

/// Steps of the scenario, for the progress bar: operator login, 3 organisations, 3 member
/// accounts, the guardian, per patient (register, link code, redeem, upload), 2 DICOM, the
/// certificate, 6 transfers, the image grant, the guardianship and the guardian's grant.
const STEPS: u64 = 1 + 3 + 3 + 1 + 4 * 4 + 2 + 1 + 6 + 1 + 2;

impl Seeder {
    async fn step<T>(&self, label: &str, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        self.progress.set_message(label.to_owned());
        let out = work.await.with_context(|| format!("seeding failed at: {label}"))?;
        self.progress.inc(1);
        Ok(out)
    }

    async fn login(&self, username: &str, password: &Secret) -> Result<Client> {
        let response = Client::new(&self.server, None)?.login(username, password, None).await?;
        Client::new(&self.server, Some(Secret::new(response.token)))
    }

    async fn seed(&mut self, operator: DemoAccount, fixtures: &Fixtures) -> Result<()> {
        self.progress.set_length(STEPS);
        let admin = self.step("operator logs in", self.login(&operator.username, &operator.password)).await?;
        self.seeded.accounts.push(operator);

        // Organisations and their members.
        let mut org_ids = BTreeMap::new();
        for (name, kind) in [(AOBA, "institution"), (SAKURA, "institution"), (TOHOKU, "research")] {
            let request = api::CreateOrgRequest { name: name.into(), kind: kind.into() };
            let org: api::OrgView = self
                .step(&format!("register {name}"), async {
                    decode(admin.post(&["api", "v1", "orgs"], &request).await?)
                })
                .await?;
            org_ids.insert(name, org.id);
        }
        for (username, kind, org) in
            [("dr.tanaka", "staff", AOBA), ("dr.sato", "staff", SAKURA), ("prof.suzuki", "researcher", TOHOKU)]
        {
            let password = secrets::generate_password()?;
            let request = api::CreateAccountRequest {
                username: username.into(),
                password: password.expose().to_owned(),
                kind: kind.into(),
                org: Some(org_ids[org].clone()),
            };
            let account: api::AccountView = self
                .step(&format!("create {kind} {username}"), async {
                    decode(admin.post(&["api", "v1", "accounts"], &request).await?)
                })
                .await?;
            self.seeded.accounts.push(DemoAccount {
                username: username.into(),
                password,
                role: if kind == "staff" { "staff" } else { "researcher" },
                organisation: Some(org),
                account_id: account.id,
                mrns: BTreeMap::new(),
            });
        }
        let aoba = self.login("dr.tanaka", &self.password_of("dr.tanaka")?).await?;

        // Patients register, Aoba hands each a link code for their MRN, they redeem it, and
        // Aoba uploads their records.
        let mut patients = Vec::new();
        let mut bundles = Vec::new();
        for (index, path) in fixtures.patients.iter().enumerate() {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let bundle: Value =
                serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))?;
            let person = fixture_patient(&bundle).with_context(|| format!("in {}", path.display()))?;
            let mrn = format!("AOBA-{}", 100_001 + index);
            let (account, client) = self.register_patient(&person.username, "patient").await?;
            let code: api::LinkCodeView = self
                .step(&format!("Aoba issues a link code for {mrn}"), async {
                    decode(aoba.post(&["api", "v1", "links"], &api::CreateLinkCodeRequest { mrn: mrn.clone() }).await?)
                })
                .await?;
            let request = api::RedeemLinkCodeRequest { code: code.code };
            self.step(&format!("{} redeems the link code", person.username), async {
                client.post(&["api", "v1", "links", "redeem"], &request).await
            })
            .await?;
            // Demo patients opt in to research search and statistics, so those flows have data.
            let choices =
                api::PreferencesBody { discoverable: true, contribute_statistics: true, privacy_loss_cap: None };
            self.step(&format!("{} opts in to research", person.username), async {
                client.put(&["api", "v1", "preferences"], &choices).await
            })
            .await?;
            let uploaded = self
                .upload(&aoba, &format!("Aoba uploads {}", file_name(path)), &mrn, None, "application/fhir+json", bytes)
                .await?;
            let mut account = account;
            account.mrns.insert(AOBA.to_owned(), mrn.clone());
            self.seeded.accounts.push(account);
            patients.push((person, mrn, client));
            bundles.push(uploaded);
        }

        // The first patient's imaging and a certificate.
        let (imaging_person, imaging_mrn, imaging_client) = &patients[0];
        let ct_bytes = std::fs::read(&fixtures.ct).with_context(|| format!("cannot read {}", fixtures.ct.display()))?;
        let ct =
            self.upload(&aoba, "Aoba uploads CT_small.dcm", imaging_mrn, None, "application/dicom", ct_bytes).await?;
        let mr_bytes = std::fs::read(&fixtures.mr).with_context(|| format!("cannot read {}", fixtures.mr.display()))?;
        let mr =
            self.upload(&aoba, "Aoba uploads MR_small.dcm", imaging_mrn, None, "application/dicom", mr_bytes).await?;
        let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
        let pdf = certificate_pdf(&[
            AOBA,
            "Medical certificate",
            &format!("Patient: {} ({imaging_mrn})", imaging_person.display_name),
            "Fit to return to work after the examination.",
            &format!("Issued {today}."),
        ]);
        let certificate = self
            .upload(
                &aoba,
                "Aoba uploads a PDF certificate",
                imaging_mrn,
                Some(api::Category::Certificate),
                "application/pdf",
                pdf,
            )
            .await?;

        // Custody moves to the patients.
        let whole_retained = api::TransferAgreementBody { retain_view: true, ..Default::default() };
        self.transfer(&aoba, &bundles[0], whole_retained, "whole, Aoba keeps a view").await?;
        for record in [&ct, &mr, &certificate] {
            self.transfer(&aoba, record, api::TransferAgreementBody::default(), "whole").await?;
        }
        let partial = api::TransferAgreementBody {
            retain_view: false,
            parts: Some(vec![api::Category::Condition, api::Category::Observation]),
            anonymize_staff: true,
            carry_over_grants: Vec::new(),
        };
        self.transfer(&aoba, &bundles[1], partial, "conditions and observations, staff pseudonymized").await?;
        let minor_record =
            self.transfer(&aoba, &bundles[MINOR_INDEX], api::TransferAgreementBody::default(), "whole (minor)").await?;

        // The imaging patient lets Sakura Clinic view (and take sealed copies of) the images for 30 days.
        let image_grant = api::CreateGrantRequest {
            grantee: api::PartyRef::Org(org_ids[SAKURA].clone()),
            records: Some(vec![ct.clone(), mr.clone()]),
            labels: Vec::new(),
            scope: vec![api::Category::Image],
            actions: vec![api::GrantAction::View, api::GrantAction::Copy],
            anonymization: api::Anonymization::None,
            not_before: None,
            expires_at: Some(crate::values::days_from(jiff::Timestamp::now(), 30)?),
            purpose: "second opinion on imaging".into(),
        };
        let grant: api::GrantView = self
            .step(&format!("{} grants {SAKURA} view of the images", imaging_person.username), async {
                decode(imaging_client.post(&["api", "v1", "grants"], &image_grant).await?)
            })
            .await?;
        self.seeded.grants.push(grant.id);

        // The minor's guardian: registered by Aoba, acting for the minor with kura-act-as.
        let (minor, _, _) = &patients[MINOR_INDEX];
        let minor_id = self.account_id_of(&minor.username)?;
        let guardian_name = format!("guardian.{}", minor.family.to_ascii_lowercase());
        let (guardian_account, _) = self.register_patient(&guardian_name, "guardian").await?;
        let guardian_password = guardian_account.password.clone();
        self.seeded.accounts.push(guardian_account);
        let guardianship = api::CreateDelegationRequest {
            agent: guardian_name.clone(),
            patient: Some(minor_id.clone()),
            kind: "guardian".into(),
            powers: vec![api::Power::View, api::Power::Copy, api::Power::ManageGrants],
            expires_at: coming_of_age(&minor.birth_date, jiff::Timestamp::now()),
        };
        let delegation: api::DelegationView = self
            .step(&format!("Aoba registers {guardian_name} as guardian of {}", minor.username), async {
                decode(aoba.post(&["api", "v1", "delegations"], &guardianship).await?)
            })
            .await?;
        self.seeded.delegations.push(delegation.id);
        let guardian = self.login(&guardian_name, &guardian_password).await?.acting_as(Some(minor_id));
        let minor_grant = api::CreateGrantRequest {
            grantee: api::PartyRef::Org(org_ids[SAKURA].clone()),
            records: Some(vec![minor_record]),
            labels: Vec::new(),
            scope: vec![api::Category::Condition, api::Category::Medication, api::Category::Observation],
            actions: vec![api::GrantAction::View],
            anonymization: api::Anonymization::None,
            not_before: None,
            expires_at: Some(crate::values::days_from(jiff::Timestamp::now(), 90)?),
            purpose: "paediatric follow-up at Sakura Clinic".into(),
        };
        let grant: api::GrantView = self
            .step(&format!("{guardian_name} grants {SAKURA} a view for {}", minor.username), async {
                decode(guardian.post(&["api", "v1", "grants"], &minor_grant).await?)
            })
            .await?;
        self.seeded.grants.push(grant.id);
        Ok(())
    }

    fn account(&self, username: &str) -> Result<&DemoAccount> {
        self.seeded
            .accounts
            .iter()
            .find(|a| a.username == username)
            .ok_or_else(|| anyhow!("the demo has no account {username}"))
    }

    fn password_of(&self, username: &str) -> Result<Secret> {
        Ok(self.account(username)?.password.clone())
    }

    fn account_id_of(&self, username: &str) -> Result<String> {
        Ok(self.account(username)?.account_id.clone())
    }

    /// Registers a personal account with a random password and logs it in.
    async fn register_patient(&self, username: &str, role: &'static str) -> Result<(DemoAccount, Client)> {
        let password = secrets::generate_password()?;
        let request = api::RegisterPatientRequest { username: username.into(), password: password.expose().to_owned() };
        let account: api::AccountView = self
            .step(&format!("{username} registers"), async {
                decode(Client::new(&self.server, None)?.post(&["api", "v1", "auth", "register"], &request).await?)
            })
            .await?;
        let client = self.login(username, &password).await?;
        let demo = DemoAccount {
            username: username.into(),
            password,
            role,
            organisation: None,
            account_id: account.id,
            mrns: BTreeMap::new(),
        };
        Ok((demo, client))
    }

    async fn upload(
        &mut self,
        client: &Client,
        label: &str,
        mrn: &str,
        category: Option<api::Category>,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<String> {
        let uploaded: api::UploadResponse =
            self.step(label, async { decode(client.upload(mrn, category, content_type, bytes).await?) }).await?;
        self.seeded.records.push(uploaded.id.clone());
        Ok(uploaded.id)
    }

    /// Transfers a record to its patient; the id of the record the patient now owns.
    async fn transfer(
        &mut self,
        aoba: &Client,
        record: &str,
        agreement: api::TransferAgreementBody,
        how: &str,
    ) -> Result<String> {
        let request = api::TransferRequest { agreement };
        let transferred: api::TransferResponse = self
            .step(&format!("Aoba transfers {record} ({how})"), async {
                decode(aoba.post(&["api", "v1", "records", record, "transfer"], &request).await?)
            })
            .await?;
        if transferred.record != record {
            self.seeded.records.push(transferred.record.clone());
        }
        if let Some(grant) = transferred.retained_grant {
            self.seeded.grants.push(grant);
        }
        Ok(transferred.record)
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A minimal, valid one-page PDF 1.4 document showing `lines` in Helvetica, with a correct
/// cross-reference table and the `%%EOF` marker at its end.
pub fn certificate_pdf(lines: &[&str]) -> Vec<u8> {
    let escape = |text: &str| {
        text.chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .flat_map(|c| match c {
                '(' | ')' | '\\' => vec!['\\', c],
                _ => vec![c],
            })
            .collect::<String>()
    };
    let mut stream = String::from("BT\n/F1 16 Tf\n18 TL\n72 770 Td\n");
    for (i, line) in lines.iter().enumerate() {
        if i == 1 {
            stream.push_str("/F1 12 Tf\n");
        }
        stream.push_str(&format!("({}) Tj T*\n", escape(line)));
    }
    stream.push_str("ET\n");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R \
         /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_owned(),
        format!("<< /Length {} >>\nstream\n{stream}endstream", stream.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, body) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref_at = pdf.len();
    let mut xref = format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
    for offset in offsets {
        xref.push_str(&format!("{offset:010} 00000 n \n"));
    }
    pdf.extend_from_slice(xref.as_bytes());
    pdf.extend_from_slice(
        format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref_at}\n%%EOF\n", objects.len() + 1).as_bytes(),
    );
    pdf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_is_a_well_formed_pdf() {
        let pdf = certificate_pdf(&["Aoba General Hospital", "Patient: O'Connell (x)", "back\\slash"]);
        assert!(pdf.starts_with(b"%PDF-1.4\n"));
        assert!(pdf.ends_with(b"%%EOF\n"));
        // One char per byte, so that positions in the text are positions in the bytes.
        let text: String = pdf.iter().map(|&b| if b.is_ascii() { char::from(b) } else { '?' }).collect();
        assert!(text.contains("(Patient: O'Connell \\(x\\)) Tj"), "{text}");
        assert!(text.contains("(back\\\\slash) Tj"), "{text}");
        // startxref points at the xref table, and each entry at its object.
        let startxref: usize = text.rsplit("startxref\n").next().unwrap().lines().next().unwrap().parse().unwrap();
        assert!(pdf[startxref..].starts_with(b"xref\n"));
        let table = &text[startxref..];
        for (n, line) in table.lines().skip(3).take(5).enumerate() {
            let offset: usize = line[..10].parse().unwrap();
            let expected = format!("{} 0 obj", n + 1);
            assert!(pdf[offset..].starts_with(expected.as_bytes()), "object {}", n + 1);
        }
        // The stream length is exact.
        let length: usize = text.split("/Length ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        let start = text.find("stream\n").unwrap() + "stream\n".len();
        assert_eq!(&text[start + length..start + length + "endstream".len()], "endstream");
    }

    #[test]
    fn synthea_patients_give_usernames_and_birth_dates() {
        let bundle = json!({"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "Organization"}},
            {"resource": {"resourceType": "Patient", "birthDate": "2016-06-26",
                "name": [{"given": ["Van944"], "family": "O'Rosenbaum537"}]}}
        ]});
        let patient = fixture_patient(&bundle).unwrap();
        assert_eq!(
            patient,
            FixturePatient {
                username: "van.orosenbaum".into(),
                display_name: "Van O'Rosenbaum".into(),
                family: "O'Rosenbaum".into(),
                birth_date: "2016-06-26".into(),
            }
        );
        assert!(fixture_patient(&json!({"entry": []})).is_err());
    }

    #[test]
    fn guardianship_ends_at_eighteen() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(coming_of_age("2016-06-26", now).as_deref(), Some("2034-06-26T00:00:00Z"));
        assert_eq!(coming_of_age("1989-02-24", now), None);
        assert_eq!(coming_of_age("unknown", now), None);
    }

    #[test]
    fn a_data_dir_with_a_database_is_refused_unless_reset() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        prepare_data_dir(root, false).unwrap();
        for name in ["kura.db", "kura.db-wal", "master.key", "notes.txt"] {
            std::fs::write(root.join(name), b"x").unwrap();
        }
        std::fs::create_dir_all(root.join("blobs/ab")).unwrap();
        let message = prepare_data_dir(root, false).unwrap_err().to_string();
        assert!(message.contains("--reset"), "{message}");
        prepare_data_dir(root, true).unwrap();
        assert!(!root.join("kura.db").exists() && !root.join("kura.db-wal").exists());
        assert!(!root.join("master.key").exists() && !root.join("blobs").exists());
        assert!(root.join("notes.txt").exists(), "other files stay");
    }

    #[test]
    fn the_fixtures_of_the_scenario_are_found() {
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures"));
        let fixtures = Fixtures::find(root).unwrap();
        assert_eq!(fixtures.patients.len(), PATIENT_FIXTURES.len());
        assert!(Fixtures::find(Path::new("/nonexistent")).is_err());
    }
}
