//! `scripts/bench env`: time to ready of the `full` template built cold, with its
//! breakdown, taken from a warm pool (request to ready: every pod probed again after
//! the take), and built cold on a spare node (pool `node`: request to ready); teardown; in the same run `docker-compose up` of the same four services with
//! the same images on the host engine, ready by the same probes. p50 and p95 of RUNS (10)
//! each, as a table.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use envd::catalog::Catalog;
use envd::engine::Engine;
use envd::service::{self, CreateRequest, Limits};
use envd::spec::{Facts, Plan};
use envd::store::{Created, State, Store};

const COMPOSE: &str = r#"
services:
  mysql:
    image: envd/mysql:latest
    environment: { MYSQL_ROOT_PASSWORD: envd-root, MYSQL_DATABASE: test }
    ports: ["127.0.0.1:3306:3306"]
  mongo:
    image: envd/mongo:latest
    environment: { MONGO_INITDB_ROOT_USERNAME: root, MONGO_INITDB_ROOT_PASSWORD: envd-root }
    ports: ["127.0.0.1:27017:27017"]
  redis:
    image: envd/redis:latest
    environment: { REDIS_PASSWORD: envd-redis }
    ports: ["127.0.0.1:6379:6379"]
  app:
    image: envd/app:latest
    environment:
      MYSQL_URL: mysql://root:envd-root@mysql:3306/test
      MONGO_URL: mongodb://root:envd-root@mongo:27017/?authSource=admin
      REDIS_URL: redis://:envd-redis@redis:6379/0
    ports: ["127.0.0.1:8080:8080"]
"#;

/// The `q` quantile (nearest rank) of `v`.
fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn p50(v: Vec<f64>) -> f64 {
    quantile(v, 0.5)
}

/// Waits until the env is settled, woken by the store's records.
async fn settled(engine: &Engine, id: &str) -> anyhow::Result<envd::store::Env> {
    let mut changes = engine.store.subscribe();
    loop {
        let env = engine.store.get(id).await?;
        if env.state.is_settled() {
            return Ok(env);
        }
        let next = Store::next_change(&mut changes, id);
        let _ = tokio::time::timeout(Duration::from_millis(200), next).await;
    }
}

/// Every pod of the env answers its check from this host (as a tester would reach it).
async fn answers(engine: &Engine, env: &envd::store::Env) -> anyhow::Result<()> {
    let plan = engine.plan(env)?;
    let ip: std::net::IpAddr = env.node_ip.as_deref().unwrap_or_default().parse()?;
    for pod in &plan.pods {
        if let Some(r) = &pod.ready {
            envd::engine::check(ip, &envd::engine::host_docker().await?, pod, r)
                .await
                .map_err(|e| anyhow::anyhow!("pod {}: {e}", pod.name))?;
        }
    }
    Ok(())
}

