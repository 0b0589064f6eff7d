//! The REST API against a real engine, over real HTTP: every route, the CI-key workflow,
//! and every error kind as `application/problem+json` naming the field.

use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::http::{call, problem, serve_engine, server_in};

/// envd's API on 127.0.0.1:<random>, leasing from 10.213.204.0/24 only.
async fn server() -> Option<(String, tempfile::TempDir)> {
    server_in(204).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_and_every_error_kind() {
    use reqwest::Method;
    let Some((base, _dir)) = server().await else {
        return;
    };
    let u = |p: &str| format!("{base}{p}");

    assert_eq!(
        reqwest::get(u("/healthz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    let text = reqwest::get(u("/openapi.json"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // A full OpenAPI 3.1 parse (schemas, parameters, responses), not only a JSON one.
    let spec = oas3::from_json(&text).expect("a valid OpenAPI 3.1 document");
    assert!(spec.openapi.starts_with("3.1"), "{}", spec.openapi);
    let doc: Value = serde_json::from_str(&text).unwrap();
    for p in [
        "/healthz",
        "/metrics",
        "/openapi.json",
        "/v1/jobs",
        "/v1/jobs/{name}/run",
        "/v1/envs/{id}/clone",
        "/v1/templates/import",
        "/v1/envs/{id}/pods/{pod}",
        "/v1/envs/{id}/pods/{pod}/exec",
        "/v1/templates",
        "/v1/envs",
        "/v1/envs/{id}",
        "/v1/envs/{id}/extend",
        "/v1/envs/{id}/logs",
        "/v1/envs/{id}/events",
    ] {
        assert!(doc["paths"].get(p).is_some(), "openapi lacks {p}");
    }
    let (s, _, t) = call(Method::GET, &u("/v1/templates"), None).await;
    assert_eq!(s, 200);
    assert!(
        t.as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "full" && t["variables"].as_array().unwrap().len() == 4)
    );

    // Jobs: listed with their schedules; one run now as a dry run; bad names and graces.
    let (s, _, jobs) = call(Method::GET, &u("/v1/jobs"), None).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["reap", "sweep", "retain-logs"]);
    let (s, _, report) = call(Method::POST, &u("/v1/jobs/reap/run?dry_run=true"), None).await;
    assert_eq!(
        (s, &report["job"], &report["dry_run"]),
        (200, &json!("reap"), &json!(true))
    );
    problem(
        &call(Method::POST, &u("/v1/jobs/nope/run"), None).await,
        404,
        "nope",
    );
    problem(
        &call(
            Method::POST,
            &u("/v1/jobs/sweep/run?dry_run=true&grace=soon"),
            None,
        )
        .await,
        422,
        "grace",
    );

    // Bad input of every kind, nothing created.
    problem(
        &call(Method::POST, &u("/v1/envs"), Some("{not json")).await,
        400,
        "JSON",
    );
    problem(
        &call(Method::POST, &u("/v1/envs"), Some(r#"{"tmpl":"full"}"#)).await,
        422,
        "tmpl",
    );
    problem(
        &call(Method::POST, &u("/v1/envs"), Some(r#"{"template":"nope"}"#)).await,
        422,
        "template",
    );
    problem(
        &call(
            Method::POST,
            &u("/v1/envs"),
            Some(r#"{"template":"minimal","answers":{"redis_pw":"x"}}"#),
        )
        .await,
        422,
        "answers.redis_pw",
    );
    problem(
        &call(
            Method::POST,
            &u("/v1/envs"),
            Some(r#"{"template":"minimal","ttl":"9h"}"#),
        )
        .await,
        422,
        "ttl",
    );
    problem(
        &call(
            Method::POST,
            &u("/v1/envs"),
            Some(r#"{"template":"minimal","name":"Bad Name"}"#),
        )
        .await,
        422,
        "name",
    );
    problem(
        &call(
            Method::POST,
            &u("/v1/envs?wait=true&timeout=soon"),
            Some(r#"{"template":"minimal"}"#),
        )
        .await,
        422,
        "timeout",
    );
    problem(
        &call(Method::GET, &u("/v1/envs/no-such-env"), None).await,
        404,
        "no-such-env",
    );
    problem(
        &call(Method::GET, &u("/v1/envs?state=sleeping"), None).await,
        422,
        "state",
    );
    problem(
        &call(Method::DELETE, &u("/v1/envs"), None).await,
        400,
        "key",
    );
    problem(
        &call(Method::GET, &u("/v1/nothing"), None).await,
        404,
        "route",
    );
    let (_, _, all) = call(Method::GET, &u("/v1/envs"), None).await;
    assert_eq!(all, json!([]), "rejected requests created nothing");

    // The CI-key workflow.
    let body = r#"{"template":"minimal","key":"feature/x","answers":{"redis_password":"k3y"},"labels":{"team":"qa"}}"#;
    let (s, _, env) = call(
        Method::POST,
        &u("/v1/envs?wait=true&timeout=3m"),
        Some(body),
    )
    .await;
    let guard = common::Guard::default();
    if let Some(id) = env["id"].as_str() {
        guard.watch(id);
    }
    assert_eq!(s, 201, "{env}");
    assert_eq!(env["state"], "ready", "{env}");
    let ip = env["node_ip"].as_str().unwrap().to_string();
    assert_eq!(
        env["endpoints"]["redis"]["url"],
        format!("redis://:k3y@{ip}:6379/0")
    );
    let (s, _, again) = call(Method::POST, &u("/v1/envs"), Some(body)).await;
    assert_eq!((s, &again["id"]), (200, &env["id"]), "same key, same env");
    let name = env["name"].as_str().unwrap();
    let (s, _, got) = call(Method::GET, &u(&format!("/v1/envs/{name}")), None).await;
    assert_eq!((s, &got["id"]), (200, &env["id"]));
    let (_, _, listed) = call(
        Method::GET,
        &u("/v1/envs?key=feature%2Fx&label=team=qa&state=ready"),
        None,
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let (s, _, ext) = call(
        Method::POST,
        &u(&format!("/v1/envs/{name}/extend")),
        Some(r#"{"ttl":"1h"}"#),
    )
    .await;
    assert_eq!(s, 200);
    assert!(ext["expires_at"].as_str().unwrap() > env["expires_at"].as_str().unwrap());
    problem(
        &call(
            Method::POST,
            &u(&format!("/v1/envs/{name}/extend")),
            Some(r#"{"ttl":"3h"}"#),
        )
        .await,
        422,
        "ttl",
    );
    let (s, _, events) = call(Method::GET, &u(&format!("/v1/envs/{name}/events")), None).await;
    assert_eq!(s, 200);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["step"] == "ready:redis")
    );
    problem(
        &call(Method::GET, &u(&format!("/v1/envs/{name}/logs")), None).await,
        409,
        "remove it first",
    );
    // A live tail while it runs: redis's start-up lines, prefixed with pod/container.
    let mut live = common::http::get(u(&format!("/v1/envs/{name}/logs?follow=true&tail=50")))
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let mut text = String::new();
    while !text.contains("redis/redis | ") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), live.chunk())
            .await
            .expect("a live line")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(live);

    let (s, _, gone) = call(
        Method::DELETE,
        &u("/v1/envs?key=feature%2Fx&wait=true"),
        None,
    )
    .await;
    assert_eq!((s, gone["state"].as_str()), (200, Some("gone")), "{gone}");
    problem(
        &call(
            Method::GET,
            &u(&format!("/v1/envs/{name}/logs?follow=true")),
            None,
        )
        .await,
        409,
        "no running node",
    );
    let logs = common::http::get(u(&format!("/v1/envs/{name}/logs")))
        .await
        .unwrap();
    assert_eq!(logs.headers()["content-type"], "application/gzip");
    assert!(logs.bytes().await.unwrap().len() > 20);
    problem(
        &call(Method::DELETE, &u("/v1/envs?key=feature%2Fx"), None).await,
        404,
        "feature/x",
    );
    problem(
        &call(
            Method::POST,
            &u(&format!("/v1/envs/{name}/extend")),
            Some(r#"{"ttl":"1h"}"#),
        )
        .await,
        409,
        "live",
    );
}

/// 20 creates at once through the API: distinct IPs, all ready (the store's lease
/// transaction and SQLite's busy handling under contention), then all freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_creates_at_once_get_distinct_ips_and_end_ready() {
    let Some((base, _dir)) = server_in(210).await else {
        return;
    };
    let guard = common::Guard::default();
    let creates = (0..20).map(|_| {
        let base = base.clone();
        async move {
            call(
                reqwest::Method::POST,
                &format!("{base}/v1/envs?wait=true&timeout=5m"),
                Some(r#"{"template":"minimal"}"#),
            )
            .await
        }
    });
    let results = futures_util::future::join_all(creates).await;
    let mut ips = std::collections::HashSet::new();
    for (status, _, env) in &results {
        if let Some(id) = env["id"].as_str() {
            guard.watch(id);
        }
        assert_eq!(*status, 201, "{env}");
        assert_eq!(env["state"], "ready", "{env}");
        assert!(
            ips.insert(env["node_ip"].as_str().unwrap().to_string()),
            "IP leased twice: {env}"
        );
    }
    let deletes = results.iter().map(|(_, _, env)| {
        let url = format!("{base}/v1/envs/{}?wait=true", env["id"].as_str().unwrap());
        async move { call(reqwest::Method::DELETE, &url, None).await }
    });
    for (status, _, env) in futures_util::future::join_all(deletes).await {
        assert_eq!(
            (status, env["state"].as_str()),
            (200, Some("gone")),
            "{env}"
        );
    }
}

/// The host engine going away: a create is refused with a 503 problem and nothing is
/// recorded. envd talks to Docker through a socket proxy the test then shuts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_while_the_engine_is_unavailable_is_a_503_problem() {
    if !common::engine_available().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let proxy = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut client, _)) = listener.accept().await {
            conns.spawn(async move {
                let mut docker = tokio::net::UnixStream::connect("/var/run/docker.sock").await?;
                tokio::io::copy_bidirectional(&mut client, &mut docker).await
            });
        }
    });
    let docker_host = format!("unix://{}", sock.display());
    let engine =
        common::engine_with(dir.path(), 213, |cfg| cfg.docker_host = Some(docker_host)).await;
    let base = serve_engine(engine).await;
    let (status, _, _) = call(reqwest::Method::GET, &format!("{base}/v1/envs"), None).await;
    assert_eq!(status, 200);

    // Dropping the accept loop drops every proxied connection with it.
    proxy.abort();
    let _ = proxy.await;
    std::fs::remove_file(&sock).unwrap();
    let r = call(
        reqwest::Method::POST,
        &format!("{base}/v1/envs"),
        Some(r#"{"template":"minimal"}"#),
    )
    .await;
    problem(&r, 503, "Docker Engine");
    let (_, _, list) = call(reqwest::Method::GET, &format!("{base}/v1/envs"), None).await;
    assert_eq!(list, json!([]), "nothing recorded");
}

/// Init files and a clone with data over HTTP: the clone answers with the source's keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn init_files_and_clone_with_data_over_http() {
    use reqwest::Method;
    let Some((base, _dir)) = server_in(245).await else {
        return;
    };
    let bad = json!({"template": "minimal", "init": {"nope": [{"name": "a.redis", "content": "SET a 1"}]}});
    let r = call(
        Method::POST,
        &format!("{base}/v1/envs"),
        Some(&bad.to_string()),
    )
    .await;
    problem(&r, 422, "init.nope");
    let r = call(
        Method::POST,
        &format!("{base}/v1/envs/nope/clone"),
        Some("{}"),
    )
    .await;
    problem(&r, 404, "nope");

    let body = json!({"template": "minimal", "init": {"redis": [{"name": "seed.redis", "content": "SET greeting hi\n"}]}});
    let (status, _, src) = call(
        Method::POST,
        &format!("{base}/v1/envs?wait=true"),
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(
        (status, src["state"].as_str()),
        (201, Some("ready")),
        "{src}"
    );
    let r = call(
        Method::POST,
        &format!("{base}/v1/envs/{}/clone", src["name"].as_str().unwrap()),
        Some(r#"{"with_data": true, "colour": 1}"#),
    )
    .await;
    problem(&r, 422, "colour");
    // Written after the init: only the copy brings it into the clone.
    {
        let url = src["endpoints"]["redis"]["url"].as_str().unwrap();
        let mut c = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("later")
            .arg("yes")
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let (status, _, clone) = call(
        Method::POST,
        &format!(
            "{base}/v1/envs/{}/clone?wait=true",
            src["id"].as_str().unwrap()
        ),
        Some(r#"{"with_data": true}"#),
    )
    .await;
    assert_eq!(
        (status, clone["state"].as_str()),
        (201, Some("ready")),
        "{clone}"
    );
    assert_eq!(clone["clone_of"], src["id"]);
    for env in [&src, &clone] {
        let url = env["endpoints"]["redis"]["url"].as_str().unwrap();
        let mut c = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let v: Option<String> = redis::cmd("GET")
            .arg("greeting")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some("hi"), "{}", env["name"]);
        let v: Option<String> = redis::cmd("GET")
            .arg("later")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some("yes"), "{}", env["name"]);
    }
    for env in [&clone, &src] {
        let url = format!("{base}/v1/envs/{}?wait=true", env["id"].as_str().unwrap());
        let (status, _, v) = call(Method::DELETE, &url, None).await;
        assert_eq!((status, v["state"].as_str()), (200, Some("gone")), "{v}");
    }
    let r = call(
        Method::POST,
        &format!("{base}/v1/envs/{}/clone", src["id"].as_str().unwrap()),
        Some("{}"),
    )
    .await;
    problem(&r, 409, "ready");
}
