//! Typed questions through the real API: the catalog lists them (password defaults masked,
//! latest version by number), bad answers come back as one 422 naming every field, and a
//! password shows nowhere but inside the env's endpoint URLs.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

mod common;
use common::http::{Server, call, problem, serve};

const SLICE: u8 = 220;

use common::TYPED;

/// Its readiness check fails quoting the password, as a careless one might.
const LEAKY: &str = r#"name: leaky
version: "1"
deadline: 1m
variables:
  - { variable: pw, type: password, required: true }
pods:
  - name: cache
    containers:
      - { name: redis, image: envd/redis:latest }
    ready: { kind: exec, command: [sh, -c, "echo wrong password {{ pw }}; exit 1"], deadline: 3s }
"#;

/// A catalog with `typed` at versions 1, 9 and 10 (only 10 is `TYPED`), and `leaky`.
fn catalog() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let old = TYPED
        .replace("version: \"10\"", "version: \"VER\"")
        .replace("Every question type.", "An old one.");
    for (name, version, text) in [
        ("typed", "1", old.replace("VER", "1")),
        ("typed", "9", old.replace("VER", "9")),
        ("typed", "10", TYPED.to_string()),
        ("leaky", "1", LEAKY.to_string()),
    ] {
        let d = dir.path().join(name).join(version);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("template.yaml"), text).unwrap();
    }
    dir
}

