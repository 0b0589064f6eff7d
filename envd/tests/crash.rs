//! Crash safety with the real binary: `envd serve` aborted (as by SIGKILL) at recorded
//! steps of create and of teardown, restarted each time; the env still ends `ready`, then
//! `gone`, and nothing leaks. Own test binary, on its own bridge and pool.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

const BRIDGE: &str = "envdt0";
const POOL: &str = "10.216.0.0/24";

struct Serve {
    child: Child,
}

impl Serve {
    fn start(data: &std::path::Path, port: u16, abort_at: Option<&str>) -> Serve {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_envd"));
        cmd.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--bridge",
            BRIDGE,
            "--pool-cidr",
            POOL,
        ])
        .arg("--data-dir")
        .arg(data)
        .env_remove("ENVD_ABORT_AT")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some(step) = abort_at {
            cmd.env("ENVD_ABORT_AT", step);
        }
        Serve {
            child: cmd.spawn().expect("envd serve starts"),
        }
    }

    /// Waits for the process to die at its abort point.
    fn wait_abort(&mut self) {
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(!status.success(), "envd exited cleanly instead of aborting");
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "envd never reached its abort step"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn until_up(base: &str) {
    let t = Instant::now();
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "envd serve did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn env_state(base: &str, id: &str) -> Value {
    reqwest::get(format!("{base}/v1/envs/{id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn until_state(base: &str, id: &str, want: &str) -> Value {
    let t = Instant::now();
    loop {
        let v = env_state(base, id).await;
        if v["state"] == want {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "env not {want}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_at_create_and_teardown_steps_still_ends_ready_then_gone_with_no_leak() {
    if !common::engine_available().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let guard = common::Guard::default();

    // Create, killed at `node`, then at `pods` on the resumed attempt.
    let mut serve = Serve::start(dir.path(), port, Some("node"));
    until_up(&base).await;
    let created: Value = reqwest::Client::new()
        .post(format!("{base}/v1/envs"))
        .json(&serde_json::json!({"template": "minimal"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    guard.watch(&id);
    serve.wait_abort();
    drop(serve);
    let mut serve = Serve::start(dir.path(), port, Some("pods"));
    serve.wait_abort();
    drop(serve);
    let serve = Serve::start(dir.path(), port, None);
    until_up(&base).await;
    let ready = until_state(&base, &id, "ready").await;
    let ip = ready["node_ip"].as_str().unwrap().to_string();
    let client = redis::Client::open(format!("redis://:envd-redis@{ip}:6379/")).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
    assert_eq!(pong, "PONG");
    drop(serve);

    // Teardown, killed while collecting logs, then while freeing.
    let mut serve = Serve::start(dir.path(), port, Some("collecting"));
    until_up(&base).await;
    let resp = reqwest::Client::new()
        .delete(format!("{base}/v1/envs/{id}"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    serve.wait_abort();
    drop(serve);
    let mut serve = Serve::start(dir.path(), port, Some("freeing"));
    serve.wait_abort();
    drop(serve);
    let _serve = Serve::start(dir.path(), port, None);
    until_up(&base).await;
    until_state(&base, &id, "gone").await;

    let label = format!("envd.env={id}");
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output()
        .unwrap();
    assert!(out.stdout.is_empty(), "containers leaked");
    let out = Command::new("docker")
        .args(["volume", "ls", "-q", "--filter", &format!("label={label}")])
        .output()
        .unwrap();
    assert!(out.stdout.is_empty(), "volumes leaked");
    assert!(
        netcfg::list().await.unwrap().iter().all(|a| a.id != id),
        "veth leaked"
    );
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("envd_pool_leases 0"),
        "lease leaked:\n{metrics}"
    );
    assert!(
        dir.path()
            .join("logs")
            .join(format!("{id}.tar.gz"))
            .exists(),
        "no log archive"
    );
    // The record shows each interrupted step begun again after its restart.
    let events: Value = reqwest::get(format!("{base}/v1/envs/{id}/events"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let steps: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["step"].as_str())
        .collect();
    for step in ["node", "pods", "collecting", "freeing", "ready"] {
        assert!(steps.contains(&step), "no {step} in {steps:?}");
    }
    // The test's own bridge (envd keeps its bridge between envs).
    let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
}
