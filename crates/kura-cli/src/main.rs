//! `kura`, the one binary of Kura, a medical records server on which patients own their records.
//!
//! `kura serve`, `kura demo` and `kura operator bootstrap` run the server (or open its store)
//! in this process. Every other subcommand is a client of the HTTP API: it speaks JSON through
//! the shared wire types of `kura-api-types` and never touches SQL or the store directly.
//!
//! This file holds the command line (clap) and the dispatch; the work is in the modules.
//! Errors end as one line on stderr, `error: ...`, with exit code 1. Passwords and tokens never
//! appear in `Debug` output or logs.

/// The server answers each read with buffers of the record's size (160 KB for a bundle) among
/// hundreds of small ones; glibc's allocator spent 14% of a loaded server's CPU on them and on
/// its arena locks, mimalloc a fraction of it: 160 KB reads went from 7,900 to 10,200 req/s at
/// 32 clients (`docs/PERFORMANCE.md`). `kura-bench` runs the server under the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod analysis;
mod archive;
mod client;
mod commands;
mod completions;
mod deid;
mod demo;
mod inbox;
mod local;
mod output;
mod peers;
mod providers;
mod research;
mod sealed;
mod secrets;
mod session;
mod upload;
mod values;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use kura_api_types as api;

/// Kura: a medical records server on which patients own their records.
#[derive(Debug, Parser)]
#[command(name = "kura", version, propagate_version = true, max_term_width = 100)]
#[command(after_help = "Start with `kura demo` for a seeded server, or `kura serve` for an empty one.\n\
    Client commands use --server (env KURA_SERVER) and the session saved by `kura login`.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (embedded SQLite and a blob folder under the data directory by default).
    Serve(ServeArgs),
    /// Seed a complete demo scenario (hospitals, patients, a guardian, researchers) and serve it.
    Demo(DemoArgs),
    /// Offline administration that opens the store directly.
    #[command(subcommand)]
    Operator(OperatorCommand),

    /// Log in with a username and password and save the session.
    Login(LoginArgs),
    /// Forget the saved session.
    Logout,
    /// Show the account you are logged in as.
    Whoami(WithConnection),
    /// Register a patient account (self-registration).
    Register(RegisterArgs),
    /// Organisations: institutions and research organisations (operators create them).
    Org(OrgArgs),
    /// Staff, researcher and operator accounts (operators).
    Account(AccountArgs),
    /// Machine clients of an organisation (operators).
    Client(ClientArgs),
    /// Link codes that tie a patient account to an institution's local patient id.
    Link(LinkArgs),
    /// Records: upload, list, show, custody ledger, transfer, copy, sealed copies, move, delete.
    Records(RecordsArgs),
    /// Open a sealed copy's package: fetch its key from the server that sealed it, in memory only.
    Open(OpenArgs),
    /// Grants: who may use which of your records, how, and for how long.
    Grant(GrantArgs),
    /// Delegations: agents (guardians, proxies) acting for a patient.
    Delegation(DelegationArgs),
    /// The audit log and its hash-chain check.
    Audit(AuditArgs),
    /// Two-factor authentication with a one-time code app.
    Totp(TotpArgs),
    /// De-identify a FHIR or DICOM file offline, or check one for residual identifiers.
    Deid(deid::DeidArgs),
    /// Print a shell completion script: `kura completions bash > /etc/bash_completion.d/kura`.
    Completions(completions::CompletionsArgs),
    /// Your research choices: whether research search may find you, and statistics.
    Prefs(PrefsArgs),
    /// Studies of your research organisation (researchers).
    Study(StudyArgs),
    /// Search for people who opted in to research: a count and one handle each (researchers).
    Search(SearchArgs),
    /// Usage requests: researchers ask owners for their records, owners answer.
    Request(RequestArgs),
    /// Analyses: aggregates over the records a study may use, with disclosure control (researchers).
    Analysis(AnalysisArgs),
    /// Standing statistics per condition, people like you, and the analyses that included you.
    Stats(StatsArgs),
    /// Your notifications, oldest first; `kura inbox read ID` marks one read.
    Inbox(InboxArgs),
    /// Follow your notifications live as they arrive, until interrupted.
    Events(EventsArgs),
    /// Webhooks: your organisation's notifications POSTed to a URL (staff, researchers).
    Webhook(WebhookArgs),
    /// Your records on removable media: export an encrypted, signed archive, import one.
    Patient(PatientArgs),
    /// External FHIR providers you link; Kura pulls your records from them (patients, agents).
    Provider(ProviderArgs),
    /// Peer servers: the registry (operators) and move-in tokens (patients at the destination).
    Peer(PeerArgs),
}

// ---------------------------------------------------------------------------------------------
// Commands that run in this process

/// Where the server keeps its data.
#[derive(Debug, Args)]
struct DataDirArg {
    /// The data directory: SQLite database, blob folder and master key.
    #[arg(long, env = "KURA_DATA_DIR", default_value = "./kura-data", value_name = "DIR")]
    data_dir: PathBuf,
}

#[derive(Debug, Args)]
#[command(after_help = "The master key is read from KURA_MASTER_KEY (64 hex digits) when set, else from \
    (or created in) DIR/master.key. KURA_SERVER_NAME names this server to peers and in exported \
    archives (default kura). Research counts below KURA_DISCLOSURE_K people (default 10) are \
    not disclosed. Linked external providers are pulled when their last sync is older than \
    KURA_PROVIDER_SYNC_INTERVAL_SECS (default 21600, six hours). Webhooks, external providers and \
    peers on loopback, private, link-local and other non-public addresses are refused unless \
    KURA_OUTBOUND_ALLOWED_NETWORKS allows their network (comma-separated, such as \
    10.20.0.0/16,127.0.0.1; also read by demo). Logs go to stderr; set RUST_LOG (default info).")]
struct ServeArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// The address to listen on.
    #[arg(long, env = "KURA_LISTEN", default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: SocketAddr,
    /// `sqlite:PATH` or `postgres://...` (default: SQLite at DIR/kura.db).
    #[arg(long, env = "KURA_DATABASE_URL", hide_env_values = true, value_name = "URL")]
    database_url: Option<String>,
    /// The URL clients reach this server at (default: http://<listen>).
    #[arg(long, env = "KURA_PUBLIC_URL", value_name = "URL")]
    public_url: Option<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "The demo prints every account with its password: it is for trying Kura \
    out, not for real patients.")]
