//! The sweeper: destroys in-server copies whose grant expired or was revoked, and the keys of
//! sealed copies taken out under such grants (DESIGN.md, I4).
//! Revocation destroys copies at once; expiry has no event, so this task looks periodically.

use std::time::Duration;

use crate::service::error::ServiceResult;
use crate::state::AppState;

/// Destroys what is due now; returns how many copies (in-server and sealed) went. The owners
/// whose grants the copies were made under are told in their inbox.
pub async fn sweep(state: &AppState) -> ServiceResult<usize> {
    let now = state.clock.now();
    let swept = state.store.sweep_copies(now).await?;
    let count = swept.blobs.len();
    crate::service::content::discard_blobs(state, swept.blobs).await;
    if count > 0 {
        tracing::info!(copies = count, "sweeper destroyed expired copies");
    }
    let sealed = state.store.sweep_sealed_copies(now).await?;
    if !sealed.is_empty() {
        tracing::info!(sealed_copies = sealed.len(), "sweeper destroyed the keys of ended sealed copies");
    }
    let mut owners = swept.grant_owners;
    for copy in &sealed {
        if !owners.contains(&copy.owner) {
            owners.push(copy.owner.clone());
        }
    }
    let message = "Copies others held of your records were destroyed: the grants they were made under ended.";
    let mut notifications = Vec::new();
    for owner in &owners {
        notifications.extend(
            crate::service::notify::to_owner_and_agents(state, owner, "copy_destroyed", "sweep", message, now).await?,
        );
    }
    if !notifications.is_empty() {
        state.store.insert_notifications(&notifications, None).await?;
        crate::service::notify::publish(state, notifications);
    }
    Ok(count + sealed.len())
}

pub async fn run(state: AppState) {
    let mut interval = tokio::time::interval(Duration::from_secs(state.config.sweep_interval_secs.max(1)));
    loop {
        interval.tick().await;
        if let Err(e) = sweep(&state).await {
            tracing::warn!(error = %e, "sweep failed; retrying next interval");
        }
    }
}
