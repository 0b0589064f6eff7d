//! Scheduled jobs on the real engine: the reaper's pre-expiry warning (event + webhook to a
//! loopback server, once) and TTL teardown, dry runs, retain-logs, the sweep inside live
//! nodes, and one runner per scheduled slot with two `envd serve` on one PostgreSQL.
//! (The host part of the sweep has its own binary, tests/sweep.rs: it would free the
//! envs of tests running beside it.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::routing::post;
use envd::catalog::Catalog;
use envd::service::{CreateRequest, Limits};
use envd::store::{State, Store, now_ms};
use serde_json::Value;

mod common;

use common::pg::own_database;
use common::serve::{Serve, free_port};

/// A loopback HTTP server that keeps every JSON body POSTed to `/hook`.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let keep = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/hook",
        post(move |axum::Json(v): axum::Json<Value>| {
            let keep = Arc::clone(&keep);
            async move {
                keep.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), got)
}

#[tokio::test]
async fn reaper_warns_once_before_expiry_then_tears_down_the_expired_env() {
    if !common::engine_available().await {
        return;
    }
    let (hook, got) = webhook_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let engine = common::engine_with(dir.path(), 212, |cfg| {
        cfg.jobs.webhook_url = Some(hook.clone());
        cfg.jobs.expiry_warning = Duration::from_secs(3600);
    })
    .await;
    // Recorded only (never kicked), so the jobs act on the store's env without a node.
    let created = envd::service::create(
        &engine.store,
        &Catalog::new(None),
        &Limits::default(),
        CreateRequest {
            template: "minimal".into(),
            ttl: Some("30m".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let id = match created {
        envd::store::Created::New(env) | envd::store::Created::Existing(env) => env.id,
    };

    let dry = engine.run_job("reap", true, None).await.unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.found.len(), 1, "{dry:?}");
    assert_eq!(dry.found[0].kind, "warning");
    assert!(!dry.found[0].freed);
    assert!(got.lock().unwrap().is_empty(), "a dry run sends nothing");

    let run = engine.run_job("reap", false, None).await.unwrap();
    assert_eq!(run.found.len(), 1, "{run:?}");
    assert!(
        run.found[0].freed && run.found[0].error.is_none(),
        "{run:?}"
    );
    {
        let hooks = got.lock().unwrap();
        assert_eq!(hooks.len(), 1);
        assert_eq!(hooks[0]["event"], "env.expiring");
        assert_eq!(hooks[0]["env"]["id"], id.as_str());
        assert!(hooks[0]["expires_in_seconds"].as_i64().unwrap() > 1700);
    }
    let events = engine.store.events(&id, 0).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.step == "expiring" && e.message.contains("expires at")),
        "no expiring event: {events:?}"
    );
    // Once: the next run has nothing to warn about.
    let again = engine.run_job("reap", false, None).await.unwrap();
    assert!(again.found.is_empty(), "{again:?}");
    assert_eq!(got.lock().unwrap().len(), 1);

    // Expired: listed by a dry run, torn down by a run.
    engine
        .store
        .set_expires_at(&id, now_ms() - 1000)
        .await
        .unwrap();
    let dry = engine.run_job("reap", true, None).await.unwrap();
    assert_eq!(
        (dry.found.len(), dry.found[0].kind, dry.found[0].freed),
        (1, "env", false)
    );
    assert!(!engine.store.get(&id).await.unwrap().state.is_final());
    let run = engine.run_job("reap", false, None).await.unwrap();
    assert_eq!((run.found[0].kind, run.found[0].freed), ("env", true));
    let t = Instant::now();
    while engine.store.get(&id).await.unwrap().state != State::Gone {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "expired env not gone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Each run is recorded with what it found; the listing shows the last.
    let runs = engine.store.job_runs("reap").await.unwrap();
    assert_eq!(runs.len(), 5);
    assert!(runs.iter().all(|r| r.ok == Some(true) && r.slot.is_none()));
    let jobs = engine.jobs().await.unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["reap", "sweep", "retain-logs"]);
    let reap = &jobs[0];
    assert_eq!(reap.schedule, "0 * * * * *");
    assert!(reap.next_run.is_some());
    let last = reap.last_run.as_ref().unwrap();
    assert_eq!(last.result.as_ref().unwrap()["found"][0]["kind"], "env");

    let bad = engine.run_job("nope", false, None).await.unwrap_err();
    assert!(bad.to_string().contains("jobs: reap, sweep, retain-logs"));
}

