//! The envd images on the host Docker engine, talked to with the real drivers
//! (images/README.md has the contracts):
//! - envd/mysql: users from the env vars (a wrong or missing password refused), init
//!   files (*.sql, *.sql.gz) applied, a /etc/mysql/conf.d/*.cnf honoured, TZ, logs
//!   under /var/log/envd/mysql/;
//! - envd/mongo: root user with auth enforced, *.json init documents imported, the
//!   SecantusDB config file honoured;
//! - envd/redis: REDIS_PASSWORD, `redis-server --requirepass` style arguments, a
//!   replaced /etc/redis/redis.conf honoured;
//! - envd/app: GET /health OK against the three (503 naming the one that is down),
//!   a line per request in /var/log/envd/app/app.log;
//! - envd/pause: a container joining its netns is reachable at its IP; it stops on
//!   SIGTERM at once with status 0;
//! - envd/stubs: healthz, a stub, and the log archive.
//!
//! Needs Docker and `scripts/build-images`. Containers carry `envd.test=images` and are
//! removed at the end, also when a test fails. Docker unreachable or an image missing:
//! the test is skipped, or fails when CI=true.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::body_full;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc};
use mysql_async::prelude::Queryable;

type Result<T = (), E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

/// How long a database may take to answer (the machine is shared: generous).
const READY: Duration = Duration::from_secs(60);

/// The engine, or why not.
async fn docker() -> Result<Docker, String> {
    let d = Docker::connect_with_local_defaults()
        .map_err(|e| format!("cannot reach the Docker engine: {e}"))?;
    d.negotiate_version()
        .await
        .map_err(|e| format!("cannot reach the Docker engine: {e}"))
}

/// The images a test needs are built (`scripts/build-images`), or the missing one.
async fn missing_image(d: &Docker, names: &[&str]) -> Option<String> {
    for n in names {
        let image = format!("envd/{n}:latest");
        if d.inspect_image(&image).await.is_err() {
            return Some(image);
        }
    }
    None
}

macro_rules! setup {
    ($($image:expr),+) => {{
        let d = match docker().await {
            Ok(d) => d,
            Err(e) => unavailable!("{e}"),
        };
        if let Some(image) = missing_image(&d, &[$($image),+]).await {
            unavailable!("image {image} is missing: run scripts/build-images");
        }
        Containers::new(d)?
    }};
}

/// The containers of one test; all removed when it ends, passed or failed.
struct Containers {
    docker: Docker,
    ids: Mutex<Vec<String>>,
    /// The env's log volume: a host directory mounted at /var/log/envd.
    logs: tempfile::TempDir,
}

/// One container to start.
#[derive(Default)]
struct Spec<'a> {
    image: &'a str,
    env: &'a [(&'a str, &'a str)],
    cmd: Option<&'a [&'a str]>,
    /// Files put into the container before it starts: (absolute path, content).
    files: &'a [(&'a str, &'a [u8])],
    /// The test's log directory at /var/log/envd, as the env's log volume.
    log_volume: bool,
    network_mode: Option<String>,
}

