//! `kura analysis`: researchers submit a spec for a study and read its aggregates, with what
//! disclosure control did.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use kura_api_types as api;
use serde_json::Value;

use super::{Connection, connect, show};
use crate::output::Table;

#[derive(Debug, Args)]
pub struct AnalysisArgs {
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

/// The spec: a file's JSON, `-` for standard input.
pub fn read_spec(path: &str) -> Result<Value> {
    let text = if path == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read the spec from standard input")?;
        text
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read the spec file {path}"))?
    };
    let spec: Value = serde_json::from_str(&text).with_context(|| format!("the spec in {path} is not JSON"))?;
    if !spec.is_object() {
        bail!("the spec in {path} must be a JSON object with cohort and measures");
    }
    Ok(spec)
}

fn number(value: &Value) -> String {
    match value {
        Value::Null => "withheld".to_owned(),
        other => other.to_string(),
    }
}

/// The result of an analysis, for people: each measure as lines or a table, then what
/// disclosure control did.
pub fn render_result(view: &api::AnalysisView) -> String {
    let result = &view.result;
    let mut out = format!("analysis {}  (study {}, {})\n", view.id, view.study, view.created_at);
    out.push_str(&format!("measures   {}\n", view.measures));
    out.push_str(&format!("cohort     {}\n", number(&result["cohort"])));
    for (i, measure) in result["measures"].as_array().into_iter().flatten().enumerate() {
        let kind = measure["type"].as_str().unwrap_or("");
        out.push_str(&format!("\n[{i}] {kind}"));
        match kind {
            "count" => out.push_str(&format!(": {}\n", number(&measure["count"]))),
            "distribution" => {
                out.push_str(&format!(" by {}\n", measure["by"].as_str().unwrap_or("")));
                let mut table = Table::new(["CELL", "COUNT"]);
                for cell in measure["cells"].as_array().into_iter().flatten() {
                    table.row(vec![cell["key"].as_str().unwrap_or("").to_owned(), number(&cell["count"])]);
                }
                out.push_str(&table.render());
                out.push('\n');
            }
            "table" => {
                out.push_str(&format!(
                    " of {} by {}\n",
                    measure["rows"].as_str().unwrap_or(""),
                    measure["columns"].as_str().unwrap_or("")
                ));
                let mut table = Table::new(["ROW", "COLUMN", "COUNT"]);
                for cell in measure["cells"].as_array().into_iter().flatten() {
                    table.row(vec![
                        cell["row"].as_str().unwrap_or("").to_owned(),
                        cell["column"].as_str().unwrap_or("").to_owned(),
                        number(&cell["count"]),
                    ]);
                }
                for (side, key) in [("(total)", "row_totals"), ("(total)", "column_totals")] {
                    for cell in measure[key].as_array().into_iter().flatten() {
                        let name = cell["key"].as_str().unwrap_or("").to_owned();
                        let row = if key == "row_totals" { vec![name, side.into()] } else { vec![side.into(), name] };
                        table.row([row, vec![number(&cell["count"])]].concat());
                    }
                }
                out.push_str(&table.render());
                out.push('\n');
            }
            "summary" => {
                out.push_str(&format!(" of {}: n {}\n", measure["code"].as_str().unwrap_or(""), number(&measure["n"])));
                for statistic in ["mean", "sd", "median"] {
                    if let Some(value) = measure.get(statistic) {
                        out.push_str(&format!("  {statistic:<8} {}\n", number(value)));
                    }
                }
                for q in measure["quantiles"].as_array().into_iter().flatten() {
                    out.push_str(&format!("  p{:<7} {}\n", number(&q["p"]), number(&q["value"])));
                }
                if let Some(bins) = measure["histogram"].as_array() {
                    let mut table = Table::new(["FROM", "TO", "COUNT"]);
                    for bin in bins {
                        let edge = |v: &Value| if v.is_null() { "-".to_owned() } else { v.to_string() };
                        table.row(vec![edge(&bin["from"]), edge(&bin["to"]), number(&bin["count"])]);
                    }
                    out.push_str(&table.render());
                    out.push('\n');
                }
            }
            "proportion" => out.push_str(&format!(
                " with {}: {} of {} = {}\n",
                measure["label"].as_str().unwrap_or(""),
                number(&measure["numerator"]),
                number(&measure["denominator"]),
                number(&measure["proportion"])
            )),
            _ => out.push('\n'),
        }
    }
    let disclosure = &result["disclosure"];
    out.push_str(&format!(
        "\ndisclosure control: profile {}, threshold {}",
        disclosure["profile"].as_str().unwrap_or(""),
        number(&disclosure["threshold"])
    ));
    if let Some(epsilon) = disclosure["epsilon"].as_f64() {
        out.push_str(&format!(", ε {epsilon}"));
    }
    out.push('\n');
    for action in disclosure["actions"].as_array().into_iter().flatten() {
        let place = match (action["measure"].as_u64(), action["target"].as_str()) {
            (Some(m), Some(t)) => format!("[{m}] {t}: "),
            (None, Some(t)) => format!("{t}: "),
            (Some(m), None) => format!("[{m}]: "),
            (None, None) => String::new(),
        };
        out.push_str(&format!(
            "  {place}{} ({})\n",
            action["action"].as_str().unwrap_or(""),
            action["reason"].as_str().unwrap_or("")
        ));
    }
    out
}

