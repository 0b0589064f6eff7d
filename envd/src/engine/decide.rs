//! The decision: a pure function from the recorded env, the plan's pods, what the driver
//! observed and what this loop did so far, to the one next action (which may be one step
//! of each of several pods, taken side by side). No I/O here, so every
//! phase × observation (crash windows included) is a table row in the tests below.

use std::collections::BTreeSet;
use std::time::Duration;

use super::driver::{ContainerObs, ContainerSeen, NodeObs, Observed, PAUSE, files_stamp};
use crate::lifecycle::{Desired, State};
use crate::spec::Pod;
use crate::spec::order::Condition;
use crate::store::Env;

/// How often a loop looks again while it waits for something it cannot hurry (a job that
/// other pods wait to complete).
pub const POLL: Duration = Duration::from_millis(250);

/// The one next thing to do for an env.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Take an IP lease and move to `creating`.
    Lease,
    EnsureNode,
    WaitInner,
    AttachIp,
    /// Nothing of the pod is there: create it, put each container's files in and start
    /// it, as one chain (what `CreatePod`, `UploadFiles` and `Start` would do one pass
    /// each; a chain cut short leaves what those rows pick up).
    Launch {
        pod: String,
    },
    /// Create what is missing of a pod (pause started, containers created).
    CreatePod {
        pod: String,
    },
    UploadFiles {
        pod: String,
        container: String,
    },
    Start {
        pod: String,
        container: String,
    },
    /// The next step of each of several pods that may start now (each a `Launch`, `CreatePod`,
    /// `UploadFiles` or `Start`), taken side by side as compose does, and the record of
    /// the pods found up meanwhile (a `RecordStarted`), in one pass.
    Pods(Vec<Action>),
    /// Every container of these pods runs: record them (their checks start counting).
    RecordStarted {
        pods: Vec<String>,
    },
    /// Wait until the first of these started pods answers its check.
    AwaitReady {
        pods: Vec<String>,
    },
    /// Every pod runs and answers: record it.
    PodsDone,
    /// A create took this env from a warm pool and every pod runs: probe them all at once
    /// and record them started, ready and done in one step.
    Reprobe {
        pods: Vec<String>,
    },
    CopyData,
    MarkReady,
    /// Record the create as failed (then it is kept or torn down).
    Fail {
        reason: String,
    },
    /// A failure is recorded and the env is kept for debugging.
    KeepFailed,
    /// A pooled env is not whole any more: it is failed and torn down (the pool builds
    /// another), never repaired in place.
    Discard {
        reason: String,
    },
    /// Apply the env's open config change (or finish rolling it back).
    ApplyConfig {
        generation: i64,
    },
    Collect,
    Free,
    Requeue(Duration),
    Done,
}

/// What this run of the loop did, which the host does not show (a restarted envd starts
/// with none of it and so probes and records again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Pods recorded as started.
    pub started: BTreeSet<String>,
    /// Pods whose readiness check passed.
    pub ready: BTreeSet<String>,
    /// Pods this run created or started something of.
    pub touched: BTreeSet<String>,
    /// Containers (`pod/container`) this run started: one that exits after is left to
    /// the readiness check to report (with its last log lines), not started again.
    pub launched: BTreeSet<String>,
    pub pods_done: bool,
    pub copied: bool,
}

/// The next action for `env`, whose plan has `pods` (the stubs sidecar included), given
/// the generation of its open config change, if any.
pub fn decide(
    env: &Env,
    pods: &[Pod],
    seen: &Observed,
    done: &Progress,
    config: Option<i64>,
) -> Action {
    match env.state {
        State::Gone | State::Failed => Action::Done,
        State::Collecting => Action::Collect,
        State::Freeing => Action::Free,
        _ if env.error.is_some() && env.keep_on_failure => Action::KeepFailed,
        _ if env.desired == Desired::Gone || env.error.is_some() => Action::Collect,
        State::Requested => Action::Lease,
        State::Creating | State::Ready => converge(env, pods, seen, done, config),
        State::Pooled => match converge(env, pods, seen, done, None) {
            Action::Done => Action::Done,
            other => Action::Discard {
                reason: unwhole(&other),
            },
        },
    }
}

