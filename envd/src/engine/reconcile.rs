//! The loop of one env: read the recorded env, observe through the driver, decide, perform
//! that one action (holding the env's act lock), record it, repeat. Waits (a requeue, an
//! error's backoff) hold no lock, and a kick (a delete, a node event) cuts them short; a
//! delete also cuts short a long action of a create (an inner engine or a readiness wait).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::Notify;

use super::decide::{Action, Progress, awaited_to_complete, decide, launched_key};
use super::driver::{Observed, files_stamp};
use super::{Engine, hide, since_ms};
use crate::error::{Error, Result};
use crate::lifecycle::{ChangeStatus, Desired, EventKind, EventStep, State, Step};
use crate::spec::Pod;
use crate::store::Env;

/// A running loop's doorbell: a kick sets `dirty` and wakes it.
#[derive(Default)]
pub(super) struct LoopHandle {
    wake: Notify,
    dirty: AtomicBool,
}

impl LoopHandle {
    pub(super) fn ring(&self) {
        self.dirty.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// What to do after one pass.
enum Next {
    Again,
    Wait(Duration),
    Done,
}

/// The memory of one loop run: what the host does not show.
#[derive(Default)]
struct Run {
    progress: Progress,
    /// When each pod was recorded started (readiness durations count from there).
    started_at: HashMap<String, Instant>,
    /// When this run first saw the env creating: the plan's deadline counts from there.
    creating_since: Option<Instant>,
    pods_since: Option<Instant>,
    /// Saw the env waiting in a warm pool: once taken, it starts over (every pod is
    /// recorded and probed again).
    pooled: bool,
}

/// Backoff after a failed pass: by kind, doubling with each failure in a row, capped.
pub fn error_policy(e: &Error, failures: u32) -> Duration {
    let (base, cap) = match e {
        Error::Store(_) => (Duration::from_millis(200), Duration::from_secs(10)),
        Error::Docker { .. } | Error::Net(_) | Error::Io { .. } => {
            (Duration::from_millis(500), Duration::from_secs(30))
        }
        _ => (Duration::from_secs(1), Duration::from_secs(60)),
    };
    let exp = failures.saturating_sub(1).min(16);
    base.saturating_mul(1 << exp).min(cap)
}

/// Whether an error of a create's action fails the env (else the pass is retried): the
/// store's troubles pass, the rest would only repeat.
fn fails_create(e: &Error) -> bool {
    !matches!(e, Error::Store(_))
}

impl Engine {
    /// Drives the env until there is nothing left to do, then lets its loop go (and its
    /// entries in the maps), unless it was kicked meanwhile.
    pub(super) async fn run_loop(self: Arc<Self>, id: String, handle: Arc<LoopHandle>) {
        loop {
            self.drive(&id, &handle).await;
            let mut loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
            if handle.dirty.swap(false, Ordering::SeqCst) {
                continue;
            }
            loops.remove(&id);
            drop(loops);
            self.prune_lock(&id);
            return;
        }
    }

    /// Passes until done, while this instance holds the env's claim; errors back off by
    /// `error_policy`.
    pub(super) async fn drive(&self, id: &str, handle: &LoopHandle) {
        self.drive_claimed(id, handle).await;
        if let Err(e) = self.store.release_claim(id, &self.instance).await {
            tracing::warn!(env = %id, "releasing the claim: {e}");
        }
    }

    async fn drive_claimed(&self, id: &str, handle: &LoopHandle) {
        let mut run = Run::default();
        let mut failures = 0u32;
        let mut claimed: Option<Instant> = None;
        loop {
            handle.dirty.store(false, Ordering::SeqCst);
            match self.hold_claim(id, &mut claimed).await {
                Ok(true) => {}
                Ok(false) => {
                    // Another instance acts on it: look again once its claim may be stale.
                    if self
                        .store
                        .get(id)
                        .await
                        .map_or(true, |e| e.state.is_final())
                    {
                        return;
                    }
                    self.pause(handle, self.cfg.claim_ttl / 2).await;
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(env = %id, "claiming: {e}");
                    self.pause(handle, error_policy(&e, failures)).await;
                    continue;
                }
            }
            match self.pass(id, &mut run, handle).await {
                Ok(Next::Again) => failures = 0,
                Ok(Next::Wait(d)) => {
                    failures = 0;
                    self.pause(handle, d).await;
                }
                Ok(Next::Done) => return,
                Err(Error::NotFound(_)) => return,
                Err(e) => {
                    failures += 1;
                    let delay = error_policy(&e, failures);
                    // An error may quote a rendered password; the log must not.
                    let error = match self.store.get(id).await {
                        Ok(env) => hide(&env, &e.to_string()),
                        Err(_) => e.to_string(),
                    };
                    tracing::warn!(env = %id, %error, ?delay, "reconcile failed; retrying");
                    // A failed pass starts over: crashed containers get started again.
                    run = Run {
                        creating_since: run.creating_since,
                        ..Run::default()
                    };
                    self.pause(handle, delay).await;
                }
            }
        }
    }

    /// Takes or renews this instance's claim on the env (renewed at a third of its TTL).
    async fn hold_claim(&self, id: &str, claimed: &mut Option<Instant>) -> Result<bool> {
        if claimed.is_some_and(|t| t.elapsed() < self.cfg.claim_ttl / 3) {
            return Ok(true);
        }
        let ttl = self.cfg.claim_ttl.as_millis() as i64;
        let held = self.store.claim(id, &self.instance, ttl).await?;
        *claimed = held.then(Instant::now);
        Ok(held)
    }

    /// Renews the claim while an action runs; resolves if it was lost (the action is then
    /// dropped: another instance owns the env now).
    async fn keep_claim(&self, id: &str) {
        let ttl = self.cfg.claim_ttl;
        loop {
            tokio::time::sleep(ttl / 3).await;
            match self
                .store
                .claim(id, &self.instance, ttl.as_millis() as i64)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(env = %id, "claim lost to another instance");
                    return;
                }
                // The store may come back before the claim expires.
                Err(e) => tracing::warn!(env = %id, "renewing the claim: {e}"),
            }
        }
    }

