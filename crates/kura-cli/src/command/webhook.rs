//! `kura webhook`: an organisation's notifications POSTed to a URL, and their delivery log.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use kura_api_types as api;

use super::{Connection, connect, show};
use crate::output::{Table, or_dash};

#[derive(Debug, Args)]
pub struct WebhookArgs {
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

pub async fn run(args: WebhookArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, None)?;
    let json = args.conn.json;
    match args.command {
        WebhookCommand::Create { url } => {
            let created = client.post(&["api", "v1", "webhooks"], &api::CreateWebhookRequest { url }).await?;
            if json {
                eprintln!("note: the webhook's secret is in this answer only; it is not shown again");
            }
            show(json, created, |w: api::WebhookView| {
                println!("webhook {} created for {}", w.id, w.url);
                match &w.secret {
                    Some(secret) => {
                        println!("secret  {secret}");
                        println!("This secret is shown once, now: store it where the receiver can use it.");
                        println!("Each delivery carries a kura-signature header: HMAC-SHA256 of the body with it.");
                    }
                    None => println!("the server sent no secret"),
                }
            })
        }
        WebhookCommand::Deliveries { id } => {
            let list = client.get(&["api", "v1", "webhooks", &id, "deliveries"]).await?;
            show(json, list, |list: api::DeliveryList| {
                let mut table =
                    Table::new(["ID", "NOTIFICATION", "STATE", "ATTEMPTS", "STATUS", "NEXT ATTEMPT", "LAST ERROR"]);
                for d in list.deliveries {
                    table.row(vec![
                        d.id,
                        d.notification,
                        d.state,
                        d.attempts.to_string(),
                        d.last_status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                        d.next_attempt_at,
                        or_dash(d.last_error.as_deref()),
                    ]);
                }
                table.print_or("no deliveries yet");
            })
        }
    }
}
