//! The engine: the only part of envd that acts on Docker and netlink. `reconcile(env)`
//! drives one env from its recorded state towards its desired one; every step is
//! idempotent and recorded, so a restarted envd picks up where it stopped.

mod archive;
mod clone;
mod events;
mod exec;
mod jobs;
mod logsink;
mod node;
mod order;
mod podops;
mod pods;
mod ready;
mod sweep;
mod sweep_inner;
mod upload;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use ipnetwork::IpNetwork;
use tokio::sync::Mutex as AsyncMutex;

use crate::error::{DockerContext, Error, Result};
use crate::spec::{Facts, Plan};
use crate::store::{Env, State, Store};

pub use events::watch_host_events;
pub use exec::{Exec, ExecHandle, ExecOutput, ExecRequest, ExecTarget};
pub use jobs::{JOBS, JobReport, JobView, JobsConfig, parse_schedule, spawn_scheduler};
pub use logsink::LogLimits;
pub use node::{NodeMode, host_docker, host_docker_at};
pub use podops::PodChange;
pub use ready::check;
pub use sweep::Found;

/// Objects younger than this are never swept: their env may be being created.
pub const SWEEP_GRACE: Duration = Duration::from_secs(600);

/// The stubs sidecar's port, published on the node IP of every env.
pub const STUBS_PORT: u16 = 9000;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Archives go to `<data_dir>/logs/<env-id>.tar.gz`.
    pub data_dir: PathBuf,
    /// Per-node host directories holding the inner dockerd's socket.
    pub run_dir: PathBuf,
    /// `<seed_dir>/current` is the inner data root every node starts from.
    pub seed_dir: PathBuf,
    pub node_image: String,
    pub pause_image: String,
    pub stubs_image: String,
    pub bridge: String,
    pub cidr: IpNetwork,
    pub gateway: IpAddr,
    pub node_mode: NodeMode,
    /// Addresses of the pool never leased (e.g. ones other hosts use).
    pub reserved: Vec<(IpAddr, IpAddr)>,
    pub jobs: JobsConfig,
    /// `unix:///path` of the host engine; default DOCKER_HOST, else /var/run/docker.sock.
    pub docker_host: Option<String>,
    /// Limits of a container whose template gives none (cores; bytes).
    pub default_cpus: Option<f64>,
    pub default_memory: Option<i64>,
    /// Host directories `dirs:` sources may come from; checked again at every copy.
    pub dirs_roots: Vec<PathBuf>,
    /// Bounds of log collection at teardown.
    pub logs: LogLimits,
}

impl EngineConfig {
    pub fn with_data_dir(data_dir: PathBuf) -> Self {
        let cidr: IpNetwork = netcfg::DEFAULT_CIDR
            .parse()
            .unwrap_or_else(|_| unreachable!("valid constant"));
        EngineConfig {
            data_dir,
            run_dir: PathBuf::from("/run/envd"),
            seed_dir: PathBuf::from("/var/lib/envd/seed"),
            node_image: "envd/node:latest".into(),
            pause_image: "envd/pause:latest".into(),
            stubs_image: "envd/stubs:latest".into(),
            bridge: netcfg::DEFAULT_BRIDGE.into(),
            gateway: first_host(cidr),
            cidr,
            node_mode: NodeMode::Auto,
            reserved: vec![],
            jobs: JobsConfig::default(),
            docker_host: None,
            default_cpus: None,
            default_memory: None,
            dirs_roots: vec![],
            logs: LogLimits::default(),
        }
    }

    pub fn pool(&self) -> Result<netcfg::IpPool> {
        Ok(netcfg::IpPool::new(
            self.cidr,
            self.gateway,
            self.reserved.clone(),
        )?)
    }

    pub fn archive_path(&self, env_id: &str) -> PathBuf {
        self.data_dir.join("logs").join(format!("{env_id}.tar.gz"))
    }
}

fn runner_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{}", host.trim(), std::process::id())
}

/// `text` with the env's passwords masked.
fn hide(env: &Env, text: &str) -> String {
    let secrets = crate::spec::answers::secrets_of(&env.template, &env.template_src, &env.answers);
    crate::spec::answers::mask(text, &secrets)
}

pub fn first_host(cidr: IpNetwork) -> IpAddr {
    match cidr {
        IpNetwork::V4(n) => IpAddr::V4((u32::from(n.network()) + 1).into()),
        IpNetwork::V6(n) => IpAddr::V6((u128::from(n.network()) + 1).into()),
    }
}

pub struct Engine {
    pub store: Store,
    pub cfg: EngineConfig,
    host: Docker,
    pool: netcfg::IpPool,
    /// One lock per env: never two reconciles of one env at once.
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
    /// Envs with a reconcile queued behind the running one: more kicks add nothing.
    queued: Mutex<HashSet<String>>,
    /// Names this process in job runs (`host:pid`).
    runner: String,
}

/// What reconcile wants next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Done,
    Requeue(Duration),
}