#[tokio::test]
async fn retain_logs_deletes_only_archives_older_than_the_retention() {
    if !common::engine_available().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let engine = common::engine_with(dir.path(), 212, |cfg| {
        cfg.jobs.log_retention = Duration::from_secs(7 * 24 * 3600);
    })
    .await;
    let logs = dir.path().join("logs");
    let old = logs.join("old-env.tar.gz");
    let new = logs.join("new-env.tar.gz");
    for p in [&old, &new] {
        std::fs::write(p, b"archive").unwrap();
    }
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(8 * 24 * 3600))
        .unwrap();

    let dry = engine.run_job("retain-logs", true, None).await.unwrap();
    assert_eq!(dry.found.len(), 1, "{dry:?}");
    assert_eq!(
        (dry.found[0].kind, dry.found[0].env_id.as_str()),
        ("archive", "old-env")
    );
    assert!(old.exists() && !dry.found[0].freed);
    let run = engine.run_job("retain-logs", false, None).await.unwrap();
    assert!(run.found[0].freed);
    assert!(!old.exists(), "old archive kept");
    assert!(new.exists(), "recent archive deleted");
}

/// Two envd on one PostgreSQL, the reaper every second: every scheduled slot runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_envd_on_one_postgres_run_each_scheduled_slot_once() {
    if !common::engine_available().await {
        return;
    }
    // A database of its own, so no other test's envs are reconciled here.
    let Some(own) = own_database("envd_jobs").await else {
        return;
    };

    let args = [
        "--bridge",
        "envdt1",
        "--pool-cidr",
        "10.217.0.0/24",
        "--database-url",
        &own.url,
        "--reap-schedule",
        "* * * * * *",
    ];
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a_port, b_port) = (free_port(), free_port());
    let mut a = Serve::start(a_dir.path(), a_port, &args, None);
    a.up().await;
    let mut b = Serve::start(b_dir.path(), b_port, &args, None);
    b.up().await;
    let from = now_ms() + 1000;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let to = now_ms() - 1500;

    let listed: Value = common::http::get(format!("http://127.0.0.1:{b_port}/v1/jobs"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    drop((a, b));
    let store = Store::open(&own.url).await.unwrap();
    let runs = store.job_runs("reap").await.unwrap();
    let mut per_slot: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for r in &runs {
        per_slot
            .entry(r.slot.expect("scheduled runs have a slot"))
            .or_default()
            .push(r.runner.clone());
    }
    drop(store);
    own.drop().await;
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "envdt1"])
        .status();

    assert!(per_slot.values().all(|r| r.len() == 1), "{per_slot:?}");
    let window: Vec<i64> = per_slot
        .keys()
        .copied()
        .filter(|s| (from..=to).contains(s))
        .collect();
    let seconds = (to - from) / 1000;
    assert!(
        window.len() as i64 >= seconds,
        "{} runs in {seconds} one-second slots: {per_slot:?}",
        window.len()
    );
    let runners: std::collections::BTreeSet<&String> = per_slot.values().flatten().collect();
    eprintln!("{} slots run by {runners:?}", per_slot.len());
    let reap = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "reap")
        .unwrap();
    assert_eq!(reap["schedule"], "* * * * * *");
    assert!(reap["last_run"]["slot"].is_i64(), "{reap}");
}

/// A container started by hand inside a ready env's node is not in its plan: the sweep
/// lists it, then removes it, and the env's own pods keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_removes_inner_containers_that_are_not_in_the_plan() {
    let Some(h) = common::harness::harness(214, None).await else {
        return;
    };
    let (env, _guard) = h.ready("minimal", &[]).await;
    let sock = format!("/run/envd/{}/docker.sock", env.id);
    let inner =
        bollard::Docker::connect_with_unix(&sock, 30, bollard::API_DEFAULT_VERSION).unwrap();
    let stray = bollard::models::ContainerCreateBody {
        image: Some("envd/pause:latest".into()),
        ..Default::default()
    };
    let opts = bollard::query_parameters::CreateContainerOptionsBuilder::default()
        .name("stray")
        .build();
    inner.create_container(Some(opts), stray).await.unwrap();
    inner.start_container("stray", None).await.unwrap();

    let stray_of = |found: &[envd::engine::Found]| {
        found
            .iter()
            .filter(|f| f.kind == "inner-container" && f.env_id == env.id)
            .map(|f| (f.name.clone(), f.freed))
            .collect::<Vec<_>>()
    };
    let name = format!("{}/stray", env.name);
    // Only the inner part: the host part would free other tests' envs (another store's).
    let dry = h.engine.sweep_inner(Duration::ZERO, true).await.unwrap();
    assert_eq!(stray_of(&dry), vec![(name.clone(), false)]);
    assert!(inner.inspect_container("stray", None).await.is_ok());
    let run = h.engine.sweep_inner(Duration::ZERO, false).await.unwrap();
    assert_eq!(stray_of(&run), vec![(name, true)]);
    assert!(inner.inspect_container("stray", None).await.is_err());

    let ip = env.node_ip.clone().unwrap();
    let client = redis::Client::open(format!("redis://:envd-redis@{ip}:6379/")).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
    assert_eq!(pong, "PONG");
    let gone = h.teardown(&env.id).await;
    h.assert_nothing_left(&gone).await;
}

