//! Who may do what, over real HTTP on a real engine: every route of /openapi.json ×
//! {no token, bad token, expired, revoked, viewer, user of owner A, user of owner B, ci,
//! admin} gets the 401/403/404/2xx the policy below says. The walk is generated from the
//! OpenAPI document: a route without an entry here (or whose documented roles differ)
//! fails. Also: a request from another address without a token (401), cross-origin
//! refusals, and the audit trail. Slice 246.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use envd::auth::{self, AuthConfig, Role};
use envd::catalog::Catalog;
use envd::service::{self, CreateRequest, Limits};
use envd::store::{Created, NewToken, Store, now_ms};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

mod common;
use common::http::{admin_token, call, call_as, roomy_quotas, serve_on, serve_with};

const A: &str = "team-a";
const B: &str = "team-b";

/// One caller of the walk.
struct Who {
    label: &'static str,
    token: Option<String>,
    /// Role and owner of a valid token.
    role: Option<Role>,
    owner: &'static str,
}

/// What the policy says a route admits.
struct Policy {
    /// Reachable without a token.
    open: bool,
    roles: &'static [Role],
    /// Acts on one env of owner A: other owners (not admin) get 404.
    scoped: bool,
}

const READ: &[Role] = &[Role::Viewer, Role::User, Role::Ci, Role::Admin];
const WRITE: &[Role] = &[Role::User, Role::Ci, Role::Admin];
const EXEC: &[Role] = &[Role::User, Role::Admin];
const ADMIN: &[Role] = &[Role::Admin];

/// The policy of every route, written independently of the server's rule table.
fn policy(method: &str, path: &str) -> Option<Policy> {
    let p = |open, roles, scoped| {
        Some(Policy {
            open,
            roles,
            scoped,
        })
    };
    match (method, path) {
        ("GET", "/healthz" | "/metrics" | "/openapi.json") => p(true, READ, false),
        ("GET", "/v1/whoami" | "/v1/quota" | "/v1/templates" | "/v1/envs") => p(false, READ, false),
        ("POST", "/v1/templates/import") | ("DELETE", "/v1/templates/{name}") => {
            p(false, ADMIN, false)
        }
        ("POST", "/v1/envs") => p(false, WRITE, false),
        // By key: scoped too (another owner's key is not found).
        ("DELETE", "/v1/envs") => p(false, WRITE, true),
        ("GET", "/v1/envs/{id}" | "/v1/envs/{id}/events") => p(false, READ, true),
        ("DELETE", "/v1/envs/{id}")
        | ("GET", "/v1/envs/{id}/logs")
        | ("POST", "/v1/envs/{id}/extend" | "/v1/envs/{id}/clone")
        | ("PATCH", "/v1/envs/{id}/pods/{pod}") => p(false, WRITE, true),
        ("GET" | "POST", "/v1/envs/{id}/pods/{pod}/exec") => p(false, EXEC, true),
        ("GET", "/v1/jobs" | "/v1/tokens" | "/v1/audit")
        | ("POST", "/v1/jobs/{name}/run" | "/v1/tokens")
        | ("DELETE", "/v1/tokens/{id}") => p(false, ADMIN, false),
        ("GET", "/v1/pools") | ("PUT", "/v1/pools/{name}") => p(false, ADMIN, false),
        ("GET", "/v1/images") => p(false, READ, false),
        ("POST", "/v1/images") | ("DELETE", "/v1/images/{id}") => p(false, WRITE, false),
        // No token: the forge signs each delivery with the hook's secret.
        ("POST", "/v1/hooks/github" | "/v1/hooks/gitlab") => p(true, READ, false),
        _ => None,
    }
}

/// The status class a caller must get.
fn expected(p: &Policy, who: &Who) -> u16 {
    if p.open {
        return 200;
    }
    let Some(role) = who.role else { return 401 };
    if !p.roles.contains(&role) {
        return 403;
    }
    if p.scoped && role != Role::Admin && who.owner != A {
        return 404;
    }
    200
}

