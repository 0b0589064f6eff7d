//! Follows the driver's host events so a node that restarts (or dies) is reconciled at
//! once, instead of at the next periodic resync: its fixed IP is re-applied and its pods
//! brought back.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::Engine;

/// Runs until the process ends; asks for the events again when the host engine restarts.
pub async fn watch_host_events(engine: Arc<Engine>) {
    loop {
        match engine.driver.host_events().await {
            Ok(mut events) => {
                while let Some(id) = events.next().await {
                    engine.kick(&id);
                }
            }
            Err(e) => tracing::debug!("host events: {e}"),
        }
        // The engine went away (restart): try again shortly, and let a resync catch what
        // happened while disconnected.
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Err(e) = engine.resync().await {
            tracing::debug!("resync after the event stream ended: {e}");
        }
    }
}
