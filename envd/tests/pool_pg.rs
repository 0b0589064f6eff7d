//! Warm pools on two `envd serve` sharing one PostgreSQL (issue 16): pool `minimal` min 2
//! on both; four creates sent to both at once take the two pooled envs (distinct, each
//! claimed once) and build the others cold; the refills of both instances fill the pool to
//! 2 again without it ever holding more than its max. Leases from 10.213.191.0/24, bridge
//! envdt16b1.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::http::{admin_token, call};
use common::pg::own_database;
use common::serve::{Serve, free_port};
use envd::store::{State, Store};
use reqwest::Method;
use serde_json::{Value, json};

const BRIDGE: &str = "envdt16b1";

/// The pool's (ready, creating) as one instance shows it.
async fn sizes(base: &str) -> (u64, u64) {
    let (status, _, v) = call(Method::GET, &format!("{base}/v1/pools"), None).await;
    assert_eq!(status, 200, "{v}");
    let p = v
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "minimal").cloned())
        .unwrap_or(Value::Null);
    (
        p["ready"].as_u64().unwrap_or(0),
        p["creating"].as_u64().unwrap_or(0),
    )
}

async fn pool_full(base: &str) {
    let t = Instant::now();
    loop {
        if sizes(base).await == (2, 0) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "pool stuck at {:?}",
            sizes(base).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_envd_on_one_postgres_take_from_one_pool_and_refill_it_once() {
    if !common::engine_available().await {
        return;
    }
    let Some(own) = own_database("envd_pool").await else {
        return;
    };
    let args = [
        "--bridge",
        BRIDGE,
        "--pool-cidr",
        "10.213.191.0/24",
        "--database-url",
        &own.url,
        "--pool",
        "minimal=2",
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
    let store = Store::open(&own.url).await.unwrap();

    // Every pool env either instance records, and the most live at once (sampled).
    let most = Arc::new(Mutex::new(0usize));
    let built: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let sampler = {
        let (store, most, built) = (store.clone(), most.clone(), built.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(m) = store.pool_members().await {
                    let mut most = most.lock().unwrap();
                    *most = (*most).max(m.len());
                    built.lock().unwrap().extend(m.into_iter().map(|m| m.id));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    pool_full(&bases[1]).await;
    let first = guard.watch_pool(&store).await;

    // Four creates at once, two through each instance: two take, two are built cold.
    let client = reqwest::Client::new();
    let creates = (0..4).map(|i| {
        let (client, base) = (client.clone(), bases[i % 2].clone());
        async move {
            let v: Value = client
                .post(format!("{base}/v1/envs?wait=true"))
                .bearer_auth(admin_token())
                .json(&json!({"template": "minimal"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v
        }
    });
    let got = futures_util::future::join_all(creates).await;
    let mut taken = BTreeSet::new();
    let mut cold = BTreeSet::new();
    for env in &got {
        assert_eq!(env["state"], "ready", "{env}");
        let id = env["id"].as_str().unwrap().to_string();
        guard.watch(&id);
        let events = store.events(&id, 0).await.unwrap();
        let claims = events.iter().filter(|e| e.step == "claimed").count();
        match claims {
            1 => assert!(taken.insert(id.clone()), "{id} taken twice"),
            0 => {
                assert!(events.iter().any(|e| e.step == "cold"), "{events:?}");
                cold.insert(id.clone());
            }
            n => panic!("{id} claimed {n} times"),
        }
    }
    assert_eq!(
        taken, first,
        "the two pooled envs, each taken by one create"
    );
    assert_eq!(cold.len(), 2);

    // Both instances' refills fill it again, to 2 and no more.
    pool_full(&bases[0]).await;
    let second = guard.watch_pool(&store).await;
    assert!(second.is_disjoint(&first));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sizes(&bases[1]).await, (2, 0));
    sampler.abort();
    let most = *most.lock().unwrap();
    let built = built.lock().unwrap().clone();
    assert!(most <= 2, "{most} pool envs at once (max 2)");
    assert!(built.len() >= 4, "envs built for the pool: {built:?}");
    let (_, _, pools) = call(Method::GET, &format!("{}/v1/pools", bases[0]), None).await;
    assert_eq!(pools[0]["claims"], 2, "{pools}");

    // Drain, tear everything down; nothing is left on the host.
    let (status, _, v) = call(
        Method::PUT,
        &format!("{}/v1/pools/minimal", bases[1]),
        Some(&json!({"template": "minimal", "min": 0}).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let all: Vec<String> = built.iter().chain(&cold).cloned().collect();
    for id in taken.iter().chain(&cold) {
        let r = client
            .delete(format!("{}/v1/envs/{id}?wait=true", bases[0]))
            .bearer_auth(admin_token())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let t = Instant::now();
    for id in &all {
        while !store.get(id).await.unwrap().state.is_final() {
            assert!(t.elapsed() < Duration::from_secs(180), "{id} still live");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_ne!(store.get(id).await.unwrap().state, State::Failed, "{id}");
    }
    drop((a, b));
    let check = envd::engine::Engine::new(
        Store::open(&own.url).await.unwrap(),
        envd::engine::EngineConfig::with_data_dir(a_dir.path().to_path_buf()),
    )
    .await
    .unwrap();
    for id in &all {
        common::harness::assert_nothing_left(&check, id).await;
    }
    drop((check, store));
    own.drop().await;
    let _ = std::process::Command::new("ip")
        .args(["link", "del", BRIDGE])
        .status();
}