pub async fn run(args: AnalysisArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, None)?;
    let json = args.conn.json;
    match args.command {
        AnalysisCommand::Run { study, spec } => {
            let body = api::CreateAnalysisRequest { study, spec: read_spec(&spec)? };
            let created = client.post(&["api", "v1", "analyses"], &body).await?;
            show(json, created, |view: api::AnalysisView| print!("{}", render_result(&view)))
        }
        AnalysisCommand::Show { id } => {
            show(json, client.get(&["api", "v1", "analyses", &id]).await?, |view: api::AnalysisView| {
                print!("{}", render_result(&view));
            })
        }
        AnalysisCommand::List { study } => {
            let list = client.get_query(&["api", "v1", "analyses"], &[("study", study)]).await?;
            show(json, list, |list: api::AnalysisList| {
                let mut table = Table::new(["ID", "CREATED", "COHORT", "EPSILON", "MEASURES"]);
                for a in list.analyses {
                    let epsilon = a.epsilon.map_or_else(|| "-".to_owned(), |e| e.to_string());
                    table.row(vec![a.id, a.created_at, number(&a.result["cohort"]), epsilon, a.measures]);
                }
                table.print_or("no analyses yet; run one with `kura analysis run --study ID --spec FILE`");
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_result_renders_with_withheld_cells_and_the_report() {
        let view = api::AnalysisView {
            id: "a1".into(),
            study: "s1".into(),
            created_at: "2026-11-30T00:00:00Z".into(),
            measures: "distribution(sex), summary(loinc:4548-4)".into(),
            epsilon: None,
            spec: json!({}),
            result: json!({
                "cohort": 40,
                "measures": [
                    {"type": "distribution", "by": "sex", "cells": [
                        {"key": "female", "count": 30}, {"key": "male", "count": null}]},
                    {"type": "summary", "code": "loinc:4548-4", "n": 25, "mean": 7.1, "median": null}
                ],
                "disclosure": {"profile": "threshold", "threshold": 10, "rounding": null, "epsilon": null,
                    "actions": [{"measure": 0, "target": "male", "action": "suppressed", "reason": "below_threshold"}]}
            }),
        };
        let text = render_result(&view);
        assert!(text.contains("cohort     40"), "{text}");
        assert!(text.contains("male    withheld"), "{text}");
        assert!(text.contains("mean     7.1"), "{text}");
        assert!(text.contains("median   withheld"), "{text}");
        assert!(text.contains("[0] male: suppressed (below_threshold)"), "{text}");
    }

    #[test]
    fn a_spec_must_be_a_json_object() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.json");
        std::fs::write(&path, "[1]").unwrap();
        let error = read_spec(path.to_str().unwrap()).unwrap_err().to_string();
        assert!(error.contains("must be a JSON object"), "{error}");
        assert!(read_spec("/nonexistent/spec.json").unwrap_err().to_string().contains("cannot read the spec file"));
    }
}
