//! Sealed copies of records: take one out (`kura records sealed-copy`) and list them with their
//! deletion receipts (`kura records sealed-copies`). `kura open` opens a package
//! (`command/open.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use kura_api_types as api;
use kura_store::package::Package;

use crate::client::Client;
use crate::command::show;
use crate::output::{Table, or_dash};

/// `kura records sealed-copy ID`: takes the package out and saves it.
pub async fn take(client: &Client, id: &str, out: Option<PathBuf>, json: bool) -> Result<ExitCode> {
    let (bytes, _) =
        client.post_for_bytes(&["api", "v1", "records", id, "sealed-copy"], &serde_json::json!({})).await?;
    let package = Package::parse(&bytes).context("the server's answer is not a sealed copy")?;
    let copy = package.field("sealed-copy").context("the package names no sealed copy")?.to_owned();
    let expires = package.field("expires-at").unwrap_or_default().to_owned();
    let path = out.unwrap_or_else(|| PathBuf::from(format!("{copy}.kura-sealed")));
    std::fs::write(&path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
    if json {
        crate::output::print_json(
            &serde_json::json!({"sealed_copy": copy, "file": path.display().to_string(), "expires_at": expires}),
        );
    } else {
        println!("sealed copy {copy} saved to {}", path.display());
        println!("it opens with `kura open {}` until {expires}, or until the grant is revoked", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `kura records sealed-copies`: the caller's sealed copies, as owner or as grantee.
pub async fn list(client: &Client, json: bool) -> Result<ExitCode> {
    show(json, client.get(&["api", "v1", "sealed-copies"]).await?, |list: api::SealedCopyList| {
        let mut table = Table::new(["ID", "RECORD", "GRANTEE", "STATE", "UNTIL", "RECEIPT"]);
        for c in list.sealed_copies {
            let receipt = c.receipt.as_ref().map(|r| format!("key destroyed {} ({})", r.destroyed_at, r.reason));
            table.row(vec![c.id, c.record, c.grantee, c.state, c.expires_at, or_dash(receipt.as_deref())]);
        }
        table.print_or("no sealed copies");
    })
}
