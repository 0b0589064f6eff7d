//! The sweep inside live nodes: containers of a ready env's inner engine that are not in
//! its plan (a pod removed from the template by `config set`, a container someone started
//! by hand with `docker run` in the node) are stopped and removed after the grace period.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};

use super::Engine;
use super::pods::{LABEL_CONTAINER, LABEL_POD, all_pods};
use super::sweep::Found;
use crate::error::{DockerContext, Result};
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
        for env in ready
            .iter()
            .filter(|e| e.desired != crate::lifecycle::Desired::Gone)
        {
            let Some(inner) = super::archive::inner_docker(self, env).await else {
                continue;
            };
            let Ok(plan) = self.plan(env) else { continue };
            let mut wanted: HashSet<(String, String)> = HashSet::new();
            for pod in all_pods(self, &plan)? {
                wanted.insert((pod.name.clone(), "pause".into()));
                for c in &pod.containers {
                    wanted.insert((pod.name.clone(), c.name.clone()));
                }
            }
            let all = inner
                .list_containers(Some(
                    ListContainersOptionsBuilder::default().all(true).build(),
                ))
                .await
                .ctx(|| format!("listing the containers of env {}", env.name))?;
            for c in all {
                let labels: HashMap<String, String> = c.labels.clone().unwrap_or_default();
                let key = (
                    labels.get(LABEL_POD).cloned().unwrap_or_default(),
                    labels.get(LABEL_CONTAINER).cloned().unwrap_or_default(),
                );
                let grace_s = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
                if wanted.contains(&key) || now.saturating_sub(c.created.unwrap_or(now)) < grace_s {
                    continue;
                }
                let name = super::sweep::container_name(&c);
                let mut f = Found::new("inner-container", &format!("{}/{name}", env.name), &env.id);
                if !dry_run {
                    let opts = RemoveContainerOptionsBuilder::default()
                        .force(true)
                        .v(true)
                        .build();
                    match inner.remove_container(&name, Some(opts)).await {
                        Ok(()) => f.freed = true,
                        Err(e) => f.error = Some(e.to_string()),
                    }
                }
                out.push(f);
            }
        }
        Ok(out)
    }
}