fn converge(
    env: &Env,
    pods: &[Pod],
    seen: &Observed,
    done: &Progress,
    config: Option<i64>,
) -> Action {
    if seen.node != NodeObs::Running {
        return Action::EnsureNode;
    }
    if !seen.inner {
        return Action::WaitInner;
    }
    if !seen.ip {
        return Action::AttachIp;
    }
    let creating = env.state == State::Creating;
    let view = View {
        creating,
        pods,
        seen,
        done,
    };
    let taken = creating && env.host_name.is_some() && done.started.is_empty();
    if taken && done.touched.is_empty() && pods.iter().all(|p| view.up(p)) {
        return Action::Reprobe {
            pods: pods.iter().map(|p| p.name.clone()).collect(),
        };
    }
    let mut blocked = false;
    let mut steps = vec![];
    // Pods up but not recorded yet: recorded in the same pass as the others' next steps
    // (dependents go by what is up, not by what is recorded).
    let mut record = vec![];
    for pod in pods {
        if view.up(pod) {
            if !done.started.contains(&pod.name) && (creating || done.touched.contains(&pod.name)) {
                record.push(pod.name.clone());
            }
            continue;
        }
        match view.deps_met(pod) {
            // A pod before it may bring back what it waits for (a job started again).
            Err(_) if !steps.is_empty() => break,
            Err(reason) => return Action::Fail { reason },
            Ok(false) => blocked = true,
            Ok(true) => match view.next_for_pod(pod) {
                Action::Requeue(_) => blocked = true,
                step => steps.push(step),
            },
        }
    }
    if !record.is_empty() {
        steps.push(Action::RecordStarted { pods: record });
    }
    match steps.len() {
        0 => {}
        1 => return steps.remove(0),
        _ => return Action::Pods(steps),
    }
    let waiting: Vec<String> = pods
        .iter()
        .filter(|p| done.started.contains(&p.name) && !view.ready(p))
        .map(|p| p.name.clone())
        .collect();
    if !waiting.is_empty() {
        return Action::AwaitReady { pods: waiting };
    }
    if blocked {
        return Action::Requeue(POLL);
    }
    if !creating {
        return match config {
            // Changes go to a settled env: every pod running and answering.
            Some(generation) => Action::ApplyConfig { generation },
            None => Action::Done,
        };
    }
    if !done.pods_done {
        return Action::PodsDone;
    }
    if env.with_data && env.clone_of.is_some() && !done.copied {
        return Action::CopyData;
    }
    Action::MarkReady
}

/// Why a pooled env that would need `next` is not whole.
fn unwhole(next: &Action) -> String {
    let what = match next {
        Action::EnsureNode => "its node is not running".to_string(),
        Action::WaitInner => "its node's engine does not answer".to_string(),
        Action::AttachIp => "its IP is not attached".to_string(),
        Action::Launch { pod }
        | Action::CreatePod { pod }
        | Action::UploadFiles { pod, .. }
        | Action::Start { pod, .. } => {
            format!("pod {pod} is not running")
        }
        Action::RecordStarted { pods } => format!("pod {} is not running", pods.join(", ")),
        Action::Pods(steps) => return steps.first().map_or_else(String::new, unwhole),
        Action::Fail { reason } => reason.clone(),
        other => format!("it would need {other:?}"),
    };
    format!("pooled env unhealthy: {what}")
}

struct View<'a> {
    creating: bool,
    pods: &'a [Pod],
    seen: &'a Observed,
    done: &'a Progress,
}

