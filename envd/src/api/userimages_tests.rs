//! Image overrides, deploys and the forges' hooks through the API on the fake driver:
//! no Docker, no socket (the pulls themselves are tests/userimages.rs's).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{AppState, router};
use crate::catalog::Catalog;
use crate::engine::driver::fake::Readiness;
use crate::engine::{Engine, EngineConfig, FakeDriver};
use crate::hooks::{DeployRule, HookConfig, HooksConfig};
use crate::lifecycle::State;
use crate::service::Limits;
use crate::store::{Env, Store};

const SECRET: &str = "hook-secret-for-tests";

struct App {
    router: axum::Router,
    engine: Arc<Engine>,
    driver: Arc<FakeDriver>,
    _dir: tempfile::TempDir,
}

async fn app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("envd.db").display()
    ))
    .await
    .unwrap();
    let mut cfg = EngineConfig::with_data_dir(dir.path().to_path_buf());
    let hook = HookConfig {
        secret: SECRET.into(),
        // The no-auth caller's owner, who makes the envs here.
        owner: Some("local".into()),
        deploy: BTreeMap::from([(
            "octo-org/shop".to_string(),
            DeployRule {
                pod: "redis".into(),
                image: "registry.lab/shop:{branch}".into(),
            },
        )]),
        ..Default::default()
    };
    cfg.hooks = HooksConfig {
        github: Some(hook.clone()),
        gitlab: Some(hook),
    };
    let driver = Arc::new(FakeDriver::new());
    let engine = Engine::with_driver(store, cfg, driver.clone()).unwrap();
    let state = AppState {
        engine: engine.clone(),
        catalog: Catalog::new(None),
        limits: Limits::default(),
        auth: crate::auth::AuthConfig {
            disabled: true,
            ..Default::default()
        },
        quotas: Arc::new(crate::quota::Admission::new(Default::default())),
    };
    App {
        router: router(state),
        engine,
        driver,
        _dir: dir,
    }
}

async fn send(
    app: &App,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, Value, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .router
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    super::tests::parts(resp).await
}

