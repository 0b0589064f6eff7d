//! The orphan sweep: host objects carrying envd's labels or names whose env this store
//! does not hold (gone, failed and freed, or unknown) — containers, volumes, veths on the
//! envd bridge, and leases of finished envs. Objects younger than the grace period are
//! left alone (an env being created right now). One envd (or one shared store) per
//! Docker host: another store's envs would look like orphans here.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;

use super::Engine;
use super::driver::HostObject;
use crate::error::Result;

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

        let objects = self.driver.host_objects().await?;
        // Objects the host dates (containers, volumes) first: they tell which envs are young.
        let (dated, undated): (Vec<HostObject>, Vec<HostObject>) =
            objects.into_iter().partition(|o| o.created.is_some());
        for o in dated {
            if !old_enough(o.created.unwrap_or(now)) {
                young.insert(o.env_id);
                continue;
            }
            if holding.contains(&o.env_id) || (!dry_run && self.store.holds(&o.env_id).await?) {
                continue;
            }
            out.push(self.free_orphan(o, dry_run).await);
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
        // Attachments: the host keeps no date, their env's other objects and lease tell.
        for o in undated {
            if holding.contains(&o.env_id)
                || young.contains(&o.env_id)
                || (!dry_run && !o.env_id.is_empty() && self.store.holds(&o.env_id).await?)
            {
                continue;
            }
            out.push(self.free_orphan(o, dry_run).await);
        }

        out.extend(
            self.sweep_leases(&leases, &holding, before_ms, dry_run)
                .await?,
        );
        out.extend(self.sweep_inner(grace, dry_run).await?);
        Ok(out)
    }

    /// Frees one orphan unless `dry_run`; what happened, as found.
    pub(super) async fn free_orphan(&self, o: HostObject, dry_run: bool) -> Found {
        let mut found = Found::new(o.kind.as_str(), &o.name, &o.env_id);
        if !dry_run {
            match self.driver.remove_object(&o).await {
                Ok(()) => found.freed = true,
                Err(e) => found.error = Some(e.to_string()),
            }
        }
        found
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