/// What the walk acts on.
struct Fixture {
    store: Store,
    catalog: Catalog,
    /// A ready env of owner A.
    ready: Value,
    /// Recorded envs of owner A, never built: removed by the DELETE probes.
    doomed: String,
    template: String,
    spare_token: String,
}

impl Fixture {
    /// A recorded env of owner A with this key (the engine is not asked to build it).
    async fn record(&self, key: &str) -> String {
        let req = CreateRequest {
            template: "minimal".into(),
            key: Some(key.into()),
            owner: Some(A.into()),
            ..Default::default()
        };
        match service::create(&self.store, &self.catalog, &Limits::default(), req)
            .await
            .unwrap()
        {
            Created::New(e) | Created::Existing(e) => e.id,
        }
    }

    /// The request of one probe: path (with query), body, and whether it is a WebSocket.
    fn probe(
        &self,
        method: &str,
        path: &str,
        who: &Who,
        n: usize,
    ) -> (String, Option<Value>, bool) {
        let env = self.ready["id"].as_str().unwrap();
        let concrete = path
            .replace("{id}", env)
            .replace("{pod}", "redis")
            .replace("{name}", "reap");
        match (method, path) {
            ("POST", "/v1/templates/import") => (
                concrete,
                Some(
                    json!({"name": self.template, "compose": "services:\n  web:\n    image: envd/redis:latest\n"}),
                ),
                false,
            ),
            ("DELETE", "/v1/templates/{name}") => {
                (format!("/v1/templates/{}", self.template), None, false)
            }
            // Owner A and its ci share a key: the second gets the first's env (200).
            ("POST", "/v1/envs") => (
                concrete,
                Some(json!({"template": "minimal", "key": "authz-made"})),
                false,
            ),
            ("DELETE", "/v1/envs") => (format!("/v1/envs?key=authz-{}", who.label), None, false),
            ("DELETE", "/v1/envs/{id}") => (format!("/v1/envs/{}", self.doomed), None, false),
            ("GET", "/v1/envs/{id}/logs") => {
                (format!("{concrete}?follow=true&tail=1"), None, false)
            }
            ("POST", "/v1/envs/{id}/extend") => (concrete, Some(json!({"ttl": "30m"})), false),
            ("POST", "/v1/envs/{id}/clone") => (concrete, Some(json!({})), false),
            // Waited: a config change is applied by the env's loop, one at a time.
            ("PATCH", "/v1/envs/{id}/pods/{pod}") => (
                format!("{concrete}?wait=true"),
                Some(json!({"answers": {"redis_password": format!("pw-{n}")}})),
                false,
            ),
            ("GET", "/v1/envs/{id}/pods/{pod}/exec") => {
                (format!("{concrete}?cmd=true"), None, true)
            }
            ("POST", "/v1/envs/{id}/pods/{pod}/exec") => {
                (concrete, Some(json!({"cmd": ["true"]})), false)
            }
            ("POST", "/v1/jobs/{name}/run") => (format!("{concrete}?dry_run=true"), None, false),
            // A pool of size 0: set, nothing built.
            ("PUT", "/v1/pools/{name}") => (
                concrete,
                Some(json!({"template": "minimal", "min": 0})),
                false,
            ),
            ("POST", "/v1/tokens") => (
                concrete,
                Some(json!({"name": format!("made-{n}"), "role": "viewer", "owner": A})),
                false,
            ),
            ("DELETE", "/v1/tokens/{id}") => {
                (format!("/v1/tokens/{}", self.spare_token), None, false)
            }
            _ => (concrete, None, false),
        }
    }
}

/// Status and body of a WebSocket exec: 101 once the session ran, else the refusal.
async fn ws_status(base: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
    let url = format!("{}{path}", base.replacen("http://", "ws://", 1));
    let mut req = url.as_str().into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, resp)) => {
            while let Some(Ok(m)) = ws.next().await {
                if m.is_close() {
                    break;
                }
            }
            (resp.status().as_u16(), Value::Null)
        }
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            (resp.status().as_u16(), body)
        }
        Err(e) => panic!("{url}: {e}"),
    }
}

