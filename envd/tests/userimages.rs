//! Users' images in envs, on the real engine and with no internet (issue 15):
//! - a registry started here (Debian's `docker-registry`, Basic auth, on loopback) holds
//!   an image built here (`FROM envd/app`, a tiny HTTP service); a template naming it →
//!   ready and the service answers; a second env gets it from envd's cache (the
//!   registry's log shows one pull of the manifest and of each blob); wrong credentials
//!   → the env fails naming the registry and `unauthorized`, the password nowhere;
//! - `envd images push` of host-built images, an env using one with no registry, then
//!   `envd deploy` of a second tag (new version answers, Redis keeps its key, same IP)
//!   and of a broken image (rolled back, the old version answers).
//!
//! - the same over HTTPS (the registry serves a certificate of a CA made here): with the
//!   CA configured the env is ready (its pull's progress pushed to the end), without it
//!   the env fails naming the registry and the TLS cause; `insecure = true` gets through.
//!
//! Bridges envdt15a (10.213.150.0/24), envdt15b (10.213.151.0/24), envdt15b5 (10.213.185.0/24).

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use envd::engine::EngineConfig;
use envd::engine::registry::{RegistryConfig, UpstreamConfig};
use envd::store::State;
use redis::AsyncCommands;

use common::harness::{Harness, harness_with, request, template_dir};

type Result<T = (), E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

const WEB: &str = "envd-test-userimages/web";
const BROKEN: &str = "envd-test-userimages/broken";
const PASSWORD: &str = "Upstream-s3cret-PW";

const TEMPLATE: &str = r#"name: userapp
version: "1"
deadline: 3m
pods:
  - name: db
    ports: [6379]
    containers:
      - name: redis
        image: envd/redis:latest
        env:
          REDIS_PASSWORD: pw
    ready: { kind: redis, port: 6379, password: pw, deadline: 30s }
  - name: web
    ports: [8080]
    containers:
      - name: app
        image: envd/app:latest
        env:
          GREETING: hello
    ready: { kind: http, port: 8080, path: /health, deadline: 20s }
"#;

const SERVER: &str = r#"import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (os.environ["VERSION"] + " " + os.environ.get("GREETING", "")).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("", 8080), H).serve_forever()
"#;

fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into())
}

/// Builds `name` from envd/app: the service answers `<version> <GREETING>`; a broken
/// one exits at once.
fn build(name: &str, version: &str, broken: bool) -> Result {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("serve.py"), SERVER)?;
    let entry = if broken {
        r#"ENTRYPOINT ["sh", "-c", "echo broken build; exit 3"]"#
    } else {
        r#"ENTRYPOINT ["python3", "/serve.py"]"#
    };
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM envd/app:latest\nCOPY serve.py /serve.py\nENV VERSION={version}\n{entry}\n"),
    )?;
    sh(Command::new("docker")
        .args(["build", "-q", "-t", name])
        .arg(dir.path()))?;
    Ok(())
}

/// A child process killed when the test ends, passed or failed.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `docker-registry` on loopback with Basic auth; killed with the value.
struct Upstream {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA and a certificate it signed for 127.0.0.1 and localhost, in `dir`:
/// `ca.pem`, `cert.pem`, `key.pem`.
fn make_certs(dir: &std::path::Path) -> Result {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "envd test CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])?;
    let cert = leaf.signed_by(&key, &issuer)?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    std::fs::write(dir.join("cert.pem"), cert.pem())?;
    std::fs::write(dir.join("key.pem"), key.serialize_pem())?;
    Ok(())
}

impl Upstream {
    /// Over HTTPS when `tls` holds `cert.pem` and `key.pem` ([`make_certs`]).
    fn start(tls: Option<&std::path::Path>) -> Result<Upstream> {
        let dir = tempfile::tempdir()?;
        let port = common::serve::free_port();
        let htpasswd = sh(Command::new("htpasswd").args(["-Bbn", "alice", PASSWORD]))?;
        std::fs::write(dir.path().join("htpasswd"), htpasswd)?;
        let tls = tls
            .map(|c| {
                format!(
                    ", tls: {{certificate: {c}/cert.pem, key: {c}/key.pem}}",
                    c = c.display()
                )
            })
            .unwrap_or_default();
        let cfg = format!(
            "version: 0.1\nlog: {{level: info}}\nstorage: {{filesystem: {{rootdirectory: {d}/data}}}}\nhttp: {{addr: 127.0.0.1:{port}{tls}}}\nauth: {{htpasswd: {{realm: test, path: {d}/htpasswd}}}}\n",
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("config.yml"), cfg)?;
        let log = dir.path().join("registry.log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(std::fs::File::create(&log)?)
            .stderr(Stdio::null())
            .spawn()?;
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "docker-registry did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Upstream {
            child,
            port,
            log,
            _dir: dir,
        })
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes a host image into it (the host engine trusts loopback registries).
    fn push(&self, image: &str, as_name: &str) -> Result {
        let conf = tempfile::tempdir()?;
        let docker = |args: &[&str]| {
            let mut c = Command::new("docker");
            c.env("DOCKER_CONFIG", conf.path()).args(args);
            c
        };
        let mut login = docker(&["login", "-u", "alice", "--password-stdin", &self.host()]);
        login
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut ch = login.spawn()?;
        std::io::Write::write_all(&mut ch.stdin.take().ok_or("stdin")?, PASSWORD.as_bytes())?;
        assert!(ch.wait()?.success(), "docker login to the test registry");
        let full = format!("{}/{as_name}", self.host());
        sh(&mut docker(&["tag", image, &full]))?;
        sh(&mut docker(&["push", &full]))?;
        sh(&mut docker(&["rmi", &full]))?;
        Ok(())
    }

