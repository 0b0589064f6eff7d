//! Start order: a pod with `depends_on` starts only once each pod it names is started,
//! ready or completed; pods that wait for nothing still start at once, in parallel.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ContainerStateStatusEnum;
use bollard::query_parameters::InspectContainerOptions;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::spec::order::Condition;
use crate::spec::{DEFAULT_READY_DEADLINE, Pod};

/// How far a pod got, as its dependents see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Stage {
    Waiting,
    Started,
    Ready,
}

/// One watch per pod; its task moves it forward, its dependents wait on it.
pub(super) struct Gates {
    stages: HashMap<String, watch::Sender<Stage>>,
}

impl Gates {
    pub fn new(pods: &[Pod]) -> Self {
        Gates {
            stages: pods
                .iter()
                .map(|p| (p.name.clone(), watch::channel(Stage::Waiting).0))
                .collect(),
        }
    }

    pub fn set(&self, pod: &str, stage: Stage) {
        if let Some(tx) = self.stages.get(pod) {
            tx.send_replace(stage);
        }
    }

    /// Waits until every pod `pod` depends on meets its condition. A dependency that fails
    /// fails the whole start (and so drops this wait), so this never waits for nothing.
    pub async fn wait_for_deps(&self, inner: &Docker, pods: &[Pod], pod: &Pod) -> Result<()> {
        for (dep, condition) in &pod.depends_on {
            let want = match condition {
                Condition::Started => Stage::Started,
                Condition::Ready | Condition::Completed => Stage::Ready,
            };
            if let Some(tx) = self.stages.get(dep) {
                let mut rx = tx.subscribe();
                // The sender lives as long as `self`; an error means the start was dropped.
                let _ = rx.wait_for(|s| *s >= want).await;
            }
            if *condition == Condition::Completed
                && let Some(dep_pod) = pods.iter().find(|p| &p.name == dep)
            {
                wait_completed(inner, dep_pod, &pod.name).await?;
            }
        }
        Ok(())
    }
}

/// Waits until every container of `pod` exited; fails unless each exited 0.
async fn wait_completed(inner: &Docker, pod: &Pod, waiter: &str) -> Result<()> {
    let deadline = pod
        .ready
        .as_ref()
        .and_then(|r| r.deadline)
        .unwrap_or(DEFAULT_READY_DEADLINE);
    let t = Instant::now();
    for c in &pod.containers {
        let name = format!("{}-{}", pod.name, c.name);
        loop {
            let state = inner
                .inspect_container(&name, None::<InspectContainerOptions>)
                .await
                .ok()
                .and_then(|i| i.state);
            let exited = state
                .as_ref()
                .is_some_and(|s| s.status == Some(ContainerStateStatusEnum::EXITED));
            if exited {
                let code = state.and_then(|s| s.exit_code).unwrap_or(-1);
                if code == 0 {
                    break;
                }
                return Err(Error::step(
                    format!("start of pod {waiter}"),
                    format!(
                        "pod {} must complete first, but its container {name} exited {code}",
                        pod.name
                    ),
                ));
            }
            if t.elapsed() > deadline {
                return Err(Error::step(
                    format!("start of pod {waiter}"),
                    format!(
                        "pod {} did not complete within {}",
                        pod.name,
                        humantime::format_duration(deadline)
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Whether the pod's pause and containers all run (a resync then need not wait for deps).
pub(super) async fn running(inner: &Docker, pod: &Pod) -> bool {
    let names = std::iter::once(pod.name.clone()).chain(
        pod.containers
            .iter()
            .map(|c| format!("{}-{}", pod.name, c.name)),
    );
    for name in names {
        let up = inner
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|i| i.state)
            .and_then(|s| s.running)
            .unwrap_or(false);
        if !up {
            return false;
        }
    }
    true
}