async fn server() -> Option<(Server, tempfile::TempDir)> {
    let templates = catalog();
    let s = serve(SLICE, Some(templates.path().to_path_buf())).await?;
    Some((s, templates))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_catalog_lists_questions_and_bad_answers_are_all_named_in_one_422() {
    let Some((s, _templates)) = server().await else {
        return;
    };
    let u = |p: &str| format!("{}{p}", s.base);

    let (status, _, all) = call(Method::GET, &u("/v1/templates"), None).await;
    assert_eq!(status, 200);
    let typed = all
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "typed")
        .unwrap();
    assert_eq!(typed["versions"], json!(["1", "9", "10"]));
    assert_eq!(typed["description"], "Every question type.", "latest is 10");
    let q = |name: &str| {
        typed["variables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["variable"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        q("redis_password"),
        json!({"variable": "redis_password", "label": "Redis password", "description": "",
               "type": "password", "required": false, "default": "******", "min_length": 8})
    );
    assert_eq!(
        (
            &q("replicas")["type"],
            &q("replicas")["min"],
            &q("replicas")["max"]
        ),
        (&json!("int"), &json!(1), &json!(5))
    );
    assert_eq!(q("debug")["type"], "bool");
    assert_eq!(q("flavour")["options"], json!(["plain", "tls"]));
    assert_eq!(
        (&q("ca")["type"], &q("ca")["show_if"], &q("ca")["required"]),
        (&json!("multiline"), &json!("flavour=tls"), &json!(true))
    );
    assert_eq!(q("team")["pattern"], "[a-z]+");
    assert_eq!(q("api_key")["generate"], true);
    assert!(
        !all.to_string().contains("d3faultPw"),
        "a password default leaked"
    );
    // The built-ins' password defaults are masked too.
    assert!(!all.to_string().contains("envd-root"), "{all}");

    let bad = json!({"template": "typed", "answers": {
        "redis_password": "sh0rt", "replicas": "9", "debug": "maybe", "flavour": "tls",
        "team": "QA!", "typo": "x"}});
    let r = call(Method::POST, &u("/v1/envs"), Some(&bad.to_string())).await;
    problem(&r, 422, "answers.replicas");
    let fields: Vec<&str> = r.2["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "answers.typo",
            "answers.redis_password",
            "answers.replicas",
            "answers.debug",
            "answers.ca",
            "answers.team"
        ]
    );
    let detail = r.2["detail"].as_str().unwrap();
    for f in &fields {
        assert!(detail.contains(f), "detail lacks {f}: {detail}");
    }
    assert!(
        r.2["errors"][2]["reason"]
            .as_str()
            .unwrap()
            .contains("above the maximum 5")
    );
    assert!(
        !r.2.to_string().contains("sh0rt"),
        "a bad password was echoed: {}",
        r.2
    );
    // Nothing was stored.
    let (_, _, envs) = call(Method::GET, &u("/v1/envs"), None).await;
    assert_eq!(envs, json!([]));
    // The CLI prints every bad field on its own line and exits 2 (rejected input).
    let (code, _, err) = common::envd(
        &s.base,
        &[
            "create",
            "-t",
            "typed",
            "--set",
            "replicas=0",
            "--set",
            "flavour=tls",
        ],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("\n  answers.replicas: 0 is below the minimum 1\n  answers.ca: "),
        "{err}"
    );
    let (code, out, err) = common::envd(&s.base, &["templates"]).await;
    assert_eq!(code, 0, "{err}");
    let line = out.lines().find(|l| l.contains("--set replicas=")).unwrap();
    assert!(line.contains("int") && line.contains("1..5"), "{out}");
    assert!(
        out.contains("--set redis_password=******") && !out.contains("d3faultPw"),
        "{out}"
    );
    assert!(
        out.contains("if flavour=tls") && out.contains("one of plain|tls"),
        "{out}"
    );

    // One bad field still gets the array, and `field` names it.
    let r = call(
        Method::POST,
        &u("/v1/envs"),
        Some(r#"{"template":"typed:9","answers":{"debug":"1"}}"#),
    )
    .await;
    problem(&r, 422, "answers.debug");
    assert_eq!(
        (&r.2["field"], r.2["errors"].as_array().unwrap().len()),
        (&json!("answers.debug"), 1)
    );
}

/// Creates `body` and waits until it settles; the guard frees it should the test panic.
async fn create(s: &Server, guard: &common::Guard, body: Value) -> Value {
    let url = format!("{}/v1/envs?wait=true&timeout=3m", s.base);
    let (status, _, env) = call(Method::POST, &url, Some(&body.to_string())).await;
    if let Some(id) = env["id"].as_str() {
        guard.watch(id);
    }
    assert_eq!(status, 201, "{env}");
    env
}

/// Waits until the env is failed or gone, by the API.
async fn settled(s: &Server, id: &str) -> Value {
    let t = std::time::Instant::now();
    loop {
        let (_, _, env) = call(Method::GET, &format!("{}/v1/envs/{id}", s.base), None).await;
        if env["state"] == "gone" || env["state"] == "failed" {
            return env;
        }
        assert!(t.elapsed() < Duration::from_secs(180), "not freed: {env}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passwords_show_only_inside_endpoint_urls() {
    let Some((s, _templates)) = server().await else {
        return;
    };
    let guard = common::Guard::default();
    let pw = "Sup3r-Secret!pw";
    let env = create(
        &s,
        &guard,
        json!({"template": "typed", "answers": {"redis_password": pw, "replicas": "3"}}),
    )
    .await;
    assert_eq!(env["state"], "ready", "{env}");
    assert_eq!(env["template"], "typed:10");
    let id = env["id"].as_str().unwrap().to_string();
    let ip = env["node_ip"].as_str().unwrap();
    // The generated key is in the URL only; the stored answers show both masked.
    let url = env["endpoints"]["redis"]["url"]
        .as_str()
        .unwrap()
        .to_string();
    let prefix = format!("redis://:{pw}@{ip}:6379/0?key=");
    assert!(url.starts_with(&prefix), "{url}");
    let key = url[prefix.len()..].to_string();
    assert_eq!(key.len(), 24, "{url}");
    assert_eq!(
        env["answers"],
        json!({"redis_password": "******", "replicas": "3", "api_key": "******"})
    );
    let (_, _, again) = call(Method::GET, &format!("{}/v1/envs/{id}", s.base), None).await;
    assert_eq!(
        again["endpoints"]["redis"]["url"], url,
        "generated once, stable"
    );
    let (_, _, listed) = call(Method::GET, &format!("{}/v1/envs", s.base), None).await;
    let (_, _, events) = call(
        Method::GET,
        &format!("{}/v1/envs/{id}/events", s.base),
        None,
    )
    .await;
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["step"] == "ready:redis")
    );
    for (what, v) in [("env", &again), ("list", &listed), ("events", &events)] {
        let text = v.to_string().replace(&url, "");
        assert!(
            !text.contains(pw) && !text.contains(&key),
            "{what} shows a password: {text}"
        );
    }

    // A failure that quotes the password is recorded masked.
    let leaky = "L3aky-pw-42";
    let failed = create(
        &s,
        &guard,
        json!({"template": "leaky", "answers": {"pw": leaky}}),
    )
    .await;
    let failed_id = failed["id"].as_str().unwrap().to_string();
    let failed = settled(&s, &failed_id).await;
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("wrong password ******"), "{error}");
    let (_, _, events) = call(
        Method::GET,
        &format!("{}/v1/envs/{failed_id}/events", s.base),
        None,
    )
    .await;
    let text = format!("{failed}{events}");
    assert!(text.contains("******") && !text.contains(leaky), "{text}");

    let (status, _, gone) = call(
        Method::DELETE,
        &format!("{}/v1/envs/{id}?wait=true", s.base),
        None,
    )
    .await;
    assert_eq!(
        (status, gone["state"].as_str()),
        (200, Some("gone")),
        "{gone}"
    );
    common::harness::assert_nothing_left(&s.engine, &id).await;
    common::harness::assert_nothing_left(&s.engine, &failed_id).await;
}
