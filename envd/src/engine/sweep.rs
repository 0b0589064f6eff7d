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
        // A snapshot to skip the obvious; each object is checked against the store again
        // right before it is freed, since an env created after the snapshot is live too.
        let holding: HashSet<String> = self.store.holding_ids().await?.into_iter().collect();
        let now = chrono::Utc::now().timestamp();
        let grace_s = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        let old_enough = |created: i64| now.saturating_sub(created) >= grace_s;
        // Envs with an object younger than the grace: their veths are left alone too.
        let mut young: HashSet<String> = HashSet::new();
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
            if !old_enough(c.created.unwrap_or(now)) {
                young.insert(env_id);
                continue;
            }
            if holding.contains(&env_id) || (!dry_run && self.store.holds(&env_id).await?) {
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
            if !old_enough(created) {
                young.insert(env_id);
                continue;
            }
            if holding.contains(&env_id) || (!dry_run && self.store.holds(&env_id).await?) {
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

        let leases = self.store.leases_since().await?;
        let before_ms = crate::store::now_ms()
            .saturating_sub(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
        young.extend(
            leases
                .iter()
                .filter(|(_, _, at)| *at > before_ms)
                .map(|(_, id, _)| id.clone()),
        );
        // Only veths on envd's bridge: an operator's own netcfg attachments elsewhere stay.
        for a in netcfg::list().await? {
            if a.bridge.as_deref() != Some(self.cfg.bridge.as_str())
                || holding.contains(&a.id)
                || young.contains(&a.id)
                || (!dry_run && !a.id.is_empty() && self.store.holds(&a.id).await?)
            {
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

        out.extend(
            self.sweep_leases(&leases, &holding, before_ms, dry_run)
                .await?,
        );
        out.extend(self.sweep_inner(grace, dry_run).await?);
        Ok(out)
    }

    /// Frees the leases (ip, env, taken at) older than `before_ms` of envs not live: each
    /// with one conditional statement, so a lease whose env is live is never freed.
    pub async fn sweep_leases(
        &self,
        leases: &[(String, String, i64)],
        holding: &HashSet<String>,
        before_ms: i64,
        dry_run: bool,
    ) -> Result<Vec<Found>> {
        let mut out = vec![];
        for (ip, env_id, at) in leases {
            if holding.contains(env_id) || *at > before_ms {
                continue;
            }
            let mut o = Found::new("lease", ip, env_id);
            if dry_run {
                out.push(o);
                continue;
            }
            match self.store.release_orphan_lease(ip, env_id, before_ms).await {
                Ok(true) => o.freed = true,
                // Live after all (created since the snapshot): not an orphan.
                Ok(false) => continue,
                Err(e) => o.error = Some(e.to_string()),
            }
            out.push(o);
        }
        Ok(out)
    }
}
