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
    app_with(|_| {}).await
}

async fn app_with(tune: impl FnOnce(&mut EngineConfig)) -> App {
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
    tune(&mut cfg);
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
    // Each delivery is in the audit trail: the hook, the event and branch, what it did.
    let audit = app
        .engine
        .store
        .audit(&crate::store::AuditFilter {
            limit: 20,
            ..Default::default()
        })
        .await
        .unwrap();
    let hooks: Vec<String> = audit
        .iter()
        .filter(|a| a.actor.starts_with("hook:"))
        .map(|a| {
            format!(
                "{} {} {}",
                a.actor,
                a.status,
                a.subject.clone().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(hooks.len(), 4, "{hooks:#?}");
    let teardown = format!("teardown env {}", env.id);
    assert!(
        hooks.iter().any(
            |h| h.starts_with("hook:github 202 pull_request branch `feature/cart`")
                && h.contains(&teardown)
        ),
        "{hooks:#?}"
    );
    assert!(
        hooks
            .iter()
            .any(|h| h.starts_with("hook:gitlab 202 Push Hook branch `feature/cart`: deploy")),
        "{hooks:#?}"
    );
    let all = format!("{hooks:?}");
    assert!(!all.contains(SECRET) && !all.contains("sha256="), "{all}");
}

#[tokio::test]
async fn a_refused_delivery_is_audited_without_its_signature() {
    let app = app().await;
    let body = fixture("github-pr-closed.json");
    let (status, _, _) = send(
        &app,
        "POST",
        "/v1/hooks/github",
        &[
            ("x-github-event", "pull_request"),
            ("x-hub-signature-256", "sha256=00ff"),
        ],
        body,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let audit = app
        .engine
        .store
        .audit(&crate::store::AuditFilter {
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    let a = audit.iter().find(|a| a.actor == "hook:github").unwrap();
    assert_eq!(a.status, 401);
    let subject = a.subject.clone().unwrap_or_default();
    assert!(subject.starts_with("pull_request: refused"), "{subject}");
    assert!(!subject.contains("00ff"), "{subject}");
}

/// A `docker save` archive: per image its names and layers (`(config, layers)` made up).
fn save_archive(images: &[(&str, &[&[u8]])]) -> Vec<u8> {
    use sha2::Digest;
    let mut b = tar::Builder::new(vec![]);
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    let mut manifest = vec![];
    for (tag, layers) in images {
        let mut paths = vec![];
        for l in *layers {
            let p = format!("{}/layer.tar", hex::encode(sha2::Sha256::digest(l)));
            add(&p, l);
            paths.push(p);
        }
        let cfg = format!("{}.json", hex::encode(sha2::Sha256::digest(tag.as_bytes())));
        add(&cfg, format!(r#"{{"image":"{tag}"}}"#).as_bytes());
        manifest.push(json!({"Config": cfg, "RepoTags": [tag], "Layers": paths}));
    }
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    b.into_inner().unwrap()
}

fn blob_path(app: &App, data: &[u8]) -> std::path::PathBuf {
    use sha2::Digest;
    let d = format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)));
    app.engine.registry.blobs.path(&d).unwrap()
}

#[tokio::test]
async fn shared_layers_count_once_and_removed_uploads_free_their_blobs() {
    let base = vec![7u8; 4000];
    let (a1, b1, c1) = (vec![1u8; 100], vec![2u8; 100], vec![3u8; 2000]);
    // Room for the base once and both small layers, not for the base twice.
    let app = app_with(|cfg| cfg.registry.quota = 4500).await;
    let archive = save_archive(&[("shop:a", &[&base, &a1]), ("shop:b", &[&base, &b1])]);
    let (status, v, _) = send(&app, "POST", "/v1/images", &[], archive).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let ids: BTreeMap<String, String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["ref"].as_str().unwrap().to_string(),
                i["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();

    // A third image's new layer would pass the quota: refused, its blob not kept.
    let archive = save_archive(&[("shop:c", &[&base, &c1])]);
    let (status, v, _) = send(&app, "POST", "/v1/images", &[], archive).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("quota"), "{v}");
    assert!(
        !blob_path(&app, &c1).exists(),
        "a refused push's blob is removed"
    );
    assert!(blob_path(&app, &base).exists());

    remove_image(&app, &ids["shop:a"]).await;
    assert!(!blob_path(&app, &a1).exists(), "only shop:a held it");
    assert!(
        blob_path(&app, &base).exists(),
        "shop:b still holds the base"
    );
    assert!(blob_path(&app, &b1).exists());

    remove_image(&app, &ids["shop:b"]).await;
    for l in [&base, &b1] {
        assert!(!blob_path(&app, l).exists());
    }
    let left: Vec<_> = std::fs::read_dir(app.engine.cfg.data_dir.join("registry/blobs/sha256"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "configs and manifests go too: {left:?}");
}

#[tokio::test]
async fn a_pull_in_the_node_is_pushed_to_watchers_as_it_goes() {
    use crate::engine::registry::progress::{LayerPhase, LayerUpdate};
    let app = app().await;
    let up = |layer: &str, phase, current, total| LayerUpdate {
        layer: layer.into(),
        phase,
        current,
        total,
    };
    app.driver.script_pull(
        "registry.lab/cache:9",
        vec![
            up("base", LayerPhase::Present, 0, 0),
            up("new", LayerPhase::Downloading, 120, 391),
            up("new", LayerPhase::Done, 0, 0),
        ],
    );
    let mut pulls = app.engine.store.subscribe_pulls();
    let env = ready_env(&app, json!({"redis": "registry.lab/cache:9"})).await;
    let mut seen = vec![];
    while let Ok(p) = pulls.try_recv() {
        seen.push(p);
    }
    let last = seen.last().expect("progress pushed");
    assert_eq!(
        (last.env_id.as_str(), last.pod.as_str(), last.image.as_str()),
        (env.id.as_str(), "redis", "registry.lab/cache:9")
    );
    assert!(last.finished);
    assert_eq!(
        (last.done, last.total, last.layers_done, last.layers),
        (391, 391, 2, 2)
    );

    // A watcher of the env's events stream gets pulls as `progress` messages.
    let req = Request::builder()
        .uri(format!("/v1/envs/{}/events", env.id))
        .header("accept", "text/event-stream")
        .body(Body::empty())
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut p = last.clone();
    p.done = 120;
    p.finished = false;
    let store = app.engine.store.clone();
    let pushing = tokio::spawn(async move {
        loop {
            store.push_pull(&p).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut seen = String::new();
    let t = Instant::now();
    while !seen.contains("event: progress") {
        assert!(t.elapsed() < Duration::from_secs(20), "no progress: {seen}");
        use http_body_util::BodyExt;
        let Some(Ok(frame)) = body.frame().await else {
            panic!("the stream ended: {seen}");
        };
        if let Some(d) = frame.data_ref() {
            seen.push_str(&String::from_utf8_lossy(d));
        }
    }
    pushing.abort();
    let block = &seen[seen.find("event: progress").unwrap()..];
    assert!(block.contains(r#""done":120"#), "{block}");
}

/// `DELETE /v1/images/{id}` as the test's user, which must answer 204.
async fn remove_image(app: &App, id: &str) {
    let (status, _, _) = send(app, "DELETE", &format!("/v1/images/{id}"), &[], vec![]).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}
