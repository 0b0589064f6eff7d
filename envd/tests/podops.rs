//! Pod operations on a ready env through a real API, engine and CLI: `config set` reaching
//! a running Redis (restart) and a HUP-reloading pod (signal), exec over HTTP, WebSocket and
//! the CLI, and template and default limits in the node's engine. Slices 231-239.

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::InspectContainerOptions;
use envd::catalog::Catalog;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::envd;
use common::http::{call, problem, serve_catalog};

const TEMPLATE: &str = r#"
name: podops
version: "1"
variables:
  - variable: maxmemory
    default: 32mb
  - variable: greeting
    default: hello
  - variable: tag
    default: a
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
              maxmemory {{ maxmemory }}
        cpus: 0.5
        memory: 128m
      - name: side
        image: envd/redis:latest
        env: { TAG: "{{ tag }}" }
        command: [bash, -c, "trap exit TERM; while :; do sleep 1 & wait $!; done"]
    ready: { kind: redis, port: 6379, deadline: 15s }
  - name: watcher
    on_change: { signal: HUP }
    containers:
      - name: w
        image: envd/redis:latest
        env: { TAG: "{{ tag }}" }
        command: [bash, -c, "trap 'cp /etc/w.conf /tmp/seen' HUP; cp /etc/w.conf /tmp/seen; while :; do sleep 1 & wait $!; done"]
        files: [{ path: /etc/w.conf, content: "{{ greeting }}" }]
    ready: { kind: exec, command: [test, -f, /tmp/seen], deadline: 60s }
"#;

async fn maxmemory(ip: &str) -> String {
    let client = redis::Client::open(format!("redis://{ip}:6379/")).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query_async(&mut c)
        .await
        .unwrap();
    v[1].clone()
}

/// `maxmemory`, or None while Redis restarts.
async fn try_maxmemory(ip: &str) -> Option<String> {
    let client = redis::Client::open(format!("redis://{ip}:6379/")).ok()?;
    let mut c = client.get_multiplexed_async_connection().await.ok()?;
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query_async(&mut c)
        .await
        .ok()?;
    v.get(1).cloned()
}

async fn inner(engine: &envd::engine::Engine, id: &str) -> Docker {
    let sock = engine.cfg.run_dir.join(id).join("docker.sock");
    Docker::connect_with_unix(&sock.to_string_lossy(), 30, bollard::API_DEFAULT_VERSION)
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
}