impl View<'_> {
    /// Running, a one-shot job that completed, or started by this run already.
    fn settled(&self, pod: &Pod, c: &str, seen: &ContainerSeen) -> bool {
        match seen.state {
            ContainerObs::Running => true,
            ContainerObs::Exited { code: 0 } if self.once(pod) => true,
            _ => self.done.launched.contains(&launched_key(&pod.name, c)),
        }
    }

    /// The next step for one pod that is not up and may start.
    fn next_for_pod(&self, pod: &Pod) -> Action {
        let name = || pod.name.clone();
        let Some(seen) = self.seen.pods.get(&pod.name) else {
            return Action::Launch { pod: name() };
        };
        let missing = std::iter::once(PAUSE)
            .chain(pod.containers.iter().map(|c| c.name.as_str()))
            .any(|c| !seen.contains_key(c));
        if missing {
            return Action::CreatePod { pod: name() };
        }
        if seen.get(PAUSE).map(|c| &c.state) != Some(&ContainerObs::Running) {
            return Action::Start {
                pod: name(),
                container: PAUSE.into(),
            };
        }
        for c in &pod.containers {
            let Some(obs) = seen.get(&c.name) else {
                continue;
            };
            if self.settled(pod, &c.name, obs) {
                continue;
            }
            let wanted = files_stamp(&c.files, &c.dirs);
            // Files go in before every start of a container that lacks them: a crash
            // between create and upload must not start it bare.
            if wanted.is_some() && obs.files != wanted {
                return Action::UploadFiles {
                    pod: name(),
                    container: c.name.clone(),
                };
            }
            return Action::Start {
                pod: name(),
                container: c.name.clone(),
            };
        }
        // Every container is settled, so the pod is up: `up` and this agree.
        Action::Requeue(POLL)
    }

    /// Other pods wait for this one to complete: it runs once.
    fn once(&self, pod: &Pod) -> bool {
        awaited_to_complete(self.pods, &pod.name)
    }

    /// Its pause and every container run (a one-shot job may have completed).
    fn up(&self, pod: &Pod) -> bool {
        let Some(seen) = self.seen.pods.get(&pod.name) else {
            return false;
        };
        seen.get(PAUSE)
            .is_some_and(|c| c.state == ContainerObs::Running)
            && pod.containers.iter().all(|c| {
                seen.get(&c.name)
                    .is_some_and(|s| self.settled(pod, &c.name, s))
            })
    }

    /// Answers its check: passed in this run, or found running in a ready env and left
    /// alone (a resync does not probe what it did not touch).
    fn ready(&self, pod: &Pod) -> bool {
        self.done.ready.contains(&pod.name)
            || (!self.creating && !self.done.touched.contains(&pod.name))
    }

    /// Whether what the pod waits for is there; an error when it never will be.
    fn deps_met(&self, pod: &Pod) -> Result<bool, String> {
        for (dep, condition) in &pod.depends_on {
            let Some(dep_pod) = self.pods.iter().find(|p| &p.name == dep) else {
                continue;
            };
            let met = match condition {
                Condition::Started => self.up(dep_pod),
                Condition::Ready => self.up(dep_pod) && self.ready(dep_pod),
                Condition::Completed => self.completed(dep_pod, &pod.name)?,
            };
            if !met {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn completed(&self, job: &Pod, waiter: &str) -> Result<bool, String> {
        let Some(seen) = self.seen.pods.get(&job.name) else {
            return Ok(false);
        };
        for c in &job.containers {
            match seen.get(&c.name).map(|s| &s.state) {
                Some(ContainerObs::Exited { code: 0 }) => {}
                Some(ContainerObs::Exited { code }) => {
                    return Err(format!(
                        "start of pod {waiter}: pod {} must complete first, but its container {}-{} exited {code}",
                        job.name, job.name, c.name
                    ));
                }
                _ => return Ok(false),
            }
        }
        Ok(true)
    }
}

/// Whether other pods wait for pod `name` to complete (it runs once).
pub fn awaited_to_complete(pods: &[Pod], name: &str) -> bool {
    pods.iter()
        .any(|p| p.depends_on.get(name) == Some(&Condition::Completed))
}

/// How [`Progress::launched`] names a container.
pub fn launched_key(pod: &str, container: &str) -> String {
    format!("{pod}/{container}")
}

#[cfg(test)]
mod tests;