struct DemoArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// The address to serve on after seeding.
    #[arg(long, env = "KURA_LISTEN", default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: SocketAddr,
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

#[derive(Debug, Subcommand)]
enum OperatorCommand {
    /// Create the first operator account, offline, directly in the store.
    #[command(after_help = "Without --password-stdin a random password is generated and printed once.")]
    Bootstrap(BootstrapArgs),
}

#[derive(Debug, Args)]
struct BootstrapArgs {
    /// The operator's username.
    #[arg(long)]
    username: String,
    /// Read the password from stdin instead of generating one.
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    data: DataDirArg,
    /// `sqlite:PATH` or `postgres://...` (default: SQLite at DIR/kura.db).
    #[arg(long, env = "KURA_DATABASE_URL", hide_env_values = true, value_name = "URL")]
    database_url: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Client commands

/// How a client command reaches the server and who it is there.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection")]
struct Connection {
    /// The server's URL [default: the logged-in session's, else http://127.0.0.1:8080].
    #[arg(long, env = "KURA_SERVER", global = true, value_name = "URL")]
    server: Option<String>,
    /// A bearer token [default: the session saved by `kura login`].
    #[arg(long, env = "KURA_TOKEN", global = true, hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Print the server's JSON answer as is.
    #[arg(long, global = true)]
    json: bool,
}

/// For agents: act as a patient under a delegation.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection")]
struct ActAs {
    /// Act for this patient (account id) under your delegation (sends `kura-act-as`).
    #[arg(long, global = true, value_name = "PATIENT_ID")]
    act_as: Option<String>,
}

#[derive(Debug, Args)]
struct WithConnection {
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
#[command(after_help = "Without --password-stdin the password is asked for on the terminal.\n\
    The session is saved to $KURA_SESSION or ~/.kura/session.json (mode 0600).")]
struct LoginArgs {
    #[command(flatten)]
    conn: Connection,
    #[arg(long)]
    username: String,
    /// Read the password from stdin.
    #[arg(long)]
    password_stdin: bool,
    /// The current one-time code, for accounts with two-factor authentication.
    #[arg(long, value_name = "CODE")]
    totp: Option<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "Without --password-stdin a random password is generated and printed once.")]
struct RegisterArgs {
    #[command(flatten)]
    conn: Connection,
    #[arg(long)]
    username: String,
    /// Read the password from stdin (at least 10 characters).
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, Args)]
struct OrgArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: OrgCommand,
}

#[derive(Debug, Subcommand)]
enum OrgCommand {
    /// Register an institution or a research organisation (operators).
    Create {
        #[arg(long)]
        name: String,
        /// `institution` or `research`.
        #[arg(long, value_parser = ["institution", "research"])]
        kind: String,
    },
    /// List the organisations on the server.
    List,
}

#[derive(Debug, Args)]
struct AccountArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: AccountCommand,
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// Create a staff, researcher, operator or study reviewer account (operators). Patients use
    /// `kura register`.
    #[command(after_help = "Without --password-stdin a random password is generated and printed once.")]
    Create {
        #[arg(long)]
        username: String,
        #[arg(long, value_parser = ["staff", "researcher", "operator", "reviewer"])]
        kind: String,
        /// The organisation (id or exact name) a staff member or researcher acts for.
        #[arg(long, value_name = "ORG")]
        org: Option<String>,
        /// Read the password from stdin.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Args)]
struct ClientArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Register a machine client with its public key; it then signs JWT assertions for tokens.
    Register {
        /// The organisation (id or exact name).
        #[arg(long, value_name = "ORG")]
        org: String,
        /// The client's public key, PEM (SPKI).
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        #[arg(long, default_value = "ES384", value_parser = ["ES384", "ES256", "RS384", "RS256", "EdDSA"])]
        algorithm: String,
    },
}

#[derive(Debug, Args)]
struct LinkArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    act_as: ActAs,
    #[command(subcommand)]
    command: LinkCommand,
}

#[derive(Debug, Subcommand)]
enum LinkCommand {
    /// Issue a one-time link code for a local patient id (institution staff).
    Issue {
        /// The institution's local patient id.
        #[arg(long)]
        mrn: String,
    },
    /// Redeem a link code from an institution (patients).
    Redeem {
        /// The code, as handed out (dashes and case do not matter).
        code: String,
    },
    /// The institutions your account is linked to.
    List,
}

#[derive(Debug, Args)]
struct RecordsArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    act_as: ActAs,
    #[command(subcommand)]
    command: RecordsCommand,
}