    /// Sleeps `d`, or less when kicked.
    async fn pause(&self, handle: &LoopHandle, d: Duration) {
        if d.is_zero() {
            return;
        }
        let _ = tokio::time::timeout(d, handle.wake.notified()).await;
    }

    /// Resolves once the env is asked to go (checked at each kick).
    async fn until_deleted(&self, id: &str, handle: &LoopHandle) {
        loop {
            handle.wake.notified().await;
            // Let the pass see the kick too.
            handle.dirty.store(true, Ordering::SeqCst);
            if self
                .store
                .get(id)
                .await
                .is_ok_and(|e| e.desired == Desired::Gone)
            {
                return;
            }
        }
    }

    async fn pass(&self, id: &str, run: &mut Run, handle: &LoopHandle) -> Result<Next> {
        let env = self.store.get(id).await?;
        if env.state == State::Pooled {
            run.pooled = true;
        } else if run.pooled {
            *run = Run::default();
        }
        let live = matches!(env.state, State::Creating | State::Ready | State::Pooled)
            && env.desired == Desired::Running
            && env.error.is_none();
        let (pods, seen) = if live {
            let pods = super::pods::all_pods(self, &self.plan(&env)?)?;
            let seen = self.driver.observe(&env, &pods).await?;
            (pods, seen)
        } else {
            (vec![], Observed::nothing())
        };
        let config = if live && env.state == State::Ready {
            self.store.open_change(id).await?.map(|c| c.generation)
        } else {
            None
        };
        let mut action = decide(&env, &pods, &seen, &run.progress, config);
        if live && env.state == State::Creating {
            let deadline = self.plan(&env)?.deadline();
            let since = *run.creating_since.get_or_insert_with(Instant::now);
            if since.elapsed() > deadline {
                action = Action::Fail {
                    reason: format!(
                        "{}: not ready within {}",
                        Step::Deadline,
                        humantime::format_duration(deadline)
                    ),
                };
            }
        }
        tracing::debug!(env = %id, ?action, "next");
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        let creating = live && env.state == State::Creating;
        let acted = async {
            match self.perform(&env, &pods, action, run).await {
                // The node died under the action: not the create's failure. The next pass
                // sees it down and starts it (and the pods) again.
                Err(e) if creating && fails_create(&e) && self.node_down(&env).await => {
                    // An error may quote a rendered password; the log must not.
                    let error = hide(&env, &e.to_string());
                    tracing::info!(env = %env.id, %error, "the node went down during a step; starting it again");
                    Ok(Next::Again)
                }
                Err(e) if creating && fails_create(&e) => {
                    self.record_failure(&env, &e.to_string()).await?;
                    Ok(Next::Again)
                }
                r => r,
            }
        };
        tokio::select! {
            r = acted => r,
            // A delete stops a create (or a resync) at once, not at its deadline.
            _ = self.until_deleted(id, handle), if live => Ok(Next::Again),
            _ = self.keep_claim(id) => Ok(Next::Again),
        }
    }

