//! Per-owner quotas over real HTTP on a real engine: the (n+1)-th env, an env and a clone
//! that would cross the memory quota, and too many creates in a minute get 429 naming the
//! quota, with nothing recorded; after an `rm` the create passes. Slice 247.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use envd::auth::{self, AuthConfig, Role};
use envd::catalog::Catalog;
use envd::quota::{Quota, QuotaFile, Quotas};
use reqwest::Method;
use serde_json::{Value, json};

mod common;
use common::http::{call, call_as, serve_with};

/// minimal (redis, no limits) counts the 300m a container without limits counts; `big`
/// asks 600m.
const BIG: &str = r#"
name: big
version: "1"
pods:
  - name: redis
    ports: [6379]
    containers:
      - name: redis
        image: envd/redis:latest
        env: { REDIS_PASSWORD: envd-redis }
        memory: 600m
    ready: { kind: redis, port: 6379, password: envd-redis, deadline: 30s }
"#;

fn quotas() -> Quotas {
    let base = Quota {
        max_envs: 3,
        max_cpus: 100.0,
        max_memory: 1000 << 20,
        creates_per_minute: 100,
    };
    let narrow = QuotaFile {
        max_envs: Some(1),
        creates_per_minute: Some(2),
        ..Default::default()
    };
    Quotas {
        default: base,
        owners: BTreeMap::from([(
            "team-n".to_string(),
            narrow.over("quota.owners.team-n", base).unwrap(),
        )]),
        container_cpus: 0.5,
        container_memory: 300 << 20,
    }
}

/// Asserts a 429 problem naming the quota, the usage and the limit.
fn over(r: &(u16, String, Value), quota: &str) {
    assert_eq!(r.0, 429, "{}", r.2);
    assert_eq!(r.1, "application/problem+json");
    assert_eq!(r.2["quota"], quota, "{}", r.2);
    assert!(
        r.2["usage"].is_string() && r.2["limit"].is_string(),
        "{}",
        r.2
    );
    let detail = r.2["detail"].as_str().unwrap();
    assert!(
        detail.contains(quota) && detail.contains("limit"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creates_and_clones_stop_at_the_owners_quota() {
    if !common::engine_available().await {
        return;
    }
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let templates = common::harness::template_dir("big", BIG);
    let engine = common::engine(dir.path(), 247).await;
    let catalog = Catalog::new(Some(templates.path().to_path_buf()));
    let base = serve_with(engine.clone(), catalog, AuthConfig::default(), quotas()).await;
    let store = engine.store.clone();
    let a = auth::issue(&store, "qa", Role::User, "team-a", None)
        .await
        .unwrap()
        .0;
    let n = auth::issue(&store, "qn", Role::User, "team-n", None)
        .await
        .unwrap()
        .0;
    let guard = common::Guard::default();
    let u = |p: &str| format!("{base}{p}");
    let create = |token: String, body: &'static str| {
        let url = u("/v1/envs");
        async move { call_as(Some(&token), Method::POST, &url, Some(body)).await }
    };
    let mut made = vec![];
    let mut keep = |r: &(u16, String, Value)| {
        assert!(r.0 == 201, "{}", r.2);
        let id = r.2["id"].as_str().unwrap().to_string();
        guard.watch(&id);
        made.push(id.clone());
        id
    };

    // 300m, then 600m more: 900m of 1000m.
    let first = call_as(
        Some(&a),
        Method::POST,
        &u("/v1/envs?wait=true&timeout=4m"),
        Some(r#"{"template": "minimal"}"#),
    )
    .await;
    assert_eq!(first.2["state"], "ready", "{}", first.2);
    let first = keep(&first);
    let big = keep(&create(a.clone(), r#"{"template": "big"}"#).await);
    let (_, _, q) = call_as(Some(&a), Method::GET, &u("/v1/quota"), None).await;
    assert_eq!(
        (&q["owner"], &q["usage"]["envs"], &q["usage"]["memory"]),
        (&json!("team-a"), &json!(2), &json!(900i64 << 20)),
        "{q}"
    );
    assert_eq!(q["limit"]["max_memory"], json!(1000i64 << 20));

    // Another 300m crosses the memory quota, by create or by clone; nothing is recorded.
    let before = store.list(&Default::default()).await.unwrap().len();
    over(
        &create(a.clone(), r#"{"template": "minimal"}"#).await,
        "max_memory",
    );
    let clone = call_as(
        Some(&a),
        Method::POST,
        &u(&format!("/v1/envs/{first}/clone")),
        Some("{}"),
    )
    .await;
    over(&clone, "max_memory");
    assert_eq!(
        store.list(&Default::default()).await.unwrap().len(),
        before,
        "a refused env was recorded"
    );

    // After an rm the create passes.
    let (s, _, gone) = call_as(
        Some(&a),
        Method::DELETE,
        &u(&format!("/v1/envs/{big}?wait=true")),
        None,
    )
    .await;
    assert_eq!((s, &gone["state"]), (200, &json!("gone")), "{gone}");
    keep(&create(a.clone(), r#"{"template": "minimal"}"#).await);

    // The (n+1)-th env of an owner allowed one; and creates per minute.
    keep(&create(n.clone(), r#"{"template": "minimal"}"#).await);
    let second = create(n.clone(), r#"{"template": "minimal"}"#).await;
    over(&second, "max_envs");
    assert_eq!(
        (&second.2["usage"], &second.2["limit"]),
        (&json!("1"), &json!("1"))
    );
    let rm = |token: String, id: String| {
        let url = u(&format!("/v1/envs/{id}"));
        async move { call_as(Some(&token), Method::DELETE, &url, None).await.0 }
    };
    let (_, _, listed) = call_as(Some(&n), Method::GET, &u("/v1/envs"), None).await;
    let only = listed[0]["id"].as_str().unwrap().to_string();
    assert!((200..300).contains(&rm(n.clone(), only).await));
    let again = keep(&create(n.clone(), r#"{"template": "minimal"}"#).await);
    assert!((200..300).contains(&rm(n.clone(), again).await));
    let third = create(n.clone(), r#"{"template": "minimal"}"#).await;
    over(&third, "creates_per_minute");
    assert_eq!(third.2["limit"], "2");
    eprintln!("quota checks in {:.1}s", t0.elapsed().as_secs_f64());

    for id in &made {
        call(Method::DELETE, &u(&format!("/v1/envs/{id}")), None).await;
    }
    for id in &made {
        let t = Instant::now();
        while !store.get(id).await.unwrap().state.is_final() {
            assert!(t.elapsed() < Duration::from_secs(180), "{id} not torn down");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
