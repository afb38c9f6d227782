//! `kura prefs`: an owner's research choices (discoverable, statistics, the privacy-loss cap).

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use kura_api_types as api;

use super::{ActAs, Connection, connect, show};
use crate::client::decode;

#[derive(Debug, Args)]
pub struct PrefsArgs {
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
        #[arg(long, value_name = "EPSILON|none", value_parser = privacy_cap)]
        privacy_loss_cap: Option<Cap>,
    },
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

fn print_preferences(p: &api::PreferencesBody) {
    println!(
        "discoverable           {:<3}  (whether research search may find you, as a handle)",
        yes_no(p.discoverable)
    );
    println!(
        "contribute statistics  {:<3}  (whether you are counted in aggregate statistics)",
        yes_no(p.contribute_statistics)
    );
    let cap = p.privacy_loss_cap.map_or_else(|| "none".to_owned(), |c| c.to_string());
    println!("privacy loss cap       {cap:<3}  (the most ε differentially private analyses may add up for you)");
}

/// A privacy-loss cap as typed: a number of 0 or more, or `none`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cap(pub Option<f64>);

pub fn privacy_cap(raw: &str) -> Result<Cap, String> {
    if raw.trim().eq_ignore_ascii_case("none") {
        return Ok(Cap(None));
    }
    match raw.trim().parse::<f64>() {
        Ok(cap) if cap.is_finite() && cap >= 0.0 => Ok(Cap(Some(cap))),
        _ => Err(format!("{raw:?} is not a privacy-loss cap; give a number of 0 or more, or none")),
    }
}

pub async fn run(args: PrefsArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, Some(&args.act_as))?;
    let json = args.conn.json;
    match args.command {
        PrefsCommand::Show => {
            show(json, client.get(&["api", "v1", "preferences"]).await?, |p: api::PreferencesBody| {
                print_preferences(&p);
            })
        }
        PrefsCommand::Set { discoverable, contribute_statistics, privacy_loss_cap } => {
            let mut body: api::PreferencesBody = decode(client.get(&["api", "v1", "preferences"]).await?)?;
            if let Some(value) = discoverable {
                body.discoverable = value;
            }
            if let Some(value) = contribute_statistics {
                body.contribute_statistics = value;
            }
            if let Some(Cap(value)) = privacy_loss_cap {
                body.privacy_loss_cap = value;
            }
            let saved = client.put(&["api", "v1", "preferences"], &body).await?;
            show(json, saved, |p: api::PreferencesBody| {
                println!("preferences saved:");
                print_preferences(&p);
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

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
}
