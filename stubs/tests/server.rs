//! The sidecar served on 127.0.0.1:0: the log archive, a stub, the 404, the request log,
//! and the binary refusing a bad stubs file.

use std::io::Read;

use flate2::read::GzDecoder;
use stubs::{AppState, Stubs, router};

const STUBS: &str = r#"
- method: GET
  path: /v1/users/42
  headers: {x-stub: "yes"}
  json: {id: 42, name: Ada}
- method: POST
  path: /v1/pay/*
  status: 201
  body: created
"#;

async fn serve(stubs: Stubs, log_dir: std::path::PathBuf) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, router(AppState::new(stubs, log_dir)))
            .await
            .expect("serve");
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn serves_archive_stubs_and_request_log() {
    let logs = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(logs.path().join("mysql")).expect("mkdir");
    std::fs::write(logs.path().join("mysql/error.log"), b"InnoDB: ready\n").expect("write");
    std::fs::create_dir_all(logs.path().join("app")).expect("mkdir");
    // Bigger than one channel chunk, so the archive really streams.
    let big: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(logs.path().join("app/app.log"), &big).expect("write");

    let base = serve(
        Stubs::parse(STUBS, "stubs.yaml").expect("stubs"),
        logs.path().to_owned(),
    )
    .await;
    let http = reqwest::Client::new();

    let r = http
        .get(format!("{base}/_envd/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "ok");

    // The archive: paths relative to the log directory, contents intact.
    let r = http
        .get(format!("{base}/_envd/logs.tar.gz"))
        .send()
        .await
        .expect("logs");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/gzip");
    let bytes = r.bytes().await.expect("archive");
    let mut archive = tar::Archive::new(GzDecoder::new(&bytes[..]));
    let mut files = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read");
        files.push((path, data));
    }
    let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["app", "app/app.log", "mysql", "mysql/error.log"]);
    assert_eq!(files[1].1, big);
    assert_eq!(files[3].1, b"InnoDB: ready\n");

    // A stub, with its headers and JSON body.
    let r = http
        .get(format!("{base}/v1/users/42?verbose=1"))
        .send()
        .await
        .expect("stub");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-stub"], "yes");
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: serde_json::Value =
        serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
    assert_eq!(v, serde_json::json!({"id": 42, "name": "Ada"}));

    // A prefix stub.
    let r = http
        .post(format!("{base}/v1/pay/abc"))
        .send()
        .await
        .expect("stub");
    assert_eq!(r.status(), 201);
    assert_eq!(r.text().await.expect("body"), "created");

    // No stub: 404 naming the request and listing the stubs.
    let r = http
        .delete(format!("{base}/v1/users/42"))
        .send()
        .await
        .expect("404");
    assert_eq!(r.status(), 404);
    let v: serde_json::Value =
        serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
    assert_eq!(v["method"], "DELETE");
    assert_eq!(v["path"], "/v1/users/42");
    assert_eq!(v["stubs"][0]["path"], "/v1/users/42");
    assert_eq!(v["stubs"][1]["path"], "/v1/pay/*");

    // The request log has the three stub requests, not the sidecar's own.
    let r = http
        .get(format!("{base}/_envd/requests"))
        .send()
        .await
        .expect("requests");
    let v: serde_json::Value =
        serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
    let got: Vec<(String, String, u64)> = v
        .as_array()
        .expect("list")
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap_or_default().to_owned(),
                r["path"].as_str().unwrap_or_default().to_owned(),
                r["status"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("GET".into(), "/v1/users/42".into(), 200),
            ("POST".into(), "/v1/pay/abc".into(), 201),
            ("DELETE".into(), "/v1/users/42".into(), 404),
        ]
    );
    assert_eq!(v[0]["query"], "verbose=1");
    assert!(v[0]["time"].as_str().unwrap_or_default().ends_with('Z'));

    let r = http
        .delete(format!("{base}/_envd/requests"))
        .send()
        .await
        .expect("clear");
    assert_eq!(r.status(), 204);
    let r = http
        .get(format!("{base}/_envd/requests"))
        .send()
        .await
        .expect("requests");
    assert_eq!(r.text().await.expect("body"), "[]");
}

#[test]
fn binary_refuses_a_bad_stubs_file_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("stubs.yaml");
    std::fs::write(&config, "- {method: GET, path: /a, status: 1000}\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stubs"))
        .env("STUBS_CONFIG", &config)
        .env("STUBS_LISTEN", "127.0.0.1:0")
        .output()
        .expect("run stubs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("field `status`"), "{stderr}");
    assert!(stderr.contains("stubs.yaml"), "{stderr}");
}
