//! Taking over the envs of a dead instance: a claim that expired without being let go
//! means its holder died mid-work. Every instance looks for such claims at half the claim
//! TTL and starts the env's loop, so an env waits about 1.5 TTL for a new owner, not for
//! the next resync.

use std::sync::Arc;

use super::Engine;
use crate::error::Result;

impl Engine {
    /// Starts the loop of every env whose claim expired and that no loop of this instance
    /// drives (a loop of ours pausing past its claim renews it when it wakes). Returns
    /// their ids.
    pub async fn take_over_expired(self: &Arc<Self>) -> Result<Vec<String>> {
        let mut taken = vec![];
        for id in self.store.expired_claims().await? {
            let ours = self
                .loops
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&id);
            if !ours {
                tracing::info!(env = %id, "its claim expired: taking it over");
                self.kick(&id);
                taken.push(id);
            }
        }
        Ok(taken)
    }
}

/// Runs until the process ends.
pub async fn take_over_claims(engine: Arc<Engine>) {
    let every = engine.cfg.claim_ttl / 2;
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = engine.take_over_expired().await {
            tracing::warn!("looking for expired claims: {e}");
        }
    }
}