/// [`envd`] with `stdin` fed to it.
async fn envd_stdin(server: &str, args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = tokio::process::Command::new(common::envd_bin())
        .args(args)
        .env("ENVD_URL", server)
        .env("ENVD_TOKEN", common::http::admin_token())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The WebSocket exec: (stdout, stderr, exit code).
async fn ws_exec(base: &str, env: &str, pod: &str, cmd: &[&str]) -> (String, String, i64) {
    let q: Vec<String> = cmd
        .iter()
        .map(|a| format!("cmd={}", envd::urlencode(a)))
        .collect();
    let url = format!(
        "{}/v1/envs/{env}/pods/{pod}/exec?{}",
        base.replacen("http://", "ws://", 1),
        q.join("&")
    );
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        url.as_str(),
    )
    .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", common::http::admin_token())
            .parse()
            .unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let (mut out, mut err, mut code) = (Vec::new(), Vec::new(), None);
    while let Some(m) = ws.next().await {
        match m.unwrap() {
            Message::Binary(b) if b[0] == 2 => err.extend_from_slice(&b[1..]),
            Message::Binary(b) => out.extend_from_slice(&b[1..]),
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                code = Some(v["exit_code"].as_i64().unwrap_or_else(|| panic!("{v}")));
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
        code.expect("an exit code frame"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_set_exec_and_limits_on_a_ready_env() {
    if !common::engine_available().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let templates = common::harness::template_dir("podops", TEMPLATE);
    let engine = common::engine_with(dir.path(), 231, |cfg| {
        cfg.default_cpus = Some(0.25);
        cfg.default_memory = Some(96 << 20);
    })
    .await;
    let catalog = Catalog::new(Some(templates.path().to_path_buf()));
    let base = serve_catalog(engine.clone(), catalog).await;
    let u = |p: &str| format!("{base}{p}");
    let guard = common::Guard::default();
    let (_, _, doc) = call(Method::GET, &u("/openapi.json"), None).await;
    assert!(doc["paths"]["/v1/envs/{id}/pods/{pod}"]["patch"].is_object());
    for m in ["get", "post"] {
        assert!(doc["paths"]["/v1/envs/{id}/pods/{pod}/exec"][m].is_object());
    }

    let (s, _, env) = call(
        Method::POST,
        &u("/v1/envs"),
        Some(r#"{"template":"podops"}"#),
    )
    .await;
    assert_eq!(s, 201, "{env}");
    let id = env["id"].as_str().unwrap().to_string();
    guard.watch(&id);
    let pod_url = |pod: &str| u(&format!("/v1/envs/{id}/pods/{pod}"));
    let set = |pod: &str, answers: Value| {
        let url = format!("{}?wait=true", pod_url(pod));
        async move {
            let body = json!({ "answers": answers }).to_string();
            call(Method::PATCH, &url, Some(&body)).await
        }
    };
    // Not ready yet: nothing to apply a change to.
    problem(
        &set("redis", json!({"maxmemory": "1mb"})).await,
        409,
        "ready",
    );

    let t = Instant::now();
    let env = loop {
        let (_, _, e) = call(Method::GET, &u(&format!("/v1/envs/{id}")), None).await;
        if e["state"] == "ready" || e["state"] == "failed" {
            break e;
        }
        assert!(t.elapsed() < Duration::from_secs(240), "not ready: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(env["state"], "ready", "{env}");
    let ip = env["node_ip"].as_str().unwrap().to_string();
    assert_eq!(maxmemory(&ip).await, (32u64 << 20).to_string());

    // config set: re-rendered conf, pod restarted, the new value over the network.
    let t = Instant::now();
    let r = set("redis", json!({"maxmemory": "64mb"})).await;
    assert_eq!(r.0, 200, "{:?}", r.2);
    assert_eq!(r.2["action"], "restarted");
    assert_eq!(r.2["changed"], json!(["maxmemory"]));
    eprintln!("config set maxmemory applied in {:?}", t.elapsed());
    assert_eq!(maxmemory(&ip).await, (64u64 << 20).to_string());

    // Bad answers and targets, nothing changed.
    let r = set("redis", json!({"nope": "1"})).await;
    problem(&r, 422, "answers.nope");
    problem(&set("redis", json!({})).await, 422, "answers");
    problem(
        &set("redis", json!({"greeting": "x"})).await,
        422,
        "watcher",
    );
    problem(
        &set("nope", json!({"maxmemory": "1mb"})).await,
        404,
        "pod `nope`",
    );
    assert_eq!(maxmemory(&ip).await, (64u64 << 20).to_string());
    // Redis refuses the value and never gets ready: the previous config comes back.
    let r = set("redis", json!({"maxmemory": "lots"})).await;
    problem(&r, 422, "answers.maxmemory");
    let detail = r.2["detail"].as_str().unwrap();
    assert!(detail.contains("previous answers are back"), "{detail}");
    assert_eq!(maxmemory(&ip).await, (64u64 << 20).to_string());

    // A signal instead of a restart: the watcher re-reads its file on HUP, still running.
    let docker = inner(&engine, &id).await;
    let started = |d: Docker| async move {
        d.inspect_container("watcher-w", None::<InspectContainerOptions>)
            .await
            .unwrap()
            .state
            .unwrap()
            .started_at
            .unwrap()
    };
    let before = started(docker.clone()).await;
    let r = set("watcher", json!({"greeting": "bonjour"})).await;
    assert_eq!(r.0, 200, "{:?}", r.2);
    assert_eq!(r.2["action"], "signalled HUP");
    let seen = {
        let t = Instant::now();
        loop {
            let (_, _, v) = call(
                Method::POST,
                &u(&format!("/v1/envs/{id}/pods/watcher/exec")),
                Some(r#"{"cmd":["cat","/tmp/seen"]}"#),
            )
            .await;
            if v["stdout"] == "bonjour" || t.elapsed() > Duration::from_secs(10) {
                break v["stdout"].clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(seen, "bonjour");
    assert_eq!(
        started(docker.clone()).await,
        before,
        "signalled, not restarted"
    );

    // An answer two pods use: both get it, the named pod first.
    let r = set("redis", json!({"tag": "b"})).await;
    assert_eq!(r.0, 200, "{:?}", r.2);
    assert_eq!(r.2["pods"], json!(["redis", "watcher"]));
    for c in ["redis-side", "watcher-w"] {
        let env = docker
            .inspect_container(c, None::<InspectContainerOptions>)
            .await
            .unwrap()
            .config
            .unwrap()
            .env
            .unwrap();
        assert!(env.contains(&"TAG=b".to_string()), "{c}: {env:?}");
    }
    assert_eq!(maxmemory(&ip).await, (64u64 << 20).to_string());

    // Limits from the template and from the configured defaults, in the node's engine.
    for (name, cpus, mem) in [
        ("redis-redis", 500_000_000, 128 << 20),
        ("redis-side", 250_000_000, 96 << 20),
    ] {
        let hc = docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .unwrap()
            .host_config
            .unwrap();
        assert_eq!(hc.nano_cpus, Some(cpus), "{name}");
        assert_eq!(hc.memory, Some(mem), "{name}");
    }

    // exec: one-shot over HTTP, over the WebSocket, and through the CLI.
    let exec_url = u(&format!("/v1/envs/{id}/pods/redis/exec"));
    let script = "echo hi; echo oops >&2; exit 3";
    let body = json!({"cmd": ["sh", "-c", script], "container": "side"}).to_string();
    let (s, _, v) = call(Method::POST, &exec_url, Some(&body)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (
            v["stdout"].as_str(),
            v["stderr"].as_str(),
            v["exit_code"].as_i64()
        ),
        (Some("hi\n"), Some("oops\n"), Some(3))
    );
    let (s, _, v) = call(
        Method::POST,
        &exec_url,
        Some(r#"{"cmd":["true"],"container":"nope"}"#),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    problem(
        &call(Method::POST, &exec_url, Some(r#"{"cmd":[]}"#)).await,
        422,
        "cmd",
    );
    problem(
        &call(Method::GET, &format!("{exec_url}?cmd=true"), None).await,
        400,
        "WebSocket",
    );
    let name = env["name"].as_str().unwrap();
    assert_eq!(
        ws_exec(&base, name, "redis", &["sh", "-c", script]).await,
        ("hi\n".to_string(), "oops\n".to_string(), 3)
    );
    let t = Instant::now();
    let (code, out, err) = envd(&base, &["exec", name, "redis", "--", "sh", "-c", script]).await;
    eprintln!("envd exec round trip {:?}", t.elapsed());
    assert_eq!((code, out.as_str(), err.as_str()), (3, "hi\n", "oops\n"));
    let piped = envd_stdin(
        &base,
        &["exec", "-i", name, "redis", "--", "cat"],
        b"ping\n",
    )
    .await;
    assert_eq!((piped.0, piped.1.as_str()), (0, "ping\n"), "{piped:?}");
    let tty = envd(&base, &["exec", "-t", name, "redis", "--", "tty"]).await;
    assert_eq!(tty.0, 0, "{tty:?}");
    assert!(tty.1.starts_with("/dev/pts/"), "{tty:?}");
    let missing = envd(&base, &["exec", name, "nope", "--", "true"]).await;
    assert_eq!(missing.0, 2, "{missing:?}");
    assert!(missing.2.contains("pod `nope`"), "{missing:?}");

    // config set through the CLI.
    let cli = envd(&base, &["config", "set", name, "redis", "maxmemory=48mb"]).await;
    assert_eq!(cli.0, 0, "{cli:?}");
    assert!(cli.1.contains("restarted"), "{cli:?}");
    assert_eq!(maxmemory(&ip).await, (48u64 << 20).to_string());

    // Without ?wait: 202 with the generation; the env's loop applies it.
    let body = json!({ "answers": {"maxmemory": "40mb"} }).to_string();
    let (s, _, v) = call(Method::PATCH, &pod_url("redis"), Some(&body)).await;
    assert_eq!(s, 202, "{v}");
    assert!(v["generation"].as_i64().is_some_and(|g| g > 1), "{v}");
    assert_eq!(v["status"], "pending", "{v}");
    let t = Instant::now();
    while try_maxmemory(&ip).await != Some((40u64 << 20).to_string()) {
        assert!(t.elapsed() < Duration::from_secs(60), "40mb never applied");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, _, events) = call(Method::GET, &u(&format!("/v1/envs/{id}/events")), None).await;
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["step"] == "config:redis"
                && e["message"].as_str().unwrap().contains("maxmemory")),
        "{events}"
    );

    let (s, _, gone) = call(
        Method::DELETE,
        &u(&format!("/v1/envs/{id}?wait=true")),
        None,
    )
    .await;
    assert_eq!((s, gone["state"].as_str()), (200, Some("gone")), "{gone}");
    let h = common::harness::Harness {
        engine,
        catalog: Catalog::new(None),
        _dir: dir,
    };
    h.assert_nothing_left(&h.engine.store.get(&id).await.unwrap())
        .await;
}
