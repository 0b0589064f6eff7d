//! Helpers shared by envd's integration tests on the real engine.
#![allow(dead_code)]

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use envd::engine::{Engine, EngineConfig};
use envd::store::Store;

pub mod harness;
pub mod http;
pub mod pg;
pub mod serve;

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skip (locally) or fail (CI=true) with a clear message, from a test returning a Result.
#[macro_export]
macro_rules! unavailable {
    ($($arg:tt)*) => {{
        let msg = format!($($arg)*);
        if common::in_ci() {
            panic!("{msg} (CI=true: this test must run)");
        }
        eprintln!("SKIPPED {} test: {msg}", module_path!());
        return Ok(());
    }};
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// True when root and the Docker Engine are there; otherwise fails under CI=true and
/// skips (saying why) on a developer's run.
pub async fn engine_available() -> bool {
    let docker = envd::engine::host_docker().await;
    if docker.is_ok() && is_root() {
        return true;
    }
    let why = format!(
        "needs root and the Docker Engine (root: {}, docker: {:?})",
        is_root(),
        docker.err().map(|e| e.to_string())
    );
    assert!(!in_ci(), "CI=true: {why}");
    eprintln!("skipped on this developer run: {why}");
    false
}

/// Frees the host objects of the envs a test made when the test panics, so a failed
/// run leaves nothing behind.
#[derive(Clone, Default)]
pub struct Guard(Arc<Mutex<Vec<String>>>);

impl Guard {
    pub fn watch(&self, env_id: &str) {
        self.0.lock().unwrap().push(env_id.to_string());
    }

    /// The warm pools' envs now, each watched (freed if the test fails).
    pub async fn watch_pool(&self, store: &Store) -> std::collections::BTreeSet<String> {
        let ids: std::collections::BTreeSet<String> = store
            .pool_members()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        for id in &ids {
            self.watch(id);
        }
        ids
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let ids = self.0.lock().map(|v| v.clone()).unwrap_or_default();
        for id in ids {
            let _ = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "docker rm -fv $(docker ps -aq --filter label=envd.env={id}) 2>/dev/null; \
                     docker volume rm -f $(docker volume ls -q --filter label=envd.env={id}) 2>/dev/null"
                ))
                .status();
        }
    }
}

/// An engine on a fresh SQLite store in `dir` that leases only from 10.213.<slice>.0/24,
/// so tests running at once never share an IP.
pub async fn engine(dir: &std::path::Path, slice: u8) -> Arc<Engine> {
    engine_with(dir, slice, |_| {}).await
}

/// [`engine`] with a changed configuration.
pub async fn engine_with(
    dir: &std::path::Path,
    slice: u8,
    change: impl FnOnce(&mut EngineConfig),
) -> Arc<Engine> {
    let store = Store::open(&format!("sqlite://{}", dir.join("envd.db").display()))
        .await
        .unwrap();
    let mut cfg = EngineConfig::with_data_dir(dir.to_path_buf());
    let ip = |s: String| s.parse::<IpAddr>().unwrap();
    cfg.reserved = vec![
        (
            ip("10.213.0.2".into()),
            ip(format!("10.213.{}.255", slice - 1)),
        ),
        (
            ip(format!("10.213.{}.0", slice + 1)),
            ip("10.213.255.254".into()),
        ),
    ];
    change(&mut cfg);
    Engine::new(store, cfg).await.unwrap()
}

/// Runs the real `envd` binary against `server`: exit code, stdout, stderr.
pub async fn envd(server: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(envd_bin())
        .args(args)
        .env("ENVD_URL", server)
        .env("ENVD_TOKEN", http::admin_token())
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The envd binary under test: this build's, or ENVD_TEST_BIN (e.g. an installed envd).
pub fn envd_bin() -> String {
    std::env::var("ENVD_TEST_BIN").unwrap_or(env!("CARGO_BIN_EXE_envd").into())
}

/// A template asking every question type (questions and the web UI use it).
#[allow(dead_code)]
pub const TYPED: &str = r#"name: typed
version: "10"
description: Every question type.
deadline: 2m
variables:
  - { variable: redis_password, label: Redis password, type: password, default: d3faultPw, min_length: 8 }
  - { variable: replicas, type: int, min: 1, max: 5, default: 1 }
  - { variable: debug, type: bool, default: false }
  - { variable: flavour, type: enum, options: [plain, tls], default: plain }
  - { variable: ca, type: multiline, required: true, show_if: flavour=tls }
  - { variable: team, pattern: '[a-z]+', max_length: 8, default: qa }
  - { variable: api_key, type: password, generate: true }
pods:
  - name: redis
    ports: [6379]
    containers:
      - name: redis
        image: envd/redis:latest
        env: { REDIS_PASSWORD: "{{ redis_password }}", API_KEY: "{{ api_key }}", REPLICAS: "{{ replicas }}" }
    ready: { kind: redis, port: 6379, password: "{{ redis_password }}", deadline: 30s }
    endpoint: { port: 6379, url: "redis://:{{ redis_password }}@{{ node_ip }}:6379/0?key={{ api_key }}" }
"#;
