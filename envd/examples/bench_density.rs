//! `scripts/bench density`: N (default 20) live `full` envs on this host, each answering;
//! memory per env, this envd's RSS (engine and API in this process), and `GET /v1/envs`
//! latency at N envs under `wrk` for 10 s on loopback with an admin token.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use envd::catalog::Catalog;
use envd::engine::Engine;
use envd::store::State;

/// `MemAvailable` of the host, in bytes.
fn available() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no MemAvailable in /proc/meminfo"))?;
    Ok(kb * 1024)
}

fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = common::count("N", 20);
    let dir = tempfile::tempdir()?;
    let engine = common::engine_in(dir.path(), 169).await?;
    let catalog = Catalog::new(None);
    let token = common::admin_token(&engine).await?;
    let addr = common::serve_api(&engine, &catalog).await?;

    let mut ids = vec![];
    let r = measure(&engine, &catalog, &token, addr, n, &mut ids).await;
    // Whatever happened, nothing is left behind.
    for id in &ids {
        engine.store.request_teardown(id).await?;
        engine.kick(id);
    }
    for id in &ids {
        while !engine.store.get(id).await?.state.is_final() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!("all {} torn down", ids.len());
    r
}

async fn measure(
    engine: &Arc<Engine>,
    catalog: &Catalog,
    token: &str,
    addr: std::net::SocketAddr,
    n: usize,
    ids: &mut Vec<String>,
) -> anyhow::Result<()> {
    let before = available()?;
    let rss_before = rss();
    let t = Instant::now();
    for i in 0..n {
        // Two at a time: this host has two cores.
        ids.push(common::create_full(engine, catalog).await?);
        if i % 2 == 1 || i + 1 == n {
            for id in &ids[ids.len().saturating_sub(2)..] {
                wait_ready(engine, id).await?;
            }
        }
        eprintln!("{} envs ready ({:.0} s)", i + 1, t.elapsed().as_secs_f64());
    }
    // Every env answers on every pod now, from this host.
    for id in ids.iter() {
        let env = engine.store.get(id).await?;
        let plan = engine.plan(&env)?;
        let node: std::net::IpAddr = env.node_ip.as_deref().unwrap_or_default().parse()?;
        for pod in &plan.pods {
            if let Some(r) = &pod.ready {
                envd::engine::check(node, &envd::engine::host_docker().await?, pod, r)
                    .await
                    .map_err(|e| anyhow::anyhow!("{} pod {}: {e}", env.name, pod.name))?;
            }
        }
    }
    // Let the inner engines and databases settle before measuring memory.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let used = before.saturating_sub(available()?);
    let rss_at_n = rss();

    let text = common::wrk(token, &format!("http://{addr}/v1/envs"))?;
    println!("\n| what (N = {n} live full envs) | value |\n| --- | --- |");
    println!(
        "| host memory used per env (MemAvailable drop / N) | {:.0} MiB |",
        used as f64 / n as f64 / 1048576.0
    );
    println!(
        "| host memory used by all N envs | {:.2} GiB |",
        used as f64 / 1073741824.0
    );
    println!(
        "| envd RSS (this process: engine + API; {} build) before / at N | {:.1} / {:.1} MiB |",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        rss_before as f64 / 1048576.0,
        rss_at_n as f64 / 1048576.0
    );
    common::print_wrk(
        &text,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
    Ok(())
}

async fn wait_ready(engine: &Engine, id: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        let env = engine.store.get(id).await?;
        match env.state {
            State::Ready => return Ok(()),
            State::Failed | State::Gone => anyhow::bail!("{} failed: {:?}", env.name, env.error),
            _ => {}
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(600),
            "{} never ready",
            env.name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
