//! What the benchmarks share: their engine and their knobs.

use std::path::Path;
use std::sync::Arc;

use envd::catalog::Catalog;
use envd::engine::{Engine, EngineConfig};
use envd::service::{self, CreateRequest, Limits};
use envd::store::{Created, Store};

/// A whole number from the environment variable `var` (e.g. `RUNS`, `N`), else `default`.
pub fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// An engine on a fresh SQLite store in `dir` that leases only from 10.213.<slice>.0/24,
/// so a bench never takes an address a test or a running envd uses.
// bench_list runs on the fake driver.
#[allow(dead_code)]
pub async fn engine_in(dir: &Path, slice: u8) -> anyhow::Result<Arc<Engine>> {
    let store = Store::open(&format!("sqlite://{}", dir.join("envd.db").display())).await?;
    let mut cfg = EngineConfig::with_data_dir(dir.to_path_buf());
    let ip = |s: String| s.parse::<std::net::IpAddr>();
    cfg.reserved = vec![
        (
            ip("10.213.0.2".into())?,
            ip(format!("10.213.{}.255", slice - 1))?,
        ),
        (
            ip(format!("10.213.{}.0", slice + 1))?,
            ip("10.213.255.254".into())?,
        ),
    ];
    Ok(Engine::new(store, cfg).await?)
}

/// The warm pool of `template` (default answers) set to `min`.
// Only bench_env keeps a pool.
#[allow(dead_code)]
pub async fn set_pool(
    catalog: &Catalog,
    engine: &Engine,
    template: &str,
    min: u32,
) -> anyhow::Result<()> {
    envd::pool::set(
        &engine.store,
        catalog,
        envd::pool::PoolSpec {
            template: template.into(),
            min,
            ..Default::default()
        },
    )
    .await?;
    Ok(())
}

/// An admin token recorded in the engine's store.
// Only the benches that serve the API use these.
#[allow(dead_code)]
pub async fn admin_token(engine: &Engine) -> anyhow::Result<String> {
    let token = envd::auth::new_token();
    engine
        .store
        .insert_token(&envd::store::NewToken {
            id: &uuid::Uuid::now_v7().to_string(),
            name: "bench-admin",
            hash: &envd::auth::hash(&token),
            role: "admin",
            owner: "admin",
            expires_at: None,
        })
        .await?;
    Ok(token)
}

/// envd's API over `engine` on 127.0.0.1:<random>, as `envd serve` runs it.
#[allow(dead_code)]
pub async fn serve_api(
    engine: &Arc<Engine>,
    catalog: &Catalog,
) -> anyhow::Result<std::net::SocketAddr> {
    let app = envd::api::router(envd::api::AppState {
        engine: Arc::clone(engine),
        catalog: catalog.clone(),
        limits: envd::service::Limits::default(),
        auth: Default::default(),
        quotas: Arc::new(envd::quota::Admission::new(Default::default())),
    })
    .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// `wrk -t2 -c8 -d10s --latency` of `url` with the admin token: its report.
#[allow(dead_code)]
pub fn wrk(token: &str, url: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("wrk")
        .args(["-t2", "-c8", "-d10s", "--latency", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(url)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "wrk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{text}");
    Ok(text)
}

/// wrk's latency line (`50%    1.23ms`) in ms.
#[allow(dead_code)]
pub fn percentile(out: &str, p: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.trim_start().starts_with(p))?;
    let v = line.split_whitespace().nth(1)?;
    let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => return None,
    })
}

/// The table rows of a wrk report of `GET /v1/envs`.
#[allow(dead_code)]
pub fn print_wrk(out: &str, build: &str) {
    for p in ["50%", "99%"] {
        println!(
            "| GET /v1/envs p{} under wrk (-t2 -c8, 10 s; {build} build) | {:.2} ms |",
            p.trim_end_matches('%'),
            percentile(out, p).unwrap_or(f64::NAN)
        );
    }
    let rps = out
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    println!("| GET /v1/envs requests/s | {rps} |");
}

/// A `full` env of owner `admin` asked for and its loop started; its id.
// Only the density and list benches create this way.
#[allow(dead_code)]
pub async fn create_full(engine: &Arc<Engine>, catalog: &Catalog) -> anyhow::Result<String> {
    let req = CreateRequest {
        template: "full".into(),
        owner: Some("admin".into()),
        ..Default::default()
    };
    let Created::New(env) =
        service::create(&engine.store, catalog, &Limits::default(), req).await?
    else {
        anyhow::bail!("not new")
    };
    engine.kick(&env.id);
    Ok(env.id)
}
