//! Warm pools on the real engine (issue 16): pool `minimal` min 2 fills; two concurrent
//! creates both take (distinct envs, `claimed`), their endpoints answer, the pool refills;
//! other answers build cold; a pooled env whose node was killed is replaced; min 0 drains
//! and leaves nothing (leases from 10.213.160.0/24). A create whose Redis password differs
//! from the pool's only in a config file takes a pooled env that restarts with it before
//! the handover (10.213.190.0/24). A spare node (pool `node`) takes a create of another
//! template: its pods are built on the node that was up (10.213.192.0/24).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::harness::assert_nothing_left;
use common::http::{call, serve};
use envd::store::State;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SLICE: u8 = 160;

/// The warm pools' refill beside the test's envd, looking every 200 ms.
fn spawn_refill(
    engine: &std::sync::Arc<envd::engine::Engine>,
    catalog: envd::catalog::Catalog,
    health_every: Duration,
) {
    tokio::spawn(
        envd::pool::Refill {
            engine: engine.clone(),
            catalog,
            limits: envd::service::Limits::default(),
            quotas: Default::default(),
            budget: Default::default(),
            tick: Duration::from_millis(200),
            health_every,
        }
        .run(),
    );
}

/// The pool `minimal`'s view from `GET /v1/pools`.
async fn pool(base: &str) -> Value {
    pool_named(base, "minimal").await
}

