//! Compose import on the real engine: three compose files of the kinds people write are
//! imported through the API (one through the `envd` CLI), run as envs whose services
//! answer at the node IP, then torn down with nothing left.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::Guard;
use common::harness::{Harness, harness};

struct Server {
    base: String,
    h: Harness,
    _templates: tempfile::TempDir,
}

/// envd's API on 127.0.0.1:<random> over the tests' harness (leasing from
/// 10.213.<slice>.0/24 only), with a templates directory to import into.
async fn server(slice: u8) -> Option<Server> {
    let templates = tempfile::tempdir().unwrap();
    let h = harness(slice, Some(templates.path().to_path_buf())).await?;
    let base = common::http::serve_catalog(Arc::clone(&h.engine), h.catalog.clone()).await;
    Some(Server {
        base,
        h,
        _templates: templates,
    })
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/compose")
        .join(rel)
}

async fn call(method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(common::http::admin_token())
        .timeout(Duration::from_secs(600));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

impl Server {
    /// Imports a fixture the way the CLI does, through `POST /v1/templates/import`.
    async fn import(&self, rel: &str, name: &str) -> Value {
        let got = envd::compose::collect(&fixture(rel)).unwrap();
        let body =
            json!({"name": name, "compose": got.compose, "files": got.files, "env": got.env});
        let url = format!("{}/v1/templates/import", self.base);
        let (status, v) = call(reqwest::Method::POST, &url, Some(body)).await;
        assert_eq!(status, 201, "{v}");
        v
    }

    /// Creates an env of `template` and waits until it is ready.
    async fn ready(&self, template: &str) -> (Value, Guard) {
        let url = format!("{}/v1/envs?wait=true&timeout=5m", self.base);
        let body = json!({"template": template});
        let (status, env) = call(reqwest::Method::POST, &url, Some(body)).await;
        assert_eq!(status, 201, "{env}");
        let guard = Guard::default();
        guard.watch(env["id"].as_str().unwrap());
        assert_eq!(env["state"], "ready", "{env}");
        (env, guard)
    }

    async fn teardown(&self, env: &Value) {
        let id = env["id"].as_str().unwrap();
        let url = format!("{}/v1/envs/{id}?wait=true", self.base);
        let (_, gone) = call(reqwest::Method::DELETE, &url, None).await;
        assert_eq!(gone["state"], "gone", "{gone}");
        let env = self.h.engine.store.get(id).await.unwrap();
        self.h.assert_nothing_left(&env).await;
    }
}

async fn get_json(url: &str) -> Value {
    let resp = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.unwrap()
}

fn endpoint(env: &Value, pod: &str) -> String {
    env["endpoints"][pod]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no endpoint for {pod}: {env}"))
        .to_string()
}

async fn mysql_query(url: &str, sql: &str) -> Option<String> {
    use mysql_async::prelude::Queryable;
    let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
    let v: Option<String> = conn.query_first(sql).await.unwrap();
    conn.disconnect().await.unwrap();
    v
}

async fn redis_ping(url: &str) -> String {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("PING").query_async(&mut conn).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn web_app_with_mysql_and_redis() {
    let Some(srv) = server(221).await else { return };
    let imported = srv.import("shop/docker-compose.yml", "shop").await;
    assert_eq!(imported["version"], "1");
    let notes = imported["notes"].to_string();
    assert!(notes.contains("mysql:8 -> envd/mysql:latest"), "{notes}");

    let (env, _guard) = srv.ready("shop").await;
    let ip = env["node_ip"].as_str().unwrap();
    // The web app reaches MySQL by its compose name `shop_db` and Redis as `cache`, and
    // is published on 8000 -> its port 8080 as compose had it.
    let health = get_json(&format!("http://{ip}:8000/")).await;
    assert_eq!(health, json!({"products": 2, "redis": true}));
    let db = endpoint(&env, "shop-db");
    assert_eq!(
        mysql_query(&db, "SELECT name FROM products WHERE id = 1").await,
        Some("teapot".into())
    );
    assert_eq!(redis_ping(&endpoint(&env, "cache")).await, "PONG");
    srv.teardown(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn service_with_mongo() {
    let Some(srv) = server(222).await else { return };
    srv.import("notes/compose.yaml", "notes").await;
    // A second import of the same name is the next version, and the latest is what runs.
    let again = srv.import("notes/compose.yaml", "notes").await;
    assert_eq!(again["version"], "2");

    let (env, _guard) = srv.ready("notes").await;
    let ip = env["node_ip"].as_str().unwrap();
    assert_eq!(env["template"], "notes:2");
    let first = get_json(&format!("http://{ip}:8081/")).await;
    let second = get_json(&format!("http://{ip}:8081/")).await;
    assert_eq!(
        first["notes"].as_i64().unwrap() + 1,
        second["notes"],
        "{second}"
    );

    let uri = format!(
        "{}&serverSelectionTimeoutMS=5000&directConnection=true",
        endpoint(&env, "mongo")
    );
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let count = client
        .database("notes")
        .collection::<mongodb::bson::Document>("notes")
        .count_documents(mongodb::bson::doc! {})
        .await
        .unwrap();
    assert_eq!(count, 2);
    client.shutdown().immediate(true).await;
    srv.teardown(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn healthchecks_and_depends_on_conditions_through_the_cli() {
    let Some(srv) = server(223).await else { return };
    let file = fixture("orders/docker-compose.yml");
    let out = tokio::process::Command::new(common::envd_bin())
        .args([
            "templates",
            "import",
            file.to_str().unwrap(),
            "--name",
            "orders",
        ])
        .env("ENVD_URL", &srv.base)
        .env("ENVD_TOKEN", common::http::admin_token())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("template orders:1"), "{stdout}");
    assert!(
        stdout.contains("healthcheck replaced by envd's native mysql check"),
        "{stdout}"
    );
    assert!(
        stdout.contains("mariadb:11 -> envd/mysql:latest"),
        "{stdout}"
    );

    let (env, _guard) = srv.ready("orders").await;
    let ip = env["node_ip"].as_str().unwrap();
    // The app reads the migrated row once at start: it answers only if it started after
    // the migration completed, which ran only once the database was ready.
    let health = get_json(&format!("http://{ip}:8080/health")).await;
    assert_eq!(health, json!({"first_order": "teapot", "redis": true}));
    let id = env["id"].as_str().unwrap();
    let events = srv.h.engine.store.events(id, 0).await.unwrap();
    let steps: Vec<&str> = events.iter().map(|e| e.step.as_str()).collect();
    let at = |s: &str| {
        steps
            .iter()
            .position(|x| *x == s)
            .unwrap_or_else(|| panic!("no event {s}: {steps:?}"))
    };
    assert!(at("ready:orders-db") < at("started:migrate"), "{steps:?}");
    assert!(at("ready:orders-db") < at("started:app"), "{steps:?}");
    assert!(at("ready:redis") < at("started:app"), "{steps:?}");
    assert!(at("started:migrate") < at("started:app"), "{steps:?}");
    srv.teardown(&env).await;
}