#[derive(Debug, Subcommand)]
enum RecordsCommand {
    /// Upload files or folders for a local patient id (institution staff).
    #[command(after_help = "Folders are read recursively: *.json is sent as FHIR, *.dcm as DICOM, \
        *.pdf as PDF; other files are skipped with a note. A failed file does not stop the rest; \
        the exit code is 1 if any failed.")]
    Upload {
        /// Files or folders.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// The institution's local patient id (MRN) the content is about.
        #[arg(long, value_name = "MRN")]
        patient: String,
        /// For PDFs: `certificate` or `document` (the server's default).
        #[arg(long, value_parser = ["certificate", "document"])]
        category: Option<String>,
    },
    /// List the records you may see.
    List {
        /// Only records carrying this label (repeatable; all must match), e.g. icd10:E11.
        #[arg(long = "label", value_name = "LABEL")]
        labels: Vec<String>,
    },
    /// Show a record's metadata, and save its content with --out.
    Show {
        id: String,
        /// Write the content here, exactly the bytes the server sent (FHIR JSON as served).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// The custody ledger of a record (owners).
    Ledger { id: String },
    /// Transfer custody of a record to the linked patient (institution staff).
    Transfer {
        id: String,
        /// The institution keeps a view grant.
        #[arg(long)]
        retain_view: bool,
        /// Only parts of these categories move (the record splits), e.g. condition,observation.
        #[arg(long, value_delimiter = ',', value_parser = values::category, value_name = "CATEGORIES")]
        parts: Option<Vec<api::Category>>,
        /// Replace the names of the institution and its staff by stable pseudonyms.
        #[arg(long)]
        anonymize_staff: bool,
        /// Grants of the institution over the record that become the patient's (with their
        /// copies); every other grant ends and its copies are destroyed.
        #[arg(long, value_delimiter = ',', value_name = "GRANT_IDS")]
        carry_over_grants: Vec<String>,
    },
    /// Make an in-server copy (owners, or grantees with the copy action).
    Copy { id: String },
    /// Take a copy out as a sealed package that opens only while your grant stands (grantees).
    #[command(after_help = "The package is encrypted; its key stays on the server, which releases it only \
        to you, only until the grant's end and while the owner does not revoke it. Open it with \
        `kura open FILE`.")]
    SealedCopy {
        id: String,
        /// Where to save the package [default: ./<sealed copy id>.kura-sealed].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Sealed copies of your records (with deletion receipts) and those you took out.
    SealedCopies,
    /// Deliver the content and remove it here; a locator stays behind. With --peer, move it into
    /// your account at a registered peer server instead.
    #[command(after_help = "The content comes back in the answer only: save it with --out FILE (or take it \
        from --json), the server keeps nothing but the locator.\n\n\
        To another Kura server: get a token there (`kura peer token`, logged in at that server), then \
        `kura records move ID --peer NAME --peer-token TOKEN` here.")]
    Move {
        id: String,
        /// Where the content goes, in words or as a URL; kept in the locator.
        #[arg(long, value_name = "TEXT", conflicts_with = "peer")]
        destination: Option<String>,
        /// The registered peer server to move the record to.
        #[arg(long, value_name = "NAME", requires = "peer_token", conflicts_with = "out")]
        peer: Option<String>,
        /// The one-time token from `kura peer token` at the peer.
        #[arg(long, value_name = "TOKEN", requires = "peer", value_parser = peers::secret_arg)]
        peer_token: Option<secrets::Secret>,
        /// Write the delivered content here: FHIR as pretty JSON, DICOM and PDF as their bytes.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Delete a record: its data key is destroyed, so the content is gone everywhere.
    Delete { id: String },
}

#[derive(Debug, Args)]
#[command(after_help = "The key is fetched from the server you are connected to (--server, KURA_SERVER or \
    your session), which must be the one the package names: a package naming another server is \
    refused and nothing is sent. The key is kept in memory only and never written to disk.")]
struct OpenArgs {
    #[command(flatten)]
    conn: Connection,
    /// The package file (`.kura-sealed`).
    package: PathBuf,
    /// Write the opened content here (created readable by you only) [default: stdout, FHIR only].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct GrantArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    act_as: ActAs,
    #[command(subcommand)]
    command: GrantCommand,
}

#[derive(Debug, Subcommand)]
enum GrantCommand {
    /// Let an organisation or an account use some of your records.
    #[command(
        after_help = "Example: kura grant create --to-org <ID> --record <ID> --scope image --actions view --days 30"
    )]
    Create(Box<GrantCreateArgs>),
    /// Grants you gave or hold.
    List,
    /// Revoke a grant; it allows nothing from now on and copies made under it are destroyed.
    Revoke { id: String },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("grantee").required(true).args(["to_org", "to_account"])))]
#[command(group(clap::ArgGroup::new("selection").required(true).args(["records", "labels"])))]
struct GrantCreateArgs {
    /// The organisation (id or exact name) to grant to.
    #[arg(long, value_name = "ORG")]
    to_org: Option<String>,
    /// The account id to grant to.
    #[arg(long, value_name = "ACCOUNT_ID")]
    to_account: Option<String>,
    /// These records (repeatable).
    #[arg(long = "record", value_name = "ID")]
    records: Vec<String>,
    /// Every record of yours carrying all these labels, now and later (repeatable).
    #[arg(long = "label", value_name = "LABEL")]
    labels: Vec<String>,
    /// Part categories covered, e.g. image,certificate.
    #[arg(long, required = true, value_delimiter = ',', value_parser = values::category, value_name = "CATEGORIES")]
    scope: Vec<api::Category>,
    /// Allowed actions: view, copy, move, delete, statistics.
    #[arg(long, value_delimiter = ',', value_parser = values::grant_action, default_value = "view", value_name = "ACTIONS")]
    actions: Vec<api::GrantAction>,
    /// none, pseudonymized or anonymized.
    #[arg(long, value_parser = values::anonymization, default_value = "none")]
    anonymization: api::Anonymization,
    /// The grant ends after this many days.
    #[arg(long, conflicts_with = "expires_at", value_name = "N")]
    days: Option<u32>,
    /// The grant ends at this time (RFC 3339).
    #[arg(long, value_parser = values::rfc3339, value_name = "TIME")]
    expires_at: Option<String>,
    /// The grant starts at this time (RFC 3339; default now).
    #[arg(long, value_parser = values::rfc3339, value_name = "TIME")]
    not_before: Option<String>,
    /// Why the grant is given.
    #[arg(long, default_value = "", value_name = "TEXT")]
    purpose: String,
}

#[derive(Debug, Args)]
struct DelegationArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: DelegationCommand,
}

#[derive(Debug, Subcommand)]
enum DelegationCommand {
    /// Appoint an agent for yourself (patients), or register a guardian for a patient
    /// (operators, or staff of an institution the patient is linked to).
    Create {
        /// The agent's username (a personal account).
        #[arg(long, value_name = "USERNAME")]
        agent: String,
        /// What the agent may do: view, copy, move, delete, statistics, manage_grants.
        #[arg(long, required = true, value_delimiter = ',', value_parser = values::power, value_name = "POWERS")]
        powers: Vec<api::Power>,
        /// The patient's account id (guardians).
        #[arg(long, value_name = "ACCOUNT_ID")]
        patient: Option<String>,
        /// `appointed` or `guardian` [default: guardian with --patient, else appointed].
        #[arg(long, value_parser = ["appointed", "guardian"])]
        kind: Option<String>,
        /// The delegation ends at this time (RFC 3339).
        #[arg(long, value_parser = values::rfc3339, value_name = "TIME")]
        expires_at: Option<String>,
    },
    /// Delegations where you are the agent or the patient.
    List,
    /// Accept a guardian registered for you (patients): until then it can do nothing.
    Accept { id: String },
    /// End a delegation (patients: also decline one awaiting you).
    Revoke { id: String },
}

