//! `kura request`: usage requests; researchers ask owners for their records, owners answer,
//! and rewards are marked paid and confirmed.
//!
//! Checking reward options and reading handle files are pure functions with tests.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use kura_api_types as api;

use super::grant::scope_summary;
use super::org::OrgNames;
use super::{ActAs, Connection, connect, show};
use crate::output::{Table, comma_list, or_dash, wire_name};
use crate::values;

#[derive(Debug, Args)]
pub struct RequestArgs {
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

/// The reward options as the wire reward: none at all, or an amount with its currency (and
/// perhaps a description). The amount is a plain decimal number such as `20` or `12.50`.
pub fn reward(
    amount: Option<&str>,
    currency: Option<&str>,
    description: Option<&str>,
) -> Result<Option<api::RewardBody>> {
    let amount = amount.map(str::trim);
    let currency = currency.map(str::trim);
    let (amount, currency) = match (amount, currency) {
        (None, None) => {
            if description.is_some() {
                bail!("--reward-description goes with --reward-amount and --reward-currency");
            }
            return Ok(None);
        }
        (Some(_), None) => bail!("--reward-amount needs --reward-currency (e.g. --reward-currency EUR)"),
        (None, Some(_)) => bail!("--reward-currency needs --reward-amount (e.g. --reward-amount 20)"),
        (Some(amount), Some(currency)) => (amount, currency),
    };
    if !is_decimal(amount) {
        bail!("--reward-amount '{amount}' is not an amount such as 20 or 12.50");
    }
    if currency.is_empty() || currency.len() > 10 || !currency.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("--reward-currency '{currency}' is not a currency such as EUR (letters and digits, at most 10)");
    }
    Ok(Some(api::RewardBody {
        amount: amount.to_owned(),
        currency: currency.to_owned(),
        description: description.map(str::trim).unwrap_or_default().to_owned(),
    }))
}

/// Digits, optionally with one decimal point between digits, and not zero.
fn is_decimal(text: &str) -> bool {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    let well_formed = digits(whole) && fraction.is_none_or(digits);
    well_formed && text.bytes().any(|b| (b'1'..=b'9').contains(&b))
}

/// Handles from a file's text: one per line, blank lines and `#` comments skipped, repeats
/// dropped (the first one kept).
pub fn parse_handles(text: &str) -> Vec<String> {
    let mut handles: Vec<String> = Vec::new();
    for line in text.lines() {
        let handle = line.trim();
        if handle.is_empty() || handle.starts_with('#') {
            continue;
        }
        if !handles.iter().any(|h| h == handle) {
            handles.push(handle.to_owned());
        }
    }
    handles
}

/// Reads a handles file (`-` for stdin); an empty one is an error before anything is sent.
pub fn read_handles_file(path: &Path) -> Result<Vec<String>> {
    let text = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read handles from stdin")?;
        text
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read the handles file {}", path.display()))?
    };
    let handles = parse_handles(&text);
    if handles.is_empty() {
        bail!("no handles in {} (one per line, as `kura search --save FILE` writes them)", path.display());
    }
    Ok(handles)
}

/// The handles given with --handle, or read from --handles-file.
fn handles_of(args: &RequestSendArgs) -> Result<Vec<String>> {
    match &args.handles_file {
        Some(path) => read_handles_file(path),
        None => {
            let handles = parse_handles(&args.handles.join("\n"));
            if handles.is_empty() {
                bail!("give at least one --handle or a --handles-file");
            }
            Ok(handles)
        }
    }
}

fn reward_summary(r: &api::UsageRequestView) -> String {
    match &r.reward {
        Some(w) => {
            let mut text = format!("{} {}", w.amount, w.currency);
            if !w.description.is_empty() {
                text.push_str(&format!(" ({})", w.description));
            }
            if let Some(state) = &r.reward_state {
                text.push_str(&format!(", {state}"));
            }
            text
        }
        None => "-".to_owned(),
    }
}

fn reward_short(r: &api::UsageRequestView) -> String {
    match (&r.reward, &r.reward_state) {
        (Some(w), Some(state)) => format!("{} {} {state}", w.amount, w.currency),
        (Some(w), None) => format!("{} {}", w.amount, w.currency),
        _ => "-".to_owned(),
    }
}

fn terms_summary(
    scope: &[api::Category],
    actions: &[api::GrantAction],
    anonymization: api::Anonymization,
    days: i64,
) -> String {
    format!(
        "{}; {}; {}; {days} days",
        scope_summary(scope),
        comma_list(actions.iter().map(wire_name)),
        wire_name(&anonymization)
    )
}

