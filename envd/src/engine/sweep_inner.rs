//! The sweep inside live nodes: containers of a ready env's inner engine that are not in
//! its plan (a pod removed from the template by `config set`, a container someone started
//! by hand with `docker run` in the node) are stopped and removed after the grace period.

use std::collections::HashSet;
use std::time::Duration;

use super::Engine;
use super::pods::all_pods;
use super::sweep::Found;
use crate::error::Result;
use crate::store::{EnvFilter, State};

impl Engine {
    /// The part of [`Engine::sweep`] inside the nodes of this store's ready envs.
    pub async fn sweep_inner(&self, grace: Duration, dry_run: bool) -> Result<Vec<Found>> {
        let mut out = vec![];
        let ready = self
            .store
            .list(&EnvFilter {
                state: Some(State::Ready),
                ..Default::default()
            })
            .await?;
        let now = chrono::Utc::now().timestamp();
        let grace_s = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        for env in ready
            .iter()
            .filter(|e| e.desired != crate::lifecycle::Desired::Gone)
        {
            let Ok(plan) = self.plan(env) else { continue };
            let Some(objects) = self.driver.node_objects(env).await? else {
                continue;
            };
            let mut wanted: HashSet<(String, String)> = HashSet::new();
            for pod in all_pods(self, &plan)? {
                wanted.insert((pod.name.clone(), super::driver::PAUSE.into()));
                for c in &pod.containers {
                    wanted.insert((pod.name.clone(), c.name.clone()));
                }
            }
            for o in objects {
                let key = o.labels.clone().unwrap_or_default();
                let created = o.created.unwrap_or(now);
                if wanted.contains(&key) || now.saturating_sub(created) < grace_s {
                    continue;
                }
                let shown = format!("{}/{}", env.name, o.name);
                let mut f = self.free_orphan(o, dry_run).await;
                f.name = shown;
                out.push(f);
            }
        }
        Ok(out)
    }
}