impl Containers {
    fn new(docker: Docker) -> Result<Self> {
        let logs = tempfile::tempdir()?;
        std::fs::set_permissions(
            logs.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        Ok(Containers {
            docker,
            ids: Mutex::new(Vec::new()),
            logs,
        })
    }

    async fn start(&self, spec: Spec<'_>) -> Result<String> {
        let name = format!("envd-test-images-{}", uuid::Uuid::now_v7().simple());
        let binds = spec
            .log_volume
            .then(|| vec![format!("{}:/var/log/envd", self.logs.path().display())]);
        let body = ContainerCreateBody {
            image: Some(format!("envd/{}:latest", spec.image)),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            cmd: spec.cmd.map(|c| c.iter().map(|s| s.to_string()).collect()),
            labels: Some(HashMap::from([(
                "envd.test".to_string(),
                "images".to_string(),
            )])),
            host_config: Some(HostConfig {
                binds,
                network_mode: spec.network_mode.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await?;
        self.ids
            .lock()
            .map_err(|_| "poisoned")?
            .push(created.id.clone());
        if !spec.files.is_empty() {
            let mut tar = tar::Builder::new(Vec::new());
            for (path, content) in spec.files {
                let mut h = tar::Header::new_gnu();
                h.set_size(content.len() as u64);
                h.set_mode(if path.ends_with(".sh") { 0o755 } else { 0o644 });
                h.set_mtime(0);
                tar.append_data(&mut h, path.trim_start_matches('/'), *content)?;
            }
            let archive = tar.into_inner()?;
            self.docker
                .upload_to_container(
                    &created.id,
                    Some(UploadToContainerOptionsBuilder::default().path("/").build()),
                    body_full(archive.into()),
                )
                .await?;
        }
        self.docker.start_container(&created.id, None).await?;
        Ok(created.id)
    }

    async fn ip(&self, id: &str) -> Result<String> {
        let c = self.docker.inspect_container(id, None).await?;
        let ip = c
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove("bridge"))
            .and_then(|n| n.ip_address)
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| format!("container {id} has no IP on the default bridge"))?;
        Ok(ip)
    }

    async fn logs_hint(&self, id: &str) -> String {
        let out = Command::new("docker")
            .args(["logs", "--tail", "30", id])
            .output();
        match out {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("(no logs: {e})"),
        }
    }

    /// A file of the log volume, e.g. `mysql/error.log`.
    fn log_file(&self, rel: &str) -> Result<String> {
        let path = self.logs.path().join(rel);
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()).into())
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        let ids = match self.ids.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if ids.is_empty() {
            return;
        }
        // Synchronous on purpose: runs during a panic and outside any runtime.
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v"])
            .args(&ids)
            .output();
    }
}

/// Retries `f` until it succeeds or `deadline` passes; the last error otherwise.
async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() > deadline => {
                return Err(format!("{what}: not within {deadline:?}: {e}").into());
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip into memory");
    enc.finish().expect("gzip into memory")
}

async fn mysql_conn(url: &str) -> Result<mysql_async::Conn> {
    Ok(mysql_async::Conn::from_url(url).await?)
}

#[tokio::test]
async fn mysql_users_init_files_config_tz_and_logs() -> Result {
    let c = setup!("mysql");
    let schema = b"CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20));\n\
                   INSERT INTO items VALUES (1, 'one');\n";
    let data = gzip(b"INSERT INTO items VALUES (2, 'two');\n");
    let id = c
        .start(Spec {
            image: "mysql",
            env: &[
                ("MYSQL_ROOT_PASSWORD", "root'pw"),
                ("MYSQL_DATABASE", "shop"),
                ("MYSQL_USER", "shopper"),
                ("MYSQL_PASSWORD", "s3cret"),
                ("TZ", "Asia/Shanghai"),
            ],
            files: &[
                ("/docker-entrypoint-initdb.d/01-schema.sql", schema),
                ("/docker-entrypoint-initdb.d/02-data.sql.gz", &data),
                (
                    "/etc/mysql/conf.d/custom.cnf",
                    b"[mysqld]\nmax_connections = 77\n",
                ),
            ],
            log_volume: true,
            ..Default::default()
        })
        .await?;
    let ip = c.ip(&id).await?;
    let user_url = format!("mysql://shopper:s3cret@{ip}:3306/shop");
    let mut conn = match eventually("mysql answers", READY, || mysql_conn(&user_url)).await {
        Ok(conn) => conn,
        Err(e) => return Err(format!("{e}\n{}", c.logs_hint(&id).await).into()),
    };

    // The init files ran, in order, in MYSQL_DATABASE.
    let rows: Vec<(i32, String)> = conn.query("SELECT id, name FROM items ORDER BY id").await?;
    assert_eq!(rows, [(1, "one".to_string()), (2, "two".to_string())]);
    // The conf.d file and TZ are honoured.
    let max: Option<u32> = conn.query_first("SELECT @@max_connections").await?;
    assert_eq!(max, Some(77));
    let tz: Option<String> = conn.query_first("SELECT @@system_time_zone").await?;
    assert_eq!(tz.as_deref(), Some("CST"));
    conn.disconnect().await?;

    // Root with its password (quotes and all); wrong or missing passwords refused.
    let mut root = mysql_conn(&format!("mysql://root:root%27pw@{ip}:3306/shop")).await?;
    let n: Option<i64> = root.query_first("SELECT COUNT(*) FROM items").await?;
    assert_eq!(n, Some(2));
    root.disconnect().await?;
    for url in [
        format!("mysql://root:wrong@{ip}:3306/"),
        format!("mysql://root@{ip}:3306/"),
        format!("mysql://shopper:wrong@{ip}:3306/shop"),
        format!("mysql://shopper@{ip}:3306/shop"),
    ] {
        match mysql_conn(&url).await {
            Ok(_) => panic!("{url}: connected, expected access denied"),
            Err(e) => assert!(e.to_string().contains("Access denied"), "{url}: {e}"),
        }
    }

    // The server's output is also in the log volume.
    let log = c.log_file("mysql/error.log")?;
    assert!(log.contains("ready for connections"), "{log}");
    assert!(log.contains("Access denied"), "{log}");
    Ok(())
}

