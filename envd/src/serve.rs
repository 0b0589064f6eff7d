//! `envd serve` and `envd doctor`: configuration (flags > ENVD_* env > TOML file >
//! defaults), start-up checks, the engine, the jobs and the API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use envd::catalog::Catalog;
use envd::engine::{Engine, EngineConfig};
use envd::service::Limits;
use envd::store::Store;
use serde::Deserialize;

#[derive(Args, Clone, Default)]
pub struct ServeArgs {
    /// TOML file with the same keys as these flags (listen, data_dir, database_url, ...).
    #[arg(long, env = "ENVD_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the API.
    #[arg(long, env = "ENVD_LISTEN")]
    listen: Option<String>,
    /// Where the SQLite store and the log archives live.
    #[arg(long, env = "ENVD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// `sqlite://FILE` (default: <data-dir>/envd.db) or `postgres://...`.
    #[arg(long, env = "ENVD_DATABASE_URL")]
    database_url: Option<String>,
    /// Extra templates: <dir>/<name>/<version>/template.yaml (default <data-dir>/templates;
    /// `envd templates import` writes there).
    #[arg(long, env = "ENVD_TEMPLATES_DIR")]
    templates_dir: Option<PathBuf>,
    /// Host Docker Engine socket, e.g. unix:///var/run/docker.sock (default: DOCKER_HOST,
    /// else that path).
    #[arg(long, env = "ENVD_DOCKER_HOST")]
    docker_host: Option<String>,
    /// Host bridge for node IPs.
    #[arg(long, env = "ENVD_BRIDGE")]
    bridge: Option<String>,
    /// Node IP pool; the first address is the bridge's.
    #[arg(long, env = "ENVD_POOL_CIDR")]
    pool_cidr: Option<String>,
    #[arg(long, env = "ENVD_DEFAULT_TTL")]
    default_ttl: Option<String>,
    #[arg(long, env = "ENVD_MAX_TTL")]
    max_ttl: Option<String>,
    /// Cron (6 fields, seconds first) of the reaper: expiry warnings and TTL teardown.
    #[arg(long, env = "ENVD_REAP_SCHEDULE")]
    reap_schedule: Option<String>,
    /// Cron of the orphan sweep.
    #[arg(long, env = "ENVD_SWEEP_SCHEDULE")]
    sweep_schedule: Option<String>,
    /// Cron of the deletion of old log archives.
    #[arg(long, env = "ENVD_RETAIN_LOGS_SCHEDULE")]
    retain_logs_schedule: Option<String>,
    /// Log archives older than this are deleted (e.g. 30d).
    #[arg(long, env = "ENVD_LOG_RETENTION")]
    log_retention: Option<String>,
    /// How long before expiry the warning event and webhook go out (e.g. 10m).
    #[arg(long, env = "ENVD_EXPIRY_WARNING")]
    expiry_warning: Option<String>,
    /// URL that receives the expiry warning as a JSON POST.
    #[arg(long, env = "ENVD_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// The sweep leaves objects younger than this alone (e.g. 10m).
    #[arg(long, env = "ENVD_SWEEP_GRACE")]
    sweep_grace: Option<String>,
    /// CPU cores of a container whose template sets no `cpus`, e.g. 1.5.
    #[arg(long, env = "ENVD_DEFAULT_CPUS")]
    default_cpus: Option<f64>,
    /// Memory of a container whose template sets no `memory`, e.g. 512m.
    #[arg(long, env = "ENVD_DEFAULT_MEMORY")]
    default_memory: Option<String>,
    /// How long this instance's claim on an env outlives it (e.g. 10s): when several
    /// envd share one database, how soon another takes over the envs of a dead one.
    #[arg(long, env = "ENVD_CLAIM_TTL")]
    claim_ttl: Option<String>,
    /// No tokens: every caller is an admin. Refused unless envd listens on loopback only.
    #[arg(long, env = "ENVD_NO_AUTH")]
    no_auth: bool,
    /// `/metrics` needs a token.
    #[arg(long, env = "ENVD_GUARD_METRICS")]
    guard_metrics: bool,
    /// `/openapi.json` needs a token.
    #[arg(long, env = "ENVD_GUARD_OPENAPI")]
    guard_openapi: bool,
    /// A browser origin (e.g. http://envd.lab:7070) allowed to change things, besides
    /// envd's own address (repeatable; ENVD_ALLOWED_ORIGINS is comma-separated).
    #[arg(
        long = "allowed-origin",
        env = "ENVD_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// Live envs per owner (default 20; `[quota]` in the file sets more).
    #[arg(long, env = "ENVD_QUOTA_MAX_ENVS")]
    quota_max_envs: Option<u32>,
    /// CPU cores of the live envs per owner (default 32).
    #[arg(long, env = "ENVD_QUOTA_MAX_CPUS")]
    quota_max_cpus: Option<f64>,
    /// Memory of the live envs per owner (default 64g).
    #[arg(long, env = "ENVD_QUOTA_MAX_MEMORY")]
    quota_max_memory: Option<String>,
    /// Creates and clones per owner in any minute (default 30).
    #[arg(long, env = "ENVD_QUOTA_CREATES_PER_MINUTE")]
    quota_creates_per_minute: Option<u32>,
    /// A host directory whose subdirectories templates may copy into containers (`dirs:`
    /// sources); repeat for more. None by default: no host directory is copied.
    #[arg(long = "dirs-root", env = "ENVD_DIRS_ROOTS", value_delimiter = ',')]
    dirs_root: Vec<PathBuf>,
    /// Bytes kept of one container's output or log file at collection, e.g. 64m.
    #[arg(long, env = "ENVD_LOG_MAX_FILE")]
    log_max_file: Option<String>,
    /// Bytes kept of all of one env's logs, e.g. 512m.
    #[arg(long, env = "ENVD_LOG_MAX_ENV")]
    log_max_env: Option<String>,
    /// Log collection stops after this (the archive is marked partial), e.g. 5m.
    #[arg(long, env = "ENVD_LOG_COLLECT_TIMEOUT")]
    log_collect_timeout: Option<String>,
    /// A warm pool: `TEMPLATE=MIN` or `TEMPLATE=MIN:MAX` with the template's default
    /// answers (repeatable; `[[pools]]` in the file gives answers too).
    #[arg(long = "pool", env = "ENVD_POOLS", value_delimiter = ',')]
    pools: Vec<String>,
    /// CPU cores all pooled envs may hold together (default: no bound).
    #[arg(long, env = "ENVD_POOL_BUDGET_CPUS")]
    pool_budget_cpus: Option<f64>,
    /// Memory all pooled envs may hold together, e.g. 8g (default: no bound).
    #[arg(long, env = "ENVD_POOL_BUDGET_MEMORY")]
    pool_budget_memory: Option<String>,
    /// How often the warm pools' refill looks at their sizes (default 1s).
    #[arg(long, env = "ENVD_POOL_TICK")]
    pool_tick: Option<String>,
    /// How often every pooled env's pods are probed; a failing one is replaced (default 30s).
    #[arg(long, env = "ENVD_POOL_HEALTH_EVERY")]
    pool_health_every: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    templates_dir: Option<PathBuf>,
    docker_host: Option<String>,
    bridge: Option<String>,
    pool_cidr: Option<String>,
    default_ttl: Option<String>,
    max_ttl: Option<String>,
    reap_schedule: Option<String>,
    sweep_schedule: Option<String>,
    retain_logs_schedule: Option<String>,
    log_retention: Option<String>,
    expiry_warning: Option<String>,
    webhook_url: Option<String>,
    sweep_grace: Option<String>,
    /// Compose image pattern -> envd image for `templates import`, over the defaults.
    compose_images: Option<std::collections::BTreeMap<String, String>>,
    default_cpus: Option<f64>,
    default_memory: Option<String>,
    claim_ttl: Option<String>,
    guard_metrics: Option<bool>,
    guard_openapi: Option<bool>,
    allowed_origins: Option<Vec<String>>,
    quota: Option<envd::quota::QuotaTable>,
    dirs_roots: Option<Vec<PathBuf>>,
    log_max_file: Option<String>,
    log_max_env: Option<String>,
    log_collect_timeout: Option<String>,
    pools: Option<Vec<envd::pool::PoolSpec>>,
    pool_budget_cpus: Option<f64>,
    pool_budget_memory: Option<String>,
    pool_tick: Option<String>,
    pool_health_every: Option<String>,
    /// `[registry]`: port for nodes, upload cap and quota, and `[registry.registries."host"]`
    /// with each registry's URL and credentials (kept here only).
    registry: Option<envd::engine::registry::RegistryConfig>,
    /// `[hooks.github]`, `[hooks.gitlab]`: secret, owner, key rule, deploy rules.
    hooks: Option<envd::hooks::HooksConfig>,
}

