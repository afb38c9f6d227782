//! `kura events`: follow your notifications live as server-sent events, until interrupted.
//!
//! [`SseParser`] reads the `text/event-stream` format chunk by chunk: `event:`, `data:` and `id:`
//! fields, comments (the server's keep-alives) skipped, an event ending at a blank line.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use kura_api_types as api;
use serde_json::Value;

use super::{ActAs, Connection, connect};
use crate::client::{ApiFailure, Client};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  kura events\n  kura events --last-event-id 120 --json\n\n\
    Each notification is printed as it arrives (with --json, one JSON object per line). If the \
    connection drops, it is opened again from the last event seen. Stop with Ctrl-C.")]
pub struct EventsArgs {
    /// First replay what came after this sequence number (sends Last-Event-ID).
    #[arg(long, value_name = "SEQ")]
    last_event_id: Option<i64>,
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    act_as: ActAs,
}

/// One event of a `text/event-stream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `message` when there was none.
    pub event: String,
    /// The `data:` lines, joined with newlines.
    pub data: String,
    /// The `id:` field of this event, if it had one.
    pub id: Option<String>,
}

/// Reads a `text/event-stream` as it arrives, in chunks that may split lines (and characters)
/// anywhere.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes not yet ending in a line break.
    pending: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
    id: Option<String>,
    /// The last `id:` seen, kept across events as the stream's last event id.
    last_id: Option<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last event id the stream gave (for `Last-Event-ID` when reconnecting).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// Feeds a chunk; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < self.pending.len() {
            match self.pending[i] {
                b'\n' => {
                    let line = String::from_utf8_lossy(&self.pending[start..i]).into_owned();
                    self.line(&line, &mut events);
                    i += 1;
                    start = i;
                }
                b'\r' => {
                    // CR LF or a lone CR; a CR at the end of the chunk waits to see which.
                    if i + 1 == self.pending.len() {
                        break;
                    }
                    let line = String::from_utf8_lossy(&self.pending[start..i]).into_owned();
                    self.line(&line, &mut events);
                    i += if self.pending[i + 1] == b'\n' { 2 } else { 1 };
                    start = i;
                }
                _ => i += 1,
            }
        }
        self.pending.drain(..start);
        events
    }

    fn line(&mut self, line: &str, events: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        if line.starts_with(':') {
            return; // a comment: keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => self.data.push(value.to_owned()),
            "id" if !value.contains('\0') => {
                self.id = Some(value.to_owned());
                self.last_id = Some(value.to_owned());
            }
            _ => {} // retry and unknown fields
        }
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let event = self.event.take();
        let id = self.id.take();
        if self.data.is_empty() {
            return; // an event without data is not dispatched
        }
        let data = std::mem::take(&mut self.data).join("\n");
        events.push(SseEvent { event: event.unwrap_or_else(|| "message".to_owned()), data, id });
    }
}

/// Prints one event: the notification's JSON on one line (`--json`), or a line for people.
fn print_event(event: &SseEvent, json: bool) {
    let parsed: Option<Value> = serde_json::from_str(&event.data).ok();
    if json {
        match &parsed {
            Some(value) => println!("{value}"),
            None => println!("{}", serde_json::json!({ "event": event.event, "id": event.id, "data": event.data })),
        }
        return;
    }
    match parsed.and_then(|v| serde_json::from_value::<api::NotificationView>(v).ok()) {
        Some(n) => {
            let about = if n.about.is_empty() { String::new() } else { format!("  (about {})", n.about) };
            println!("[{}] {}  {}  {}{about}  id {}", n.seq, n.created_at, n.kind, n.message, n.id);
        }
        None => println!("{}: {}", event.event, event.data),
    }
}

/// Follows one connection, printing events and updating `last_id` as they arrive. Ends with why
/// the stream ended (the server closed it or it broke off), or the error that kept it from opening.
async fn follow(client: &Client, last_id: &mut Option<String>, json: bool) -> Result<String> {
    let mut response = client.open_event_stream(&["api", "v1", "events"], last_id.as_deref()).await?;
    let mut parser = SseParser::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                for event in parser.push(&chunk) {
                    print_event(&event, json);
                }
                if let Some(id) = parser.last_event_id() {
                    *last_id = Some(id.to_owned());
                }
            }
            Ok(None) => return Ok("the server closed the stream".to_owned()),
            Err(e) => return Ok(format!("the stream broke off: {e}")),
        }
    }
}

