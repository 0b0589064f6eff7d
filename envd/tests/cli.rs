//! The CLI as a CI job uses it: the real `envd` binary against a real API and engine.

mod common;
use common::envd;

fn dotenv(out: &str) -> std::collections::HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ci_key_workflow_with_dotenv_and_exit_codes() {
    if !common::engine_available().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let engine = common::engine(dir.path(), 211).await;
    let server = common::http::serve_engine(engine).await;
    let guard = common::Guard::default();

    let first = envd(
        &server,
        &[
            "create",
            "-t",
            "minimal",
            "--key",
            "br/1",
            "--set",
            "redis_password=pw1",
            "--wait",
            "-o",
            "dotenv",
        ],
    )
    .await;
    let vars = dotenv(&first.1);
    if let Some(id) = vars.get("ENV_ID") {
        guard.watch(id);
    }
    assert_eq!(first.0, 0, "{first:?}");
    let ip = &vars["NODE_IP"];
    assert_eq!(vars["REDIS_URL"], format!("redis://:pw1@{ip}:6379/0"));
    let client = redis::Client::open(vars["REDIS_URL"].as_str()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
    assert_eq!(pong, "PONG");

    let again = envd(
        &server,
        &["create", "-t", "minimal", "--key", "br/1", "-o", "dotenv"],
    )
    .await;
    assert_eq!(
        dotenv(&again.1)["ENV_ID"],
        vars["ENV_ID"],
        "same key, same env"
    );

    let recreated = envd(
        &server,
        &[
            "create",
            "-t",
            "minimal",
            "--key",
            "br/1",
            "--recreate",
            "--wait",
            "-o",
            "dotenv",
        ],
    )
    .await;
    let new_vars = dotenv(&recreated.1);
    if let Some(id) = new_vars.get("ENV_ID") {
        guard.watch(id);
    }
    assert_eq!(recreated.0, 0, "{recreated:?}");
    assert_ne!(
        new_vars["ENV_ID"], vars["ENV_ID"],
        "recreate makes a new env"
    );

    let rm = envd(&server, &["rm", "--key", "br/1", "--wait"]).await;
    assert_eq!(rm.0, 0, "{rm:?}");
    assert!(rm.1.contains("gone"), "{rm:?}");
    // The replaced env goes by itself.
    let t = std::time::Instant::now();
    loop {
        let got = envd(&server, &["get", &vars["ENV_ID"], "-o", "json"]).await;
        let v: serde_json::Value = serde_json::from_str(&got.1).unwrap();
        if v["state"] == "gone" {
            break;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(60),
            "the replaced env is still {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Exit codes: 2 rejected input, 3 unreachable.
    let bad = envd(&server, &["create", "-t", "minimal", "--set", "nope=1"]).await;
    assert_eq!(bad.0, 2, "{bad:?}");
    assert!(bad.2.contains("answers.nope"), "{bad:?}");
    let down = envd("http://127.0.0.1:9", &["ls"]).await;
    assert_eq!(down.0, 3, "{down:?}");
    assert!(down.2.contains("cannot reach envd"), "{down:?}");
}