#[derive(Debug, Args)]
struct AuditArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    act_as: ActAs,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Audit entries: your own (patients, agents) or all (operators).
    List {
        /// Only entries after this sequence number.
        #[arg(long, default_value_t = 0, value_name = "N")]
        after: i64,
        /// At most this many entries (the server caps it at 5000).
        #[arg(long, value_name = "N")]
        limit: Option<i64>,
    },
    /// Check the hash chain of the whole log; exit code 1 when it is broken.
    Verify,
}

#[derive(Debug, Args)]
struct TotpArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: TotpCommand,
}

#[derive(Debug, Subcommand)]
enum TotpCommand {
    /// Get a fresh secret to load into an authenticator app (nothing changes yet).
    Enroll,
    /// Turn two-factor authentication on with a current code for the secret enrolment returned;
    /// asks for your password again.
    Confirm {
        /// The secret `kura totp enroll` printed (optional: the server remembers it).
        #[arg(long)]
        secret: Option<String>,
        #[arg(long)]
        code: String,
        /// Read the password from stdin instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
}

// ---------------------------------------------------------------------------------------------
// Removable media (archives)

#[derive(Debug, Args)]
#[command(after_help = "The passphrase is read from --passphrase-file (its first line), else from \
    KURA_ARCHIVE_PASSPHRASE, else asked for on the terminal. It is never stored: without it the \
    archive cannot be opened. docs/portability-archive.md describes the archive format.")]
struct PatientArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    act_as: ActAs,
    #[command(subcommand)]
    command: PatientCommand,
}

#[derive(Debug, Clone, Args)]
struct PassphraseArgs {
    /// Read the archive's passphrase from the first line of this file.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum PatientCommand {
    /// Export your records (default: all active ones) to an encrypted, signed archive file in DIR.
    Export {
        /// The folder to write the archive to (created if missing); an existing file is never overwritten.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// After the file is written and verified, remove the records from the server: each keeps
        /// the locator "held by the patient offline since <export time>".
        #[arg(long = "move")]
        move_records: bool,
        /// Only these records (repeat, or separate with commas).
        #[arg(long = "record", value_name = "ID", value_delimiter = ',')]
        records: Vec<String>,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Import an archive into this server: its records become yours, content unchanged.
    Import {
        file: PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Archive files, offline.
    #[command(subcommand)]
    Archive(ArchiveCommand),
}

#[derive(Debug, Subcommand)]
enum ArchiveCommand {
    /// Decrypt an archive, check its signature and every hash, and list its records (offline).
    Verify {
        file: PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
}

// ---------------------------------------------------------------------------------------------
// Research, notifications and webhooks

#[derive(Debug, Args)]
struct PrefsArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    act_as: ActAs,
    #[command(subcommand)]
    command: PrefsCommand,
}

#[derive(Debug, Subcommand)]
enum PrefsCommand {
    /// Show your choices (both are off until you turn them on).
    #[command(after_help = "Example: kura prefs show")]
    Show,
    /// Change your choices; what you do not give stays as it is.
    #[command(after_help = "Example: kura prefs set --discoverable true\n\
        Patients set their own, agents set a patient's with --act-as, institution staff set their institution's.")]
    #[command(group(clap::ArgGroup::new("changes").required(true).multiple(true)
        .args(["discoverable", "contribute_statistics", "privacy_loss_cap"])))]
    Set {
        /// Whether research search may find you (as a handle, never by name).
        #[arg(long, action = clap::ArgAction::Set, value_parser = clap::value_parser!(bool), value_name = "true|false")]
        discoverable: Option<bool>,
        /// Whether you are counted in aggregate statistics.
        #[arg(long, action = clap::ArgAction::Set, value_parser = clap::value_parser!(bool), value_name = "true|false")]
        contribute_statistics: Option<bool>,
        /// The most privacy loss (sum of ε) differentially private analyses may add up for you;
        /// `none` removes the cap.
        #[arg(long, value_name = "EPSILON|none", value_parser = research::privacy_cap)]
        privacy_loss_cap: Option<research::Cap>,
    },
}

#[derive(Debug, Args)]
struct StudyArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: StudyCommand,
}