#[tokio::test]
async fn mysql_requires_a_root_password_option() -> Result {
    let c = setup!("mysql");
    let id = c
        .start(Spec {
            image: "mysql",
            ..Default::default()
        })
        .await?;
    let status = eventually("mysql exits", READY, || async {
        let s = c.docker.inspect_container(&id, None).await?;
        let st = s.state.ok_or("no state")?;
        if st.running == Some(true) {
            return Err("still running".into());
        }
        Ok(st.exit_code.unwrap_or(-1))
    })
    .await?;
    assert_ne!(status, 0);
    assert!(c.logs_hint(&id).await.contains("MYSQL_ROOT_PASSWORD"));
    Ok(())
}

async fn mongo_client(uri: &str) -> Result<mongodb::Client> {
    Ok(mongodb::Client::with_uri_str(uri).await?)
}

#[tokio::test]
async fn mongo_root_user_auth_init_json_and_config() -> Result {
    let c = setup!("mongo");
    // The config file replaced: another port.
    let toml = b"[server]\nhost = \"0.0.0.0\"\nport = 27018\nstorage_path = \"/data/db\"\nstandalone = true\n";
    let id = c
        .start(Spec {
            image: "mongo",
            env: &[
                ("MONGO_INITDB_ROOT_USERNAME", "admin"),
                ("MONGO_INITDB_ROOT_PASSWORD", "adminpw"),
                ("MONGO_INITDB_DATABASE", "shop"),
            ],
            files: &[
                (
                    "/docker-entrypoint-initdb.d/fruits.json",
                    b"[{\"_id\": 1, \"name\": \"apple\"}, {\"_id\": 2, \"name\": \"pear\"}]",
                ),
                (
                    "/docker-entrypoint-initdb.d/veg.json",
                    b"{\"_id\": 1, \"name\": \"leek\"}\n",
                ),
                ("/etc/secantus/secantusd.toml", toml),
            ],
            log_volume: true,
            ..Default::default()
        })
        .await?;
    let ip = c.ip(&id).await?;
    let opts = "directConnection=true&serverSelectionTimeoutMS=2000";
    let root_uri = format!("mongodb://admin:adminpw@{ip}:27018/?authSource=admin&{opts}");
    let fruits = eventually("mongo answers with auth", READY, || async {
        let client = mongo_client(&root_uri).await?;
        let docs: Vec<Document> = client
            .database("shop")
            .collection::<Document>("fruits")
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .await?
            .try_collect()
            .await?;
        Ok(docs)
    })
    .await;
    let fruits = match fruits {
        Ok(f) => f,
        Err(e) => return Err(format!("{e}\n{}", c.logs_hint(&id).await).into()),
    };
    let names: Vec<_> = fruits
        .iter()
        .filter_map(|d| d.get_str("name").ok())
        .collect();
    assert_eq!(names, ["apple", "pear"]);
    let client = mongo_client(&root_uri).await?;
    let veg = client
        .database("shop")
        .collection::<Document>("veg")
        .count_documents(doc! {})
        .await?;
    assert_eq!(veg, 1);

    // No credentials: reads refused. Wrong password: authentication refused.
    let anon = mongo_client(&format!("mongodb://{ip}:27018/?{opts}")).await?;
    let err = anon
        .database("shop")
        .list_collection_names()
        .await
        .expect_err("unauthenticated read must be refused");
    assert!(
        err.to_string().contains("requires authentication")
            || err.to_string().contains("Unauthorized"),
        "{err}"
    );
    let wrong = mongo_client(&format!(
        "mongodb://admin:nope@{ip}:27018/?authSource=admin&{opts}"
    ))
    .await?;
    let err = wrong
        .database("shop")
        .list_collection_names()
        .await
        .expect_err("a wrong password must be refused");
    assert!(err.to_string().to_lowercase().contains("auth"), "{err}");

    let log = c.log_file("mongo/mongod.log")?;
    assert!(log.contains("ready: auth enforced"), "{log}");
    Ok(())
}