    /// Whether the env's node is seen stopped or gone now.
    async fn node_down(&self, env: &Env) -> bool {
        self.driver
            .observe(env, &[])
            .await
            .is_ok_and(|seen| seen.node != super::driver::NodeObs::Running)
    }

    async fn perform(
        &self,
        env: &Env,
        pods: &[Pod],
        action: Action,
        run: &mut Run,
    ) -> Result<Next> {
        match action {
            Action::Done => return Ok(Next::Done),
            Action::Requeue(d) => return Ok(Next::Wait(d)),
            Action::Lease => return self.lease(env).await,
            Action::EnsureNode => {
                // What this run did was done to the node's previous life: its containers
                // were stopped with it and must be started (and waited for) again.
                run.progress = Progress::default();
                self.act(env, Step::Node, true, self.driver.ensure_node(env))
                    .await?
            }
            Action::WaitInner => {
                self.act(env, Step::InnerEngine, true, self.driver.wait_inner(env))
                    .await?
            }
            Action::AttachIp => {
                self.act(env, Step::Network, true, self.driver.attach_ip(env))
                    .await?
            }
            step @ (Action::Launch { .. }
            | Action::CreatePod { .. }
            | Action::UploadFiles { .. }
            | Action::Start { .. }) => self.pod_step(env, pods, step, run)?.await?,
            Action::Pods(steps) => {
                let (records, steps): (Vec<_>, Vec<_>) = steps
                    .into_iter()
                    .partition(|s| matches!(s, Action::RecordStarted { .. }));
                for r in records {
                    if let Action::RecordStarted { pods: names } = r {
                        self.record_started(env, names, run).await?;
                    }
                }
                let steps = steps
                    .into_iter()
                    .map(|step| self.pod_step(env, pods, step, run))
                    .collect::<Result<Vec<_>>>()?;
                // Every step runs to its end; the first error fails the create.
                for r in futures_util::future::join_all(steps).await {
                    r?;
                }
            }
            Action::RecordStarted { pods: names } => self.record_started(env, names, run).await?,
            Action::AwaitReady { pods: names } => self.await_ready(env, pods, &names, run).await?,
            Action::Reprobe { pods: names } => {
                self.reprobe(env, pods, &names, &mut run.progress).await?
            }
            Action::PodsDone => {
                let took = run.pods_since.map(|t| t.elapsed());
                let note = format!("{} pods running and ready", pods.len());
                self.store.event(&env.id, Step::Pods, &note, took).await?;
                run.progress.pods_done = true;
            }
            Action::CopyData => {
                let source = match &env.clone_of {
                    Some(s) => self.store.get(s).await?,
                    None => return Ok(Next::Again),
                };
                let plan = self.plan(env)?;
                let copy = self.driver.copy_data(env, &source, &plan);
                self.act(env, Step::CopyData, true, copy).await?;
                run.progress.copied = true;
            }
            Action::MarkReady if env.pool.is_some() => self.mark_pooled(env).await?,
            Action::Discard { reason } => self.discard_pooled(env, &reason).await?,
            Action::MarkReady => {
                self.store
                    .set_state_with_event(
                        &env.id,
                        State::Ready,
                        Step::Ready,
                        EventKind::Ready,
                        "environment ready",
                        Some(since_ms(env.created_at)),
                    )
                    .await?;
            }
            Action::Fail { reason } => self.record_failure(env, &reason).await?,
            Action::KeepFailed => {
                self.store
                    .set_state(&env.id, State::Failed, env.step, None)
                    .await?;
            }
            Action::ApplyConfig { generation } => {
                let change = self.store.change(&env.id, generation).await?;
                self.apply_change(env, &change).await?;
            }
            Action::Collect => self.collect(env).await?,
            Action::Free => self.free(env).await?,
        }
        Ok(Next::Again)
    }

    /// Records pods started: their `started` events, and when their checks start counting.
    async fn record_started(&self, env: &Env, names: Vec<String>, run: &mut Run) -> Result<()> {
        run.pods_since.get_or_insert_with(Instant::now);
        for name in names {
            self.store
                .event(
                    &env.id,
                    EventStep::pod(EventKind::Started, &name),
                    "containers started",
                    None,
                )
                .await?;
            run.started_at.insert(name.clone(), Instant::now());
            run.progress.started.insert(name);
        }
        Ok(())
    }

