//! envd's real API on loopback for tests, and helpers to call it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envd::api::{AppState, router};
use envd::auth::AuthConfig;
use envd::catalog::Catalog;
use envd::engine::Engine;
use envd::quota::{Admission, Quota, Quotas};
use envd::service::Limits;
use serde_json::Value;

/// A running API: its base URL and engine; the store and archives live in `_dir`.
pub struct Server {
    pub base: String,
    pub engine: Arc<Engine>,
    pub _dir: tempfile::TempDir,
}

/// envd's API on 127.0.0.1:<random>, leasing from 10.213.<slice>.0/24 only, with the
/// built-in templates plus those of `templates`. `None` when the engine is unavailable
/// (a failure under CI=true).
pub async fn serve(slice: u8, templates: Option<PathBuf>) -> Option<Server> {
    if !super::engine_available().await {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let engine = super::engine(dir.path(), slice).await;
    let base = serve_catalog(Arc::clone(&engine), Catalog::new(templates)).await;
    Some(Server {
        base,
        engine,
        _dir: dir,
    })
}

/// The API over `engine` with the built-in templates; its base URL.
pub async fn serve_engine(engine: Arc<Engine>) -> String {
    serve_catalog(engine, Catalog::new(None)).await
}

/// The bearer token every test's envd knows as an admin's (owner `admin`): the
/// in-process APIs record it, `envd serve` finds it in its data dir's admin-token.
pub fn admin_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(envd::auth::new_token)
}

/// Records [`admin_token`] in the engine's store (once).
pub async fn know_admin(engine: &Engine) {
    let hash = envd::auth::hash(admin_token());
    if engine.store.token_by_hash(&hash).await.unwrap().is_none() {
        engine
            .store
            .insert_token(&envd::store::NewToken {
                id: &uuid::Uuid::now_v7().to_string(),
                name: &format!("test-admin-{}", &hash[..8]),
                hash: &hash,
                role: "admin",
                owner: "admin",
                expires_at: None,
            })
            .await
            .unwrap();
    }
}

/// Quotas no ordinary test reaches.
pub fn roomy_quotas() -> Quotas {
    Quotas {
        default: Quota {
            max_envs: 1000,
            max_cpus: 1e6,
            max_memory: 1 << 50,
            creates_per_minute: 10_000,
        },
        ..Default::default()
    }
}

pub async fn serve_catalog(engine: Arc<Engine>, catalog: Catalog) -> String {
    serve_with(engine, catalog, AuthConfig::default(), roomy_quotas()).await
}

/// The API with this access configuration and these quotas, on 127.0.0.1:<random>.
pub async fn serve_with(
    engine: Arc<Engine>,
    catalog: Catalog,
    auth: AuthConfig,
    quotas: Quotas,
) -> String {
    serve_on("127.0.0.1:0", engine, catalog, auth, quotas).await
}

/// [`serve_with`] on `addr` (e.g. `0.0.0.0:0` to be reached from another address).
pub async fn serve_on(
    addr: &str,
    engine: Arc<Engine>,
    catalog: Catalog,
    auth: AuthConfig,
    quotas: Quotas,
) -> String {
    know_admin(&engine).await;
    let limits = Limits {
        default_ttl: Duration::from_secs(600),
        max_ttl: Duration::from_secs(7200),
        dirs_roots: engine.cfg.dirs_roots.clone(),
    };
    let app = router(AppState {
        engine,
        catalog,
        limits,
        auth,
        quotas: Arc::new(Admission::new(quotas)),
    })
    .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// GET with the admin token.
pub async fn get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(admin_token())
        .send()
        .await
}

/// [`serve`] with the built-in templates only.
pub async fn server_in(slice: u8) -> Option<(String, tempfile::TempDir)> {
    serve(slice, None).await.map(|s| (s.base, s._dir))
}

/// Status, content type and JSON body (Null when not JSON), as the admin.
pub async fn call(method: reqwest::Method, url: &str, body: Option<&str>) -> (u16, String, Value) {
    call_as(Some(admin_token()), method, url, body).await
}

/// [`call`] with this token, or none.
pub async fn call_as(
    token: Option<&str>,
    method: reqwest::Method,
    url: &str,
    body: Option<&str>,
) -> (u16, String, Value) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .timeout(Duration::from_secs(300));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    // A followed log never ends: its answer is the status and type alone.
    if url.contains("follow=true") && status == 200 {
        return (status, ctype, Value::Null);
    }
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        ctype,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Asserts an RFC 7807 problem with this status whose detail (or field) names `field`.
pub fn problem(r: &(u16, String, Value), status: u16, field: &str) {
    assert_eq!(r.0, status, "{:?}", r.2);
    assert_eq!(r.1, "application/problem+json");
    assert_eq!(r.2["status"], status);
    assert!(r.2["title"].is_string());
    let detail = r.2["detail"].as_str().unwrap();
    assert!(
        detail.contains(field) || r.2["field"] == field,
        "detail should name `{field}`: {detail}"
    );
}

/// Creates an env of `template` over the API as the admin; its id.
#[allow(dead_code)]
pub async fn create_env(base: &str, template: &str) -> String {
    let created: Value = reqwest::Client::new()
        .post(format!("{base}/v1/envs"))
        .bearer_auth(admin_token())
        .json(&serde_json::json!({ "template": template }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("not created: {created}"))
        .to_string()
}

/// `GET /v1/envs/{id}` over `base`, as the admin.
#[allow(dead_code)]
pub async fn env_json(base: &str, id: &str) -> Value {
    get(format!("{base}/v1/envs/{id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