async fn redis_cmd<T: redis::FromRedisValue>(url: String, args: &[&str]) -> Result<T> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    Ok(cmd.query_async::<T>(&mut con).await?)
}

#[tokio::test]
async fn redis_password_args_and_config_file() -> Result {
    let c = setup!("redis");
    // A replaced config file plus `redis-server --requirepass` style arguments.
    let conf = b"bind 0.0.0.0\nprotected-mode no\nport 6379\nmaxmemory 12mb\nlogfile \"\"\n";
    let by_args = c
        .start(Spec {
            image: "redis",
            cmd: Some(&["redis-server", "--requirepass", "argpw"]),
            files: &[("/etc/redis/redis.conf", conf)],
            ..Default::default()
        })
        .await?;
    let by_env = c
        .start(Spec {
            image: "redis",
            env: &[("REDIS_PASSWORD", "envpw")],
            ..Default::default()
        })
        .await?;

    let ip = c.ip(&by_args).await?;
    let pong: String = eventually("redis answers", READY, || {
        redis_cmd::<String>(format!("redis://:argpw@{ip}:6379/0"), &["PING"])
    })
    .await?;
    assert_eq!(pong, "PONG");
    let maxmemory: Vec<String> = redis_cmd(
        format!("redis://:argpw@{ip}:6379/0"),
        &["CONFIG", "GET", "maxmemory"],
    )
    .await?;
    assert_eq!(maxmemory, ["maxmemory", "12582912"]);
    let err = redis_cmd::<String>(format!("redis://{ip}:6379/0"), &["PING"])
        .await
        .expect_err("no password must be refused");
    assert!(err.to_string().contains("NOAUTH"), "{err}");

    let ip = c.ip(&by_env).await?;
    let pong: String = eventually("redis answers", READY, || {
        redis_cmd::<String>(format!("redis://:envpw@{ip}:6379/0"), &["PING"])
    })
    .await?;
    assert_eq!(pong, "PONG");
    assert!(
        redis_cmd::<String>(format!("redis://:wrong@{ip}:6379/0"), &["PING"])
            .await
            .is_err(),
        "a wrong password must be refused"
    );
    Ok(())
}

#[tokio::test]
async fn app_health_against_the_three_and_its_log() -> Result {
    let c = setup!("mysql", "mongo", "redis", "app");
    let mysql = c
        .start(Spec {
            image: "mysql",
            env: &[("MYSQL_ROOT_PASSWORD", "r"), ("MYSQL_DATABASE", "app")],
            ..Default::default()
        })
        .await?;
    let mongo = c
        .start(Spec {
            image: "mongo",
            env: &[
                ("MONGO_INITDB_ROOT_USERNAME", "a"),
                ("MONGO_INITDB_ROOT_PASSWORD", "b"),
            ],
            ..Default::default()
        })
        .await?;
    let redis = c
        .start(Spec {
            image: "redis",
            env: &[("REDIS_PASSWORD", "p")],
            ..Default::default()
        })
        .await?;
    let mysql_url = format!("mysql://root:r@{}:3306/app", c.ip(&mysql).await?);
    let mongo_url = format!("mongodb://a:b@{}:27017/admin", c.ip(&mongo).await?);
    let redis_url = format!("redis://:p@{}:6379/0", c.ip(&redis).await?);
    let app = c
        .start(Spec {
            image: "app",
            env: &[
                ("MYSQL_URL", &mysql_url),
                ("MONGO_URL", &mongo_url),
                ("REDIS_URL", &redis_url),
            ],
            log_volume: true,
            ..Default::default()
        })
        .await?;
    let health = format!("http://{}:8080/health", c.ip(&app).await?);
    let http = reqwest::Client::new();
    let get = || async {
        let r = http.get(&health).send().await?;
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
    };
    let ok = eventually("the app is healthy", READY, || async {
        let (status, body) = get().await?;
        if status != 200 {
            return Err(format!("{status} {body}").into());
        }
        Ok(body)
    })
    .await;
    let ok = match ok {
        Ok(b) => b,
        Err(e) => return Err(format!("{e}\n{}", c.logs_hint(&app).await).into()),
    };
    assert_eq!(
        ok,
        serde_json::json!({"mysql": "ok", "mongo": "ok", "redis": "ok"})
    );

    // Redis gone: 503, and the error names it.
    c.docker
        .stop_container(
            &redis,
            Some(StopContainerOptionsBuilder::default().t(1).build()),
        )
        .await?;
    let (status, body) = get().await?;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["mysql"], "ok");
    assert_eq!(body["mongo"], "ok");
    assert_ne!(body["redis"], "ok");

    let log = c.log_file("app/app.log")?;
    assert!(log.lines().any(|l| l.contains("GET /health 200")), "{log}");
    assert!(log.lines().any(|l| l.contains("GET /health 503")), "{log}");
    Ok(())
}