    /// One pod's `Launch`, `CreatePod`, `UploadFiles` or `Start`: what it does to this run's
    /// progress is recorded now, the step itself is returned to be run alone or beside
    /// other pods' steps.
    fn pod_step<'a>(
        &'a self,
        env: &'a Env,
        pods: &'a [Pod],
        step: Action,
        run: &mut Run,
    ) -> Result<futures_util::future::BoxFuture<'a, Result<()>>> {
        let pod = |name: &str| {
            pods.iter()
                .find(|p| p.name == name)
                .ok_or_else(|| Error::step("pods", format!("no pod `{name}` in the plan")))
        };
        Ok(match step {
            Action::Launch { pod: name } => {
                let p = pod(&name)?;
                let once = awaited_to_complete(pods, &name);
                run.touch(&name);
                for c in &p.containers {
                    run.progress.launched.insert(launched_key(&name, &c.name));
                }
                Box::pin(async move {
                    let create = self.driver.create_pod(env, p, once);
                    self.act(env, Step::Pods, false, create).await?;
                    for c in &p.containers {
                        if files_stamp(&c.files, &c.dirs).is_some() {
                            let upload = self.driver.upload_files(env, p, c);
                            self.act(env, Step::Upload, false, upload).await?;
                        }
                        let start = self.driver.start(env, p, &c.name);
                        self.act(env, Step::Start, false, start).await?;
                    }
                    Ok(())
                })
            }
            Action::CreatePod { pod: name } => {
                let p = pod(&name)?;
                let once = awaited_to_complete(pods, &name);
                run.touch(&name);
                Box::pin(self.act(env, Step::Pods, false, self.driver.create_pod(env, p, once)))
            }
            Action::UploadFiles {
                pod: name,
                container,
            } => {
                let p = pod(&name)?;
                let c = p
                    .containers
                    .iter()
                    .find(|c| c.name == container)
                    .ok_or_else(|| Error::step("pods", format!("no container `{container}`")))?;
                run.touch(&name);
                Box::pin(self.act(
                    env,
                    Step::Upload,
                    false,
                    self.driver.upload_files(env, p, c),
                ))
            }
            Action::Start {
                pod: name,
                container,
            } => {
                let p = pod(&name)?;
                run.touch(&name);
                run.progress
                    .launched
                    .insert(launched_key(&name, &container));
                let start = async move { self.driver.start(env, p, &container).await };
                Box::pin(self.act(env, Step::Start, false, start))
            }
            other => {
                return Err(Error::step("pods", format!("{other:?} is not a pod step")));
            }
        })
    }

    /// Runs one acting step: shown as the env's step, a fault point before and after, and
    /// (with `record`) an event with its duration.
    async fn act<F: Future<Output = Result<()>>>(
        &self,
        env: &Env,
        step: Step,
        record: bool,
        f: F,
    ) -> Result<()> {
        if env.step != step.shown() {
            self.store.set_step(&env.id, step).await?;
        }
        crate::faults::maybe_abort(step);
        let t = Instant::now();
        f.await?;
        crate::faults::maybe_abort_after(step);
        if record {
            self.store
                .event(&env.id, step, "done", Some(t.elapsed()))
                .await?;
        }
        Ok(())
    }

    async fn lease(&self, env: &Env) -> Result<Next> {
        let leased = self
            .store
            .lease_and_create(&env.id, &self.pool, &self.cfg.cidr.to_string())
            .await;
        match leased {
            Ok(_) => Ok(Next::Again),
            // Nothing was taken yet: the env fails at once with the reason.
            Err(e @ Error::PoolExhausted(_)) => {
                let cause = format!("lease failed: {e}");
                self.store
                    .event(&env.id, EventKind::Failed, &cause, None)
                    .await?;
                self.store
                    .set_state(&env.id, State::Failed, Step::Lease, Some(&cause))
                    .await?;
                Ok(Next::Done)
            }
            Err(e) => Err(e),
        }
    }

    /// Waits for the first of `names` to answer; records it. The others are probed again
    /// at the next pass, each within what is left of its deadline.
    async fn await_ready(
        &self,
        env: &Env,
        pods: &[Pod],
        names: &[String],
        run: &mut Run,
    ) -> Result<()> {
        let mut waits = vec![];
        for name in names {
            let Some(p) = pods.iter().find(|p| &p.name == name) else {
                continue;
            };
            let started = run
                .started_at
                .get(name)
                .copied()
                .unwrap_or_else(Instant::now);
            let mut p = p.clone();
            if let Some(r) = &mut p.ready {
                let deadline = r.deadline.unwrap_or(crate::spec::DEFAULT_READY_DEADLINE);
                r.deadline = Some(deadline.saturating_sub(started.elapsed()));
            }
            let name = name.clone();
            waits.push(
                async move {
                    let r = self.driver.wait_ready(env, &p).await;
                    (name, p.ready.map(|r| r.kind), started, r)
                }
                .boxed(),
            );
        }
        if waits.is_empty() {
            return Ok(());
        }
        let ((name, kind, started, r), _, _) = futures_util::future::select_all(waits).await;
        r?;
        if let Some(kind) = kind {
            let what = format!("{kind:?} check passed").to_lowercase();
            self.store
                .event(
                    &env.id,
                    EventStep::pod(EventKind::Ready, &name),
                    &what,
                    Some(started.elapsed()),
                )
                .await?;
        }
        run.progress.ready.insert(name);
        Ok(())
    }

    /// Records the create as failed; the next pass keeps the env or tears it down.
    async fn record_failure(&self, env: &Env, reason: &str) -> Result<()> {
        let current = self.store.get(&env.id).await?;
        // A failed check or command may quote a rendered password; it is logged and shown.
        let cause = hide(env, &format!("{} failed: {reason}", current.step));
        tracing::warn!(env = %env.id, "{cause}");
        self.store
            .event(&env.id, EventKind::Failed, &cause, None)
            .await?;
        self.store
            .set_state(&env.id, current.state, current.step, Some(&cause))
            .await
    }

    async fn collect(&self, env: &Env) -> Result<()> {
        self.store
            .set_state(&env.id, State::Collecting, Step::Collecting, None)
            .await?;
        // A config change still open is closed: its pods are about to go.
        if let Some(c) = self.store.open_change(&env.id).await? {
            let why = "not applied: the environment was removed";
            self.store
                .finish_change(&env.id, c.generation, ChangeStatus::RolledBack, why)
                .await?;
        }
        crate::faults::maybe_abort(Step::Collecting);
        let t = Instant::now();
        let summary = self.driver.collect(env).await;
        crate::faults::maybe_abort_after(Step::Collecting);
        self.store
            .event(&env.id, EventKind::Collecting, &summary, Some(t.elapsed()))
            .await?;
        self.store
            .set_state(&env.id, State::Freeing, Step::Freeing, None)
            .await
    }

    async fn free(&self, env: &Env) -> Result<()> {
        crate::faults::maybe_abort(Step::Freeing);
        let t = Instant::now();
        self.driver.free(env).await?;
        crate::faults::maybe_abort_after(Step::Freeing);
        self.store.release_lease(&env.id).await?;
        self.views.forget(&env.id);
        let (end, step) = if env.error.is_some() {
            (State::Failed, Step::Failed)
        } else {
            (State::Gone, Step::Gone)
        };
        self.store
            .event(
                &env.id,
                EventKind::Freeing,
                "everything freed",
                Some(t.elapsed()),
            )
            .await?;
        self.store.set_state(&env.id, end, step, None).await
    }
}

