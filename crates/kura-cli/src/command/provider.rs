//! External providers (`kura provider link/list/sync/unlink`): a patient, or an agent acting
//! for one, links a FHIR endpoint; the server pulls their resources as their own records.
//!
//! The provider's token is read from stdin or `KURA_PROVIDER_TOKEN`, never from an argument
//! (process listings show arguments), and kept in a [`Secret`] until it is sent.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use kura_api_types as api;

use super::{ActAs, Connection, connect, done, show};
use crate::output::{Table, comma_list, or_dash};
use crate::secrets::{Secret, read_password_stdin};

#[derive(Debug, Args)]
pub struct ProviderArgs {
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
            value_parser = secret_arg)]
        provider_token: Option<Secret>,
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

/// Parses the token given in `KURA_PROVIDER_TOKEN` into a [`Secret`], so that `Debug` of the
/// command line does not show it.
pub fn secret_arg(raw: &str) -> Result<Secret, String> {
    Ok(Secret::new(raw))
}

fn provider_token(token_stdin: bool, from_env: Option<Secret>) -> Result<Secret> {
    match (token_stdin, from_env) {
        (true, _) => read_password_stdin().map_err(|_| anyhow::anyhow!("no provider token on stdin")),
        (false, Some(token)) if !token.expose().is_empty() => Ok(token),
        _ => bail!("give the provider's token on stdin with --token-stdin, or in KURA_PROVIDER_TOKEN"),
    }
}

fn print_report(report: &api::SyncReport) {
    println!(
        "provider {} synced at {}: fetched {}, created {}, updated {}, unchanged {}",
        report.provider, report.synced_at, report.fetched, report.created, report.updated, report.unchanged
    );
    if report.skipped > 0 {
        println!("{} changed at the provider but deleted or moved here: not re-created", report.skipped);
    }
    if report.gone_at_provider > 0 {
        println!("{} no longer at the provider: their records are kept", report.gone_at_provider);
    }
}

pub async fn run(args: ProviderArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, Some(&args.act_as))?;
    let json = args.conn.json;
    match args.command {
        ProviderCommand::Link { name, base_url, patient_id, types, token_stdin, provider_token: env_token, sync } => {
            let token = provider_token(token_stdin, env_token)?;
            let request = api::CreateProviderRequest {
                name,
                base_url,
                token: token.expose().to_owned(),
                patient_id,
                resource_types: (!types.is_empty()).then_some(types),
            };
            let created = client.post(&["api", "v1", "providers"], &request).await?;
            drop(request);
            if !sync {
                return show(json, created, |p: api::ProviderView| {
                    println!("provider {} linked: {} ({})", p.id, p.name, p.base_url);
                    println!("pull it now with `kura provider sync {}`; it is also pulled periodically", p.id);
                });
            }
            let link: api::ProviderView = crate::client::decode(created)?;
            let report = client.post_empty(&["api", "v1", "providers", &link.id, "sync"]).await?;
            show(json, report, |r: api::SyncReport| {
                println!("provider {} linked: {} ({})", link.id, link.name, link.base_url);
                print_report(&r);
            })
        }
        ProviderCommand::List => {
            let list = client.get(&["api", "v1", "providers"]).await?;
            show(json, list, |list: api::ProviderList| {
                let mut table = Table::new(["ID", "NAME", "BASE URL", "TYPES", "LAST SYNC", "OUTCOME", "LAST ERROR"]);
                for p in list.providers {
                    table.row(vec![
                        p.id,
                        p.name,
                        p.base_url,
                        comma_list(&p.resource_types),
                        or_dash(p.last_sync_at.as_deref()),
                        or_dash(p.last_outcome.as_deref()),
                        or_dash(p.last_error.as_deref()),
                    ]);
                }
                table.print_or("no linked providers");
            })
        }
        ProviderCommand::Sync { id } => {
            let report = client.post_empty(&["api", "v1", "providers", &id, "sync"]).await?;
            show(json, report, |r: api::SyncReport| print_report(&r))
        }
        ProviderCommand::Unlink { id } => {
            client.delete(&["api", "v1", "providers", &id]).await?;
            done(json, &format!("provider {id} unlinked; the records pulled from it stay yours"))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{ProviderArgs, ProviderCommand};
    use crate::{Cli, Command};

    #[test]
    fn link_takes_the_token_from_stdin_or_the_environment_only() {
        let cli = Cli::try_parse_from([
            "kura",
            "provider",
            "link",
            "--name",
            "Aoba",
            "--base-url",
            "http://h/fhir",
            "--patient-id",
            "p1",
            "--type",
            "Condition",
            "--type",
            "Observation",
            "--token-stdin",
            "--act-as",
            "a1",
        ])
        .unwrap();
        let Command::Provider(ProviderArgs {
            command: ProviderCommand::Link { types, token_stdin, .. }, act_as, ..
        }) = cli.command
        else {
            panic!("not provider link");
        };
        assert_eq!(types, ["Condition", "Observation"]);
        assert!(token_stdin);
        assert_eq!(act_as.act_as.as_deref(), Some("a1"));
        assert!(super::provider_token(false, None).is_err());
        assert_eq!(super::provider_token(false, Some(super::Secret::new("t"))).unwrap().expose(), "t");
        assert!(Cli::try_parse_from(["kura", "provider", "sync"]).is_err());
        assert!(Cli::try_parse_from(["kura", "provider", "unlink", "P"]).is_ok());
    }
}
