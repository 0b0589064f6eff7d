//! The engine's side of warm pools: a pooled env's build ends in `pooled` instead of
//! `ready`, and one that stops being whole (its node killed, a pod not answering) is
//! failed and torn down, never repaired: the refill builds a fresh one.

use std::sync::Arc;
use std::time::Duration;

use std::time::Instant;

use super::decide::{Action, Progress, decide};
use super::{Engine, since_ms};
use crate::error::{Error, Result};
use crate::lifecycle::{ChangeStatus, EventKind, EventStep, State, Step};
use crate::spec::Pod;
use crate::store::Env;

/// How long a health check waits for one pod of a pooled env to answer.
const HEALTH_DEADLINE: Duration = Duration::from_secs(5);

impl Engine {
    /// The build of a pool's env is done: it waits in the pool.
    pub(super) async fn mark_pooled(&self, env: &Env) -> Result<()> {
        let pool = env.pool.as_deref().unwrap_or_default();
        self.store
            .mark_pooled(
                &env.id,
                &format!("ready in warm pool {pool}"),
                since_ms(env.created_at),
            )
            .await?;
        Ok(())
    }

    /// A taken env's pods, all running: the take's answers applied first when it had
    /// other answers than the pool (its config generation 1), then every readiness check
    /// once, at once; then each recorded started and ready, and the pods done.
    pub(super) async fn reprobe(
        &self,
        env: &Env,
        pods: &[Pod],
        names: &[String],
        done: &mut Progress,
    ) -> Result<()> {
        self.apply_take_change(env).await?;
        let t = Instant::now();
        let checks = pods
            .iter()
            .filter(|p| names.contains(&p.name))
            .map(|p| async move {
                let r = self.driver.wait_ready(env, p).await;
                (p, t.elapsed(), r)
            });
        let results = futures_util::future::join_all(checks).await;
        for (pod, took, r) in results {
            r?;
            self.store
                .event(
                    &env.id,
                    EventStep::pod(EventKind::Started, &pod.name),
                    "running (warm pool)",
                    None,
                )
                .await?;
            if let Some(ready) = &pod.ready {
                let what = format!("{:?} check passed", ready.kind).to_lowercase();
                self.store
                    .event(
                        &env.id,
                        EventStep::pod(EventKind::Ready, &pod.name),
                        &what,
                        Some(took),
                    )
                    .await?;
            }
            done.started.insert(pod.name.clone());
            done.ready.insert(pod.name.clone());
        }
        let note = format!(
            "{} pods running and ready (checked again after the take)",
            pods.len()
        );
        self.store
            .event(&env.id, Step::Pods, &note, Some(t.elapsed()))
            .await?;
        done.pods_done = true;
        Ok(())
    }

    /// Applies the answers a take recorded for the env, if any are still open. A pod that
    /// does not take them fails the create, as it would have failed a cold build (its
    /// pods are back on the pool's answers meanwhile).
    async fn apply_take_change(&self, env: &Env) -> Result<()> {
        let Some(change) = self.store.open_change(&env.id).await? else {
            return Ok(());
        };
        self.apply_change(env, &change).await?;
        let done = self.store.change(&env.id, change.generation).await?;
        if done.status == ChangeStatus::Applied {
            return Ok(());
        }
        Err(Error::step(
            "config",
            format!(
                "the warm pool's env did not take this create's answers: {}",
                done.outcome.unwrap_or_default()
            ),
        ))
    }

    /// Fails a pooled env nobody took yet (its loop then tears it down).
    pub(super) async fn discard_pooled(&self, env: &Env, reason: &str) -> Result<()> {
        if self.store.discard_pooled(&env.id, reason).await? {
            tracing::info!(env = %env.id, "{reason}");
            self.store
                .event(&env.id, EventKind::Failed, reason, None)
                .await?;
        }
        Ok(())
    }

    /// Probes a pooled env: whole on the host and every pod answering its check. One
    /// that is not is discarded and its loop kicked. Returns whether it is healthy.
    pub async fn check_pooled(self: &Arc<Self>, id: &str) -> Result<bool> {
        let env = self.store.get(id).await?;
        if env.state != State::Pooled || env.error.is_some() {
            return Ok(true);
        }
        let pods = super::pods::all_pods(self, &self.plan(&env)?)?;
        let seen = self.driver.observe(&env, &pods).await?;
        let mut broken = match decide(&env, &pods, &seen, &Progress::default(), None) {
            Action::Done => None,
            Action::Discard { reason } => Some(reason),
            other => Some(format!("pooled env unhealthy: {other:?}")),
        };
        if broken.is_none() {
            for pod in &pods {
                let mut p = pod.clone();
                if let Some(r) = &mut p.ready {
                    r.deadline = Some(HEALTH_DEADLINE);
                }
                if let Err(e) = self.driver.wait_ready(&env, &p).await {
                    broken = Some(format!("pooled env unhealthy: pod {}: {e}", pod.name));
                    break;
                }
            }
        }
        match broken {
            None => Ok(true),
            Some(reason) => {
                self.discard_pooled(&env, &reason).await?;
                self.kick(&env.id);
                Ok(false)
            }
        }
    }
}