/// What a request asks for.
fn asks_summary(r: &api::UsageRequestView) -> String {
    terms_summary(&r.scope, &r.actions, r.anonymization, r.days)
}

/// What an accepting answer grants: what was asked, narrowed by the answer.
fn granted_summary(r: &api::UsageRequestView, answer: &api::AnswerRequest) -> String {
    terms_summary(
        answer.scope.as_deref().unwrap_or(&r.scope),
        answer.actions.as_deref().unwrap_or(&r.actions),
        answer.anonymization.unwrap_or(r.anonymization),
        answer.days.unwrap_or(r.days),
    )
}

/// One request in full, for its owner deciding on it.
fn print_request(r: &api::UsageRequestView, names: &OrgNames) {
    let state = if r.state == "pending" { format!("pending, answer by {}", r.answer_by) } else { r.state.clone() };
    println!("request {}  ({state})", r.id);
    println!("  study    \"{}\" ({}), ethics {}", r.study_title, r.study, or_dash(Some(&r.ethics_reference)));
    println!("  from     {}", names.org(&r.requested_by_org));
    println!("  purpose  {}", or_dash(Some(&r.study_purpose)));
    println!("  asks     {}", asks_summary(r));
    if !r.message.is_empty() {
        println!("  message  {}", r.message);
    }
    println!("  reward   {}", reward_summary(r));
    if let Some(grant) = &r.grant {
        println!("  grant    {grant}");
    }
}

fn print_requests_of_study(requests: Vec<api::UsageRequestView>) {
    let mut table = Table::new(["ID", "STATE", "HANDLE", "REWARD", "GRANT", "ANSWER BY"]);
    for r in requests {
        let reward = reward_short(&r);
        table.row(vec![r.id, r.state, r.handle, reward, or_dash(r.grant.as_deref()), r.answer_by]);
    }
    table.print_or("no requests in this study");
}

pub async fn run(args: RequestArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, Some(&args.act_as))?;
    let json = args.conn.json;
    match args.command {
        RequestCommand::Send(send) => {
            let body = send_request(*send)?;
            let asked = body.handles.len();
            let sent = client.post(&["api", "v1", "research", "requests"], &body).await?;
            show(json, sent, |list: api::UsageRequestList| {
                let n = list.requests.len();
                println!("{n} request(s) sent for study {}", body.study);
                if n < asked {
                    println!("({asked} handles given; several handles of the same person count once)");
                }
                let mut table = Table::new(["ID", "HANDLE", "ANSWER BY"]);
                for r in list.requests {
                    table.row(vec![r.id, r.handle, r.answer_by]);
                }
                table.print_or("no requests were made");
            })
        }
        RequestCommand::List { study } => {
            let query: Vec<(&str, String)> = study.iter().map(|s| ("study", s.clone())).collect();
            let list = client.get_query(&["api", "v1", "research", "requests"], &query).await?;
            if study.is_some() {
                return show(json, list, |list: api::UsageRequestList| print_requests_of_study(list.requests));
            }
            let names = OrgNames::load(&client, json).await;
            show(json, list, |list: api::UsageRequestList| {
                if list.requests.is_empty() {
                    println!("no usage requests to you (researchers: give --study ID)");
                }
                for (i, r) in list.requests.iter().enumerate() {
                    if i > 0 {
                        println!();
                    }
                    print_request(r, &names);
                }
                if list.requests.iter().any(|r| r.state == "pending") {
                    println!();
                    println!("answer with: kura request answer ID --accept (or --decline)");
                }
            })
        }
        RequestCommand::Answer { id, accept, decline: _, scope, actions, anonymization, days } => {
            let body = api::AnswerRequest { accept, scope, actions, anonymization, days };
            let answered = client.post(&["api", "v1", "research", "requests", &id, "answer"], &body).await?;
            show(json, answered, |r: api::UsageRequestView| {
                println!("request {} {}", r.id, r.state);
                if let Some(grant) = &r.grant {
                    println!(
                        "grant {grant} lets the study's organisation use your records: {}",
                        granted_summary(&r, &body)
                    );
                    println!("revoke it any time with `kura grant revoke {grant}`");
                }
            })
        }
        RequestCommand::Withdraw { id } => {
            let withdrawn = client.post_empty(&["api", "v1", "research", "requests", &id, "withdraw"]).await?;
            show(json, withdrawn, |r: api::UsageRequestView| println!("request {} {}", r.id, r.state))
        }
        RequestCommand::Paid { id } => {
            let paid = client.post_empty(&["api", "v1", "research", "requests", &id, "reward", "paid"]).await?;
            show(json, paid, |r: api::UsageRequestView| {
                println!("the reward of request {} is {}; the owner is asked to confirm", r.id, reward_short(&r));
            })
        }
        RequestCommand::Confirm { id } => {
            let confirmed = client.post_empty(&["api", "v1", "research", "requests", &id, "reward", "confirm"]).await?;
            show(json, confirmed, |r: api::UsageRequestView| {
                println!("the reward of request {} is {}", r.id, reward_short(&r));
            })
        }
    }
}