/// Builds one pooled env of the `full` pool (untimed): the refill's one step at a time.
async fn fill(refill: &envd::pool::Refill, engine: &Engine) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        refill.once().await?;
        let members = engine.store.pool_members().await?;
        if members.iter().any(|m| m.state == State::Pooled) {
            return Ok(());
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(240),
            "the pool never filled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A create of `full` from the request to ready (every pod checked): the env and the
/// seconds it took, if one of its events is what `said` looks for (how it was made).
async fn timed_create(
    engine: &std::sync::Arc<Engine>,
    catalog: &Catalog,
    limits: &Limits,
    said: impl Fn(&envd::store::Event) -> bool,
) -> anyhow::Result<(envd::store::Env, f64)> {
    let req = CreateRequest {
        template: "full".into(),
        ..Default::default()
    };
    let t = Instant::now();
    let Created::New(env) = service::create(&engine.store, catalog, limits, req).await? else {
        anyhow::bail!("not new")
    };
    engine.kick(&env.id);
    let got = settled(engine, &env.id).await?;
    let took = t.elapsed().as_secs_f64();
    anyhow::ensure!(got.state == State::Ready, "{:?}", got.error);
    let events = engine.store.events(&env.id, 0).await?;
    anyhow::ensure!(events.iter().any(said), "not made as expected: {events:?}");
    Ok((got, took))
}

/// Tears the env down; seconds from the request to gone (logs archived, all freed).
async fn teardown(engine: &Engine, id: &str) -> anyhow::Result<f64> {
    engine.store.request_teardown(id).await?;
    let t = Instant::now();
    engine.reconcile(id).await?;
    Ok(t.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs = common::count("RUNS", 10);
    let dir = tempfile::tempdir()?;
    let engine = common::engine_in(dir.path(), 210).await?;
    let catalog = Catalog::new(None);

    let mut rows: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for i in 0..runs {
        let req = CreateRequest {
            template: "full".into(),
            ..Default::default()
        };
        let Created::New(env) =
            service::create(&engine.store, &catalog, &Limits::default(), req).await?
        else {
            anyhow::bail!("not new")
        };
        let t = Instant::now();
        engine.reconcile(&env.id).await?; // requested -> creating (lease)
        engine.reconcile(&env.id).await?; // creating -> ready
        let ready = t.elapsed().as_secs_f64();
        let got = engine.store.get(&env.id).await?;
        anyhow::ensure!(got.state == State::Ready, "run {i}: {:?}", got.error);
        for e in engine.store.events(&env.id, 0).await? {
            if let Some(ms) = e.duration_ms
                && !matches!(
                    e.kind,
                    envd::lifecycle::EventKind::Requested | envd::lifecycle::EventKind::Ready
                )
            {
                rows.entry(format!("envd {}", e.step))
                    .or_default()
                    .push(ms as f64 / 1000.0);
            }
        }
        rows.entry("envd full: ready".into())
            .or_default()
            .push(ready);
        rows.entry("envd full: teardown (logs + free)".into())
            .or_default()
            .push(teardown(&engine, &got.id).await?);
        eprintln!("envd run {}: ready {ready:.2}s", i + 1);
    }

    // Taken from a warm pool (every pod probed again), then built cold on a spare node
    // (pool `node`: started, IP attached, no pods): request to ready, then checked.
    let limits = Limits::default();
    let refill = envd::pool::Refill {
        engine: engine.clone(),
        catalog: catalog.clone(),
        limits: limits.clone(),
        quotas: Default::default(),
        budget: Default::default(),
        tick: Duration::from_millis(100),
        health_every: Duration::from_secs(3600),
    };
    type Said = fn(&envd::store::Event) -> bool;
    let kinds: [(&str, &str, Said); 2] = [
        ("full", "pooled take", |e| {
            e.step == envd::lifecycle::EventKind::Claimed.as_str()
        }),
        ("node", "cold on a spare node", |e| {
            e.step == envd::lifecycle::EventKind::Cold.as_str() && e.message.contains("spare node")
        }),
    ];
    for (pool, what, said) in kinds {
        common::set_pool(&catalog, &engine, pool, 1).await?;
        for i in 0..runs {
            fill(&refill, &engine).await?;
            let (got, took) = timed_create(&engine, &catalog, &limits, said)
                .await
                .map_err(|e| anyhow::anyhow!("{what} run {i}: {e}"))?;
            answers(&engine, &got).await?;
            rows.entry(format!("envd full: {what}"))
                .or_default()
                .push(took);
            rows.entry("envd full: teardown (logs + free)".into())
                .or_default()
                .push(teardown(&engine, &got.id).await?);
            eprintln!("{what} run {}: ready {:.0} ms", i + 1, took * 1000.0);
        }
        common::set_pool(&catalog, &engine, pool, 0).await?;
        refill.once().await?;
        for id in engine.store.active_ids().await? {
            engine.reconcile(&id).await?;
        }
    }

    // The same four services with docker-compose on the host engine, ready by the same probes.
    let cdir = tempfile::tempdir()?;
    std::fs::write(cdir.path().join("docker-compose.yml"), COMPOSE)?;
    let facts = Facts {
        env_id: String::new(),
        env_name: String::new(),
        node_ip: "127.0.0.1".into(),
    };
    let tpl = catalog.get("full")?;
    let plan = Plan::render(&tpl.origin, &tpl.text, &BTreeMap::new(), &facts)?;
    let host = envd::engine::host_docker().await?;
    for i in 0..runs {
        let compose = |args: &[&str]| {
            Command::new("docker-compose")
                .current_dir(cdir.path())
                .args(["-p", "envdbench"])
                .args(args)
                .output()
        };
        let t = Instant::now();
        let out = compose(&["up", "-d"])?;
        anyhow::ensure!(
            out.status.success(),
            "docker-compose up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for pod in &plan.pods {
            let Some(r) = &pod.ready else { continue };
            let deadline = Instant::now() + Duration::from_secs(120);
            while envd::engine::check(std::net::Ipv4Addr::LOCALHOST.into(), &host, pod, r)
                .await
                .is_err()
            {
                anyhow::ensure!(Instant::now() < deadline, "compose {} not ready", pod.name);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let ready = t.elapsed().as_secs_f64();
        rows.entry("compose: up + ready".into())
            .or_default()
            .push(ready);
        let t = Instant::now();
        let out = compose(&["down", "-v", "-t", "1"])?;
        anyhow::ensure!(
            out.status.success(),
            "docker-compose down: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        rows.entry("compose: down".into())
            .or_default()
            .push(t.elapsed().as_secs_f64());
        eprintln!("compose run {}: ready {ready:.2}s", i + 1);
    }

    println!("\n| what ({runs} runs each) | p50 s | p95 s |\n| --- | --- | --- |");
    for (k, v) in &rows {
        println!(
            "| {k} | {:.3} | {:.3} |",
            p50(v.clone()),
            quantile(v.clone(), 0.95)
        );
    }
    let compose = p50(rows["compose: up + ready"].clone());
    for (what, key) in [
        ("pooled take / compose", "envd full: pooled take"),
        ("cold / compose", "envd full: ready"),
        (
            "cold on a spare node / compose",
            "envd full: cold on a spare node",
        ),
    ] {
        let v = rows.get(key).cloned().unwrap_or_default();
        println!("| ratio {what} (p50) | {:.3} | |", p50(v) / compose);
    }
    Ok(())
}