#[derive(Debug, Subcommand)]
enum StudyCommand {
    /// Register a study: what it is for and its ethics approval. An operator reviews it before it
    /// may search, ask or analyse.
    #[command(after_help = "Example: kura study create --title \"Diabetes in women 40-60\" \\\n    \
        --purpose \"Outcomes of type 2 diabetes\" --ethics-ref IRB-2026-017 --contact research@example.org")]
    Create {
        #[arg(long)]
        title: String,
        /// What the study is for; owners read it before answering a request.
        #[arg(long)]
        purpose: String,
        /// The ethics committee's approval reference.
        #[arg(long, value_name = "REF")]
        ethics_ref: String,
        /// Whom owners can contact about the study.
        #[arg(long)]
        contact: String,
    },
    /// The studies of your research organisation; for an operator, every organisation's.
    #[command(
        after_help = "Examples:\n  kura study list\n  kura study list --state pending   (operator: the review queue)"
    )]
    List {
        /// Only studies in this state: pending, approved, rejected or closed.
        #[arg(long)]
        state: Option<String>,
    },
    /// Operator: approve a study waiting for review, so that it may search, ask and analyse.
    #[command(after_help = "Example: kura study approve <study-id> --note \"IRB-42 checked\"")]
    Approve {
        id: String,
        /// A note to the researchers.
        #[arg(long)]
        note: Option<String>,
    },
    /// Operator: reject a study waiting for review.
    #[command(after_help = "Example: kura study reject <study-id> --note \"no ethics approval on file\"")]
    Reject {
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Close a study: it stops searching, asking and analysing and frees its place.
    #[command(after_help = "Example: kura study close <study-id>")]
    Close { id: String },
    /// What your research organisation has been told (its disclosure ledger), its refusals
    /// for differencing and whether its research is suspended; operators name the organisation.
    #[command(after_help = "Examples:\n  kura study ledger\n  kura study ledger --org <org-id>   (operator)")]
    Ledger {
        #[arg(long)]
        org: Option<String>,
    },
    /// Operator: resume a research organisation suspended after refusals for differencing.
    #[command(after_help = "Example: kura study resume --org <org-id>")]
    Resume {
        #[arg(long)]
        org: String,
    },
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    kura search --study S snomed:44054006 AND sex:female AND age:40..60\n  \
    kura search --study S --query-json '{\"all\": [{\"label\": \"snomed:44054006\"}, {\"age\": {\"min\": 40}}]}'\n  \
    kura search --study S --handles-only snomed:44054006 > handles.txt\n\n\
    Only people who opted in (`kura prefs set --discoverable true`) are found. When fewer than the \
    server's threshold match, only that is said and no handles are given. Handles belong to the \
    study and cannot be linked across studies. Quote parentheses and comparisons for the shell.")]
#[command(group(clap::ArgGroup::new("query_form").required(true).args(["query", "query_json"])))]
struct SearchArgs {
    /// The study the search is for.
    #[arg(long, value_name = "ID")]
    study: String,
    /// The query in text form; the words are joined with spaces.
    #[arg(value_name = "QUERY")]
    query: Vec<String>,
    /// The query in JSON form, e.g. '{"all": [{"label": "snomed:44054006"}]}'.
    #[arg(long, value_name = "JSON", value_parser = research::json_query)]
    query_json: Option<serde_json::Value>,
    /// Print only the handles, one per line (for pipes; wins over --json).
    #[arg(long)]
    handles_only: bool,
    /// Also write the handles to FILE, one per line (for `kura request send --handles-file`).
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
struct AnalysisArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: AnalysisCommand,
}

#[derive(Debug, Subcommand)]
enum AnalysisCommand {
    /// Submit an analysis for a study; the answer is aggregates with a disclosure report.
    #[command(after_help = "Example: kura analysis run --study S --spec hba1c.json\n\n\
        A spec (docs/analysis.md):\n  \
        {\"cohort\": \"condition:snomed:44054006\",\n   \
        \"measures\": [{\"type\": \"distribution\", \"by\": \"age_band\"},\n                \
        {\"type\": \"summary\", \"code\": \"loinc:4548-4\", \"statistics\": [\"mean\"]}]}\n\n\
        Only people who opted in to statistics, or whose grants to the study allow statistics, are \
        counted. Small counts are withheld; a cohort that differs from the study's earlier ones by \
        fewer than the threshold is refused.")]
    Run {
        #[arg(long, value_name = "ID")]
        study: String,
        /// The spec as a JSON file, or - for standard input.
        #[arg(long, value_name = "FILE")]
        spec: String,
    },
    /// Show a stored analysis.
    #[command(after_help = "Example: kura analysis show 0193...")]
    Show { id: String },
    /// The analyses of a study, oldest first.
    #[command(after_help = "Example: kura analysis list --study S")]
    List {
        #[arg(long, value_name = "ID")]
        study: String,
    },
}

#[derive(Debug, Args)]
struct StatsArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: StatsCommand,
}

#[derive(Debug, Subcommand)]
enum StatsCommand {
    /// Every condition held by enough contributing patients: how many, by sex and age.
    #[command(after_help = "Example: kura stats conditions")]
    Conditions,
    /// People like you: the statistics of each of your own conditions, and where you fall.
    #[command(after_help = "Example: kura stats me")]
    Me,
    /// The analyses that included your records, and your privacy loss so far.
    #[command(after_help = "Example: kura stats participation")]
    Participation,
}

#[derive(Debug, Args)]
struct RequestArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    act_as: ActAs,
    #[command(subcommand)]
    command: RequestCommand,
}

#[derive(Debug, Subcommand)]
enum RequestCommand {
    /// Ask the owners behind handles to let the study use their records (researchers).
    #[command(after_help = "Example: kura request send --study S --handles-file handles.txt \\\n    \
        --scope condition,observation --actions view --anonymization pseudonymized --days 60 \\\n    \
        --message \"We study outcomes of type 2 diabetes\" --reward-amount 20 --reward-currency EUR\n\n\
        One request goes to each owner; several handles of the same person count once.")]
    Send(Box<RequestSendArgs>),
    /// Usage requests: to you (owners, agents with --act-as), or of a study (researchers, --study).
    #[command(after_help = "Examples:\n  kura request list\n  kura request list --study S")]
    List {
        /// The study whose requests to list (researchers).
        #[arg(long, value_name = "ID")]
        study: Option<String>,
    },
    /// Accept or decline a request (owners). Accepting creates a grant bound to the study.
    #[command(after_help = "Examples:\n  kura request answer R --accept\n  \
        kura request answer R --accept --scope condition --anonymization anonymized --days 30\n  \
        kura request answer R --decline\n\n\
        Accepting may narrow what was asked (fewer categories or actions, stronger anonymization, \
        fewer days), never widen it.")]
    #[command(group(clap::ArgGroup::new("decision").required(true).args(["accept", "decline"])))]
    Answer {
        id: String,
        /// Accept the request (as asked, or narrowed by the options below).
        #[arg(long)]
        accept: bool,
        /// Decline the request.
        #[arg(long)]
        decline: bool,
        /// Only these of the categories asked for, e.g. condition.
        #[arg(long, value_delimiter = ',', value_parser = values::category, value_name = "CATEGORIES",
            conflicts_with = "decline")]
        scope: Option<Vec<api::Category>>,
        /// Only these of the actions asked for.
        #[arg(long, value_delimiter = ',', value_parser = values::grant_action, value_name = "ACTIONS",
            conflicts_with = "decline")]
        actions: Option<Vec<api::GrantAction>>,
        /// A stronger anonymization than asked for: pseudonymized or anonymized.
        #[arg(long, value_parser = values::anonymization, conflicts_with = "decline")]
        anonymization: Option<api::Anonymization>,
        /// Fewer days than asked for.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..), conflicts_with = "decline")]
        days: Option<i64>,
    },
    /// Withdraw a request not yet answered (researchers).
    #[command(after_help = "Example: kura request withdraw R")]
    Withdraw { id: String },
    /// Mark the reward of an accepted request as paid (researchers).
    #[command(after_help = "Example: kura request paid R")]
    Paid { id: String },
    /// Confirm that you received the reward of a request (owners).
    #[command(after_help = "Example: kura request confirm R")]
    Confirm { id: String },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("handles_from").required(true).args(["handles", "handles_file"])))]
