//! The API on the fake driver: `Router` + `oneshot`, no Docker, no socket.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{AppState, EnvView, router};
use crate::lifecycle::{State, Step};
use crate::service::Limits;
use crate::store::Event;

async fn app() -> (axum::Router, crate::engine::tests::Fake) {
    let f = crate::engine::tests::fake().await;
    let state = AppState {
        engine: f.engine.clone(),
        catalog: f.catalog.clone(),
        limits: Limits::default(),
        // The engine is under test here; who may call what is tests/authz.rs's.
        auth: crate::auth::AuthConfig {
            disabled: true,
            ..Default::default()
        },
        quotas: std::sync::Arc::new(crate::quota::Admission::new(Default::default())),
    };
    (router(state), f)
}

async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value, String) {
    let mut req = Request::builder().method(method).uri(uri);
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    parts(resp).await
}

/// A response as status, body (JSON, else the text as a JSON string) and content type.
pub(super) async fn parts(resp: axum::response::Response) -> (StatusCode, Value, String) {
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, v, ctype)
}

#[tokio::test]
async fn create_wait_get_events_delete_and_metrics() {
    let (app, _f) = app().await;
    let (status, v, _) = send(
        &app,
        "POST",
        "/v1/envs?wait=true",
        Some(json!({"template": "minimal"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let env: EnvView = serde_json::from_value(v).unwrap();
    assert_eq!(env.state, State::Ready, "{:?}", env.error);
    assert_eq!(env.step, Step::Ready);
    assert!(env.endpoints.contains_key("redis"));

    let (status, v, _) = send(&app, "GET", &format!("/v1/envs/{}", env.name), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["state"], State::Ready.as_str());

    let (_, v, _) = send(&app, "GET", &format!("/v1/envs/{}/events", env.id), None).await;
    let events: Vec<Event> = serde_json::from_value(v).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == crate::lifecycle::EventKind::Started
                && e.pod.as_deref() == Some("redis")),
        "{events:?}"
    );

    let (status, v, _) = send(
        &app,
        "DELETE",
        &format!("/v1/envs/{}?wait=true", env.id),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["state"], State::Gone.as_str());

    let (status, v, _) = send(&app, "GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let text = v.as_str().unwrap();
    assert!(text.contains("envd_envs{state=\"gone\"} 1"), "{text}");
    assert!(text.contains("envd_envs{state=\"requested\"} 0"), "{text}");
    assert!(
        text.contains("envd_create_duration_seconds_count 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_failing_create_answers_failed_with_the_cause() {
    let (app, f) = app().await;
    f.driver.set_readiness(
        "redis",
        crate::engine::driver::fake::Readiness::Never("NOAUTH".into()),
    );
    let (status, v, _) = send(
        &app,
        "POST",
        "/v1/envs?wait=true",
        Some(json!({"template": "minimal"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let env: EnvView = serde_json::from_value(v).unwrap();
    assert_eq!(env.state, State::Failed);
    assert!(env.error.unwrap_or_default().contains("NOAUTH"));
}

#[tokio::test]
async fn bad_input_is_a_problem_naming_the_field() {
    let (app, _f) = app().await;
    let (status, v, ctype) =
        send(&app, "POST", "/v1/envs", Some(json!({"template": "nope"}))).await;
    assert!(status.is_client_error(), "{status} {v}");
    assert_eq!(ctype, "application/problem+json");
    assert!(
        v["detail"].as_str().unwrap_or("").contains("minimal"),
        "{v}"
    );
    let (status, v, _) = send(&app, "GET", "/v1/envs?state=sleeping", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["field"], "state");
}

#[tokio::test]
async fn exec_and_followed_logs_answer_with_the_drivers_output() {
    let (app, f) = app().await;
    let (_, v, _) = send(
        &app,
        "POST",
        "/v1/envs?wait=true",
        Some(json!({"template": "minimal"})),
    )
    .await;
    let env: EnvView = serde_json::from_value(v).unwrap();
    f.driver.set_exec_exit("redis", "redis", 7);
    let exec = format!("/v1/envs/{}/pods/redis/exec", env.id);
    let (status, v, _) = send(&app, "POST", &exec, Some(json!({"cmd": ["echo", "hi"]}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["stdout"], "echo hi\n");
    assert_eq!(v["stderr"], "");
    assert_eq!(v["exit_code"], 7);
    let (_, v, _) = send(&app, "POST", &exec, Some(json!({"cmd": ["stderr", "x"]}))).await;
    assert_eq!(v["stderr"], "stderr x\n", "{v}");

    let logs = format!("/v1/envs/{}/logs?follow=true&tail=3", env.id);
    let (status, v, ctype) = send(&app, "GET", &logs, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    let text = v.as_str().unwrap_or_default();
    assert!(text.contains("redis/redis | fake log (tail 3)"), "{text}");
}

#[tokio::test]
async fn the_listing_shows_live_envs_by_page_and_the_history_when_asked() {
    let (app, f) = app().await;
    let mut made = vec![];
    for _ in 0..3 {
        let body = Some(json!({"template": "minimal"}));
        let (status, v, _) = send(&app, "POST", "/v1/envs?wait=true", body).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        made.push(v["id"].as_str().unwrap().to_string());
    }
    let gone = made.remove(0);
    let (status, _, _) = send(&app, "DELETE", &format!("/v1/envs/{gone}?wait=true"), None).await;
    assert_eq!(status, StatusCode::OK);
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();
    let (_, live, _) = send(&app, "GET", "/v1/envs", None).await;
    assert_eq!(ids(&live), newest_first);
    let (_, all, _) = send(&app, "GET", "/v1/envs?all=true", None).await;
    assert_eq!(ids(&all).len(), 3);
    let (_, history, _) = send(&app, "GET", "/v1/envs?state=gone", None).await;
    assert_eq!(ids(&history), vec![gone.clone()]);
    // The finished env's view was rendered, not kept; the live ones' are.
    assert_eq!(f.engine.views.len(), 2);

    // Pages of one, each pointing at the next while full.
    let mut uri = "/v1/envs?limit=1".to_string();
    let mut paged = vec![];
    loop {
        let req = Request::get(&uri).body(Body::empty()).unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let next = resp
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_string());
        let (status, v, _) = parts(resp).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        paged.extend(ids(&v));
        let Some(link) = next else { break };
        let (target, rel) = link.split_once("; ").unwrap();
        assert_eq!(rel, "rel=\"next\"");
        uri = target.trim_matches(|c| c == '<' || c == '>').to_string();
        assert!(paged.len() <= 3, "pages never end: {uri}");
    }
    assert_eq!(paged, newest_first);
    for (uri, field) in [
        ("/v1/envs?limit=0", "limit"),
        ("/v1/envs?limit=1001", "limit"),
        ("/v1/envs?cursor=nope", "cursor"),
    ] {
        let (status, v, _) = send(&app, "GET", uri, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {v}");
        assert_eq!(v["field"], field, "{uri}: {v}");
    }
}

#[tokio::test]
async fn a_kept_listing_is_given_again_until_anything_is_written() {
    let (app, f) = app().await;
    let body = Some(json!({"template": "minimal"}));
    let (status, v, _) = send(&app, "POST", "/v1/envs?wait=true", body).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let (_, first, _) = send(&app, "GET", "/v1/envs", None).await;
    let (_, again, ctype) = send(&app, "GET", "/v1/envs", None).await;
    assert_eq!(first, again);
    assert_eq!(ctype, "application/json");
    // A write that wakes nobody (no state change, no event) still shows at once.
    let later = first[0]["expires_at"].as_str().unwrap().to_string();
    let at = chrono::DateTime::parse_from_rfc3339(&later)
        .unwrap()
        .timestamp_millis()
        + 60_000;
    f.engine.store.set_expires_at(&id, at).await.unwrap();
    let (_, after, _) = send(&app, "GET", "/v1/envs", None).await;
    assert_ne!(after[0]["expires_at"], first[0]["expires_at"], "{after}");
    assert_eq!(
        after[0]["expires_at"].as_str(),
        Some(crate::api::rfc3339(at).as_str())
    );
}