pub struct Config {
    pub listen: String,
    pub no_auth: bool,
    pub auth: envd::auth::AuthConfig,
    pub quotas: envd::quota::Quotas,
    pub database_url: String,
    pub templates_dir: Option<PathBuf>,
    pub compose_images: std::collections::BTreeMap<String, String>,
    pub engine: EngineConfig,
    pub limits: Limits,
    pub pools: Vec<envd::pool::PoolSpec>,
    pub pool_budget: envd::pool::Budget,
    /// The refill's look at the pools, and its probe of every pooled env.
    pub pool_tick: Duration,
    pub pool_health_every: Duration,
}

fn resolve(a: ServeArgs) -> anyhow::Result<Config> {
    let file: FileConfig = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading config {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("config {}", p.display()))?
        }
        None => FileConfig::default(),
    };
    let data_dir = a
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("/var/lib/envd"));
    let mut engine = EngineConfig::with_data_dir(data_dir.clone());
    engine.docker_host = a.docker_host.or(file.docker_host);
    if let Some(b) = a.bridge.or(file.bridge) {
        engine.bridge = b;
    }
    if let Some(c) = a.pool_cidr.or(file.pool_cidr) {
        engine.cidr = c
            .parse()
            .with_context(|| format!("pool_cidr: `{c}` is not a CIDR; write e.g. 10.213.0.0/16"))?;
        engine.gateway = envd::engine::first_host(engine.cidr);
    }
    if let Some(c) = a.default_cpus.or(file.default_cpus) {
        anyhow::ensure!(
            c > 0.0 && c <= 256.0,
            "default_cpus: {c} is not a positive number of cores; write e.g. 0.5"
        );
        engine.default_cpus = Some(c);
    }
    if let Some(m) = a.default_memory.or(file.default_memory) {
        let bytes =
            envd::spec::parse_memory(&m).map_err(|r| anyhow::anyhow!("default_memory: {r}"))?;
        engine.default_memory = Some(bytes);
    }
    let dur = |field: &str, v: Option<String>, d: Duration| -> anyhow::Result<Duration> {
        match v {
            Some(s) => humantime::parse_duration(&s)
                .with_context(|| format!("{field}: `{s}` is not a duration; write e.g. 2h")),
            None => Ok(d),
        }
    };
    engine.claim_ttl = dur(
        "claim_ttl",
        a.claim_ttl.or(file.claim_ttl),
        engine.claim_ttl,
    )?;
    anyhow::ensure!(
        engine.claim_ttl >= Duration::from_secs(1),
        "claim_ttl: at least 1s (it is renewed at a third of itself)"
    );
    let defaults = Limits::default();
    let limits = Limits {
        default_ttl: dur(
            "default_ttl",
            a.default_ttl.or(file.default_ttl),
            defaults.default_ttl,
        )?,
        max_ttl: dur("max_ttl", a.max_ttl.or(file.max_ttl), defaults.max_ttl)?,
        dirs_roots: dirs_roots(if a.dirs_root.is_empty() {
            file.dirs_roots.unwrap_or_default()
        } else {
            a.dirs_root
        })?,
    };
    engine.dirs_roots = limits.dirs_roots.clone();
    if let Some(r) = file.registry {
        engine.registry = r;
    }
    if let Some(h) = file.hooks {
        engine.hooks = h;
    }
    let bytes = |field: &str, v: Option<String>, d: u64| -> anyhow::Result<u64> {
        match v {
            Some(m) => {
                let b =
                    envd::spec::parse_memory(&m).map_err(|r| anyhow::anyhow!("{field}: {r}"))?;
                u64::try_from(b).with_context(|| format!("{field}: `{m}` is negative"))
            }
            None => Ok(d),
        }
    };
    let logs = &mut engine.logs;
    logs.per_file = bytes(
        "log_max_file",
        a.log_max_file.or(file.log_max_file),
        logs.per_file,
    )?;
    logs.per_env = bytes(
        "log_max_env",
        a.log_max_env.or(file.log_max_env),
        logs.per_env,
    )?;
    logs.time = dur(
        "log_collect_timeout",
        a.log_collect_timeout.or(file.log_collect_timeout),
        logs.time,
    )?;
    let jobs = &mut engine.jobs;
    for (job, expr) in [
        ("reap", a.reap_schedule.or(file.reap_schedule)),
        ("sweep", a.sweep_schedule.or(file.sweep_schedule)),
        (
            "retain-logs",
            a.retain_logs_schedule.or(file.retain_logs_schedule),
        ),
    ] {
        if let Some(expr) = expr {
            let field = format!("{}_schedule", job.replace('-', "_"));
            jobs.schedules
                .insert(job, envd::engine::parse_schedule(&field, &expr)?);
        }
    }
    jobs.log_retention = dur(
        "log_retention",
        a.log_retention.or(file.log_retention),
        jobs.log_retention,
    )?;
    jobs.expiry_warning = dur(
        "expiry_warning",
        a.expiry_warning.or(file.expiry_warning),
        jobs.expiry_warning,
    )?;
    jobs.sweep_grace = dur(
        "sweep_grace",
        a.sweep_grace.or(file.sweep_grace),
        jobs.sweep_grace,
    )?;
    jobs.webhook_url = a.webhook_url.or(file.webhook_url);
    if let Some(u) = &jobs.webhook_url {
        anyhow::ensure!(
            u.starts_with("http://") || u.starts_with("https://"),
            "webhook_url: `{u}` is not an http(s) URL"
        );
    }
    anyhow::ensure!(
        limits.default_ttl <= limits.max_ttl,
        "default_ttl is longer than max_ttl; lower it or raise max_ttl"
    );
    let mut quota = file.quota.unwrap_or_default();
    quota.max_envs = a.quota_max_envs.or(quota.max_envs);
    quota.max_cpus = a.quota_max_cpus.or(quota.max_cpus);
    quota.max_memory = a.quota_max_memory.or(quota.max_memory);
    quota.creates_per_minute = a.quota_creates_per_minute.or(quota.creates_per_minute);
    let quotas = quota.resolve(engine.default_cpus, engine.default_memory)?;
    let mut allowed_origins = a.allowed_origins;
    allowed_origins.extend(file.allowed_origins.unwrap_or_default());
    for o in &allowed_origins {
        anyhow::ensure!(
            o.starts_with("http://") || o.starts_with("https://"),
            "allowed_origins: `{o}` is not an origin; write e.g. http://envd.lab:7070"
        );
    }
    let auth = envd::auth::AuthConfig {
        disabled: a.no_auth,
        guard_metrics: a.guard_metrics || file.guard_metrics.unwrap_or(false),
        guard_openapi: a.guard_openapi || file.guard_openapi.unwrap_or(false),
        allowed_origins,
        admin_token_file: None,
    };
    let mut pools = file.pools.unwrap_or_default();
    for p in &a.pools {
        pools.push(pool_flag(p)?);
    }
    let pool_budget = envd::pool::Budget {
        cpus: a.pool_budget_cpus.or(file.pool_budget_cpus),
        memory: match a.pool_budget_memory.or(file.pool_budget_memory) {
            Some(m) => Some(
                envd::spec::parse_memory(&m)
                    .map_err(|r| anyhow::anyhow!("pool_budget_memory: {r}"))?,
            ),
            None => None,
        },
    };
    let pool_tick = dur(
        "pool_tick",
        a.pool_tick.or(file.pool_tick),
        Duration::from_secs(1),
    )?;
    let pool_health_every = dur(
        "pool_health_every",
        a.pool_health_every.or(file.pool_health_every),
        Duration::from_secs(30),
    )?;
    anyhow::ensure!(
        pool_tick >= Duration::from_millis(100) && pool_health_every >= Duration::from_secs(1),
        "pool_tick: at least 100ms; pool_health_every: at least 1s (each look costs queries and probes)"
    );
    Ok(Config {
        pools,
        pool_budget,
        pool_tick,
        pool_health_every,
        no_auth: a.no_auth,
        auth,
        quotas,
        listen: a
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:7070".into()),
        database_url: a
            .database_url
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("envd.db").display())),
        templates_dir: Some(
            a.templates_dir
                .or(file.templates_dir)
                .unwrap_or_else(|| data_dir.join("templates")),
        ),
        compose_images: file.compose_images.unwrap_or_default(),
        engine,
        limits,
    })
}

