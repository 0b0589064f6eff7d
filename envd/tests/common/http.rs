//! envd's real API on loopback for tests, and helpers to call it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envd::api::{AppState, router};
use envd::catalog::Catalog;
use envd::engine::Engine;
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

pub async fn serve_catalog(engine: Arc<Engine>, catalog: Catalog) -> String {
    let limits = Limits {
        default_ttl: Duration::from_secs(600),
        max_ttl: Duration::from_secs(7200),
        dirs_roots: engine.cfg.dirs_roots.clone(),
    };
    let app = router(AppState {
        engine,
        catalog,
        limits,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// [`serve`] with the built-in templates only.
pub async fn server_in(slice: u8) -> Option<(String, tempfile::TempDir)> {
    serve(slice, None).await.map(|s| (s.base, s._dir))
}

/// Status, content type and JSON body (Null when not JSON).
pub async fn call(method: reqwest::Method, url: &str, body: Option<&str>) -> (u16, String, Value) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .timeout(Duration::from_secs(300));
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
