//! The orphan sweep: host objects carrying envd's labels or names whose env this store
//! does not hold (gone, failed and freed, or unknown) — containers, volumes, veths on the
//! envd bridge, and leases of finished envs. Objects younger than the grace period are
//! left alone (an env being created right now). One envd (or one shared store) per
//! Docker host: another store's envs would look like orphans here.

use std::collections::HashSet;
use std::time::Duration;

use bollard::query_parameters::{RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder};
use serde::Serialize;

use super::Engine;
use super::node::{LABEL_ENV, labelled_containers, labelled_volumes};
use crate::error::{DockerContext, Result};

#[derive(Debug, Clone, Serialize)]
pub struct Found {
    /// `container`, `volume`, `veth`, `lease`, `inner-container` (sweep), `env`, `warning` (reap), `archive`
    /// (retain-logs).
    pub kind: &'static str,
    pub name: String,
    pub env_id: String,
    /// Whether it was freed (false on a dry run or when freeing failed).
    pub freed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A listed container's name, without Docker's leading `/`.
pub(super) fn container_name(c: &bollard::models::ContainerSummary) -> String {
    c.names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default()
}

impl Found {
    pub fn new(kind: &'static str, name: &str, env_id: &str) -> Self {
        Found {
            kind,
            name: name.to_string(),
            env_id: env_id.to_string(),
            freed: false,
            error: None,
        }
    }
}

impl Engine {
    /// Finds (and unless `dry_run`, frees) what belongs to no env this store holds.
    pub async fn sweep(&self, grace: Duration, dry_run: bool) -> Result<Vec<Found>> {
        let holding: HashSet<String> = self.store.holding_ids().await?.into_iter().collect();
        let now = chrono::Utc::now().timestamp();
        let old_enough = |created: i64| now - created >= grace.as_secs() as i64;
        let mut out = vec![];

        let containers = labelled_containers(&self.host, LABEL_ENV)
            .await
            .ctx(|| "listing envd's containers".into())?;
        for c in containers {
            let env_id = c
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_ENV))
                .cloned()
                .unwrap_or_default();
            if holding.contains(&env_id) || !old_enough(c.created.unwrap_or(now)) {
                continue;
            }
            let name = container_name(&c);
            let mut o = Found {
                kind: "container",
                name,
                env_id,
                freed: false,
                error: None,
            };
            if !dry_run && let Some(id) = c.id {
                let opts = RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build();
                match self.host.remove_container(&id, Some(opts)).await {
                    Ok(()) => o.freed = true,
                    Err(e) => o.error = Some(e.to_string()),
                }
            }
            out.push(o);
        }

        let volumes = labelled_volumes(&self.host, LABEL_ENV)
            .await
            .ctx(|| "listing envd's volumes".into())?;
        for v in volumes {
            let env_id = v.labels.get(LABEL_ENV).cloned().unwrap_or_default();
            let created = v
                .created_at
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp())
                .unwrap_or(now);
            if holding.contains(&env_id) || !old_enough(created) {
                continue;
            }
            let mut o = Found {
                kind: "volume",
                name: v.name.clone(),
                env_id,
                freed: false,
                error: None,
            };
            if !dry_run {
                let opts = RemoveVolumeOptionsBuilder::default().force(true).build();
                match self.host.remove_volume(&v.name, Some(opts)).await {
                    Ok(()) => o.freed = true,
                    Err(e) => o.error = Some(e.to_string()),
                }
            }
            out.push(o);
        }

        // Only veths on envd's bridge: an operator's own netcfg attachments elsewhere stay.
        for a in netcfg::list().await? {
            if a.bridge.as_deref() != Some(self.cfg.bridge.as_str()) || holding.contains(&a.id) {
                continue;
            }
            let mut o = Found {
                kind: "veth",
                name: a.host_ifname.clone(),
                env_id: a.id.clone(),
                freed: false,
                error: None,
            };
            if !dry_run {
                let res = if a.id.is_empty() {
                    netcfg::detach_host_ifname(&a.host_ifname).await
                } else {
                    netcfg::detach(&a.id).await
                };
                match res {
                    Ok(()) => o.freed = true,
                    Err(e) => o.error = Some(e.to_string()),
                }
            }
            out.push(o);
        }

        for (ip, env_id) in self.store.leases().await? {
            if holding.contains(&env_id) {
                continue;
            }
            let mut o = Found {
                kind: "lease",
                name: ip,
                env_id: env_id.clone(),
                freed: false,
                error: None,
            };
            if !dry_run {
                match self.store.release_lease(&env_id).await {
                    Ok(()) => o.freed = true,
                    Err(e) => o.error = Some(e.to_string()),
                }
            }
            out.push(o);
        }
        out.extend(self.sweep_inner(grace, dry_run).await?);
        Ok(out)
    }
}
