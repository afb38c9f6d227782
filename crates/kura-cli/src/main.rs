//! `kura`, the one binary of Kura, a medical records server on which patients own their records.
//!
//! `kura serve`, `kura demo` and `kura operator bootstrap` run the server (or open its store)
//! in this process. Every other subcommand is a client of the HTTP API: it speaks JSON through
//! the shared wire types of `kura-api-types` and never touches SQL or the store directly.
//!
//! This file holds the top-level command line (clap) and the dispatch; each subcommand's
//! arguments and its `run` live in one file under `command/`.
//! Errors end as one line on stderr, `error: ...`, with exit code 1. Passwords and tokens never
//! appear in `Debug` output or logs.

/// The server answers each read with buffers of the record's size (160 KB for a bundle) among
/// hundreds of small ones; glibc's allocator spent 14% of a loaded server's CPU on them and on
/// its arena locks, mimalloc a fraction of it: 160 KB reads went from 7,900 to 10,200 req/s at
/// 32 clients (`docs/PERFORMANCE.md`). `kura-bench` runs the server under the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod client;
mod command;
mod local;
mod output;
mod secrets;
mod session;
mod values;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Serve(command::serve::ServeArgs),
    /// Seed a complete demo scenario (hospitals, patients, a guardian, researchers) and serve it.
    Demo(command::demo::DemoArgs),
    /// Offline administration that opens the store directly.
    #[command(subcommand)]
    Operator(command::operator::OperatorCommand),

    /// Log in with a username and password and save the session.
    Login(command::login::LoginArgs),
    /// Forget the saved session.
    Logout,
    /// Show the account you are logged in as.
    Whoami(command::whoami::WhoamiArgs),
    /// Register a patient account (self-registration).
    Register(command::register::RegisterArgs),
    /// Organisations: institutions and research organisations (operators create them).
    Org(command::org::OrgArgs),
    /// Staff, researcher and operator accounts (operators).
    Account(command::account::AccountArgs),
    /// Machine clients of an organisation (operators).
    Client(command::client::ClientArgs),
    /// Link codes that tie a patient account to an institution's local patient id.
    Link(command::link::LinkArgs),
    /// Records: upload, list, show, custody ledger, transfer, copy, sealed copies, move, delete.
    Records(command::records::RecordsArgs),
    /// Open a sealed copy's package: fetch its key from the server that sealed it, in memory only.
    Open(command::open::OpenArgs),
    /// Grants: who may use which of your records, how, and for how long.
    Grant(command::grant::GrantArgs),
    /// Delegations: agents (guardians, proxies) acting for a patient.
    Delegation(command::delegation::DelegationArgs),
    /// The audit log and its hash-chain check.
    Audit(command::audit::AuditArgs),
    /// Two-factor authentication with a one-time code app.
    Totp(command::totp::TotpArgs),
    /// De-identify a FHIR or DICOM file offline, or check one for residual identifiers.
    Deid(command::deid::DeidArgs),
    /// Print a shell completion script: `kura completions bash > /etc/bash_completion.d/kura`.
    Completions(command::completions::CompletionsArgs),
    /// Your research choices: whether research search may find you, and statistics.
    Prefs(command::prefs::PrefsArgs),
    /// Studies of your research organisation (researchers).
    Study(command::study::StudyArgs),
    /// Search for people who opted in to research: a count and one handle each (researchers).
    Search(command::search::SearchArgs),
    /// Usage requests: researchers ask owners for their records, owners answer.
    Request(command::request::RequestArgs),
    /// Analyses: aggregates over the records a study may use, with disclosure control (researchers).
    Analysis(command::analysis::AnalysisArgs),
    /// Standing statistics per condition, people like you, and the analyses that included you.
    Stats(command::stats::StatsArgs),
    /// Your notifications, oldest first; `kura inbox read ID` marks one read.
    Inbox(command::inbox::InboxArgs),
    /// Follow your notifications live as they arrive, until interrupted.
    Events(command::events::EventsArgs),
    /// Webhooks: your organisation's notifications POSTed to a URL (staff, researchers).
    Webhook(command::webhook::WebhookArgs),
    /// Your records on removable media: export an encrypted, signed archive, import one.
    Patient(command::patient::PatientArgs),
    /// External FHIR providers you link; Kura pulls your records from them (patients, agents).
    Provider(command::provider::ProviderArgs),
    /// Peer servers: the registry (operators) and move-in tokens (patients at the destination).
    Peer(command::peer::PeerArgs),
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
        Command::Serve(args) => command::serve::run(args).await,
        Command::Demo(args) => command::demo::run(args).await,
        Command::Operator(command) => command::operator::run(command).await,
        Command::Login(args) => command::login::run(args).await,
        Command::Logout => command::logout::run(),
        Command::Whoami(args) => command::whoami::run(args).await,
        Command::Register(args) => command::register::run(args).await,
        Command::Org(args) => command::org::run(args).await,
        Command::Account(args) => command::account::run(args).await,
        Command::Client(args) => command::client::run(args).await,
        Command::Link(args) => command::link::run(args).await,
        Command::Records(args) => command::records::run(args).await,
        Command::Open(args) => command::open::run(args).await,
        Command::Grant(args) => command::grant::run(args).await,
        Command::Delegation(args) => command::delegation::run(args).await,
        Command::Audit(args) => command::audit::run(args).await,
        Command::Totp(args) => command::totp::run(args).await,
        Command::Deid(args) => command::deid::run(args),
        Command::Completions(args) => command::completions::run(args, &mut <Cli as clap::CommandFactory>::command()),
        Command::Prefs(args) => command::prefs::run(args).await,
        Command::Study(args) => command::study::run(args).await,
        Command::Search(args) => command::search::run(args).await,
        Command::Analysis(args) => command::analysis::run(args).await,
        Command::Stats(args) => command::stats::run(args).await,
        Command::Request(args) => command::request::run(args).await,
        Command::Inbox(args) => command::inbox::run(args).await,
        Command::Events(args) => command::events::run(args).await,
        Command::Webhook(args) => command::webhook::run(args).await,
        Command::Patient(args) => command::patient::run(args).await,
        Command::Provider(args) => command::provider::run(args).await,
        Command::Peer(args) => command::peer::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
