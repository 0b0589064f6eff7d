//! The host engine's node container events (start, die, restart), as env ids.

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::StreamExt;

use crate::engine::driver::HostEvents;
use crate::engine::node::{LABEL_ENV, LABEL_ROLE};

pub(super) fn node_events(host: &Docker) -> HostEvents {
    let role = format!("{LABEL_ROLE}=node");
    let filters = HashMap::from([
        ("type", vec!["container"]),
        ("label", vec![role.as_str()]),
        ("event", vec!["start", "die", "restart"]),
    ]);
    let opts = EventsOptionsBuilder::new().filters(&filters).build();
    host.events(Some(opts))
        // An error means the engine went away: the stream ends and the caller resyncs.
        .take_while(|ev| std::future::ready(ev.is_ok()))
        .filter_map(|ev| async move {
            let ev = ev.ok()?;
            let id = ev.actor?.attributes?.remove(LABEL_ENV)?;
            tracing::info!(env = %id, action = ?ev.action, "node container event");
            Some(id)
        })
        .boxed()
}
