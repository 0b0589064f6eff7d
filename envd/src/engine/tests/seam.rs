//! What the engine reaches through the driver besides the loop (exec, live logs, the
//! sweep, host events), on the fake driver.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::fake;
use crate::engine::{ExecChunk, ExecRequest, NodeDriver};
use crate::error::Error;
use crate::lifecycle::State;

fn req(cmd: &[&str]) -> ExecRequest {
    ExecRequest {
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn exec_runs_in_the_pods_container_through_the_driver() {
    let f = fake().await;
    let env = f.create("minimal", false).await;
    assert_eq!(f.settled(&env.id).await.state, State::Ready);
    f.driver.set_exec_exit("redis", "redis", 3);

    let target = f
        .engine
        .exec_target(&env.id, "redis", &req(&["redis-cli", "ping"]))
        .await
        .unwrap();
    let mut exec = target.start(&req(&["redis-cli", "ping"])).await.unwrap();
    exec.input.write_all(b"ignored").await.unwrap();
    let chunks: Vec<ExecChunk> = exec.output.map(|c| c.unwrap()).collect().await;
    assert_eq!(
        chunks,
        vec![ExecChunk::Stdout(b"redis-cli ping\n".to_vec())]
    );
    assert_eq!(exec.handle.exit_code().await.unwrap(), 3);
    assert_eq!(f.driver.count(&env, "exec"), 1);

    // A container that does not run is refused before anything runs.
    f.driver.set_container(
        &env.id,
        "redis",
        "redis",
        crate::engine::driver::ContainerSeen {
            state: crate::engine::driver::ContainerObs::Exited { code: 1 },
            files: None,
        },
    );
    let e = f
        .engine
        .exec_target(&env.id, "redis", &req(&["true"]))
        .await
        .err()
        .expect("refused");
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    assert_eq!(f.driver.count(&env, "exec"), 1);
}

#[tokio::test]
async fn live_logs_come_from_the_driver_one_line_per_container() {
    let f = fake().await;
    let env = f.create("minimal", false).await;
    let env = f.settled(&env.id).await;
    let lines: Vec<String> = f
        .engine
        .live_logs(&env, 5)
        .await
        .unwrap()
        .map(|l| String::from_utf8(l).unwrap())
        .collect()
        .await;
    assert!(
        lines.contains(&"redis/redis | fake log (tail 5)\n".to_string()),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("pause")), "{lines:?}");
}

#[tokio::test]
async fn the_sweep_frees_old_orphans_only() {
    let f = fake().await;
    let env = f.create("minimal", false).await;
    let env = f.settled(&env.id).await;
    let (old, young) = (
        uuid::Uuid::now_v7().to_string(),
        uuid::Uuid::now_v7().to_string(),
    );
    f.driver.add_orphan(&old, Duration::from_secs(3600));
    f.driver.add_orphan(&young, Duration::ZERO);
    let grace = Duration::from_secs(600);

    let dry = f.engine.sweep(grace, true).await.unwrap();
    let names: Vec<&str> = dry.iter().map(|o| o.env_id.as_str()).collect();
    assert_eq!(names, vec![old.as_str()], "{dry:?}");
    assert!(!dry[0].freed && f.driver.holds(&old));

    let run = f.engine.sweep(grace, false).await.unwrap();
    assert_eq!(run.len(), 1, "{run:?}");
    assert_eq!(run[0].kind, "container");
    assert!(run[0].freed, "{run:?}");
    assert!(!f.driver.holds(&old));
    assert!(f.driver.holds(&young), "a young object was swept");
    assert!(f.driver.holds(&env.id), "a live env's node was swept");
}

#[tokio::test]
async fn the_inner_sweep_frees_containers_not_in_the_plan() {
    let f = fake().await;
    let env = f.create("minimal", false).await;
    let env = f.settled(&env.id).await;
    let stray = crate::engine::driver::ContainerSeen {
        state: crate::engine::driver::ContainerObs::Running,
        files: None,
    };
    f.driver.set_container(&env.id, "stray", "x", stray);
    let found = f.engine.sweep_inner(Duration::ZERO, false).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, "inner-container");
    assert_eq!(found[0].name, format!("{}/stray-x", env.name));
    assert!(found[0].freed);
    let seen = f.driver.observe(&env, &[]).await.unwrap();
    assert!(!seen.pods.contains_key("stray"));
    assert!(seen.pods.contains_key("redis"), "a planned pod was swept");
}

#[tokio::test]
async fn a_node_that_dies_is_brought_back_by_its_host_event() {
    let f = fake().await;
    let env = f.create("minimal", false).await;
    let env = f.settled(&env.id).await;
    f.loops_end().await;
    let watcher = tokio::spawn(crate::engine::watch_host_events(f.engine.clone()));
    // The watcher subscribes asynchronously: a death before that would go unseen.
    let t = Instant::now();
    while f.driver.event_listeners() == 0 {
        assert!(t.elapsed() < Duration::from_secs(5), "never listened");
        tokio::task::yield_now().await;
    }
    // No kick: only the host event tells the engine.
    f.driver.stop_node(&env.id);
    let t = Instant::now();
    while f.driver.count(&env, "start-node") == 0 || f.engine.running_loops() > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{:#?}",
            f.driver.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    watcher.abort();
    let seen = f.driver.observe(&env, &[]).await.unwrap();
    assert_eq!(seen.node, crate::engine::driver::NodeObs::Running);
    assert!(seen.ip);
    assert_eq!(
        f.engine.store.get(&env.id).await.unwrap().state,
        State::Ready
    );
}

#[tokio::test]
async fn an_env_whose_holder_died_is_taken_over_once_its_claim_expires() {
    let f = fake().await;
    let req = crate::service::CreateRequest {
        template: "minimal".into(),
        ..Default::default()
    };
    let created = crate::service::create(
        &f.engine.store,
        &f.catalog,
        &crate::service::Limits::default(),
        req,
    )
    .await
    .unwrap();
    let crate::store::Created::New(env) = created else {
        panic!("not new")
    };
    // Another instance claimed it, then died (its claim is never renewed nor let go).
    assert!(f.engine.store.claim(&env.id, "dead:1", 300).await.unwrap());
    assert!(f.engine.take_over_expired().await.unwrap().is_empty());
    let t = Instant::now();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        f.engine.take_over_expired().await.unwrap(),
        vec![env.id.clone()]
    );
    let ready = f.settled(&env.id).await;
    assert_eq!(ready.state, State::Ready, "{:?}", ready.error);
    println!("taken over and ready {:?} after the claim", t.elapsed());
    f.loops_end().await;
    assert!(f.engine.store.expired_claims().await.unwrap().is_empty());
}
