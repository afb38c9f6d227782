//! `kura inbox`: your notifications, oldest first; `kura inbox read ID` marks one read.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use kura_api_types as api;
use serde_json::Value;

use super::{ActAs, Connection, connect, done, show};
use crate::client::{Client, decode};
use crate::output::{Table, or_dash};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
#[command(
    after_help = "Examples:\n  kura inbox\n  kura inbox --unread\n  kura inbox --after 120\n  kura inbox read ID\n\n\
    Agents see the notifications of the patient they act for with --act-as."
)]
pub struct InboxArgs {
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

/// Reads the inbox after `after`, page by page until the server has nothing more.
async fn read_inbox(client: &Client, after: i64) -> Result<Vec<Value>> {
    let mut notifications = Vec::new();
    let mut after = after;
    loop {
        let page = client.get_query(&["api", "v1", "inbox"], &[("after", after.to_string())]).await?;
        let Some(items) = page.get("notifications").and_then(Value::as_array).cloned() else {
            // Not the expected shape: let the decoder say so.
            decode::<api::Inbox>(page)?;
            break;
        };
        let last = items.iter().filter_map(|n| n.get("seq").and_then(Value::as_i64)).max();
        notifications.extend(items);
        match last {
            // Stop when the page is empty or the server does not move on.
            Some(last) if last > after => after = last,
            _ => break,
        }
    }
    Ok(notifications)
}

fn is_unread(notification: &Value) -> bool {
    notification.get("read_at").is_none_or(Value::is_null)
}

pub async fn run(args: InboxArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, Some(&args.act_as))?;
    let json = args.conn.json;
    if let Some(InboxCommand::Read { id }) = args.command {
        client.post_empty(&["api", "v1", "inbox", &id, "read"]).await?;
        return done(json, &format!("notification {id} marked read"));
    }
    let mut notifications = read_inbox(&client, args.after).await?;
    if args.unread {
        notifications.retain(is_unread);
    }
    let value = serde_json::json!({ "notifications": notifications });
    show(json, value, |inbox: api::Inbox| {
        let mut table = Table::new(["SEQ", "ID", "NEW", "KIND", "AT", "ABOUT", "MESSAGE"]);
        for n in inbox.notifications {
            table.row(vec![
                n.seq.to_string(),
                n.id,
                if n.read_at.is_none() { "*" } else { "" }.to_owned(),
                n.kind,
                n.created_at,
                or_dash(Some(&n.about)),
                n.message,
            ]);
        }
        let empty = if args.unread { "no unread notifications" } else { "no notifications" };
        table.print_or(empty);
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    #[test]
    fn unread_means_without_read_at() {
        assert!(is_unread(&serde_json::json!({"seq": 1})));
        assert!(is_unread(&serde_json::json!({"seq": 1, "read_at": null})));
        assert!(!is_unread(&serde_json::json!({"seq": 1, "read_at": "2026-01-01T00:00:00Z"})));
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
    }
}
