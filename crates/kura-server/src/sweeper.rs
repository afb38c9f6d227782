//! The sweeper: destroys in-server copies whose grant expired or was revoked (DESIGN.md, I4).
//! Revocation destroys copies at once; expiry has no event, so this task looks periodically.

use std::time::Duration;

use crate::app::AppState;
use crate::error::ApiError;

/// Destroys what is due now; returns how many copies went.
pub async fn sweep(state: &AppState) -> Result<usize, ApiError> {
    let blobs = state.store.sweep_copies(state.clock.now()).await?;
    let count = blobs.len();
    crate::content::discard_blobs(state, blobs).await;
    if count > 0 {
        tracing::info!(copies = count, "sweeper destroyed expired copies");
    }
    Ok(count)
}

pub async fn run(state: AppState) {
    let mut interval = tokio::time::interval(Duration::from_secs(state.config.sweep_interval_secs.max(1)));
    loop {
        interval.tick().await;
        if let Err(e) = sweep(&state).await {
            tracing::warn!(status = %e.status(), "sweep failed; retrying next interval");
        }
    }
}
