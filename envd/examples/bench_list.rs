//! `scripts/bench list`: `GET /v1/envs` alone, without the containers of `bench density`:
//! N (default 20) ready `full` envs on the fake driver plus H (default 200) finished ones
//! of history, listed under `wrk` for 10 s on loopback with an admin token, as envd serves
//! it (release build, SQLite store). Its figures are the API's share of the density bench's.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use envd::catalog::Catalog;
use envd::engine::{Engine, EngineConfig, FakeDriver};
use envd::store::{State, Store};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = common::count("N", 20);
    let history = common::count("H", 200);
    let dir = tempfile::tempdir()?;
    let store = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("envd.db").display()
    ))
    .await?;
    let cfg = EngineConfig::with_data_dir(dir.path().to_path_buf());
    let engine = Engine::with_driver(store, cfg, Arc::new(FakeDriver::new()))?;
    let catalog = Catalog::new(None);
    let token = common::admin_token(&engine).await?;
    let addr = common::serve_api(&engine, &catalog).await?;

    // History first (older), then the live ones.
    for _ in 0..history {
        let id = common::create_full(&engine, &catalog).await?;
        settle(&engine, &id, State::Ready).await?;
        engine.store.request_teardown(&id).await?;
        engine.kick(&id);
        settle(&engine, &id, State::Gone).await?;
    }
    for _ in 0..n {
        let id = common::create_full(&engine, &catalog).await?;
        settle(&engine, &id, State::Ready).await?;
    }
    let url = format!("http://{addr}/v1/envs");
    let body = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await?
        .bytes()
        .await?;
    let out = common::wrk(&token, &url)?;
    // The floor on this machine: the same HTTP stack without the store (healthz), and
    // with only the token's lookup (whoami).
    let floor = |path: &str| -> anyhow::Result<(f64, f64)> {
        let o = common::wrk(&token, &format!("http://{addr}{path}"))?;
        let p = |q| common::percentile(&o, q).unwrap_or(f64::NAN);
        Ok((p("50%"), p("99%")))
    };
    let healthz = floor("/healthz")?;
    let whoami = floor("/v1/whoami")?;
    println!(
        "\n| what (N = {n} live full envs, {history} gone; fake driver) | value |\n| --- | --- |"
    );
    println!("| GET /v1/envs answer | {} bytes |", body.len());
    common::print_wrk(
        &out,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
    println!(
        "| floor: GET /healthz p50 / p99 (no token, no store) | {:.2} / {:.2} ms |",
        healthz.0, healthz.1
    );
    println!(
        "| floor: GET /v1/whoami p50 / p99 (the token's lookup only) | {:.2} / {:.2} ms |",
        whoami.0, whoami.1
    );
    Ok(())
}

async fn settle(engine: &Engine, id: &str, want: State) -> anyhow::Result<()> {
    let t = Instant::now();
    while engine.store.get(id).await?.state != want {
        anyhow::ensure!(t.elapsed() < Duration::from_secs(60), "{id} never {want}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