#[tokio::test]
async fn pause_holds_a_netns_that_another_container_joins() -> Result {
    let c = setup!("pause", "redis");
    let pause = c
        .start(Spec {
            image: "pause",
            ..Default::default()
        })
        .await?;
    let joined = c
        .start(Spec {
            image: "redis",
            network_mode: Some(format!("container:{pause}")),
            ..Default::default()
        })
        .await?;
    // Same network namespace: the pause container's IP answers for redis.
    let ip = c.ip(&pause).await?;
    let pong: String = eventually("redis in the pause netns", READY, || {
        redis_cmd::<String>(format!("redis://{ip}:6379/0"), &["PING"])
    })
    .await?;
    assert_eq!(pong, "PONG");
    let pid = |id: String| {
        let d = c.docker.clone();
        async move {
            let s = d.inspect_container(&id, None).await?;
            s.state
                .and_then(|s| s.pid)
                .ok_or_else(|| Box::<dyn std::error::Error + Send + Sync>::from("no pid"))
        }
    };
    let ns = |pid: i64| std::fs::read_link(format!("/proc/{pid}/ns/net"));
    if let (Ok(a), Ok(b)) = (
        ns(pid(pause.clone()).await?),
        ns(pid(joined.clone()).await?),
    ) {
        assert_eq!(a, b, "the joined container is in the pause netns");
    }

    // SIGTERM stops it at once, exit status 0.
    let started = Instant::now();
    c.docker
        .stop_container(
            &pause,
            Some(StopContainerOptionsBuilder::default().t(10).build()),
        )
        .await?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "pause took {:?} to stop",
        started.elapsed()
    );
    let state = c
        .docker
        .inspect_container(&pause, None)
        .await?
        .state
        .ok_or("no state")?;
    assert_eq!(state.exit_code, Some(0));
    Ok(())
}

#[tokio::test]
async fn stubs_image_serves_stubs_and_the_log_archive() -> Result {
    let c = setup!("stubs");
    let id = c
        .start(Spec {
            image: "stubs",
            files: &[
                (
                    "/etc/stubs/stubs.yaml",
                    b"- {method: GET, path: /v1/ping, json: {pong: true}}\n",
                ),
                ("/var/log/envd/mysql/error.log", b"hello from mysql\n"),
            ],
            ..Default::default()
        })
        .await?;
    let base = format!("http://{}:9000", c.ip(&id).await?);
    let http = reqwest::Client::new();
    eventually("stubs healthz", READY, || async {
        let r = http.get(format!("{base}/_envd/healthz")).send().await?;
        if r.status() != 200 {
            return Err(format!("status {}", r.status()).into());
        }
        Ok(())
    })
    .await?;
    let r = http.get(format!("{base}/v1/ping")).send().await?;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await?;
    assert_eq!(v, serde_json::json!({"pong": true}));
    let r = http.get(format!("{base}/nope")).send().await?;
    assert_eq!(r.status(), 404);

    let bytes = http
        .get(format!("{base}/_envd/logs.tar.gz"))
        .send()
        .await?
        .bytes()
        .await?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let mut found = None;
    for e in archive.entries()? {
        let mut e = e?;
        if e.path()?.to_string_lossy() == "mysql/error.log" {
            let mut s = String::new();
            e.read_to_string(&mut s)?;
            found = Some(s);
        }
    }
    assert_eq!(found.as_deref(), Some("hello from mysql\n"));
    Ok(())
}