struct RequestSendArgs {
    /// The study asking.
    #[arg(long, value_name = "ID")]
    study: String,
    /// A handle from `kura search` (repeatable, or comma-separated).
    #[arg(long = "handle", value_name = "HANDLE", value_delimiter = ',')]
    handles: Vec<String>,
    /// A file of handles, one per line, as `kura search --save` writes it (`-` reads stdin).
    #[arg(long, value_name = "FILE")]
    handles_file: Option<PathBuf>,
    /// The categories asked for, e.g. condition,observation.
    #[arg(long, required = true, value_delimiter = ',', value_parser = values::category, value_name = "CATEGORIES")]
    scope: Vec<api::Category>,
    /// The actions asked for: view, copy, move, delete, statistics.
    #[arg(long, value_delimiter = ',', value_parser = values::grant_action, default_value = "view", value_name = "ACTIONS")]
    actions: Vec<api::GrantAction>,
    /// none, pseudonymized or anonymized.
    #[arg(long, value_parser = values::anonymization, default_value = "none")]
    anonymization: api::Anonymization,
    /// How many days the grant lasts once accepted.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
    days: i64,
    /// A message to the owners.
    #[arg(long, default_value = "", value_name = "TEXT")]
    message: String,
    /// The reward offered to each owner who accepts, e.g. 20 (goes with --reward-currency).
    #[arg(long, value_name = "AMOUNT")]
    reward_amount: Option<String>,
    /// The reward's currency, e.g. EUR (goes with --reward-amount).
    #[arg(long, value_name = "CURRENCY")]
    reward_currency: Option<String>,
    /// What the reward is, in words.
    #[arg(long, value_name = "TEXT")]
    reward_description: Option<String>,
    /// Owners answer within this many days [server default: 30].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
    answer_within_days: Option<i64>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
#[command(
    after_help = "Examples:\n  kura inbox\n  kura inbox --unread\n  kura inbox --after 120\n  kura inbox read ID\n\n\
    Agents see the notifications of the patient they act for with --act-as."
)]
struct InboxArgs {
    /// Only notifications after this sequence number.
    #[arg(long, default_value_t = 0, value_name = "SEQ")]
    after: i64,
    /// Only notifications not yet marked read (with --json too).
    #[arg(long)]
    unread: bool,
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    act_as: ActAs,
    #[command(subcommand)]
    command: Option<InboxCommand>,
}

#[derive(Debug, Subcommand)]
enum InboxCommand {
    /// Mark a notification read.
    #[command(after_help = "Example: kura inbox read 0190d5c2-...")]
    Read {
        /// The notification's id (the ID column of `kura inbox`).
        id: String,
    },
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  kura events\n  kura events --last-event-id 120 --json\n\n\
    Each notification is printed as it arrives (with --json, one JSON object per line). If the \
    connection drops, it is opened again from the last event seen. Stop with Ctrl-C.")]
struct EventsArgs {
    /// First replay what came after this sequence number (sends Last-Event-ID).
    #[arg(long, value_name = "SEQ")]
    last_event_id: Option<i64>,
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    act_as: ActAs,
}

#[derive(Debug, Args)]
struct WebhookArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: WebhookCommand,
}

#[derive(Debug, Subcommand)]
enum WebhookCommand {
    /// Register a URL that receives your organisation's notifications by POST.
    #[command(after_help = "Example: kura webhook create --url https://hooks.example.org/kura\n\n\
        Each POST carries a kura-signature header: HMAC-SHA256 of the body with the secret, which \
        is shown once, now.")]
    Create {
        /// An http:// or https:// URL.
        #[arg(long)]
        url: String,
    },
    /// The delivery log of a webhook: attempts, state, last status.
    #[command(after_help = "Example: kura webhook deliveries W")]
    Deliveries {
        /// The webhook's id.
        id: String,
    },
}

#[derive(Debug, Args)]
struct ProviderArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    act_as: ActAs,
    #[command(subcommand)]
    command: ProviderCommand,
}

#[derive(Debug, Subcommand)]
enum ProviderCommand {
    /// Link an external FHIR R4 endpoint with your token there; nothing is pulled until a sync.
    #[command(after_help = "Example: kura provider link --name 'Aoba portal' --base-url \
        http://fhir.aoba.example/r4 --patient-id 12345 --token-stdin --sync < token.txt\n\n\
        The token is read from stdin (--token-stdin) or KURA_PROVIDER_TOKEN, never from an \
        argument; the server stores it sealed and never shows it again.")]
    Link {
        /// A name for the provider, for you.
        #[arg(long)]
        name: String,
        /// The FHIR base URL (http://...); searches go to BASE/Type?patient=ID.
        #[arg(long, value_name = "URL")]
        base_url: String,
        /// Your patient id at the provider.
        #[arg(long, value_name = "ID")]
        patient_id: String,
        /// A resource type to pull (repeatable) [default: Observation, Condition,
        /// MedicationStatement, MedicationRequest, AllergyIntolerance, Procedure, Immunization].
        #[arg(long = "type", value_name = "TYPE")]
        types: Vec<String>,
        /// Read the provider's token from stdin.
        #[arg(long)]
        token_stdin: bool,
        /// The provider's token, when not read from stdin.
        #[arg(long = "provider-token", env = "KURA_PROVIDER_TOKEN", hide = true, hide_env_values = true,
            value_parser = providers::secret_arg)]
        provider_token: Option<secrets::Secret>,
        /// Pull at once after linking.
        #[arg(long)]
        sync: bool,
    },
    /// Your linked providers with their last sync's time, outcome and error.
    List,
    /// Pull a provider now: new resources become records, changed ones are updated.
    #[command(after_help = "Example: kura provider sync P\n\n\
        If the provider fails midway nothing is written; the error is kept on the link (see \
        `kura provider list`) and the command exits with status 1.")]
    Sync {
        /// The link's id.
        id: String,
    },
    /// Remove a link: no more pulls. The records already pulled stay yours.
    Unlink {
        /// The link's id.
        id: String,
    },
}

