//! The walking skeleton on the real engine: envs from template to ready to gone, with
//! real drivers at the node's fixed IP and nothing left behind. Needs root, Docker, the
//! images and the seed (scripts/test builds them); under CI=true their absence fails.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant};

use envd::catalog::Catalog;
use envd::engine::Engine;
use envd::service::{self, CreateRequest, Limits};
use envd::store::{Created, State};

mod common;
use common::Guard;
use common::harness::{Harness, harness, template_dir};

fn archive_entries(path: &std::path::Path) -> BTreeMap<String, String> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("archive {}: {e}", path.display()));
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut out = BTreeMap::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().to_string();
        let mut s = String::new();
        let _ = e.read_to_string(&mut s);
        out.insert(p, s);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_env_answers_at_the_node_ip_then_leaves_nothing() {
    let Some(h) = harness(201, None).await else {
        return;
    };
    let answers = [
        ("mysql_root_password", "pw-mysql"),
        ("redis_password", "pw-redis"),
    ];
    let (env, _guard) = h.ready("full", &answers).await;
    let ip = env.node_ip.clone().unwrap();
    assert!(ip.starts_with("10.213.201."), "{ip}");

    // MySQL: create table, insert, select.
    {
        use mysql_async::prelude::Queryable;
        let mut c = mysql_async::Conn::from_url(format!("mysql://root:pw-mysql@{ip}:3306/test"))
            .await
            .unwrap();
        c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
            .await
            .unwrap();
        c.query_drop("INSERT INTO t VALUES (1, 'one')")
            .await
            .unwrap();
        let v: Option<String> = c.query_first("SELECT v FROM t WHERE id = 1").await.unwrap();
        assert_eq!(v.as_deref(), Some("one"));
        c.disconnect().await.unwrap();
    }
    // Mongo with the root user: insert, find.
    {
        let uri =
            format!("mongodb://root:envd-root@{ip}:27017/?authSource=admin&directConnection=true");
        let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
        let coll = client
            .database("shop")
            .collection::<mongodb::bson::Document>("orders");
        coll.insert_one(mongodb::bson::doc! { "n": 7, "item": "book" })
            .await
            .unwrap();
        let found = coll
            .find_one(mongodb::bson::doc! { "n": 7 })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.get_str("item").unwrap(), "book");
    }
    // Redis: SET, GET.
    {
        let client = redis::Client::open(format!("redis://:pw-redis@{ip}:6379/")).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query_async(&mut c)
            .await
            .unwrap();
        let v: String = redis::cmd("GET")
            .arg("k")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(v, "v");
    }
    // The app reaches all three by pod name.
    let health: serde_json::Value = reqwest::get(format!("http://{ip}:8080/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        health,
        serde_json::json!({"mysql": "ok", "mongo": "ok", "redis": "ok"})
    );

    let events = h.engine.store.events(&env.id, 0).await.unwrap();
    if let Some(ready) = events.iter().find(|e| e.step == "ready") {
        eprintln!("full env ready in {} ms", ready.duration_ms.unwrap_or(0));
    }
    for step in [
        "node",
        "network",
        "pods",
        "ready:mysql",
        "ready:mongo",
        "ready:redis",
        "ready:app",
    ] {
        assert!(
            events
                .iter()
                .any(|e| e.step == step && e.duration_ms.is_some()),
            "no timed event {step}"
        );
    }

    let gone = h.teardown(&env.id).await;
    assert_eq!(gone.state, State::Gone, "{:?}", gone.error);
    h.assert_nothing_left(&env).await;
    let entries = archive_entries(&h.engine.cfg.archive_path(&env.id));
    for log in [
        "mysql/mysql.log",
        "mongo/mongo.log",
        "redis/redis.log",
        "app/app.log",
        "stubs/stubs.log",
    ] {
        assert!(
            entries.contains_key(log),
            "no {log} in archive: {:?}",
            entries.keys().collect::<Vec<_>>()
        );
    }
    for pod in ["mysql", "mongo", "redis", "app"] {
        assert!(
            entries
                .keys()
                .any(|k| k.starts_with(&format!("{pod}/files/"))),
            "pod {pod} wrote no log file: {:?}",
            entries.keys().collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pod_that_cannot_start_fails_the_env_with_its_cause_and_frees_all() {
    let dir = template_dir(
        "broken",
        r#"name: broken
version: "1"
deadline: 60s
pods:
  - name: db
    ports: [6390]
    containers:
      - name: redis
        image: envd/redis:latest
        command: ["sh", "-c", "echo cannot-start-db >&2; exit 3"]
    ready: { kind: tcp, port: 6390, deadline: 5s }
"#,
    );
    let Some(h) = harness(202, Some(dir.path().to_path_buf())).await else {
        return;
    };
    let env = h.create("broken", &[]).await;
    let guard = Guard::default();
    guard.watch(&env.id);
    let env = h
        .wait(
            &env.id,
            &[State::Failed, State::Ready],
            Duration::from_secs(180),
        )
        .await;
    assert_eq!(env.state, State::Failed);
    let error = env.error.clone().unwrap();
    assert!(
        error.contains("pod db") && error.contains("cannot-start-db"),
        "{error}"
    );
    h.assert_nothing_left(&env).await;
    let entries = archive_entries(&h.engine.cfg.archive_path(&env.id));
    assert!(
        entries
            .get("db/redis.log")
            .is_some_and(|l| l.contains("cannot-start-db")),
        "{:?}",
        entries.keys().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_envs_at_once_get_different_ips_and_both_answer() {
    let Some(h) = harness(203, None).await else {
        return;
    };
    let a = h.create("minimal", &[]).await;
    let b = h.create("minimal", &[]).await;
    let guard = Guard::default();
    guard.watch(&a.id);
    guard.watch(&b.id);
    let a = h
        .wait(
            &a.id,
            &[State::Ready, State::Failed],
            Duration::from_secs(180),
        )
        .await;
    let b = h
        .wait(
            &b.id,
            &[State::Ready, State::Failed],
            Duration::from_secs(180),
        )
        .await;
    assert_eq!(
        (a.state, b.state),
        (State::Ready, State::Ready),
        "{:?} {:?}",
        a.error,
        b.error
    );
    assert_ne!(a.node_ip, b.node_ip);
    for env in [&a, &b] {
        let ip = env.node_ip.clone().unwrap();
        let client = redis::Client::open(format!("redis://:envd-redis@{ip}:6379/")).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("SET")
            .arg("who")
            .arg(&env.id)
            .query_async(&mut c)
            .await
            .unwrap();
        let who: String = redis::cmd("GET")
            .arg("who")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(who, env.id, "each IP reaches its own env");
    }
    for env in [&a, &b] {
        assert_eq!(h.teardown(&env.id).await.state, State::Gone);
        h.assert_nothing_left(env).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_gets_its_ip_and_pods_back() {
    let Some(h) = harness(205, None).await else {
        return;
    };
    let (env, _guard) = h.ready("minimal", &[]).await;
    let ip = env.node_ip.clone().unwrap();
    let node = format!("envd-{}-{}", env.name, env.short_id());
    let out = std::process::Command::new("docker")
        .args(["restart", "-t", "5", &node])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // What the periodic resync of `envd serve` does.
    h.engine.reconcile(&env.id).await.unwrap();
    let t = Instant::now();
    let pong = loop {
        let attempt = async {
            let client = redis::Client::open(format!("redis://:envd-redis@{ip}:6379/")).ok()?;
            let mut c = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING").query_async::<String>(&mut c).await.ok()
        };
        if let Some(p) = attempt.await {
            break p;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "redis not answering at {ip} after the node restarted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(pong, "PONG");
    let after = h.engine.store.get(&env.id).await.unwrap();
    assert_eq!(
        (after.state, after.node_ip.as_deref()),
        (State::Ready, Some(ip.as_str()))
    );
    assert_eq!(h.teardown(&env.id).await.state, State::Gone);
    h.assert_nothing_left(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn template_stubs_answer_and_exec_checks_gate_readiness() {
    let dir = template_dir(
        "stubbed",
        r#"name: stubbed
version: "1"
variables:
  - { variable: pw, default: s3cret }
pods:
  - name: cache
    ports: [6379]
    containers:
      - name: redis
        image: envd/redis:latest
        env: { REDIS_PASSWORD: "{{ pw }}" }
        memory: 64m
    ready: { kind: exec, command: ["redis-cli", "-a", "{{ pw }}", "--no-auth-warning", "ping"], deadline: 30s }
stubs:
  - { method: GET, path: /pay/status, status: 200, json: { ok: true, env: "{{ env_name }}" } }
"#,
    );
    let Some(h) = harness(206, Some(dir.path().to_path_buf())).await else {
        return;
    };
    let (env, _guard) = h.ready("stubbed", &[]).await;
    let ip = env.node_ip.clone().unwrap();
    let resp = reqwest::get(format!("http://{ip}:9000/pay/status"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"ok": true, "env": env.name}));
    let events = h.engine.store.events(&env.id, 0).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.step == "ready:cache" && e.message.contains("exec"))
    );
    // The memory limit reached the inner engine.
    let sock = h.engine.cfg.run_dir.join(&env.id).join("docker.sock");
    let inner = bollard::Docker::connect_with_unix(
        &sock.to_string_lossy(),
        30,
        bollard::API_DEFAULT_VERSION,
    )
    .unwrap()
    .negotiate_version()
    .await
    .unwrap();
    let info = inner
        .inspect_container(
            "cache-redis",
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    assert_eq!(info.host_config.unwrap().memory, Some(64 << 20));
    assert_eq!(h.teardown(&env.id).await.state, State::Gone);
    h.assert_nothing_left(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_reaper_tears_down_an_expired_env_with_its_logs() {
    let Some(h) = harness(208, None).await else {
        return;
    };
    let req = CreateRequest {
        template: "minimal".into(),
        ttl: Some("12s".into()),
        ..Default::default()
    };
    let Created::New(env) = service::create(&h.engine.store, &h.catalog, &Limits::default(), req)
        .await
        .unwrap()
    else {
        panic!("new")
    };
    let guard = Guard::default();
    guard.watch(&env.id);
    h.engine.kick(&env.id);
    let env = h
        .wait(
            &env.id,
            &[State::Ready, State::Failed],
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(env.state, State::Ready, "{:?}", env.error);
    if env.expires_at - envd::store::now_ms() > 1000 {
        assert!(
            h.engine.reap().await.unwrap().is_empty(),
            "reaped before expiry"
        );
    }
    tokio::time::sleep(Duration::from_millis(
        (env.expires_at - envd::store::now_ms()).max(0) as u64 + 100,
    ))
    .await;
    assert_eq!(h.engine.reap().await.unwrap(), vec![env.id.clone()]);
    let gone = h
        .wait(
            &env.id,
            &[State::Gone, State::Failed],
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(gone.state, State::Gone);
    h.assert_nothing_left(&env).await;
    assert!(archive_entries(&h.engine.cfg.archive_path(&env.id)).contains_key("redis/redis.log"));
    let events = h.engine.store.events(&env.id, 0).await.unwrap();
    assert!(events.iter().any(|e| e.step == "expired"));
    assert!(
        h.engine.reap().await.unwrap().is_empty(),
        "a gone env is not reaped again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exhausted_pool_fails_the_env_clearly_and_takes_nothing() {
    if !common::engine_available().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = envd::store::Store::open(&format!(
        "sqlite://{}",
        dir.path().join("envd.db").display()
    ))
    .await
    .unwrap();
    let mut cfg = envd::engine::EngineConfig::with_data_dir(dir.path().to_path_buf());
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    // A pool of no address at all: every one reserved.
    cfg.reserved = vec![(ip("10.213.0.0"), ip("10.213.255.255"))];
    let h = Harness {
        engine: Engine::new(store, cfg).await.unwrap(),
        catalog: Catalog::new(None),
        _dir: dir,
    };
    let env = h.create("minimal", &[]).await;
    let env = h
        .wait(
            &env.id,
            &[State::Failed, State::Ready],
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(env.state, State::Failed);
    let error = env.error.clone().unwrap();
    assert!(
        error.contains("no free address") && error.contains("widen the pool"),
        "{error}"
    );
    h.assert_nothing_left(&env).await;
}

/// `rm` 1 s into a `full` create: the create stops at its next action (a delete rings the
/// env's loop and drops the wait in flight), not at its deadline; nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_one_second_into_a_full_create_ends_it_at_once() {
    let Some(h) = harness(209, None).await else {
        return;
    };
    let env = h.create("full", &[]).await;
    let guard = Guard::default();
    guard.watch(&env.id);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    let gone = h.teardown(&env.id).await;
    let took = t.elapsed();
    println!("rm 1 s into a full create: {} in {took:.2?}", gone.state);
    for e in h.engine.store.events(&env.id, 0).await.unwrap() {
        println!(
            "  {:<14} {:>6} ms  {}",
            e.step,
            e.duration_ms.unwrap_or(0),
            e.message
        );
    }
    assert_eq!(gone.state, State::Gone, "{:?}", gone.error);
    h.assert_nothing_left(&gone).await;
    assert!(took < Duration::from_secs(3), "took {took:?}");
}