/// Follows the event stream until interrupted, reopening it (from the last event seen) when it
/// drops. A refusal by the server, or a first connection that fails, ends the command.
async fn follow_forever(client: &Client, mut last_id: Option<String>, json: bool) -> Result<ExitCode> {
    const FIRST_DELAY: Duration = Duration::from_secs(1);
    let mut delay = FIRST_DELAY;
    let mut connected_once = false;
    loop {
        match follow(client, &mut last_id, json).await {
            Ok(why) => {
                connected_once = true;
                delay = FIRST_DELAY;
                eprintln!("note: {why}; reconnecting in {}s", delay.as_secs());
            }
            Err(e) if e.downcast_ref::<ApiFailure>().is_some() || !connected_once => return Err(e),
            Err(e) => eprintln!("note: {e:#}; retrying in {}s", delay.as_secs()),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

pub async fn run(args: EventsArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, Some(&args.act_as))?;
    let json = args.conn.json;
    if !json {
        eprintln!("following notifications from {} (Ctrl-C to stop)", client.server());
    }
    let last_id = args.last_event_id.map(|seq| seq.to_string());
    tokio::select! {
        result = follow_forever(&client, last_id, json) => result,
        _ = tokio::signal::ctrl_c() => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn event(kind: &str, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent { event: kind.to_owned(), data: data.to_owned(), id: id.map(str::to_owned) }
    }

    #[test]
    fn events_are_read_from_their_fields() {
        let mut parser = SseParser::new();
        let events = parser.push(b"id: 7\nevent: usage_request\ndata: {\"seq\":7}\n\n: keep-alive\n\ndata: plain\n\n");
        assert_eq!(events, vec![event("usage_request", "{\"seq\":7}", Some("7")), event("message", "plain", None)]);
        assert_eq!(parser.last_event_id(), Some("7"));
    }

    #[test]
    fn chunks_may_split_lines_anywhere() {
        let stream = "event: reward\r\nid: 12\r\ndata: first\r\ndata:second\r\n\r\nevent: x\rdata: é\r\r\n";
        let expected = vec![event("reward", "first\nsecond", Some("12")), event("x", "é", None)];
        // Every split point, including inside the two-byte é and between CR and LF.
        for split in 0..=stream.len() {
            let (a, b) = stream.as_bytes().split_at(split);
            let mut parser = SseParser::new();
            let mut events = parser.push(a);
            events.extend(parser.push(b));
            assert_eq!(events, expected, "split at {split}");
        }
        // Byte by byte.
        let mut parser = SseParser::new();
        let events: Vec<SseEvent> = stream.as_bytes().iter().flat_map(|b| parser.push(&[*b])).collect();
        assert_eq!(events, expected);
    }

    #[test]
    fn odd_lines_follow_the_rules() {
        let mut parser = SseParser::new();
        // No data: nothing is dispatched, but the id still counts as the last one.
        assert!(parser.push(b"event: ping\nid: 3\n\n").is_empty());
        assert_eq!(parser.last_event_id(), Some("3"));
        // A field without a colon, an empty data line, unknown fields and retry are handled.
        let events = parser.push(b"retry: 1000\nfoo: bar\ndata\ndata: x\n\n");
        assert_eq!(events, vec![event("message", "\nx", None)]);
        // An incomplete event waits for its blank line.
        assert!(parser.push(b"data: later\n").is_empty());
        assert_eq!(parser.push(b"\n"), vec![event("message", "later", None)]);
    }

    #[test]
    fn events_may_replay_from_a_sequence_number() {
        let cli = Cli::try_parse_from(["kura", "events", "--last-event-id", "12"]).unwrap();
        let Command::Events(args) = cli.command else { panic!("not events") };
        assert_eq!(args.last_event_id, Some(12));
    }
}
