//! What the benchmarks share: their engine and their knobs.

use std::path::Path;
use std::sync::Arc;

use envd::catalog::Catalog;
use envd::engine::{Engine, EngineConfig};
use envd::store::Store;

/// A whole number from the environment variable `var` (e.g. `RUNS`, `N`), else `default`.
pub fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// An engine on a fresh SQLite store in `dir` that leases only from 10.213.<slice>.0/24,
/// so a bench never takes an address a test or a running envd uses.
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