impl Run {
    /// This run acted on the pod: it is recorded and probed again.
    fn touch(&mut self, pod: &str) {
        self.progress.touched.insert(pod.to_string());
        self.progress.started.remove(pod);
        self.progress.ready.remove(pod);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{error_policy, fails_create};
    use crate::error::Error;

    #[test]
    fn backoff_doubles_per_failure_in_a_row_up_to_its_cap() {
        let docker = Error::Io {
            context: "x".into(),
            source: std::io::Error::other("x"),
        };
        let got: Vec<Duration> = (1..=8).map(|n| error_policy(&docker, n)).collect();
        let ms: Vec<u128> = got.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        let store = Error::Store(sqlx::Error::PoolTimedOut);
        assert_eq!(error_policy(&store, 1), Duration::from_millis(200));
        assert_eq!(error_policy(&store, 30), Duration::from_secs(10));
        let step = Error::step("pods", "x");
        assert_eq!(error_policy(&step, 1), Duration::from_secs(1));
        assert_eq!(error_policy(&step, u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn a_create_fails_on_what_would_only_repeat_and_retries_the_store() {
        assert!(fails_create(&Error::step("pods", "image missing")));
        assert!(!fails_create(&Error::Store(sqlx::Error::PoolTimedOut)));
    }
}