/// A pool's view from `GET /v1/pools`.
async fn pool_named(base: &str, name: &str) -> Value {
    let (status, _, v) = call(Method::GET, &format!("{base}/v1/pools"), None).await;
    assert_eq!(status, 200, "{v}");
    v.as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

/// Waits until the pool holds `n` ready envs and builds none; their ids.
async fn pool_at(engine: &envd::engine::Engine, base: &str, n: u64) -> BTreeSet<String> {
    let t = Instant::now();
    loop {
        let p = pool(base).await;
        if p["ready"] == n && p["creating"] == 0 {
            let members = engine.store.pool_members().await.unwrap();
            return members.into_iter().map(|m| m.id).collect();
        }
        assert!(t.elapsed() < Duration::from_secs(240), "pool stuck at {p}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// AUTH + PING on a redis endpoint: the env answers.
async fn redis_answers(host: &str, port: u64, password: &str) {
    let mut s = tokio::net::TcpStream::connect((host, port as u16))
        .await
        .unwrap();
    s.write_all(format!("AUTH {password}\r\nPING\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = vec![];
    let mut buf = [0u8; 64];
    while !String::from_utf8_lossy(&got).contains("PONG") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "redis closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

async fn kinds(base: &str, id: &str) -> Vec<String> {
    let (_, _, v) = call(Method::GET, &format!("{base}/v1/envs/{id}/events"), None).await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn a_pool_fills_is_taken_refills_replaces_a_killed_env_and_drains() {
    let Some(s) = serve(SLICE, None).await else {
        return;
    };
    let guard = common::Guard::default();
    spawn_refill(
        &s.engine,
        envd::catalog::Catalog::new(None),
        Duration::from_secs(1),
    );
    let base = &s.base;
    let (status, _, v) = call(
        Method::PUT,
        &format!("{base}/v1/pools/minimal"),
        Some(&json!({"template": "minimal", "min": 2}).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let first = pool_at(&s.engine, base, 2).await;
    for id in &first {
        guard.watch(id);
    }
    let (code, out, err) = common::envd(base, &["pool", "ls"]).await;
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("minimal"))
        .unwrap_or_default();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells.get(2..5), Some(&["2", "0", "2"][..]), "{out}");

    // Two creates at once: each takes one pooled env.
    let create = || async {
        let t = Instant::now();
        let r = call(
            Method::POST,
            &format!("{base}/v1/envs?wait=true"),
            Some(&json!({"template": "minimal", "labels": {"by": "pool-test"}}).to_string()),
        )
        .await;
        (r, t.elapsed())
    };
    let (a, b) = tokio::join!(create(), create());
    let mut taken = BTreeSet::new();
    for ((status, _, env), took) in [a, b] {
        assert_eq!(status, 201, "{env}");
        assert_eq!(env["state"], "ready", "{env}");
        let id = env["id"].as_str().unwrap().to_string();
        guard.watch(&id);
        assert!(first.contains(&id), "{id} was not one of the pool's");
        assert!(kinds(base, &id).await.iter().any(|k| k == "claimed"));
        let ep = &env["endpoints"]["redis"];
        redis_answers(
            ep["host"].as_str().unwrap(),
            ep["port"].as_u64().unwrap(),
            "envd-redis",
        )
        .await;
        eprintln!("pooled take: {} ms", took.as_millis());
        taken.insert(id);
    }
    assert_eq!(taken.len(), 2, "both creates took the same env");

    // The pool builds two more.
    let second = pool_at(&s.engine, base, 2).await;
    for id in &second {
        guard.watch(id);
    }
    assert!(second.is_disjoint(&taken));

    // Other answers: built cold, and it says so.
    let (status, _, cold) = call(
        Method::POST,
        &format!("{base}/v1/envs?wait=true"),
        Some(
            &json!({"template": "minimal", "answers": {"redis_password": "other-pw-1"}})
                .to_string(),
        ),
    )
    .await;
    assert_eq!(status, 201, "{cold}");
    let cold_id = cold["id"].as_str().unwrap().to_string();
    guard.watch(&cold_id);
    assert_eq!(cold["state"], "ready", "{cold}");
    assert!(!second.contains(&cold_id));
    let k = kinds(base, &cold_id).await;
    assert!(
        k.iter().any(|k| k == "cold") && !k.iter().any(|k| k == "claimed"),
        "{k:?}"
    );

    // A pooled env whose node is killed is replaced.
    let victim = s
        .engine
        .store
        .get(second.iter().next().unwrap())
        .await
        .unwrap();
    let node = format!("envd-{}-{}", victim.name, victim.short_id());
    envd::engine::host_docker()
        .await
        .unwrap()
        .kill_container(
            &node,
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .unwrap();
    let t = Instant::now();
    loop {
        let env = s.engine.store.get(&victim.id).await.unwrap();
        if env.state.is_final() {
            assert_eq!(env.state, State::Failed, "{env:?}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "killed env still {}",
            env.state
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let third = pool_at(&s.engine, base, 2).await;
    for id in &third {
        guard.watch(id);
    }
    assert!(!third.contains(&victim.id));

    // min 0 drains the pool; nothing of any pool env is left.
    let (code, out, err) = common::envd(base, &["pool", "set", "minimal", "--min", "0"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("min 0 max 0"), "{out}");
    let t = Instant::now();
    let built: BTreeSet<String> = first.iter().chain(&second).chain(&third).cloned().collect();
    for id in built.difference(&taken) {
        loop {
            let env = s.engine.store.get(id).await.unwrap();
            if env.state.is_final() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "{id} still {}",
                env.state
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_nothing_left(&s.engine, id).await;
    }
    for id in taken.iter().chain([&cold_id]) {
        s.engine.store.request_teardown(id).await.unwrap();
        s.engine.kick(id);
    }
    for id in taken.iter().chain([&cold_id]) {
        let t = Instant::now();
        while !s.engine.store.get(id).await.unwrap().state.is_final() {
            assert!(t.elapsed() < Duration::from_secs(120));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_nothing_left(&s.engine, id).await;
    }
    let p = pool(base).await;
    assert_eq!(
        (p["ready"].as_u64(), p["creating"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(p["claims"], 2);
}

/// Redis whose password is in its config file: a new one is applied by a restart.
const CONF_REDIS: &str = r#"
name: confredis
version: "1"
variables:
  - variable: redis_password
    type: password
    default: envd-redis
pods:
  - name: redis
    ports: [6379]
    on_change: restart
    containers:
      - name: redis
        image: envd/redis:latest
        command: [redis-server, /etc/redis/envd.conf]
        files:
          - path: /etc/redis/envd.conf
            content: |
              bind 0.0.0.0
              protected-mode no
              port 6379
              requirepass {{ redis_password }}
    ready: { kind: redis, port: 6379, password: "{{ redis_password }}", deadline: 30s }
    endpoint:
      port: 6379
      url: "redis://:{{ redis_password }}@{{ node_ip }}:6379/0"
"#;

#[tokio::test]
async fn a_password_in_a_config_file_is_applied_to_a_pooled_env_before_the_handover() {
    let templates = common::harness::template_dir("confredis", CONF_REDIS);
    let Some(s) = serve(190, Some(templates.path().to_path_buf())).await else {
        return;
    };
    let guard = common::Guard::default();
    spawn_refill(
        &s.engine,
        envd::catalog::Catalog::new(Some(templates.path().to_path_buf())),
        Duration::from_secs(3600),
    );
    let base = &s.base;
    let (status, _, v) = call(
        Method::PUT,
        &format!("{base}/v1/pools/confredis"),
        Some(&json!({"template": "confredis", "min": 1}).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let t = Instant::now();
    let pooled = loop {
        let members = s.engine.store.pool_members().await.unwrap();
        if let [m] = members.as_slice()
            && m.state == State::Pooled
        {
            break m.id.clone();
        }
        assert!(t.elapsed() < Duration::from_secs(240), "pool never filled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    guard.watch(&pooled);

    let (status, _, env) = call(
        Method::POST,
        &format!("{base}/v1/envs?wait=true"),
        Some(
            &json!({"template": "confredis", "answers": {"redis_password": "other-pw-2"}})
                .to_string(),
        ),
    )
    .await;
    assert_eq!(status, 201, "{env}");
    assert_eq!(env["state"], "ready", "{env}");
    assert_eq!(env["id"], pooled.as_str(), "taken, not built cold");
    let k = kinds(base, &pooled).await;
    // The last of each: the pool's build recorded its own before the take.
    let at = |step: &str| k.iter().rposition(|x| x == step).unwrap_or(usize::MAX);
    assert!(at("claimed") < at("config:redis"), "{k:?}");
    assert!(at("config:redis") < at("ready"), "{k:?}");
    let ep = &env["endpoints"]["redis"];
    redis_answers(
        ep["host"].as_str().unwrap(),
        ep["port"].as_u64().unwrap(),
        "other-pw-2",
    )
    .await;

    let (code, _, err) = common::envd(base, &["pool", "set", "confredis", "--min", "0"]).await;
    assert_eq!(code, 0, "{err}");
    s.engine.store.request_teardown(&pooled).await.unwrap();
    s.engine.kick(&pooled);
    let t = Instant::now();
    loop {
        let members = s.engine.store.pool_members().await.unwrap();
        let env = s.engine.store.get(&pooled).await.unwrap();
        if members.is_empty() && env.state.is_final() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "not drained");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_nothing_left(&s.engine, &pooled).await;
}

#[tokio::test]
async fn a_cold_create_is_built_on_a_spare_node() {
    let Some(s) = serve(192, None).await else {
        return;
    };
    let guard = common::Guard::default();
    spawn_refill(
        &s.engine,
        envd::catalog::Catalog::new(None),
        Duration::from_secs(3600),
    );
    let base = &s.base;
    let (code, out, err) = common::envd(base, &["pool", "set", "node", "--min", "1"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let t = Instant::now();
    let spare = loop {
        let p = pool_named(base, "node").await;
        if p["ready"] == 1 && p["creating"] == 0 {
            break s.engine.store.pool_members().await.unwrap().remove(0).id;
        }
        assert!(t.elapsed() < Duration::from_secs(240), "no spare node: {p}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    guard.watch(&spare);

    let t = Instant::now();
    let (status, _, env) = call(
        Method::POST,
        &format!("{base}/v1/envs?wait=true"),
        Some(
            &json!({"template": "minimal", "answers": {"redis_password": "spare-pw-1"}})
                .to_string(),
        ),
    )
    .await;
    eprintln!("create on a spare node: {} ms", t.elapsed().as_millis());
    assert_eq!(status, 201, "{env}");
    assert_eq!(env["state"], "ready", "{env}");
    assert_eq!(
        env["id"],
        spare.as_str(),
        "the spare node's env was not taken"
    );
    let ep = &env["endpoints"]["redis"];
    redis_answers(
        ep["host"].as_str().unwrap(),
        ep["port"].as_u64().unwrap(),
        "spare-pw-1",
    )
    .await;
    let (_, _, events) = call(Method::GET, &format!("{base}/v1/envs/{spare}/events"), None).await;
    let cold = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["step"] == "cold")
        .cloned()
        .unwrap_or_default();
    assert!(
        cold["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spare node of pool node"),
        "{events}"
    );

    // Drained and torn down: nothing of either is left.
    let (code, _, err) = common::envd(base, &["pool", "set", "node", "--min", "0"]).await;
    assert_eq!(code, 0, "{err}");
    s.engine.store.request_teardown(&spare).await.unwrap();
    s.engine.kick(&spare);
    let mut ids = guard.watch_pool(&s.engine.store).await;
    ids.insert(spare);
    for id in &ids {
        let t = Instant::now();
        while !s.engine.store.get(id).await.unwrap().state.is_final() {
            assert!(t.elapsed() < Duration::from_secs(120), "{id} never went");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_nothing_left(&s.engine, id).await;
    }
}