pub async fn doctor(a: ServeArgs) -> ExitCode {
    let cfg = match resolve(a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("envd doctor: {e:#}");
            return ExitCode::from(2);
        }
    };
    let checks = envd::doctor::run(&cfg.engine).await;
    for c in &checks {
        if c.ok {
            println!("✓ {}", c.what);
        } else {
            println!("✗ {} — {}", c.what, c.remedy);
        }
    }
    if checks.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "envd=info".into()),
        )
        .init();
    let mut cfg = resolve(a)?;
    if cfg.no_auth {
        refuse_open_network(&cfg.listen).await?;
    }
    let failed: Vec<String> = envd::doctor::run(&cfg.engine)
        .await
        .into_iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{} — {}", c.what, c.remedy))
        .collect();
    anyhow::ensure!(
        failed.is_empty(),
        "envd cannot start:\n  ✗ {}",
        failed.join("\n  ✗ ")
    );
    std::fs::create_dir_all(&cfg.engine.data_dir)
        .with_context(|| format!("creating {}", cfg.engine.data_dir.display()))?;
    let store = Store::open(&cfg.database_url)
        .await
        .with_context(|| format!("opening the store {}", cfg.database_url))?;
    if cfg.no_auth {
        tracing::warn!("--no-auth: every caller on {} is an admin", cfg.listen);
    } else {
        let (path, made) = envd::auth::bootstrap_admin(&store, &cfg.engine.data_dir).await?;
        if made {
            tracing::info!(
                "made the admin token in {} (0600); the envd CLI on this host uses it, others need `envd token create`",
                path.display()
            );
        } else {
            tracing::info!("admin token in {}", path.display());
        }
        cfg.auth.admin_token_file = Some(path);
    }
    let engine = Engine::new(store, cfg.engine.clone()).await?;
    engine.resync().await?;
    tokio::spawn(resync(Arc::clone(&engine)));
    tokio::spawn(envd::engine::watch_host_events(Arc::clone(&engine)));
    tokio::spawn(envd::engine::take_over_claims(Arc::clone(&engine)));
    envd::engine::spawn_scheduler(&engine);

    let mut catalog = Catalog::new(cfg.templates_dir.clone());
    catalog.images = envd::compose::ImageMap::with(cfg.compose_images.clone());
    let state = envd::api::AppState {
        engine,
        catalog,
        limits: cfg.limits.clone(),
        auth: cfg.auth.clone(),
        quotas: Arc::new(envd::quota::Admission::new(cfg.quotas.clone())),
    };
    for spec in cfg.pools.clone() {
        let what = spec.template.clone();
        envd::pool::set(&state.engine.store, &state.catalog, spec)
            .await
            .with_context(|| format!("warm pool of {what}"))?;
    }
    tokio::spawn(
        envd::pool::Refill {
            engine: Arc::clone(&state.engine),
            catalog: state.catalog.clone(),
            limits: state.limits.clone(),
            quotas: cfg.quotas.clone(),
            budget: cfg.pool_budget.clone(),
            tick: cfg.pool_tick,
            health_every: cfg.pool_health_every,
        }
        .run(),
    );
    let app = envd::api::router(state);
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    tracing::info!(
        "envd serving on http://{} (store {})",
        cfg.listen,
        cfg.database_url
    );
    // Graceful, within a deadline: an open event stream or exec WebSocket never ends on
    // its own, and must not keep envd from stopping.
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown().await;
        let _ = stopping.send(());
    });
    let deadline = async move {
        if stopped.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_DEADLINE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = server => r?,
        _ = deadline => tracing::warn!(
            "connections still open {} s after the stop signal: closing them",
            SHUTDOWN_DEADLINE.as_secs()
        ),
    }
    tracing::info!("envd stopped; unfinished steps resume at the next start");
    Ok(())
}

