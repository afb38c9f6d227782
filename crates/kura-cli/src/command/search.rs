//! `kura search`: search for people who opted in to research, a count and one handle each.
//!
//! Joining the query words and checking the JSON form are pure functions with tests.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use kura_api_types as api;
use serde_json::Value;

use super::{Connection, connect};
use crate::client::decode;
use crate::output;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    kura search --study S snomed:44054006 AND sex:female AND age:40..60\n  \
    kura search --study S --query-json '{\"all\": [{\"label\": \"snomed:44054006\"}, {\"age\": {\"min\": 40}}]}'\n  \
    kura search --study S --handles-only snomed:44054006 > handles.txt\n\n\
    Only people who opted in (`kura prefs set --discoverable true`) are found. When fewer than the \
    server's threshold match, only that is said and no handles are given. Handles belong to the \
    study and cannot be linked across studies. Quote parentheses and comparisons for the shell.")]
#[command(group(clap::ArgGroup::new("query_form").required(true).args(["query", "query_json"])))]
pub struct SearchArgs {
    /// The study the search is for.
    #[arg(long, value_name = "ID")]
    study: String,
    /// The query in text form; the words are joined with spaces.
    #[arg(value_name = "QUERY")]
    query: Vec<String>,
    /// The query in JSON form, e.g. '{"all": [{"label": "snomed:44054006"}]}'.
    #[arg(long, value_name = "JSON", value_parser = json_query)]
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

/// The text form of a query typed as separate words: trimmed, joined with single spaces.
pub fn query_text(words: &[String]) -> Result<String> {
    let words: Vec<&str> = words.iter().map(|w| w.trim()).filter(|w| !w.is_empty()).collect();
    if words.is_empty() {
        bail!("the query is empty; give it as words (e.g. snomed:44054006 AND age:40..60) or with --query-json");
    }
    Ok(words.join(" "))
}

/// The `query` of a search request: the JSON form when given, else the joined text form.
pub fn query_value(words: &[String], json: Option<Value>) -> Result<Value> {
    match json {
        Some(json) => Ok(json),
        None => query_text(words).map(Value::String),
    }
}

/// `--query-json`: a JSON object, checked before anything is sent.
pub fn json_query(raw: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(raw).map_err(|e| format!("not valid JSON: {e}"))?;
    if !value.is_object() {
        return Err(
            "the JSON form of a query is an object, such as {\"all\": [{\"label\": \"snomed:44054006\"}]}".into()
        );
    }
    Ok(value)
}

/// Handles as a file's text: one per line.
pub fn handles_text(handles: &[String]) -> String {
    handles.iter().map(|h| format!("{h}\n")).collect()
}

/// What a search found, for people.
fn found_summary(response: &api::SearchResponse) -> String {
    match (response.count, response.fewer_than) {
        (Some(1), _) => "1 person".to_owned(),
        (Some(count), _) => format!("{count} people"),
        (None, Some(k)) => format!("fewer than {k} people (no handles are given then)"),
        (None, None) => "nothing said".to_owned(),
    }
}

pub async fn run(args: SearchArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, None)?;
    let query = query_value(&args.query, args.query_json)?;
    let body = api::SearchRequest { study: args.study, query };
    let value = client.post(&["api", "v1", "research", "search"], &body).await?;
    let response: api::SearchResponse = decode(value.clone())?;
    // With --handles-only or --json, stdout carries only that; notes go to stderr.
    let quiet = args.handles_only || args.conn.json;
    if args.handles_only {
        for handle in &response.handles {
            println!("{handle}");
        }
        if response.handles.is_empty() {
            eprintln!("no handles: {} match", found_summary(&response));
        }
    } else if args.conn.json {
        output::print_json(&value);
    } else {
        println!("query    {}", response.query);
        println!("found    {}", found_summary(&response));
        if !response.handles.is_empty() {
            println!("handles:");
            for handle in &response.handles {
                println!("{handle}");
            }
        }
    }
    if let Some(path) = &args.save {
        std::fs::write(path, handles_text(&response.handles))
            .with_context(|| format!("cannot write the handles to {}", path.display()))?;
        let note = format!("{} handle(s) saved to {}", response.handles.len(), path.display());
        if quiet {
            eprintln!("{note}");
        } else {
            println!("{note}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn words(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn query_words_are_joined_with_single_spaces() {
        assert_eq!(
            query_text(&words("snomed:44054006 AND sex:female AND age:40..60")).unwrap(),
            "snomed:44054006 AND sex:female AND age:40..60"
        );
        // The shell may hand over quoted groups with their own spaces; they are kept, trimmed.
        let typed = vec![" (snomed:1 OR snomed:2) ".to_owned(), "".to_owned(), "AND".to_owned(), "age:40..".to_owned()];
        assert_eq!(query_text(&typed).unwrap(), "(snomed:1 OR snomed:2) AND age:40..");
        assert!(query_text(&[]).is_err());
        assert!(query_text(&["  ".to_owned()]).is_err());
    }

    #[test]
    fn the_json_form_wins_and_must_be_an_object() {
        let json = json_query(r#"{"all": [{"label": "snomed:44054006"}]}"#).unwrap();
        assert_eq!(query_value(&[], Some(json.clone())).unwrap(), json);
        assert_eq!(query_value(&words("icd10:E11"), None).unwrap(), Value::String("icd10:E11".into()));
        assert!(json_query("[1, 2]").is_err());
        assert!(json_query("\"icd10:E11\"").is_err());
        assert!(json_query("{not json").unwrap_err().contains("not valid JSON"));
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
        assert_eq!(query_text(&args.query).unwrap(), "snomed:44054006 AND sex:female AND age:40..60");
        assert!(args.conn.json && args.query_json.is_none());

        let cli = Cli::try_parse_from(["kura", "search", "--study", "S", "--query-json", r#"{"label":"icd10:E11"}"#])
            .unwrap();
        let Command::Search(args) = cli.command else { panic!("not search") };
        assert!(args.query.is_empty() && args.query_json.is_some());

        assert!(Cli::try_parse_from(["kura", "search", "--study", "S"]).is_err());
        assert!(Cli::try_parse_from(["kura", "search", "--study", "S", "x", "--query-json", "{}"]).is_err());
        assert!(Cli::try_parse_from(["kura", "search", "--study", "S", "--query-json", "[1]"]).is_err());
    }
}
