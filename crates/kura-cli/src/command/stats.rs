//! `kura stats`: standing statistics per condition, people like you, and the analyses that
//! included you.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use kura_api_types as api;

use super::{Connection, connect, show};
use crate::output::Table;

#[derive(Debug, Args)]
pub struct StatsArgs {
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

fn count(value: Option<u64>) -> String {
    value.map_or_else(|| "withheld".to_owned(), |n| n.to_string())
}

fn print_condition(c: &api::ConditionStatistics) {
    println!("{}: {} patients", c.condition, c.patients);
    let cells = |cells: &[api::CountCell]| {
        cells.iter().map(|cell| format!("{} {}", cell.key, count(cell.count))).collect::<Vec<_>>().join(", ")
    };
    println!("  by sex  {}", cells(&c.by_sex));
    println!("  by age  {}", cells(&c.by_age));
}

pub async fn run(args: StatsArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, None)?;
    let json = args.conn.json;
    match args.command {
        StatsCommand::Conditions => {
            let value = client.get(&["api", "v1", "statistics", "conditions"]).await?;
            show(json, value, |s: api::StandingStatistics| {
                if s.conditions.is_empty() {
                    println!("no condition is held by {} or more contributing patients yet", s.threshold);
                }
                for condition in &s.conditions {
                    print_condition(condition);
                }
            })
        }
        StatsCommand::Me => {
            let value = client.get(&["api", "v1", "statistics", "me"]).await?;
            show(json, value, |me: api::PeopleLikeMe| {
                if me.conditions.is_empty() {
                    println!("your records name no diagnosed condition");
                }
                for mine in &me.conditions {
                    match &mine.statistics {
                        Some(stats) => print_condition(stats),
                        None => println!(
                            "{}: fewer than {} contributing patients have it; nothing is shown",
                            mine.condition, me.threshold
                        ),
                    }
                }
                if let Some(mine) = me.conditions.first() {
                    println!(
                        "you: age band {}, sex {}",
                        mine.your_age_band.as_deref().unwrap_or("unknown"),
                        mine.your_sex.as_deref().unwrap_or("unknown")
                    );
                }
            })
        }
        StatsCommand::Participation => {
            let value = client.get(&["api", "v1", "statistics", "participation"]).await?;
            show(json, value, |p: api::ParticipationView| {
                let cap = p.privacy_loss_cap.map_or_else(|| "none".to_owned(), |c| c.to_string());
                println!("privacy loss {} (cap {cap})", p.privacy_loss);
                let mut table = Table::new(["WHEN", "STUDY", "EPSILON", "MEASURES"]);
                for a in p.analyses {
                    let epsilon = a.epsilon.map_or_else(|| "-".to_owned(), |e| e.to_string());
                    table.row(vec![a.at, a.study_title, epsilon, a.measures]);
                }
                table.print_or("no analysis has included your records");
                println!();
                let mut table = Table::new(["WHEN", "STUDY", "ORGANISATION"]);
                for m in p.searches {
                    table.row(vec![m.at, m.study_title, m.organisation]);
                }
                table.print_or("no research search has been told about you");
            })
        }
    }
}
