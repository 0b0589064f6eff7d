//! Readiness: real protocol checks from the host at `NODE_IP:port`, retried with backoff
//! until each pod's deadline; the time each pod took is recorded as an event.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::exec::StartExecResults;
use bollard::models::ExecConfig;
use futures_util::StreamExt;

use crate::error::{Error, Result};
use crate::spec::{CheckKind, DEFAULT_READY_DEADLINE, Pod, Ready};

pub(super) async fn wait_pod(ip: IpAddr, inner: &Docker, pod: &Pod, ready: &Ready) -> Result<()> {
    let deadline = ready.deadline.unwrap_or(DEFAULT_READY_DEADLINE);
    let t = Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        let attempt =
            tokio::time::timeout(Duration::from_secs(5), check(ip, inner, pod, ready)).await;
        let last = match attempt {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => "check timed out after 5 s".to_string(),
        };
        if t.elapsed() + delay > deadline {
            let tail = last_log_lines(inner, pod).await;
            return Err(Error::step(
                format!("readiness of pod {}", pod.name),
                format!(
                    "not ready within {}: {last}{tail}",
                    humantime::format_duration(deadline)
                ),
            ));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// One attempt; the error says what the server answered.
pub async fn check(
    ip: IpAddr,
    inner: &Docker,
    pod: &Pod,
    r: &Ready,
) -> std::result::Result<(), String> {
    let port = r.port.unwrap_or(0);
    match r.kind {
        CheckKind::Tcp => tokio::net::TcpStream::connect((ip, port))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        CheckKind::Http => {
            let url = format!("http://{ip}:{port}{}", r.path.as_deref().unwrap_or("/"));
            // Never followed: a pod's redirect must not point envd's requests at another
            // host. A redirect is the service answering, which is what the probe asks.
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| e.to_string())?;
            let resp = client
                .get(&url)
                .timeout(Duration::from_secs(3))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if resp.status().is_success() || resp.status().is_redirection() {
                Ok(())
            } else {
                Err(format!("GET {url} answered {}", resp.status()))
            }
        }
        CheckKind::Mysql => {
            use mysql_async::prelude::Queryable;
            let opts = mysql_async::OptsBuilder::default()
                .ip_or_hostname(ip.to_string())
                .tcp_port(port)
                .user(r.user.clone().or(Some("root".into())))
                .pass(r.password.clone());
            let mut conn = mysql_async::Conn::new(opts)
                .await
                .map_err(|e| e.to_string())?;
            let one: Option<i64> = conn
                .query_first("SELECT 1")
                .await
                .map_err(|e| e.to_string())?;
            let _ = conn.disconnect().await;
            if one == Some(1) {
                Ok(())
            } else {
                Err(format!("SELECT 1 returned {one:?}"))
            }
        }
        CheckKind::Mongo => {
            let auth = match (&r.user, &r.password) {
                (Some(u), Some(p)) => format!("{}:{}@", crate::urlencode(u), crate::urlencode(p)),
                _ => String::new(),
            };
            let uri = format!(
                "mongodb://{auth}{ip}:{port}/?authSource=admin&directConnection=true&serverSelectionTimeoutMS=2000&connectTimeoutMS=2000"
            );
            let client = mongodb::Client::with_uri_str(&uri)
                .await
                .map_err(|e| e.to_string())?;
            let res = client
                .database("admin")
                .run_command(mongodb::bson::doc! { "ping": 1 })
                .await
                .map_err(|e| e.to_string());
            client.shutdown().immediate(true).await;
            res.map(|_| ())
        }
        CheckKind::Redis => {
            let auth = r
                .password
                .as_deref()
                .map(|p| format!(":{}@", crate::urlencode(p)))
                .unwrap_or_default();
            let client = redis::Client::open(format!("redis://{auth}{ip}:{port}/"))
                .map_err(|e| e.to_string())?;
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            let pong: String = redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if pong == "PONG" {
                Ok(())
            } else {
                Err(format!("PING answered {pong}"))
            }
        }
        CheckKind::Exec => {
            let container = format!(
                "{}-{}",
                pod.name,
                r.container.as_deref().unwrap_or(&pod.containers[0].name)
            );
            let (code, out) = exec(inner, &container, r.command.clone())
                .await
                .map_err(|e| e.to_string())?;
            if code == 0 {
                Ok(())
            } else {
                Err(format!(
                    "`{}` exited {code}: {}",
                    r.command.join(" "),
                    out.trim()
                ))
            }
        }
    }
}

/// Runs a command in an inner container; returns its exit code and combined output.
pub async fn exec(inner: &Docker, container: &str, cmd: Vec<String>) -> Result<(i64, String)> {
    exec_with_env(inner, container, cmd, vec![]).await
}

/// [`exec`] with extra `NAME=value` environment, e.g. a password kept off the command line.
pub async fn exec_with_env(
    inner: &Docker,
    container: &str,
    cmd: Vec<String>,
    env: Vec<String>,
) -> Result<(i64, String)> {
    use crate::error::DockerContext;
    let created = inner
        .create_exec(
            container,
            ExecConfig {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(cmd),
                env: (!env.is_empty()).then_some(env),
                ..Default::default()
            },
        )
        .await
        .ctx(|| format!("exec in {container}"))?;
    let mut out = String::new();
    if let StartExecResults::Attached { mut output, .. } = inner
        .start_exec(&created.id, None)
        .await
        .ctx(|| format!("exec in {container}"))?
    {
        while let Some(Ok(chunk)) = output.next().await {
            out.push_str(&chunk.to_string());
        }
    }
    let code = inner
        .inspect_exec(&created.id)
        .await
        .ctx(|| format!("exec in {container}"))?
        .exit_code
        .unwrap_or(-1);
    Ok((code, out))
}

/// The end of the pod's containers' logs, to say why a pod never became ready.
async fn last_log_lines(inner: &Docker, pod: &Pod) -> String {
    let mut out = String::new();
    for c in &pod.containers {
        let name = format!("{}-{}", pod.name, c.name);
        let opts = bollard::query_parameters::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail("5")
            .build();
        let mut s = inner.logs(&name, Some(opts));
        let mut text = String::new();
        while let Some(Ok(chunk)) = s.next().await {
            text.push_str(&chunk.to_string());
        }
        let state = match inner
            .inspect_container(
                &name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(i) => i
                .state
                .map(|s| {
                    format!(
                        "{}, exit code {}",
                        s.status.map(|x| x.to_string()).unwrap_or_default(),
                        s.exit_code.unwrap_or(0)
                    )
                })
                .unwrap_or_default(),
            Err(_) => "missing".into(),
        };
        out.push_str(&format!(
            "; container {name} ({state}) last log lines: {}",
            text.trim().replace('\n', " | ")
        ));
    }
    out
}