/// Two envd on one PostgreSQL, ten creates sent to them in turn: one instance acts on
/// each env at a time (a claim in the store), so each env's node container is created
/// exactly once (counted from the host engine's `create` events), and all get ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_envd_on_one_postgres_create_each_node_once() {
    use futures_util::StreamExt;
    if !common::engine_available().await {
        return;
    }
    // A database of its own, so no other test's envs are reconciled here.
    let Some(own) = own_database("envd_claims").await else {
        return;
    };

    // Every node container created from now on, by env.
    let host = envd::engine::host_docker().await.unwrap();
    let creates: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let watcher = {
        let creates = creates.clone();
        let filters = std::collections::HashMap::from([
            ("type", vec!["container"]),
            ("event", vec!["create"]),
            ("label", vec!["envd.role=node"]),
        ]);
        let opts = bollard::query_parameters::EventsOptionsBuilder::new()
            .filters(&filters)
            .build();
        let mut events = host.events(Some(opts));
        tokio::spawn(async move {
            while let Some(Ok(ev)) = events.next().await {
                let env = ev
                    .actor
                    .and_then(|a| a.attributes)
                    .and_then(|mut a| a.remove("envd.env"));
                if let Some(env) = env {
                    *creates.lock().unwrap().entry(env).or_default() += 1;
                }
            }
        })
    };

    let args = [
        "--bridge",
        "envdt2",
        "--pool-cidr",
        "10.217.1.0/24",
        "--database-url",
        &own.url,
        "--claim-ttl",
        "3s",
    ];
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a_port, b_port) = (free_port(), free_port());
    let mut a = Serve::start(a_dir.path(), a_port, &args, None);
    let mut b = Serve::start(b_dir.path(), b_port, &args, None);
    let bases = [
        format!("http://127.0.0.1:{a_port}"),
        format!("http://127.0.0.1:{b_port}"),
    ];
    a.up().await;
    b.up().await;
    let guard = common::Guard::default();
    let client = reqwest::Client::new();
    let mut ids = vec![];
    for i in 0..10 {
        let id = common::http::create_env(&bases[i % 2], "minimal").await;
        guard.watch(&id);
        ids.push(id);
    }
    let t = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        // Asked of the other instance than the one that took the create.
        let v: Value = client
            .post(format!("{}/v1/envs/{id}/extend", bases[(i + 1) % 2]))
            .bearer_auth(common::http::admin_token())
            .json(&serde_json::json!({"ttl": "1h"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["id"], id.as_str(), "{v}");
        loop {
            let v: Value = common::http::get(format!("{}/v1/envs/{id}", bases[(i + 1) % 2]))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["state"] == "ready" {
                break;
            }
            assert_ne!(v["state"], "failed", "{v}");
            assert!(t.elapsed() < Duration::from_secs(400), "not ready: {v}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    eprintln!("10 envs ready on two instances in {:?}", t.elapsed());

    // kill -9 of one instance mid-create: the other takes its envs over once their
    // claims expire (its scan of expired claims, every half TTL), and finishes them.
    let mut late = vec![];
    for _ in 0..2 {
        let v: Value = client
            .post(format!("{}/v1/envs", bases[0]))
            .bearer_auth(common::http::admin_token())
            .json(&serde_json::json!({"template": "minimal"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = v["id"].as_str().expect("created").to_string();
        guard.watch(&id);
        late.push(id);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(a);
    let t = Instant::now();
    for id in &late {
        loop {
            let v: Value = common::http::get(format!("{}/v1/envs/{id}", bases[1]))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["state"] == "ready" {
                break;
            }
            assert_ne!(v["state"], "failed", "{v}");
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "not taken over: {v}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    eprintln!(
        "envs of a killed instance ready on the other {:?} after the kill",
        t.elapsed()
    );
    ids.extend(late);
    for id in &ids {
        let r = client
            .delete(format!("{}/v1/envs/{id}?wait=true", bases[1]))
            .bearer_auth(common::http::admin_token())
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert!(status.is_success(), "{status} {}", r.text().await.unwrap());
    }
    let seen = creates.lock().unwrap().clone();
    watcher.abort();
    drop(b);
    let check = envd::engine::Engine::new(
        Store::open(&own.url).await.unwrap(),
        envd::engine::EngineConfig::with_data_dir(a_dir.path().to_path_buf()),
    )
    .await
    .unwrap();
    for id in &ids {
        common::harness::assert_nothing_left(&check, id).await;
    }
    drop(check);
    own.drop().await;
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "envdt2"])
        .status();
    for id in &ids {
        assert_eq!(seen.get(id), Some(&1), "node creates per env: {seen:?}");
    }
}