impl Engine {
    pub async fn new(store: Store, cfg: EngineConfig) -> Result<Arc<Engine>> {
        let host = host_docker_at(cfg.docker_host.as_deref()).await?;
        let pool = cfg.pool()?;
        std::fs::create_dir_all(cfg.data_dir.join("logs")).map_err(|source| Error::Io {
            context: format!("creating {}", cfg.data_dir.join("logs").display()),
            source,
        })?;
        Ok(Arc::new(Engine {
            store,
            cfg,
            host,
            pool,
            locks: Mutex::new(HashMap::new()),
            queued: Mutex::new(HashSet::new()),
            runner: runner_name(),
        }))
    }

    pub fn host(&self) -> &Docker {
        &self.host
    }

    /// Whether the host engine answers now; the API refuses new work (503) when not.
    pub async fn ping(&self) -> Result<()> {
        let ping = tokio::time::timeout(Duration::from_secs(5), self.host.ping())
            .await
            .unwrap_or(Err(bollard::errors::Error::RequestTimeoutError));
        ping.map(|_| ()).ctx(|| {
            "the host Docker Engine does not answer; start it (systemctl start docker) or check --docker-host".into()
        })
    }

    /// Starts (or joins) the reconcile of one env in the background.
    pub fn kick(self: &Arc<Self>, env_id: &str) {
        let id = env_id.to_string();
        if !self
            .queued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone())
        {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let lock = this.lock_for(&id);
            let held = lock.lock().await;
            this.queued
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            loop {
                match this.reconcile_locked(&id).await {
                    Ok(Action::Done) => break,
                    Ok(Action::Requeue(d)) => tokio::time::sleep(d).await,
                    Err(e) => {
                        // An error may quote a rendered password; the log must not.
                        let error = match this.store.get(&id).await {
                            Ok(env) => hide(&env, &e.to_string()),
                            Err(_) => e.to_string(),
                        };
                        tracing::warn!(env = %id, %error, "reconcile failed; retrying");
                        tokio::time::sleep(error_policy(&e)).await;
                    }
                }
            }
            drop(held);
        });
    }

    /// Reconciles every env that is not finished: at start-up and periodically.
    pub async fn resync(self: &Arc<Self>) -> Result<()> {
        for id in self.store.active_ids().await? {
            self.kick(&id);
        }
        Ok(())
    }

    /// The reaper: asks for the teardown of every env whose TTL has passed (logs are
    /// archived first, as for any teardown). Returns their ids.
    pub async fn reap(self: &Arc<Self>) -> Result<Vec<String>> {
        let ids = self.store.expired_ids(crate::store::now_ms()).await?;
        for id in &ids {
            tracing::info!(env = %id, "TTL expired: tearing down");
            self.store.request_teardown(id).await?;
            self.store.event(id, "expired", "TTL expired", None).await?;
            self.kick(id);
        }
        Ok(ids)
    }

    /// Follows the logs of a running env's pods (`<pod>/<container> | line`).
    pub async fn live_logs(
        &self,
        env: &Env,
        tail: u32,
    ) -> Result<impl futures_util::Stream<Item = Vec<u8>> + use<>> {
        archive::live(self, env, tail).await
    }

    fn lock_for(&self, id: &str) -> Arc<AsyncMutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(id.to_string()).or_default())
    }

    /// One pass for one env; idempotent and safe to cancel at any `.await`.
    pub async fn reconcile(&self, id: &str) -> Result<Action> {
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        self.reconcile_locked(id).await
    }

    async fn reconcile_locked(&self, id: &str) -> Result<Action> {
        let env = self.store.get(id).await?;
        match env.state {
            State::Gone | State::Failed => Ok(Action::Done),
            State::Collecting | State::Freeing => {
                self.teardown(&env).await?;
                Ok(Action::Done)
            }
            // A failure recorded before a crash: finish what `fail` started.
            _ if env.error.is_some() && env.keep_on_failure => {
                self.store
                    .set_state(id, State::Failed, &env.step, None)
                    .await?;
                Ok(Action::Done)
            }
            _ if env.desired == "gone" || env.error.is_some() => {
                self.teardown(&env).await?;
                Ok(Action::Done)
            }
            State::Requested => {
                let leased = self
                    .store
                    .lease_and_create(id, &self.pool, &self.cfg.cidr.to_string())
                    .await;
                match leased {
                    Ok(_) => Ok(Action::Requeue(Duration::ZERO)),
                    // Nothing was taken yet: the env fails at once with the reason.
                    Err(e @ Error::PoolExhausted(_)) => {
                        let cause = format!("lease failed: {e}");
                        self.store.event(id, "failed", &cause, None).await?;
                        self.store
                            .set_state(id, State::Failed, "lease", Some(&cause))
                            .await?;
                        Ok(Action::Done)
                    }
                    Err(e) => Err(e),
                }
            }
            State::Creating => {
                let plan_deadline = self.plan(&env)?.deadline();
                match tokio::time::timeout(plan_deadline, self.create(&env)).await {
                    Ok(Ok(())) => {
                        self.store
                            .set_state(id, State::Ready, "ready", None)
                            .await?;
                        self.store
                            .event(
                                id,
                                "ready",
                                "environment ready",
                                Some(since_ms(env.created_at)),
                            )
                            .await?;
                        Ok(Action::Done)
                    }
                    Ok(Err(e)) => self.fail(&env, e).await,
                    Err(_) => {
                        let e = Error::step(
                            "deadline",
                            format!(
                                "not ready within {}",
                                humantime::format_duration(plan_deadline)
                            ),
                        );
                        self.fail(&env, e).await
                    }
                }
            }
            State::Ready => {
                self.ensure_running(&env).await?;
                Ok(Action::Done)
            }
        }
    }

    async fn fail(&self, env: &Env, e: Error) -> Result<Action> {
        let current = self.store.get(&env.id).await?;
        // A failed check or command may quote a rendered password; it is logged and shown.
        let cause = hide(env, &format!("{} failed: {e}", current.step));
        tracing::warn!(env = %env.id, "{cause}");
        self.store.event(&env.id, "failed", &cause, None).await?;
        self.store
            .set_state(&env.id, State::Creating, &current.step, Some(&cause))
            .await?;
        if env.keep_on_failure {
            self.store
                .set_state(&env.id, State::Failed, &current.step, None)
                .await?;
            return Ok(Action::Done);
        }
        let env = self.store.get(&env.id).await?;
        self.teardown(&env).await?;
        Ok(Action::Done)
    }

    pub fn plan(&self, env: &Env) -> Result<Plan> {
        let facts = Facts {
            env_id: env.id.clone(),
            env_name: env.name.clone(),
            node_ip: env.node_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
        };
        let mut plan = Plan::render(&env.template, &env.template_src, &env.answers, &facts)?;
        crate::spec::init::apply(&mut plan, &env.init);
        Ok(plan)
    }

    /// Runs `f` as the recorded step `step`: recorded before it acts and after it completes.
    async fn step<T, F: Future<Output = Result<T>>>(
        &self,
        env: &Env,
        step: &str,
        f: F,
    ) -> Result<T> {
        self.store.set_step(&env.id, step).await?;
        crate::faults::maybe_abort(step);
        let t = Instant::now();
        let out = f.await?;
        crate::faults::maybe_abort_after(step);
        self.store
            .event(&env.id, step, "done", Some(t.elapsed()))
            .await?;
        Ok(out)
    }

    async fn create(&self, env: &Env) -> Result<()> {
        let plan = self.plan(env)?;
        let node = self.step(env, "node", self.ensure_node(env)).await?;
        let inner = self
            .step(env, "inner-engine", node::wait_inner(&node))
            .await?;
        self.step(env, "network", self.ensure_ip(env, &node))
            .await?;
        let pods = pods::ensure_pods(self, env, &node, &inner, &plan, true);
        self.step(env, "pods", pods).await?;
        if env.with_data
            && let Some(source) = &env.clone_of
        {
            let copy = clone::copy_data(self, env, source, &inner, &plan);
            self.step(env, "copy-data", copy).await?;
        }
        Ok(())
    }

    /// A ready env whose node restarted gets its IP and pods back.
    async fn ensure_running(&self, env: &Env) -> Result<()> {
        let node = self.ensure_node(env).await?;
        let inner = node::wait_inner(&node).await?;
        self.ensure_ip(env, &node).await?;
        let plan = self.plan(env)?;
        pods::ensure_pods(self, env, &node, &inner, &plan, false).await
    }

    async fn teardown(&self, env: &Env) -> Result<()> {
        if !matches!(env.state, State::Freeing) {
            self.store
                .set_state(&env.id, State::Collecting, "collecting", None)
                .await?;
            crate::faults::maybe_abort("collecting");
            let t = Instant::now();
            let summary = archive::collect(self, env).await;
            crate::faults::maybe_abort_after("collecting");
            self.store
                .event(&env.id, "collecting", &summary, Some(t.elapsed()))
                .await?;
        }
        self.store
            .set_state(&env.id, State::Freeing, "freeing", None)
            .await?;
        crate::faults::maybe_abort("freeing");
        let t = Instant::now();
        node::free(self, env).await?;
        crate::faults::maybe_abort_after("freeing");
        self.store.release_lease(&env.id).await?;
        let failed = self.store.get(&env.id).await?.error.is_some();
        let end = if failed { State::Failed } else { State::Gone };
        self.store
            .event(&env.id, "freeing", "everything freed", Some(t.elapsed()))
            .await?;
        self.store
            .set_state(&env.id, end, end.as_str(), None)
            .await?;
        Ok(())
    }
}

fn since_ms(created_at: i64) -> Duration {
    Duration::from_millis((crate::store::now_ms() - created_at).max(0) as u64)
}

/// Backoff after a failed reconcile pass: quick for passing trouble, slower for the engine.
pub fn error_policy(e: &Error) -> Duration {
    match e {
        Error::Docker { .. } | Error::Net(_) => Duration::from_secs(5),
        Error::Store(_) => Duration::from_secs(1),
        _ => Duration::from_secs(10),
    }
}