async fn until(app: &App, id: &str, done: impl Fn(&Env) -> bool) -> Env {
    let t = Instant::now();
    loop {
        let env = app.engine.store.get(id).await.unwrap();
        if done(&env) {
            return env;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "env still {} ({:?})",
            env.state,
            env.error
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A ready `minimal` env (pod `redis`), keyed by the fixtures' branch.
async fn ready_env(app: &App, images: Value) -> Env {
    let body = json!({"template": "minimal", "key": "feature/cart", "images": images});
    let (status, v, _) = send(app, "POST", "/v1/envs", &[], body.to_string().into_bytes()).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    until(app, v["id"].as_str().unwrap(), |e| e.state == State::Ready).await
}

fn image_of(app: &App, env: &Env) -> String {
    app.engine.plan(env).unwrap().pods[0].containers[0]
        .image
        .clone()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/hooks/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn overrides_are_recorded_with_the_env_and_validated() {
    let app = app().await;
    let env = ready_env(&app, json!({"redis": "registry.lab/cache:7"})).await;
    // What a restarted envd renders: the env's own record, not the template's image.
    assert_eq!(image_of(&app, &env), "registry.lab/cache:7");

    for (images, field) in [
        (json!({"web": "x:1"}), "images.web"),
        (json!({"redis/nope": "x:1"}), "images.redis/nope"),
        (json!({"redis": "Not A Ref"}), "images.redis"),
    ] {
        let body = json!({"template": "minimal", "images": images});
        let (status, v, ctype) =
            send(&app, "POST", "/v1/envs", &[], body.to_string().into_bytes()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(ctype, "application/problem+json");
        assert_eq!(v["field"], field, "{v}");
    }
}

#[tokio::test]
async fn a_deploy_is_a_generation_and_a_failed_one_puts_the_old_image_back() {
    let app = app().await;
    let env = ready_env(&app, json!({})).await;
    let uri = format!("/v1/envs/{}/pods/redis?wait=true", env.id);
    let body = json!({"image": "registry.lab/cache:8"})
        .to_string()
        .into_bytes();
    let (status, v, _) = send(&app, "PATCH", &uri, &[], body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["changed"], json!(["image@redis"]));
    let env = app.engine.store.get(&env.id).await.unwrap();
    assert_eq!(image_of(&app, &env), "registry.lab/cache:8");
    assert!(
        app.driver
            .log()
            .iter()
            .any(|l| l.ends_with("change redis restarted"))
    );

    app.driver.set_readiness(
        "redis",
        Readiness::Never("the new build exits at once".into()),
    );
    let body = json!({"image": "registry.lab/cache:broken"})
        .to_string()
        .into_bytes();
    let (status, v, _) = send(&app, "PATCH", &uri, &[], body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["field"], "answers.image@redis", "{v}");
    let env = app.engine.store.get(&env.id).await.unwrap();
    assert_eq!(env.state, State::Ready);
    assert_eq!(
        image_of(&app, &env),
        "registry.lab/cache:8",
        "the previous image is back"
    );

    let (status, v, _) = send(
        &app,
        "PATCH",
        &uri,
        &[],
        json!({"image": "Bad Ref"}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["field"], "image", "{v}");
    let (status, v, _) = send(
        &app,
        "PATCH",
        &uri,
        &[],
        json!({"image": "x:1", "container": "zz"})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["field"], "images.redis/zz", "{v}");
}

#[tokio::test]
async fn a_bad_signature_is_401_and_does_nothing() {
    let app = app().await;
    let env = ready_env(&app, json!({})).await;
    let body = fixture("github-pr-closed.json");
    for headers in [
        vec![("x-github-event", "pull_request")],
        vec![
            ("x-github-event", "pull_request"),
            ("x-hub-signature-256", "sha256=00ff"),
        ],
    ] {
        let (status, v, ctype) =
            send(&app, "POST", "/v1/hooks/github", &headers, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
        assert_eq!(ctype, "application/problem+json");
    }
    let (status, _, _) = send(
        &app,
        "POST",
        "/v1/hooks/gitlab",
        &[
            ("x-gitlab-event", "Merge Request Hook"),
            ("x-gitlab-token", "wrong"),
        ],
        fixture("gitlab-mr-merged.json"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A body changed after signing is refused too.
    let sig = sign(&body);
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let (status, _, _) = send(
        &app,
        "POST",
        "/v1/hooks/github",
        &[
            ("x-github-event", "pull_request"),
            ("x-hub-signature-256", &sig),
        ],
        tampered,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let env = app.engine.store.get(&env.id).await.unwrap();
    assert_eq!(
        (env.state, env.desired),
        (State::Ready, crate::lifecycle::Desired::Running)
    );
}

#[tokio::test]
async fn a_closed_pr_tears_down_the_branch_env_and_a_push_redeploys_it() {
    let app = app().await;
    let env = ready_env(&app, json!({})).await;

    let push = fixture("gitlab-push.json");
    let (status, v, _) = send(
        &app,
        "POST",
        "/v1/hooks/gitlab",
        &[("x-gitlab-event", "Push Hook"), ("x-gitlab-token", SECRET)],
        push,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["action"], "deploy");
    let env = until(&app, &env.id, |e| e.answers.contains_key("image@redis")).await;
    assert_eq!(image_of(&app, &env), "registry.lab/shop:feature-cart");

    let opened = fixture("github-pr-opened.json");
    let (status, v, _) = send(
        &app,
        "POST",
        "/v1/hooks/github",
        &[
            ("x-github-event", "pull_request"),
            ("x-hub-signature-256", &sign(&opened)),
        ],
        opened,
    )
    .await;
    assert_eq!(
        (status, v["action"].as_str()),
        (StatusCode::OK, Some("ignored")),
        "{v}"
    );

    let closed = fixture("github-pr-closed.json");
    let (status, v, _) = send(
        &app,
        "POST",
        "/v1/hooks/github",
        &[
            ("x-github-event", "pull_request"),
            ("x-hub-signature-256", &sign(&closed)),
        ],
        closed.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["action"], "teardown");
    assert_eq!(v["env"], json!(env.id));
    until(&app, &env.id, |e| e.state == State::Gone).await;
    // Delivered again (forges retry): nothing left to tear down.
    let (status, v, _) = send(
        &app,
        "POST",
        "/v1/hooks/github",
        &[
            ("x-github-event", "pull_request"),
            ("x-hub-signature-256", &sign(&closed)),
        ],
        closed,
    )
    .await;
    assert_eq!(
        (status, v["action"].as_str()),
        (StatusCode::OK, Some("ignored")),
        "{v}"
    );
}