/// `--pool TEMPLATE=MIN[:MAX]`.
fn pool_flag(s: &str) -> anyhow::Result<envd::pool::PoolSpec> {
    let bad =
        || anyhow::anyhow!("--pool: `{s}` is not TEMPLATE=MIN or TEMPLATE=MIN:MAX, e.g. full=2");
    let (template, size) = s.split_once('=').ok_or_else(bad)?;
    let (min, max) = match size.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (size, None),
    };
    Ok(envd::pool::PoolSpec {
        name: None,
        template: template.trim().to_string(),
        answers: Default::default(),
        min: min.trim().parse().map_err(|_| bad())?,
        max: max
            .map(|m| m.trim().parse())
            .transpose()
            .map_err(|_| bad())?,
    })
}

/// `--no-auth` only where nobody else can connect: every address `listen` names must be
/// loopback.
async fn refuse_open_network(listen: &str) -> anyhow::Result<()> {
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .with_context(|| format!("listen: `{listen}` is not an address"))?
        .collect();
    let open: Vec<String> = addrs
        .iter()
        .filter(|a| !a.ip().is_loopback())
        .map(|a| a.to_string())
        .collect();
    anyhow::ensure!(
        !addrs.is_empty() && open.is_empty(),
        "--no-auth is refused: envd would listen on {} which other hosts reach; listen on 127.0.0.1 or drop --no-auth",
        if open.is_empty() {
            listen.to_string()
        } else {
            open.join(", ")
        }
    );
    Ok(())
}