#[derive(Debug, Args)]
struct PeerArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: PeerCommand,
}

#[derive(Debug, Subcommand)]
enum PeerCommand {
    /// Register a peer server (operators): its requests are accepted, and owners can move
    /// records to it.
    #[command(after_help = "Example: kura peer add east --url https://east.example.org --key KEY\n\n\
        KEY is the public_key of the peer's GET /api/v1/server; check it with its operator. \
        The peer's operator registers this server the same way.")]
    Add {
        /// A short name: a-z, 0-9 and -.
        name: String,
        /// The peer's base URL.
        #[arg(long)]
        url: String,
        /// The peer's Ed25519 public key (base64url).
        #[arg(long)]
        key: String,
    },
    /// The registered peer servers (operators).
    List,
    /// Deregister a peer server (operators); refused while a move with it is unfinished.
    Remove { name: String },
    /// A one-time token (valid one hour) to receive a record moved from a peer into your account
    /// here (patients).
    Token,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout and succeed; usage errors fail with 1 like the rest.
            let _ = e.print();
            return if e.use_stderr() { ExitCode::FAILURE } else { ExitCode::SUCCESS };
        }
    };
    output::end_quietly_on_broken_pipe();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        // The reader went away (`kura records list --json | head`): nothing is wrong.
        Err(error) if output::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => local::serve(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Operator(OperatorCommand::Bootstrap(args)) => local::bootstrap(args).await,
        Command::Login(args) => commands::login(args).await,
        Command::Logout => commands::logout(),
        Command::Whoami(args) => commands::whoami(args.conn).await,
        Command::Register(args) => commands::register(args).await,
        Command::Org(args) => commands::org(args).await,
        Command::Account(args) => commands::account(args).await,
        Command::Client(args) => commands::client(args).await,
        Command::Link(args) => commands::link(args).await,
        Command::Records(args) => commands::records(args).await,
        Command::Open(args) => sealed::open(args).await,
        Command::Grant(args) => commands::grant(args).await,
        Command::Delegation(args) => commands::delegation(args).await,
        Command::Audit(args) => commands::audit(args).await,
        Command::Totp(args) => commands::totp(args).await,
        Command::Deid(args) => deid::run(args),
        Command::Completions(args) => completions::run(args, &mut <Cli as clap::CommandFactory>::command()),
        Command::Prefs(args) => research::prefs(args).await,
        Command::Study(args) => research::study(args).await,
        Command::Search(args) => research::search(args).await,
        Command::Analysis(args) => analysis::analysis(args).await,
        Command::Stats(args) => analysis::stats(args).await,
        Command::Request(args) => research::request(args).await,
        Command::Inbox(args) => inbox::inbox(args).await,
        Command::Events(args) => inbox::events(args).await,
        Command::Webhook(args) => inbox::webhook(args).await,
        Command::Patient(args) => archive::patient(args).await,
        Command::Provider(args) => providers::provider(args).await,
        Command::Peer(args) => peers::peer(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn lists_parse_with_commas() {
        let cli = Cli::try_parse_from([
            "kura",
            "grant",
            "create",
            "--to-org",
            "o1",
            "--record",
            "r1",
            "--record",
            "r2",
            "--scope",
            "image,certificate",
            "--actions",
            "view,copy",
            "--days",
            "30",
        ])
        .unwrap();
        let Command::Grant(GrantArgs { command: GrantCommand::Create(args), .. }) = cli.command else {
            panic!("not grant create");
        };
        assert_eq!(args.scope, vec![api::Category::Image, api::Category::Certificate]);
        assert_eq!(args.actions, vec![api::GrantAction::View, api::GrantAction::Copy]);
        assert_eq!(args.records, vec!["r1", "r2"]);
        assert_eq!(args.days, Some(30));

        let refused =
            Cli::try_parse_from(["kura", "grant", "create", "--to-org", "o", "--record", "r", "--scope", "xray"]);
        assert!(refused.is_err());
        let both = Cli::try_parse_from([
            "kura",
            "grant",
            "create",
            "--to-org",
            "o",
            "--to-account",
            "a",
            "--record",
            "r",
            "--scope",
            "image",
        ]);
        assert!(both.is_err());
    }

    #[test]
    fn search_takes_query_words_between_options() {
        let cli = Cli::try_parse_from([
            "kura",
            "search",
            "--study",
            "S",
            "snomed:44054006",
            "AND",
            "sex:female",
            "AND",
            "age:40..60",
            "--json",
        ])
        .unwrap();
        let Command::Search(args) = cli.command else { panic!("not search") };
        assert_eq!(args.study, "S");
        assert_eq!(research::query_text(&args.query).unwrap(), "snomed:44054006 AND sex:female AND age:40..60");
        assert!(args.conn.json && args.query_json.is_none());

        let cli = Cli::try_parse_from(["kura", "search", "--study", "S", "--query-json", r#"{"label":"icd10:E11"}"#])
            .unwrap();
        let Command::Search(args) = cli.command else { panic!("not search") };
        assert!(args.query.is_empty() && args.query_json.is_some());

        assert!(Cli::try_parse_from(["kura", "search", "--study", "S"]).is_err());
        assert!(Cli::try_parse_from(["kura", "search", "--study", "S", "x", "--query-json", "{}"]).is_err());
        assert!(Cli::try_parse_from(["kura", "search", "--study", "S", "--query-json", "[1]"]).is_err());
    }

    #[test]
    fn a_request_is_sent_to_handles_given_one_way() {
        let base = ["kura", "request", "send", "--study", "S", "--scope", "condition,observation", "--days", "60"];
        let parse = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra.iter()));
        let cli = parse(&["--handle", "h1", "--handle", "h2,h3", "--reward-amount", "20", "--reward-currency", "EUR"])
            .unwrap();
        let Command::Request(RequestArgs { command: RequestCommand::Send(args), .. }) = cli.command else {
            panic!("not request send");
        };
        assert_eq!(args.handles, vec!["h1", "h2", "h3"]);
        assert_eq!(args.scope, vec![api::Category::Condition, api::Category::Observation]);
        assert_eq!(args.actions, vec![api::GrantAction::View]);
        assert_eq!(args.days, 60);
        assert!(parse(&["--handles-file", "handles.txt"]).is_ok());
        assert!(parse(&[]).is_err());
        assert!(parse(&["--handle", "h1", "--handles-file", "handles.txt"]).is_err());
        assert!(parse(&["--handle", "h1", "--days", "0"]).is_err());
    }

    #[test]
    fn an_answer_accepts_or_declines() {
        let parse = |extra: &[&str]| Cli::try_parse_from(["kura", "request", "answer", "R"].iter().chain(extra.iter()));
        let cli =
            parse(&["--accept", "--scope", "condition", "--anonymization", "anonymized", "--days", "30"]).unwrap();
        let Command::Request(RequestArgs { command: RequestCommand::Answer { accept, scope, days, .. }, .. }) =
            cli.command
        else {
            panic!("not request answer");
        };
        assert!(accept);
        assert_eq!(scope, Some(vec![api::Category::Condition]));
        assert_eq!(days, Some(30));
        assert!(parse(&["--decline"]).is_ok());
        assert!(parse(&[]).is_err());
        assert!(parse(&["--accept", "--decline"]).is_err());
        assert!(parse(&["--decline", "--days", "5"]).is_err());
    }

    #[test]
    fn prefs_set_changes_something() {
        let cli = Cli::try_parse_from(["kura", "prefs", "set", "--discoverable", "false"]).unwrap();
        let Command::Prefs(PrefsArgs {
            command: PrefsCommand::Set { discoverable, contribute_statistics, .. }, ..
        }) = cli.command
        else {
            panic!("not prefs set");
        };
        assert_eq!((discoverable, contribute_statistics), (Some(false), None));
        assert!(Cli::try_parse_from(["kura", "prefs", "set"]).is_err());
        assert!(Cli::try_parse_from(["kura", "prefs", "set", "--discoverable", "maybe"]).is_err());
    }

    #[test]
    fn inbox_lists_or_marks_read() {
        let cli = Cli::try_parse_from(["kura", "inbox", "--unread", "--after", "5", "--act-as", "p1"]).unwrap();
        let Command::Inbox(args) = cli.command else { panic!("not inbox") };
        assert!(args.unread && args.command.is_none());
        assert_eq!(args.after, 5);
        assert_eq!(args.act_as.act_as.as_deref(), Some("p1"));
        let cli = Cli::try_parse_from(["kura", "inbox", "read", "n1", "--json"]).unwrap();
        let Command::Inbox(args) = cli.command else { panic!("not inbox") };
        assert!(matches!(args.command, Some(InboxCommand::Read { ref id }) if id == "n1"));
        assert!(args.conn.json);
        let cli = Cli::try_parse_from(["kura", "events", "--last-event-id", "12"]).unwrap();
        let Command::Events(args) = cli.command else { panic!("not events") };
        assert_eq!(args.last_event_id, Some(12));
    }

    #[test]
    fn connection_options_follow_the_subcommand() {
        let cli =
            Cli::try_parse_from(["kura", "records", "list", "--server", "http://h:1", "--json", "--act-as", "p1"])
                .unwrap();
        let Command::Records(args) = cli.command else { panic!("not records") };
        assert_eq!(args.conn.server.as_deref(), Some("http://h:1"));
        assert!(args.conn.json);
        assert_eq!(args.act_as.act_as.as_deref(), Some("p1"));
    }

    #[test]
    fn archive_commands_parse() {
        let cli = Cli::try_parse_from([
            "kura",
            "patient",
            "export",
            "--to",
            "/media/usb",
            "--move",
            "--record",
            "r1,r2",
            "--passphrase-file",
            "p",
        ])
        .unwrap();
        let Command::Patient(args) = cli.command else { panic!("not patient") };
        let PatientCommand::Export { to, move_records, records, passphrase } = args.command else {
            panic!("not export")
        };
        assert_eq!(to, PathBuf::from("/media/usb"));
        assert!(move_records);
        assert_eq!(records, ["r1", "r2"]);
        assert_eq!(passphrase.passphrase_file, Some(PathBuf::from("p")));
        let cli = Cli::try_parse_from(["kura", "patient", "import", "a.kura", "--act-as", "p1"]).unwrap();
        let Command::Patient(args) = cli.command else { panic!("not patient") };
        assert!(matches!(args.command, PatientCommand::Import { ref file, .. } if file == &PathBuf::from("a.kura")));
        assert_eq!(args.act_as.act_as.as_deref(), Some("p1"));
        let cli = Cli::try_parse_from(["kura", "patient", "archive", "verify", "a.kura"]).unwrap();
        let Command::Patient(args) = cli.command else { panic!("not patient") };
        assert!(matches!(args.command, PatientCommand::Archive(ArchiveCommand::Verify { .. })));
    }

    #[test]
    fn peer_moves_take_a_peer_and_its_token_together() {
        let cli =
            Cli::try_parse_from(["kura", "records", "move", "r1", "--peer", "east", "--peer-token", "t0k"]).unwrap();
        let Command::Records(args) = cli.command else { panic!("not records") };
        let RecordsCommand::Move { peer, peer_token, .. } = args.command else { panic!("not move") };
        assert_eq!(peer.as_deref(), Some("east"));
        assert_eq!(peer_token.as_ref().map(|t| t.expose()), Some("t0k"));
        assert!(!format!("{peer_token:?}").contains("t0k"), "the token stays out of Debug output");
        assert!(Cli::try_parse_from(["kura", "records", "move", "r1", "--peer", "east"]).is_err());
        assert!(Cli::try_parse_from(["kura", "records", "move", "r1", "--peer-token", "t"]).is_err());
        let cli = Cli::try_parse_from(["kura", "peer", "add", "east", "--url", "http://e:1", "--key", "K"]).unwrap();
        let Command::Peer(args) = cli.command else { panic!("not peer") };
        assert!(matches!(args.command, PeerCommand::Add { ref name, .. } if name == "east"));
        assert!(Cli::try_parse_from(["kura", "peer", "token"]).is_ok());
    }
}