    /// Successful GETs of `path` the registry logged (what a pull fetches).
    fn fetched(&self, path: &str) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let needle = format!("\"GET {path} HTTP/1.1\" 200");
        log.lines().filter(|l| l.contains(&needle)).count()
    }
}

fn own_bridge(cfg: &mut EngineConfig, bridge: &str, cidr: &str) {
    cfg.bridge = bridge.into();
    cfg.cidr = cidr.parse().unwrap();
    cfg.gateway = envd::engine::first_host(cfg.cidr);
    cfg.reserved = vec![];
}

fn del_bridge(name: &str) {
    let _ = Command::new("ip").args(["link", "del", name]).status();
}

async fn answer(ip: &str) -> String {
    let url = format!("http://{ip}:8080/");
    match common::http::get(&url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => format!("({e})"),
    }
}

/// A create of `userapp` with its web image overridden, as the admin (who pushed the
/// uploads through the API: uploads are per owner).
fn with_image(image: &str) -> envd::service::CreateRequest {
    let mut req = request("userapp", &[]);
    req.images = BTreeMap::from([("web".to_string(), image.to_string())]);
    req.owner = Some("admin".into());
    req
}

async fn events_text(h: &Harness, id: &str) -> String {
    let ev = h.engine.store.events(id, 0).await.unwrap();
    ev.iter()
        .map(|e| e.message.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

fn ready_missing() -> Option<String> {
    if Command::new("docker-registry")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("docker-registry is not installed (scripts/install-deps)".into());
    }
    if Command::new("htpasswd").arg("-h").output().is_err() {
        return Some("htpasswd is not installed (apache2-utils, scripts/install-deps)".into());
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_images_come_through_envds_cache_with_its_credentials() -> Result {
    if !common::engine_available().await {
        return Ok(());
    }
    if let Some(why) = ready_missing() {
        unavailable!("{why}");
    }
    build(&format!("{WEB}:1"), "v1", false)?;
    let up = Upstream::start(None)?;
    up.push(&format!("{WEB}:1"), "lab/web:1")?;
    let tpl = template_dir("userapp", TEMPLATE);
    let (good, bad) = (up.host(), format!("localhost:{}", up.port));
    let url = format!("http://{good}");
    let h = harness_with(150, Some(tpl.path().to_path_buf()), |cfg| {
        own_bridge(cfg, "envdt15a", "10.213.150.0/24");
        cfg.registry = RegistryConfig {
            registries: BTreeMap::from([
                (
                    good.clone(),
                    UpstreamConfig {
                        url: Some(url.clone()),
                        username: Some("alice".into()),
                        password: Some(PASSWORD.into()),
                        ..Default::default()
                    },
                ),
                // The same registry under another name, with a wrong password.
                (
                    bad.clone(),
                    UpstreamConfig {
                        url: Some(url.clone()),
                        username: Some("alice".into()),
                        password: Some(format!("{PASSWORD}-wrong")),
                        ..Default::default()
                    },
                ),
            ]),
            ..Default::default()
        };
    })
    .await
    .expect("engine available");

    let image = format!("{good}/lab/web:1");
    let t = Instant::now();
    let (a, _ga) = h.ready_with(with_image(&image)).await;
    let first = t.elapsed();
    let ip_a = a.node_ip.clone().unwrap();
    assert_eq!(answer(&ip_a).await, "v1 hello");
    let t = Instant::now();
    let (b, _gb) = h.ready_with(with_image(&image)).await;
    let second = t.elapsed();
    assert_eq!(answer(b.node_ip.as_deref().unwrap()).await, "v1 hello");
    assert_eq!(
        up.fetched("/v2/lab/web/manifests/1"),
        1,
        "the manifest pulled once"
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(h.engine.registry.blobs.path(&digest_of(&h, &up)).unwrap()).unwrap(),
    )?;
    // Every blob comes from the registry at most once; the layers envd/app already has in
    // the node seed not at all (the nodes are told they hold them), the test's own once.
    let layers = manifest["layers"].as_array().unwrap();
    for layer in layers {
        let d = layer["digest"].as_str().unwrap();
        assert!(
            up.fetched(&format!("/v2/lab/web/blobs/{d}")) <= 1,
            "blob {d} pulled twice"
        );
    }
    let own = layers.last().unwrap()["digest"].as_str().unwrap();
    assert_eq!(
        up.fetched(&format!("/v2/lab/web/blobs/{own}")),
        1,
        "the new layer pulled once"
    );
    let pulled = events_text(&h, &a.id).await;
    assert!(
        pulled.contains(&format!("image {image} pulled from {good}")),
        "{pulled}"
    );
    eprintln!(
        "registry image: first env ready in {first:?}, second (from envd's cache) in {second:?}"
    );

    let (env, error) = fails_naming(&h, &format!("{bad}/lab/web:1"), &bad).await;
    assert!(error.contains("unauthorized"), "{error}");

    for id in [&a.id, &b.id, &env.id] {
        h.teardown(id).await;
    }
    h.assert_nothing_left(&a).await;
    del_bridge("envdt15a");
    let _ = Command::new("docker")
        .args(["rmi", &format!("{WEB}:1")])
        .output();
    Ok(())
}

/// An env whose image must fail to come from `registry`: it fails naming the registry,
/// and the registry's password is in neither its error nor its events. Returns the env
/// and its error.
async fn fails_naming(h: &Harness, image: &str, registry: &str) -> (envd::store::Env, String) {
    let env = h.create_with(with_image(image)).await;
    let failed = h
        .wait(
            &env.id,
            &[State::Failed, State::Ready],
            Duration::from_secs(180),
        )
        .await;
    assert_eq!(failed.state, State::Failed);
    let error = failed.error.clone().unwrap_or_default();
    assert!(error.contains(&format!("registry `{registry}`")), "{error}");
    let everything = format!("{error}\n{}", events_text(h, &env.id).await);
    assert!(
        !everything.contains(PASSWORD),
        "the password leaked: {everything}"
    );
    (env, error)
}

/// A lab registry over HTTPS with its own CA: trusted through `ca`, refused without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_registries_are_trusted_through_their_ca() -> Result {
    if !common::engine_available().await {
        return Ok(());
    }
    if let Some(why) = ready_missing() {
        unavailable!("{why}");
    }
    build(&format!("{WEB}:tls"), "v1", false)?;
    let certs = tempfile::tempdir()?;
    make_certs(certs.path())?;
    let up = Upstream::start(Some(certs.path()))?;
    up.push(&format!("{WEB}:tls"), "lab/web:tls")?;
    let tpl = template_dir("userapp", TEMPLATE);
    // One registry under two names: its certificate holds both, only one has the CA.
    let (trusted, untrusted) = (up.host(), format!("localhost:{}", up.port));
    let config = |url: String, ca: Option<std::path::PathBuf>| UpstreamConfig {
        url: Some(url),
        username: Some("alice".into()),
        password: Some(PASSWORD.into()),
        ca,
        insecure: false,
    };
    let h = harness_with(185, Some(tpl.path().to_path_buf()), |cfg| {
        own_bridge(cfg, "envdt15b5", "10.213.185.0/24");
        cfg.registry.registries = BTreeMap::from([
            (
                trusted.clone(),
                config(
                    format!("https://{trusted}"),
                    Some(certs.path().join("ca.pem")),
                ),
            ),
            (
                untrusted.clone(),
                config(format!("https://{untrusted}"), None),
            ),
            // A third name for it: no CA, but told to accept any certificate.
            (
                "insecure.lab".into(),
                UpstreamConfig {
                    insecure: true,
                    ..config(format!("https://{untrusted}"), None)
                },
            ),
        ]);
    })
    .await
    .expect("engine available");

    let mut pulls = h.engine.store.subscribe_pulls();
    let t = Instant::now();
    let (a, _ga) = h
        .ready_with(with_image(&format!("{trusted}/lab/web:tls")))
        .await;
    eprintln!("HTTPS registry image: env ready in {:?}", t.elapsed());
    assert_eq!(answer(a.node_ip.as_deref().unwrap()).await, "v1 hello");
    // The node's pull was pushed as it went, ending with every layer in.
    let mut last = None;
    while let Ok(p) = pulls.try_recv() {
        last = Some(p);
    }
    let last = last.expect("pull progress pushed");
    assert!(last.finished && last.layers_done == last.layers, "{last:?}");
    assert!(last.total > 0 && last.done == last.total, "{last:?}");

    // `insecure = true`: the same registry's manifest through envd's cache, no CA.
    let url = format!(
        "http://{}:{}/v2/insecure.lab/lab/web/manifests/tls",
        h.engine.cfg.gateway, h.engine.cfg.registry.port
    );
    let r = reqwest::Client::new()
        .get(&url)
        .header("accept", envd::engine::registry::upstream::MANIFEST_TYPES)
        .send()
        .await?;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());

    let (env, error) = fails_naming(&h, &format!("{untrusted}/lab/web:tls"), &untrusted).await;
    eprintln!("without the CA: {error}");
    assert!(error.contains("TLS: certificate not trusted"), "{error}");
    assert!(error.contains(".ca"), "says what to set: {error}");

    for id in [&a.id, &env.id] {
        h.teardown(id).await;
    }
    h.assert_nothing_left(&a).await;
    del_bridge("envdt15b5");
    let _ = Command::new("docker")
        .args(["rmi", &format!("{WEB}:tls")])
        .output();
    Ok(())
}

/// The digest of `lab/web:1` as envd's cache stored it.
fn digest_of(h: &Harness, up: &Upstream) -> String {
    let dir = h.engine.cfg.data_dir.join("registry/tags");
    let f = dir
        .join(envd::engine::registry::reference::host_component(
            &up.host(),
        ))
        .join("lab/web/1");
    std::fs::read_to_string(f).unwrap()
}

async fn redis_at(ip: &str) -> redis::aio::MultiplexedConnection {
    let c = redis::Client::open(format!("redis://:pw@{ip}:6379/0")).unwrap();
    c.get_multiplexed_async_connection().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushed_images_run_without_a_registry_and_deploy_rolls_back() -> Result {
    if !common::engine_available().await {
        return Ok(());
    }
    build(&format!("{WEB}:p1"), "v1", false)?;
    build(&format!("{WEB}:p2"), "v2", false)?;
    build(&format!("{BROKEN}:1"), "v3", true)?;
    let tpl = template_dir("userapp", TEMPLATE);
    let h = harness_with(151, Some(tpl.path().to_path_buf()), |cfg| {
        own_bridge(cfg, "envdt15b", "10.213.151.0/24");
    })
    .await
    .expect("engine available");
    let base = common::http::serve_catalog(h.engine.clone(), h.catalog.clone()).await;

    let t = Instant::now();
    let (code, out, err) = common::envd(
        &base,
        &[
            "images",
            "push",
            &format!("{WEB}:p1"),
            &format!("{WEB}:p2"),
            &format!("{BROKEN}:1"),
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    eprintln!("pushed 3 images in {:?}: {out}", t.elapsed());
    let (code, out, _) = common::envd(&base, &["images", "ls"]).await;
    assert_eq!(code, 0);
    assert!(out.contains(&format!("{WEB}:p1")), "{out}");

    let t = Instant::now();
    // A CI job's env: keyed by its branch, so its next run deploys into it by the key.
    let mut req = with_image(&format!("{WEB}:p1"));
    req.key = Some("feature/cart".into());
    let (a, _ga) = h.ready_with(req).await;
    let pulled = events_text(&h, &a.id).await;
    let pulled = pulled
        .lines()
        .find(|l| l.contains("pulled from"))
        .unwrap_or_default();
    eprintln!(
        "env with an uploaded image ready in {:?} ({pulled})",
        t.elapsed()
    );
    let ip: IpAddr = a.node_ip.as_deref().unwrap().parse()?;
    assert_eq!(answer(&ip.to_string()).await, "v1 hello");
    let mut r = redis_at(&ip.to_string()).await;
    let _: () = r.set("order:1", "kept").await?;

    let t = Instant::now();
    let (code, out, err) = common::envd(
        &base,
        &[
            "deploy",
            "--key",
            "feature/cart",
            "web",
            "--image",
            &format!("{WEB}:p2"),
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    eprintln!("deploy of a second tag in {:?}: {out}", t.elapsed());
    let after = h.engine.store.get(&a.id).await?;
    assert_eq!(
        after.node_ip.as_deref(),
        Some(ip.to_string().as_str()),
        "same IP"
    );
    assert_eq!(
        answer(&ip.to_string()).await,
        "v2 hello",
        "new version, same env"
    );
    let mut r = redis_at(&ip.to_string()).await;
    let kept: String = r.get("order:1").await?;
    assert_eq!(kept, "kept");

    let (code, out, err) = common::envd(
        &base,
        &["deploy", &a.id, "web", "--image", &format!("{BROKEN}:1")],
    )
    .await;
    assert_ne!(code, 0, "a broken image must not deploy: {out}{err}");
    assert!(err.contains("web"), "{err}");
    assert_eq!(answer(&ip.to_string()).await, "v2 hello", "rolled back");
    assert_eq!(h.engine.store.get(&a.id).await?.state, State::Ready);

    // Overrides are validated against the template, naming the field.
    let (status, _, body) = common::http::call(
        reqwest::Method::POST,
        &format!("{base}/v1/envs"),
        Some(r#"{"template":"userapp","images":{"nope":"x:1"}}"#),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "images.nope", "{body}");

    h.teardown(&a.id).await;
    h.assert_nothing_left(&a).await;
    del_bridge("envdt15b");
    for i in [
        format!("{WEB}:p1"),
        format!("{WEB}:p2"),
        format!("{BROKEN}:1"),
    ] {
        let _ = Command::new("docker").args(["rmi", &i]).output();
    }
    Ok(())
}

/// `scripts/bench userimages`: a ~200 MB image through envd next to the host engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn bench_user_images() -> Result {
    if !common::engine_available().await {
        return Ok(());
    }
    const BIG: &str = "envd-test-userimages/big";
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("serve.py"), SERVER)?;
    // Random bytes: no compression flatters anyone.
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM envd/app:latest\nRUN head -c 200000000 /dev/urandom > /blob\nCOPY serve.py /serve.py\nENV VERSION=v1\nENTRYPOINT [\"python3\", \"/serve.py\"]\n",
    )?;
    sh(Command::new("docker")
        .args(["build", "-q", "-t", &format!("{BIG}:1")])
        .arg(dir.path()))?;
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {BIG}:1\nRUN echo v2 > /version\nENV VERSION=v2\n"),
    )?;
    sh(Command::new("docker")
        .args(["build", "-q", "-t", &format!("{BIG}:2")])
        .arg(dir.path()))?;
    let size = sh(Command::new("docker").args([
        "image",
        "inspect",
        "-f",
        "{{.Size}}",
        &format!("{BIG}:1"),
    ]))?;
    let mb = size.trim().parse::<f64>().unwrap_or(0.0) / 1e6;

    let tpl = template_dir("userapp", TEMPLATE);
    let h = harness_with(150, Some(tpl.path().to_path_buf()), |cfg| {
        own_bridge(cfg, "envdt15a", "10.213.150.0/24");
    })
    .await
    .expect("engine available");
    let base = common::http::serve_catalog(h.engine.clone(), h.catalog.clone()).await;
    let mut rows: Vec<(String, Duration, String, Duration)> = vec![];

    // A plain registry on loopback for the host engine's side.
    let reg_dir = tempfile::tempdir()?;
    let port = common::serve::free_port();
    std::fs::write(
        reg_dir.path().join("c.yml"),
        format!(
            "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}/d}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
            reg_dir.path().display()
        ),
    )?;
    let reg = Command::new("docker-registry")
        .arg("serve")
        .arg(reg_dir.path().join("c.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let _reg = KillOnDrop(reg);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let timed = |f: &mut dyn FnMut() -> Result| -> Result<Duration> {
        let t = Instant::now();
        f()?;
        Ok(t.elapsed())
    };
    let host_ref = |tag: &str| format!("127.0.0.1:{port}/big:{tag}");

    let t = Instant::now();
    let (code, out, err) = common::envd(&base, &["images", "push", &format!("{BIG}:1")]).await;
    assert_eq!(code, 0, "{out}{err}");
    let push = t.elapsed();
    sh(Command::new("docker").args(["tag", &format!("{BIG}:1"), &host_ref("1")]))?;
    let host_push =
        timed(&mut || sh(Command::new("docker").args(["push", &host_ref("1")])).map(drop))?;
    rows.push((
        format!("envd images push ({mb:.0} MB)"),
        push,
        "docker push to a local registry".into(),
        host_push,
    ));

    // The host side: pull (after rmi) and run until the service answers.
    let host_run = |image: &str, name: &str| -> Result<Duration> {
        let t = Instant::now();
        let _ = Command::new("docker").args(["rm", "-f", name]).output();
        sh(Command::new("docker").args(["run", "-d", "--name", name, image]))?;
        let ip = sh(Command::new("docker").args([
            "inspect",
            "-f",
            "{{.NetworkSettings.IPAddress}}",
            name,
        ]))?;
        let ip = ip.trim().to_string();
        while std::net::TcpStream::connect((ip.as_str(), 8080)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "host container never answered"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(t.elapsed())
    };
    sh(Command::new("docker").args(["rmi", &host_ref("1")]))?;
    let host_pull =
        timed(&mut || sh(Command::new("docker").args(["pull", &host_ref("1")])).map(drop))?;
    let host_first = host_run(&host_ref("1"), "envd-bench-userimages")?;

    let t = Instant::now();
    let (first, _g1) = h.ready_with(with_image(&format!("{BIG}:1"))).await;
    let first_t = t.elapsed();
    rows.push((
        "first env using it, create → ready".into(),
        first_t,
        "docker pull + docker run → answers".into(),
        host_pull + host_first,
    ));
    let mut more = vec![first.id.clone()];
    for i in 2..=3 {
        let t = Instant::now();
        let (e, _g) = h.ready_with(with_image(&format!("{BIG}:1"))).await;
        let took = t.elapsed();
        let host = host_run(&host_ref("1"), "envd-bench-userimages")?;
        rows.push((
            format!("env #{i} using it"),
            took,
            "docker run → answers (image present)".into(),
            host,
        ));
        more.push(e.id.clone());
    }

    let (code, out, err) = common::envd(&base, &["images", "push", &format!("{BIG}:2")]).await;
    assert_eq!(code, 0, "{out}{err}");
    let t = Instant::now();
    let (code, out, err) = common::envd(
        &base,
        &["deploy", &first.id, "web", "--image", &format!("{BIG}:2")],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let deploy = t.elapsed();
    assert_eq!(answer(first.node_ip.as_deref().unwrap()).await, "v2 hello");
    sh(Command::new("docker").args(["tag", &format!("{BIG}:2"), &host_ref("2")]))?;
    sh(Command::new("docker").args(["push", &host_ref("2")]))?;
    sh(Command::new("docker").args(["rmi", &host_ref("2")]))?;
    let host_pull2 =
        timed(&mut || sh(Command::new("docker").args(["pull", &host_ref("2")])).map(drop))?;
    let host_run2 = host_run(&host_ref("2"), "envd-bench-userimages")?;
    rows.push((
        "envd deploy of a second tag (new layer: 1 small)".into(),
        deploy,
        "docker pull + rm -f + run → answers".into(),
        host_pull2 + host_run2,
    ));

    println!("| envd | time | host engine | time |");
    println!("| --- | --- | --- | --- |");
    for (a, ta, b, tb) in &rows {
        let tb = if b.is_empty() {
            String::new()
        } else {
            format!("{:.2} s", tb.as_secs_f64())
        };
        println!("| {a} | {:.2} s | {b} | {tb} |", ta.as_secs_f64());
    }
    let _ = Command::new("docker")
        .args(["rm", "-f", "envd-bench-userimages"])
        .output();
    for id in &more {
        h.teardown(id).await;
    }
    del_bridge("envdt15a");
    for i in [
        format!("{BIG}:1"),
        format!("{BIG}:2"),
        host_ref("1"),
        host_ref("2"),
    ] {
        let _ = Command::new("docker").args(["rmi", &i]).output();
    }
    Ok(())
}