/// The periodic reconcile of every live env: catches drift the event stream missed.
async fn resync(engine: Arc<Engine>) {
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    loop {
        tick.tick().await;
        if let Err(e) = engine.resync().await {
            tracing::warn!("resync: {e}");
        }
    }
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}

/// How long a stop waits for open requests and streams.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// The operator's roots as real paths (a root may itself be a link the operator made).
fn dirs_roots(roots: Vec<PathBuf>) -> anyhow::Result<Vec<PathBuf>> {
    roots
        .into_iter()
        .map(|r| {
            anyhow::ensure!(
                r.is_absolute(),
                "dirs_roots: `{}` is not an absolute path",
                r.display()
            );
            let real = std::fs::canonicalize(&r)
                .with_context(|| format!("dirs_roots: `{}` is not a directory", r.display()))?;
            anyhow::ensure!(
                real.is_dir() && real != std::path::Path::new("/"),
                "dirs_roots: `{}` is not a directory other than /",
                r.display()
            );
            Ok(real)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_pools_come_from_the_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("envd.toml");
        std::fs::write(
            &file,
            "pool_budget_memory = \"8g\"\npool_health_every = \"2m\"\n[[pools]]\ntemplate = \"full\"\nmin = 2\nmax = 3\nanswers = { app_replicas = 2 }\n",
        )
        .unwrap();
        let cfg = resolve(ServeArgs {
            config: Some(file.clone()),
            pools: vec!["minimal=1".into(), "minimal:1=0:2".into()],
            pool_tick: Some("500ms".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            (cfg.pool_tick, cfg.pool_health_every),
            (Duration::from_millis(500), Duration::from_secs(120))
        );
        let got: Vec<(&str, u32, Option<u32>)> = cfg
            .pools
            .iter()
            .map(|p| (p.template.as_str(), p.min, p.max))
            .collect();
        assert_eq!(
            got,
            [
                ("full", 2, Some(3)),
                ("minimal", 1, None),
                ("minimal:1", 0, Some(2))
            ]
        );
        assert_eq!(
            cfg.pools[0].answers.get("app_replicas").map(String::as_str),
            Some("2")
        );
        assert_eq!(cfg.pool_budget.memory, Some(8 << 30));
        let err = resolve(ServeArgs {
            pools: vec!["full".into()],
            ..Default::default()
        })
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("TEMPLATE=MIN"), "{err}");
    }

    #[test]
    fn default_limits_come_from_flags_or_the_file_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("envd.toml");
        std::fs::write(&file, "default_cpus = 0.5\ndefault_memory = \"256m\"\n").unwrap();
        let args = |cpus: Option<f64>, memory: Option<&str>| ServeArgs {
            config: Some(file.clone()),
            default_cpus: cpus,
            default_memory: memory.map(String::from),
            ..Default::default()
        };
        let cfg = resolve(args(None, None)).unwrap();
        assert_eq!(cfg.engine.default_cpus, Some(0.5));
        assert_eq!(cfg.engine.default_memory, Some(256 << 20));
        let cfg = resolve(args(Some(2.0), Some("1g"))).unwrap();
        assert_eq!(cfg.engine.default_cpus, Some(2.0));
        assert_eq!(cfg.engine.default_memory, Some(1 << 30));
        let err = resolve(args(None, Some("lots"))).err().unwrap().to_string();
        assert!(err.contains("default_memory"), "{err}");
        let err = resolve(args(Some(0.0), None)).err().unwrap().to_string();
        assert!(err.contains("default_cpus"), "{err}");
    }

    #[test]
    fn quotas_come_from_flags_or_the_file_per_owner() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("envd.toml");
        std::fs::write(
            &file,
            "default_memory = \"256m\"\nallowed_origins = [\"http://envd.lab:7070\"]\n[quota]\nmax_envs = 3\nmax_memory = \"1g\"\n[quota.owners.qa]\nmax_envs = 9\n",
        )
        .unwrap();
        let args = |envs: Option<u32>| ServeArgs {
            config: Some(file.clone()),
            quota_max_envs: envs,
            ..Default::default()
        };
        let cfg = resolve(args(None)).unwrap();
        assert_eq!(cfg.quotas.of("anyone").max_envs, 3);
        assert_eq!(cfg.quotas.of("anyone").max_memory, 1 << 30);
        assert_eq!(cfg.quotas.of("qa").max_envs, 9);
        assert_eq!(cfg.quotas.of("qa").max_memory, 1 << 30);
        // A container without limits counts serve's default.
        assert_eq!(cfg.quotas.container_memory, 256 << 20);
        assert_eq!(cfg.auth.allowed_origins, vec!["http://envd.lab:7070"]);
        assert_eq!(
            resolve(args(Some(5))).unwrap().quotas.of("anyone").max_envs,
            5
        );
    }

    #[tokio::test]
    async fn no_auth_is_refused_off_loopback() {
        assert!(refuse_open_network("127.0.0.1:7070").await.is_ok());
        assert!(refuse_open_network("[::1]:7070").await.is_ok());
        let e = refuse_open_network("0.0.0.0:7070")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("--no-auth is refused"), "{e}");
    }
}
