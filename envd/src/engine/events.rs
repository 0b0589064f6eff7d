//! Watches the host engine's container events so a node that restarts (or dies) is
//! reconciled at once, instead of at the next periodic resync: its fixed IP is re-applied
//! and its pods brought back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::StreamExt;

use super::Engine;
use super::node::{LABEL_ENV, LABEL_ROLE};

/// Runs until the process ends; reconnects when the engine restarts.
pub async fn watch_host_events(engine: Arc<Engine>) {
    let role = format!("{LABEL_ROLE}=node");
    let filters = HashMap::from([
        ("type", vec!["container"]),
        ("label", vec![role.as_str()]),
        ("event", vec!["start", "die", "restart"]),
    ]);
    loop {
        let opts = EventsOptionsBuilder::new().filters(&filters).build();
        let mut events = engine.host.events(Some(opts));
        while let Some(ev) = events.next().await {
            let Ok(ev) = ev else { break };
            let env_id = ev
                .actor
                .and_then(|a| a.attributes)
                .and_then(|mut attrs| attrs.remove(LABEL_ENV));
            if let Some(id) = env_id {
                tracing::info!(env = %id, action = ?ev.action, "node container event");
                engine.kick(&id);
            }
        }
        // The engine went away (restart): the stream ends; try again shortly, and let a
        // resync catch what happened while disconnected.
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Err(e) = engine.resync().await {
            tracing::debug!("resync after the event stream ended: {e}");
        }
    }
}
