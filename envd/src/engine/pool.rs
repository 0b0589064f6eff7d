//! The engine's side of warm pools: a pooled env's build ends in `pooled` instead of
//! `ready`, and one that stops being whole (its node killed, a pod not answering) is
//! failed and torn down, never repaired: the refill builds a fresh one.

use std::sync::Arc;
use std::time::Duration;

use super::decide::{Action, Progress, decide};
use super::{Engine, since_ms};
use crate::error::Result;
use crate::lifecycle::{EventKind, State};
use crate::store::Env;

/// How long a health check waits for one pod of a pooled env to answer.
const HEALTH_DEADLINE: Duration = Duration::from_secs(5);

impl Engine {
    /// The build of a pool's env is done: it waits in the pool.
    pub(super) async fn mark_pooled(&self, env: &Env) -> Result<()> {
        if self.store.mark_pooled(&env.id).await? {
            let took = since_ms(env.created_at);
            let pool = env.pool.as_deref().unwrap_or_default();
            self.store
                .event(
                    &env.id,
                    EventKind::Pooled,
                    &format!("ready in warm pool {pool}"),
                    Some(took),
                )
                .await?;
        }
        Ok(())
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
