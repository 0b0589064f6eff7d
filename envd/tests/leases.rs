//! The sweep never frees the lease of a live env: sweeps every 100 ms (zero grace, and a
//! stale snapshot of the live envs) while 20 envs take their leases. Only the store and
//! the lease step of the engine run: no node is built and no host object of another test
//! can be swept. Slice 182.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use envd::catalog::Catalog;
use envd::service::{self, Limits};
use envd::store::{Created, State};

mod common;
use common::harness::request;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sweeps_never_free_a_live_envs_lease() {
    if !common::engine_available().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let engine = common::engine(dir.path(), 182).await;
    let catalog = Catalog::new(None);
    let create = || async {
        let Created::New(env) = service::create(
            &engine.store,
            &catalog,
            &Limits::default(),
            request("minimal", &[]),
        )
        .await
        .unwrap() else {
            panic!("new env")
        };
        env
    };
    // An orphan: its env is gone but its lease stayed (a crash between the two).
    let orphan = create().await;
    engine.reconcile(&orphan.id).await.unwrap();
    engine
        .store
        .set_state(&orphan.id, State::Gone, envd::lifecycle::Step::Gone, None)
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let sweeper = {
        let (engine, stop) = (engine.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rounds = 0u32;
            let mut freed = vec![];
            while !stop.load(Ordering::SeqCst) {
                // Every other round with no live env in its snapshot at all, as if taken
                // before every create: only the conditional statement protects them.
                let holding: HashSet<String> = if rounds.is_multiple_of(2) {
                    HashSet::new()
                } else {
                    engine
                        .store
                        .holding_ids()
                        .await
                        .unwrap()
                        .into_iter()
                        .collect()
                };
                let leases = engine.store.leases_since().await.unwrap();
                let now = envd::store::now_ms();
                for f in engine
                    .sweep_leases(&leases, &holding, now, false)
                    .await
                    .unwrap()
                {
                    assert!(f.error.is_none(), "{f:?}");
                    freed.push(f.env_id);
                }
                rounds += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (rounds, freed)
        })
    };

    let mut tasks = vec![];
    for i in 0..20u64 {
        let engine = engine.clone();
        let catalog = Catalog::new(None);
        tasks.push(tokio::spawn(async move {
            // Spread over a few sweeps.
            tokio::time::sleep(Duration::from_millis(37 * i)).await;
            let Created::New(env) = service::create(
                &engine.store,
                &catalog,
                &Limits::default(),
                request("minimal", &[]),
            )
            .await
            .unwrap() else {
                panic!("new env")
            };
            // The engine's lease step, as the reconcile of a new env runs it.
            engine.reconcile(&env.id).await.unwrap();
            env.id
        }));
    }
    let mut ids = vec![];
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    // A few more sweeps over the leased envs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (rounds, freed) = sweeper.await.unwrap();

    let mut by_ip: HashMap<String, String> = HashMap::new();
    for id in &ids {
        let ip = engine
            .store
            .lease_of(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("env {id} lost its lease"));
        let env = engine.store.get(id).await.unwrap();
        assert_eq!(env.node_ip.as_deref(), Some(ip.as_str()));
        if let Some(other) = by_ip.insert(ip.clone(), id.clone()) {
            panic!("{ip} leased to {other} and {id}");
        }
    }
    assert_eq!(
        freed,
        vec![orphan.id.clone()],
        "only the orphan's lease is freed"
    );
    assert!(engine.store.lease_of(&orphan.id).await.unwrap().is_none());
    println!(
        "{} envs leased {} distinct IPs through {rounds} sweeps; freed only the orphan",
        ids.len(),
        by_ip.len()
    );
    assert!(rounds >= 5, "only {rounds} sweeps ran");
}