/// Start-to-ready of each database image: from `create` to the first answer of a real
/// query with the real driver (SELECT 1, ping, PING), 5 runs each; prints a table.
/// Run by scripts/bench.d/images (ignored in the suite).
#[tokio::test]
#[ignore = "a benchmark: scripts/bench images"]
async fn bench_start_to_ready() -> Result {
    let c = setup!("mysql", "mongo", "redis");
    const RUNS: usize = 5;
    type Probe = fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result> + Send>>;
    let mysql_probe: Probe = |ip| {
        Box::pin(async move {
            let mut conn = mysql_conn(&format!("mysql://root:pw@{ip}:3306/")).await?;
            let one: Option<i64> = conn.query_first("SELECT 1").await?;
            if one != Some(1) {
                return Err("SELECT 1 did not answer 1".into());
            }
            conn.disconnect().await?;
            Ok(())
        })
    };
    let mongo_probe: Probe = |ip| {
        Box::pin(async move {
            let client = mongo_client(&format!(
                "mongodb://admin:pw@{ip}:27017/?authSource=admin&directConnection=true&serverSelectionTimeoutMS=200&connectTimeoutMS=200"
            ))
            .await?;
            client
                .database("admin")
                .run_command(doc! {"ping": 1})
                .await?;
            Ok(())
        })
    };
    let mongo_noauth_probe: Probe = |ip| {
        Box::pin(async move {
            let client = mongo_client(&format!(
                "mongodb://{ip}:27017/?directConnection=true&serverSelectionTimeoutMS=200&connectTimeoutMS=200"
            ))
            .await?;
            client
                .database("admin")
                .run_command(doc! {"ping": 1})
                .await?;
            Ok(())
        })
    };
    let redis_probe: Probe = |ip| {
        Box::pin(async move {
            let pong: String = redis_cmd(format!("redis://:pw@{ip}:6379/0"), &["PING"]).await?;
            if pong != "PONG" {
                return Err(format!("PING answered {pong}").into());
            }
            Ok(())
        })
    };
    let init_sql: &[(&str, &[u8])] = &[(
        "/docker-entrypoint-initdb.d/01.sql",
        b"CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1);\n",
    )];
    /// (label, image, env, files, probe)
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Files<'a>, Probe);
    type Files<'a> = &'a [(&'a str, &'a [u8])];
    let cases: Vec<Case> = vec![
        (
            "mysql (root password)",
            "mysql",
            vec![("MYSQL_ROOT_PASSWORD", "pw")],
            &[],
            mysql_probe,
        ),
        (
            "mysql (+ an init .sql)",
            "mysql",
            vec![("MYSQL_ROOT_PASSWORD", "pw"), ("MYSQL_DATABASE", "d")],
            init_sql,
            mysql_probe,
        ),
        ("mongo (no auth)", "mongo", vec![], &[], mongo_noauth_probe),
        (
            "mongo (root user, auth)",
            "mongo",
            vec![
                ("MONGO_INITDB_ROOT_USERNAME", "admin"),
                ("MONGO_INITDB_ROOT_PASSWORD", "pw"),
            ],
            &[],
            mongo_probe,
        ),
        (
            "redis (REDIS_PASSWORD)",
            "redis",
            vec![("REDIS_PASSWORD", "pw")],
            &[],
            redis_probe,
        ),
    ];
    println!("\n| image (start-to-ready, {RUNS} runs) | p50 | min | max |");
    println!("| --- | --- | --- | --- |");
    for (label, image, env, files, probe) in cases {
        let mut times = Vec::new();
        for _ in 0..RUNS {
            let t0 = Instant::now();
            let id = c
                .start(Spec {
                    image,
                    env: &env,
                    files,
                    ..Default::default()
                })
                .await?;
            let ip = c.ip(&id).await?;
            eventually(label, READY, || probe(ip.clone())).await?;
            times.push(t0.elapsed());
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
        times.sort();
        let ms = |d: Duration| format!("{:.2} s", d.as_secs_f64());
        println!(
            "| {label} | {} | {} | {} |",
            ms(times[RUNS / 2]),
            ms(times[0]),
            ms(times[RUNS - 1])
        );
    }
    Ok(())
}