/// The wire request of `kura request send`, checked before anything is sent.
fn send_request(args: RequestSendArgs) -> Result<api::CreateUsageRequests> {
    let handles = handles_of(&args)?;
    let reward =
        reward(args.reward_amount.as_deref(), args.reward_currency.as_deref(), args.reward_description.as_deref())?;
    Ok(api::CreateUsageRequests {
        study: args.study,
        handles,
        scope: args.scope,
        actions: args.actions,
        anonymization: args.anonymization,
        days: args.days,
        message: args.message,
        reward,
        answer_within_days: args.answer_within_days,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::command::search::handles_text;
    use crate::{Cli, Command};

    #[test]
    fn reward_amount_and_currency_go_together() {
        assert!(reward(None, None, None).unwrap().is_none());
        let offered = reward(Some("20"), Some("EUR"), Some(" a voucher ")).unwrap().unwrap();
        assert_eq!((offered.amount.as_str(), offered.currency.as_str()), ("20", "EUR"));
        assert_eq!(offered.description, "a voucher");
        let plain = reward(Some("12.50"), Some("JPY"), None).unwrap().unwrap();
        assert_eq!(plain.description, "");

        let message = reward(Some("20"), None, None).unwrap_err().to_string();
        assert!(message.contains("--reward-currency"), "{message}");
        let message = reward(None, Some("EUR"), None).unwrap_err().to_string();
        assert!(message.contains("--reward-amount"), "{message}");
        let message = reward(None, None, Some("thanks")).unwrap_err().to_string();
        assert!(message.contains("--reward-description"), "{message}");

        for bad in ["", "twenty", "-5", "0", "0.00", "1.", ".5", "1.2.3", "1e3", "20 EUR"] {
            assert!(reward(Some(bad), Some("EUR"), None).is_err(), "amount {bad:?}");
        }
        for bad in ["", "EU R", "€", "VERYLONGCURRENCY"] {
            assert!(reward(Some("20"), Some(bad), None).is_err(), "currency {bad:?}");
        }
    }

    #[test]
    fn an_answer_narrows_what_was_asked() {
        let asked: api::UsageRequestView = serde_json::from_value(serde_json::json!({
            "id": "r", "study": "s", "study_title": "T", "study_purpose": "P", "ethics_reference": "E",
            "requested_by_org": "o", "handle": "h", "scope": ["condition", "observation"], "actions": ["view", "copy"],
            "anonymization": "pseudonymized", "days": 60, "message": "", "state": "accepted",
            "answer_by": "2026-01-01T00:00:00Z", "created_at": "2026-01-01T00:00:00Z"
        }))
        .unwrap();
        assert_eq!(asks_summary(&asked), "condition,observation; view,copy; pseudonymized; 60 days");
        let as_asked = api::AnswerRequest { accept: true, scope: None, actions: None, anonymization: None, days: None };
        assert_eq!(granted_summary(&asked, &as_asked), asks_summary(&asked));
        let narrowed = api::AnswerRequest {
            accept: true,
            scope: Some(vec![api::Category::Observation]),
            actions: Some(vec![api::GrantAction::View]),
            anonymization: Some(api::Anonymization::Anonymized),
            days: Some(30),
        };
        assert_eq!(granted_summary(&asked, &narrowed), "observation; view; anonymized; 30 days");
    }

    #[test]
    fn handles_files_are_read_one_per_line() {
        let text = "# handles of study S\nh-1\n\n  h-2  \r\nh-1\nh-3";
        assert_eq!(parse_handles(text), vec!["h-1", "h-2", "h-3"]);
        assert!(parse_handles("\n# nothing\n").is_empty());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handles.txt");
        let handles = vec!["h-1".to_owned(), "h-2".to_owned()];
        std::fs::write(&path, handles_text(&handles)).unwrap();
        assert_eq!(read_handles_file(&path).unwrap(), handles);

        std::fs::write(&path, "\n").unwrap();
        assert!(read_handles_file(&path).unwrap_err().to_string().contains("no handles"));
        assert!(read_handles_file(&dir.path().join("missing.txt")).is_err());
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
}
