//! The engine: the only part of envd that acts on Docker and netlink. One loop per env
//! (`reconcile.rs`) observes it through the [`NodeDriver`], decides the next action
//! (`decide.rs`, pure), performs it and records it, until the env is where it is wanted;
//! every action is idempotent and keyed by the env id, so a restarted envd picks up where
//! it stopped. See docs/architecture.md.

mod archive;
mod clone;
pub mod decide;
pub mod driver;
mod events;
mod exec;
mod jobs;
mod logsink;
mod node;
mod podops;
mod pods;
mod pool;
mod ready;
mod reconcile;
pub mod registry;
mod sweep;
mod sweep_inner;
mod takeover;
mod upload;
pub mod userimages;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnetwork::IpNetwork;
use tokio::sync::Mutex as AsyncMutex;

use crate::error::{Error, Result};
use crate::lifecycle::EventKind;
use crate::spec::{Facts, Plan};
use crate::store::{Env, Store};

pub use driver::{FakeDriver, LocalDind, NodeDriver};
pub use events::watch_host_events;
pub use exec::{Exec, ExecChunk, ExecHandle, ExecOutput, ExecRequest, ExecTarget};
pub use jobs::{JOBS, JobReport, JobView, JobsConfig, parse_schedule, spawn_scheduler};
pub use logsink::LogLimits;
pub use node::{NodeMode, host_docker, host_docker_at};
pub use podops::{PodChange, field_of};
pub use ready::check;
pub use reconcile::error_policy;
pub use sweep::Found;
pub use takeover::take_over_claims;

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
    /// How long an instance's claim on an env lasts unless renewed (it is renewed at a
    /// third of this while the instance works): how soon another instance takes over the
    /// envs of one that died.
    pub claim_ttl: Duration,
    /// Host directories `dirs:` sources may come from; checked again at every copy.
    pub dirs_roots: Vec<PathBuf>,
    /// Bounds of log collection at teardown.
    pub logs: LogLimits,
    /// Users' images: uploads and the registries nodes pull through envd's cache.
    pub registry: registry::RegistryConfig,
    /// The forges' branch events (`/v1/hooks/*`): secrets, key rule, deploy rules.
    pub hooks: crate::hooks::HooksConfig,
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
            claim_ttl: Duration::from_secs(10),
            dirs_roots: vec![],
            logs: LogLimits::default(),
            registry: registry::RegistryConfig::default(),
            hooks: crate::hooks::HooksConfig::default(),
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
    driver: Arc<dyn NodeDriver>,
    pool: netcfg::IpPool,
    /// One act lock per env: never two actions on one env at once (a loop's, a config
    /// change's). Held while acting, never while waiting.
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
    /// The running loop of each env; a kick rings it instead of starting another.
    loops: Mutex<HashMap<String, Arc<reconcile::LoopHandle>>>,
    /// Names this process in job runs (`host:pid`).
    runner: String,
    /// Names this instance in env claims: unique even when a pid is reused.
    instance: String,
    /// Where nodes pull users' images from (uploads, cached registries).
    pub registry: Arc<registry::Registry>,
    /// Envs' rendered endpoints and masked answers, for the API's views.
    pub views: crate::service::Views,
}

impl Engine {
    /// The engine on this host's Docker Engine, with local dind nodes.
    pub async fn new(store: Store, cfg: EngineConfig) -> Result<Arc<Engine>> {
        let host = host_docker_at(cfg.docker_host.as_deref()).await?;
        Self::build(store, cfg, |weak| Arc::new(LocalDind::new(weak, host)))
    }

    /// The engine acting through `driver` (e.g. [`FakeDriver`] in tests without Docker).
    pub fn with_driver(
        store: Store,
        cfg: EngineConfig,
        driver: Arc<dyn NodeDriver>,
    ) -> Result<Arc<Engine>> {
        Self::build(store, cfg, |_| driver)
    }

    fn build(
        store: Store,
        cfg: EngineConfig,
        driver: impl FnOnce(std::sync::Weak<Engine>) -> Arc<dyn NodeDriver>,
    ) -> Result<Arc<Engine>> {
        let pool = cfg.pool()?;
        std::fs::create_dir_all(cfg.data_dir.join("logs")).map_err(|source| Error::Io {
            context: format!("creating {}", cfg.data_dir.join("logs").display()),
            source,
        })?;
        let registry = Arc::new(registry::Registry::new(
            cfg.registry.clone(),
            &cfg.data_dir,
        )?);
        let engine = Arc::new_cyclic(|weak| Engine {
            store,
            driver: driver(weak.clone()),
            pool,
            locks: Mutex::new(HashMap::new()),
            loops: Mutex::new(HashMap::new()),
            instance: format!("{}:{}", runner_name(), uuid::Uuid::now_v7()),
            runner: runner_name(),
            registry,
            views: Default::default(),
            cfg,
        });
        let feed = registry::progress::PullFeed::new(engine.store.clone());
        engine.driver.report_pulls(feed);
        Ok(engine)
    }

    pub fn driver(&self) -> &Arc<dyn NodeDriver> {
        &self.driver
    }

    /// Whether the host engine answers now; the API refuses new work (503) when not.
    pub async fn ping(&self) -> Result<()> {
        self.driver.ping().await
    }

    /// Starts the env's loop in the background, or rings the running one (it looks again
    /// at once, and a delete stops a create's current action).
    pub fn kick(self: &Arc<Self>, env_id: &str) {
        let mut loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = loops.get(env_id) {
            h.ring();
            return;
        }
        let handle = Arc::new(reconcile::LoopHandle::default());
        loops.insert(env_id.to_string(), Arc::clone(&handle));
        drop(loops);
        tokio::spawn(Arc::clone(self).run_loop(env_id.to_string(), handle));
    }

    /// How many env loops run now (each ends, and is forgotten, once its env settles).
    pub fn running_loops(&self) -> usize {
        self.loops.lock().unwrap_or_else(|p| p.into_inner()).len()
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
            self.store
                .event(id, EventKind::Expired, "TTL expired", None)
                .await?;
            self.kick(id);
        }
        Ok(ids)
    }

    /// Follows the logs of a running env's pods (`<pod>/<container> | line`).
    pub async fn live_logs(&self, env: &Env, tail: u32) -> Result<driver::LogLines> {
        self.driver.follow_logs(env, tail).await
    }

    fn lock_for(&self, id: &str) -> Arc<AsyncMutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(id.to_string()).or_default())
    }

    /// Forgets the env's act lock unless someone holds or awaits it.
    fn prune_lock(&self, id: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.get(id).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(id);
        }
    }

    /// Drives one env in this task until it settles (what a background loop does);
    /// idempotent and safe to cancel at any `.await`.
    pub async fn reconcile(&self, id: &str) -> Result<()> {
        let handle = reconcile::LoopHandle::default();
        self.drive(id, &handle).await;
        self.prune_lock(id);
        self.store.get(id).await.map(|_| ())
    }

    pub fn plan(&self, env: &Env) -> Result<Plan> {
        if crate::pool::nodes::is_node(&env.template) {
            return Ok(crate::pool::nodes::plan());
        }
        let facts = Facts {
            env_id: env.id.clone(),
            env_name: env.name.clone(),
            node_ip: env.node_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
        };
        let mut plan = Plan::render(&env.template, &env.template_src, &env.answers, &facts)?;
        crate::spec::init::apply(&mut plan, &env.init);
        Ok(plan)
    }
}

fn since_ms(created_at: i64) -> Duration {
    Duration::from_millis((crate::store::now_ms() - created_at).max(0) as u64)
}

#[cfg(test)]
pub(crate) mod tests;