/// Status, content type and body; a streaming body is not read.
async fn send(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> (u16, String, Value) {
    let body = body.map(Value::to_string);
    let url = format!("{base}{path}");
    call_as(token, method.parse().unwrap(), &url, body.as_deref()).await
}

async fn token(store: &Store, name: &str, role: Role, owner: &str) -> String {
    auth::issue(store, name, role, owner, None).await.unwrap().0
}

async fn callers(store: &Store) -> Vec<Who> {
    let expired = auth::new_token();
    store
        .insert_token(&NewToken {
            id: "expired-id",
            name: "expired",
            hash: &auth::hash(&expired),
            role: "admin",
            owner: A,
            expires_at: Some(now_ms() - 1000),
        })
        .await
        .unwrap();
    let revoked = token(store, "revoked", Role::Admin, A).await;
    store.revoke_token("revoked").await.unwrap();
    let who = |label, token: Option<String>, role, owner| Who {
        label,
        token,
        role,
        owner,
    };
    vec![
        who("none", None, None, ""),
        who("bad", Some(auth::new_token()), None, ""),
        who("expired", Some(expired), None, ""),
        who("revoked", Some(revoked), None, ""),
        who(
            "viewer",
            Some(token(store, "viewer-a", Role::Viewer, A).await),
            Some(Role::Viewer),
            A,
        ),
        // B before A: A's successful removals must not decide B's answers.
        who(
            "user-b",
            Some(token(store, "user-b", Role::User, B).await),
            Some(Role::User),
            B,
        ),
        who(
            "user-a",
            Some(token(store, "user-a", Role::User, A).await),
            Some(Role::User),
            A,
        ),
        who(
            "ci",
            Some(token(store, "ci-a", Role::Ci, A).await),
            Some(Role::Ci),
            A,
        ),
        who(
            "admin",
            Some(admin_token().to_string()),
            Some(Role::Admin),
            "admin",
        ),
    ]
}

/// A non-loopback address of this host, if it has one.
fn outside_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("10.255.255.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_times_every_caller() {
    if !common::engine_available().await {
        return;
    }
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let templates = tempfile::tempdir().unwrap();
    let engine = common::engine(dir.path(), 246).await;
    let catalog = Catalog::new(Some(templates.path().to_path_buf()));
    let base = serve_on(
        "0.0.0.0:0",
        engine.clone(),
        catalog.clone(),
        AuthConfig::default(),
        roomy_quotas(),
    )
    .await
    .replace("0.0.0.0", "127.0.0.1");
    let store = engine.store.clone();
    let who = callers(&store).await;
    let user_a = who
        .iter()
        .find(|w| w.label == "user-a")
        .unwrap()
        .token
        .clone();
    let guard = common::Guard::default();

    let (s, _, ready) = call_as(
        user_a.as_deref(),
        Method::POST,
        &format!("{base}/v1/envs?wait=true&timeout=4m"),
        Some(r#"{"template": "minimal", "owner": "team-a"}"#),
    )
    .await;
    assert_eq!((s, &ready["state"]), (201, &json!("ready")), "{ready}");
    assert_eq!(ready["owner"], A, "the token's owner");
    guard.watch(ready["id"].as_str().unwrap());
    let spare = auth::issue(&store, "spare", Role::Viewer, B, None)
        .await
        .unwrap()
        .1;
    let mut fx = Fixture {
        store: store.clone(),
        catalog: catalog.clone(),
        ready,
        doomed: String::new(),
        template: "authz-web".into(),
        spare_token: spare.id,
    };
    fx.doomed = fx.record("authz-doomed").await;
    for label in ["user-b", "user-a", "ci", "admin"] {
        fx.record(&format!("authz-{label}")).await;
    }

    let (_, _, doc) = call_as(None, Method::GET, &format!("{base}/openapi.json"), None).await;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let mut routes = vec![];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            routes.push((method.to_ascii_uppercase(), path.clone(), op.clone()));
        }
    }
    // Config set late (it restarts the pod exec runs in), removals and template deletion
    // last: the other probes use what they change or remove.
    routes.sort_by_key(|(m, p, _)| {
        (
            m == "DELETE",
            m == "PATCH",
            p.contains("{name}"),
            p.clone(),
            m.clone(),
        )
    });
    assert!(routes.len() >= 26, "{} routes", routes.len());
    let mut made = vec![];
    let mut table = BTreeMap::new();
    let mut n = 0;
    for (method, path, op) in &routes {
        let p = policy(method, path).unwrap_or_else(|| {
            panic!("{method} {path} is in /openapi.json but has no entry in the authorization policy of this test")
        });
        let documented: Vec<&str> = op["x-envd-roles"]
            .as_array()
            .unwrap_or_else(|| {
                panic!("{method} {path} documents no x-envd-roles: it has no access rule")
            })
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        let want: Vec<&str> = p.roles.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            documented, want,
            "{method} {path}: the server's rule differs from the policy"
        );
        if !p.open {
            assert!(
                op["security"][0]["bearer"].is_array(),
                "{method} {path} declares no bearer security"
            );
            for status in ["401", "403"] {
                assert_eq!(
                    op["responses"][status]["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{method} {path} documents no {status} problem"
                );
            }
        }
        for w in &who {
            n += 1;
            let (target, body, ws) = fx.probe(method, path, w, n);
            let token = w.token.as_deref();
            let (status, ctype, v) = if ws {
                let (s, v) = ws_status(&base, &target, token).await;
                (s, "application/problem+json".to_string(), v)
            } else {
                send(&base, method, &target, body.as_ref(), token).await
            };
            // A hook delivery is signed, not authorized by a token: these probes carry no
            // signature, so every caller gets 401 and nothing is done.
            let want = if path.starts_with("/v1/hooks/") {
                401
            } else {
                expected(&p, w)
            };
            // Past the gate, an upload probe (JSON, not a `docker save` archive) is refused
            // as input, and removing an upload that does not exist is not found.
            let past_gate = (method == "POST" && path == "/v1/images" && status == 422)
                || (method == "DELETE" && path == "/v1/images/{id}" && status == 404);
            let ok = match want {
                200 => (200..300).contains(&status) || (ws && status == 101) || past_gate,
                other => status == other,
            };
            assert!(
                ok,
                "{method} {target} as {}: {status}, expected {want}: {v}",
                w.label
            );
            if want >= 400 {
                assert_eq!(
                    ctype, "application/problem+json",
                    "{method} {target} as {}",
                    w.label
                );
                assert_eq!(v["status"], want, "{method} {target} as {}: {v}", w.label);
            }
            if status == 201 && v["id"].is_string() && v["state"].is_string() {
                guard.watch(v["id"].as_str().unwrap());
                made.push(v["id"].as_str().unwrap().to_string());
            }
            table.insert(format!("{method} {path} {}", w.label), status);
        }
    }
    eprintln!(
        "walked {} requests over {} routes in {:.1}s",
        table.len(),
        routes.len(),
        t0.elapsed().as_secs_f64()
    );

    // The messages tell what to do.
    let none = &who[0];
    let (_, _, v) = send(&base, "GET", "/v1/envs", None, none.token.as_deref()).await;
    assert!(v["detail"].as_str().unwrap().contains("envd login"), "{v}");
    let (_, _, v) = send(&base, "GET", "/v1/envs", None, who[3].token.as_deref()).await;
    assert!(v["detail"].as_str().unwrap().contains("was revoked"), "{v}");
    let (_, _, v) = send(&base, "GET", "/v1/envs", None, who[2].token.as_deref()).await;
    assert!(v["detail"].as_str().unwrap().contains("expired"), "{v}");

    // Listings: own owner only; admin all, or one with ?owner=.
    let owners = |v: &Value| -> Vec<String> {
        let mut o: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["owner"].as_str().unwrap().to_string())
            .collect();
        o.sort();
        o.dedup();
        o
    };
    let user_b = who
        .iter()
        .find(|w| w.label == "user-b")
        .unwrap()
        .token
        .as_deref();
    let (_, _, mine) = call_as(user_b, Method::GET, &format!("{base}/v1/envs"), None).await;
    assert_eq!(owners(&mine), [B], "B sees its own env only: {mine}");
    let (_, _, mine) = call_as(
        user_a.as_deref(),
        Method::GET,
        &format!("{base}/v1/envs"),
        None,
    )
    .await;
    assert_eq!(owners(&mine), [A]);
    let (_, _, all) = call(Method::GET, &format!("{base}/v1/envs"), None).await;
    assert_eq!(owners(&all), ["admin", A, B]);
    let (_, _, only) = call(Method::GET, &format!("{base}/v1/envs?owner={A}"), None).await;
    assert_eq!(owners(&only), [A]);
    let r = call_as(
        user_b,
        Method::GET,
        &format!("{base}/v1/envs?owner={A}"),
        None,
    )
    .await;
    common::http::problem(&r, 422, "owner");

    // CI keys are per owner: A, B and the admin each got an env of their own for one key.
    let (_, _, keyed) = call(Method::GET, &format!("{base}/v1/envs?key=authz-made"), None).await;
    assert_eq!(owners(&keyed), ["admin", A, B], "{keyed}");
    // The body cannot choose another owner.
    let r = call_as(
        user_b,
        Method::POST,
        &format!("{base}/v1/envs"),
        Some(r#"{"template": "minimal", "owner": "team-a"}"#),
    )
    .await;
    common::http::problem(&r, 422, "owner");

    // Without a token from another address of this host: 401 too.
    if let Some(ip) = outside_ip() {
        let port = base.rsplit(':').next().unwrap();
        let outside = format!("http://{ip}:{port}");
        let (s, _, _) = send(&outside, "GET", "/v1/envs", None, None).await;
        assert_eq!(s, 401, "from {outside}");
        let (s, _, _) = send(
            &outside,
            "POST",
            "/v1/envs",
            Some(&json!({"template": "minimal"})),
            None,
        )
        .await;
        assert_eq!(s, 401);
        let (_, _, trail) = call(
            Method::GET,
            &format!("{base}/v1/audit?status=401&method=POST&limit=1"),
            None,
        )
        .await;
        assert!(
            trail[0]["client"]
                .as_str()
                .unwrap()
                .starts_with(&ip.to_string()),
            "{trail}"
        );
    } else {
        eprintln!("no non-loopback address on this host: the outside request is not tried");
    }

    // The audit trail names each env a create or clone made.
    for id in &made {
        let (_, _, trail) = call(Method::GET, &format!("{base}/v1/audit?target={id}"), None).await;
        let made_by = trail
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["method"] == "POST" && e["subject"] == id.as_str())
            .unwrap_or_else(|| panic!("no audit entry made {id}: {trail}"));
        assert!((200..300).contains(&made_by["status"].as_i64().unwrap()));
    }

    // Everything made here goes.
    for id in made
        .iter()
        .chain([fx.ready["id"].as_str().unwrap().to_string()].iter())
    {
        store.request_teardown(id).await.unwrap();
        engine.kick(id);
    }
    for id in &made {
        let t = Instant::now();
        while !store.get(id).await.unwrap().state.is_final() {
            assert!(t.elapsed() < Duration::from_secs(180), "{id} not torn down");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!(
        "authorization walk and teardown in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cross_origin_changes_and_sessions_are_refused_and_everything_is_audited() {
    if !common::engine_available().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let engine = common::engine(dir.path(), 246).await;
    let auth = AuthConfig {
        allowed_origins: vec!["http://envd.lab:7070".into()],
        ..Default::default()
    };
    let base = serve_with(engine.clone(), Catalog::new(None), auth, roomy_quotas()).await;
    let token = admin_token();
    let post = |origin: &'static str| {
        let base = base.clone();
        async move {
            let resp = reqwest::Client::new()
                .post(format!("{base}/v1/tokens"))
                .bearer_auth(token)
                .header("origin", origin)
                .json(&json!({"name": format!("o-{}", now_ms()), "role": "viewer", "owner": "x"}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, v) = post("http://evil.example").await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("allowed_origins"),
        "{v}"
    );
    let (s, _) = post("http://envd.lab:7070").await;
    assert_eq!(s, 201, "a listed origin");
    let own = base.clone();
    let own: &'static str = Box::leak(own.into_boxed_str());
    let (s, _) = post(own).await;
    assert_eq!(s, 201, "envd's own origin");
    // Reads from a browser are harmless; a WebSocket is not.
    let resp = reqwest::Client::new()
        .get(format!("{base}/v1/envs"))
        .bearer_auth(token)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    {
        use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
        let url = format!(
            "{}/v1/envs/x/pods/redis/exec?cmd=true",
            base.replacen("http://", "ws://", 1)
        );
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        req.headers_mut()
            .insert("origin", "http://evil.example".parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
            other => panic!(
                "cross-origin WebSocket: {:?}",
                other.map(|(_, r)| r.status())
            ),
        }
    }

    // The audit trail: who, route, target, outcome, client; never a secret; admin only.
    let (s, _, _) = call_as(None, Method::DELETE, &format!("{base}/v1/envs/nope"), None).await;
    assert_eq!(s, 401);
    let (s, _, _) = call(Method::DELETE, &format!("{base}/v1/envs/nope"), None).await;
    assert_eq!(s, 404);
    let (s, _, trail) = call(
        Method::GET,
        &format!("{base}/v1/audit?target=/v1/envs/nope"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{trail}");
    let rows = trail.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{trail}");
    assert_eq!(
        (
            rows[0]["actor"].as_str().unwrap().starts_with("test-admin"),
            &rows[0]["status"]
        ),
        (true, &json!(404))
    );
    assert_eq!(
        (&rows[1]["actor"], &rows[1]["status"]),
        (&json!("anonymous"), &json!(401))
    );
    assert_eq!(rows[0]["route"], "/v1/envs/{id}");
    assert!(
        rows[0]["client"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let (_, _, made) = call(
        Method::GET,
        &format!("{base}/v1/audit?method=post&status=201"),
        None,
    )
    .await;
    assert_eq!(
        made.as_array().unwrap().len(),
        2,
        "the two tokens made: {made}"
    );
    let (_, _, refused) = call(
        Method::GET,
        &format!("{base}/v1/audit?status=403&since=1h"),
        None,
    )
    .await;
    assert_eq!(
        refused.as_array().unwrap().len(),
        2,
        "cross-origin POST and WebSocket: {refused}"
    );
    let all = envd::store::AuditFilter {
        limit: 10_000,
        ..Default::default()
    };
    let text = serde_json::to_string(&engine.store.audit(&all).await.unwrap()).unwrap();
    assert!(!text.contains(&token[5..]), "a token in the audit trail");
    let r = call(
        Method::GET,
        &format!("{base}/v1/audit?since=yesterday"),
        None,
    )
    .await;
    common::http::problem(&r, 422, "since");

    // /metrics and /openapi.json need a token when configured so; /healthz never does.
    let guarded = AuthConfig {
        guard_metrics: true,
        guard_openapi: true,
        ..Default::default()
    };
    let base = serve_with(engine.clone(), Catalog::new(None), guarded, roomy_quotas()).await;
    for p in ["/metrics", "/openapi.json"] {
        let (s, ctype, _) = call_as(None, Method::GET, &format!("{base}{p}"), None).await;
        assert_eq!(
            (s, ctype.as_str()),
            (401, "application/problem+json"),
            "{p}"
        );
        let (s, _, _) = call(Method::GET, &format!("{base}{p}"), None).await;
        assert_eq!(s, 200, "{p}");
    }
    let (s, _, _) = call_as(None, Method::GET, &format!("{base}/healthz"), None).await;
    assert_eq!(s, 200);
}
