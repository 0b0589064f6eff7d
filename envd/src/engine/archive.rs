//! Log collection before teardown: `docker logs` of every inner container plus the files
//! each pod wrote to its log directory (served by the stubs sidecar), into one archive
//! `<data-dir>/logs/<env-id>.tar.gz` laid out as `<pod>/<container>.log` and
//! `<pod>/files/...`. Best effort: whatever can be read is kept, and the summary says what.

use std::io::{Read, Write};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::LogsOptionsBuilder;
use futures_util::StreamExt;

use super::node::{LABEL_ENV, LOG_DIR, labelled_containers};
use super::pods::{LABEL_CONTAINER, LABEL_POD};
use super::{Engine, STUBS_PORT};
use crate::store::Env;

pub(super) async fn collect(engine: &Engine, env: &Env) -> String {
    let mut tar = tar::Builder::new(Vec::new());
    let mut notes = vec![];
    let mut count = 0usize;

    match inner_docker(engine, env).await {
        Some(inner) => match container_logs(&inner, env, &mut tar).await {
            Ok(n) => count += n,
            Err(e) => notes.push(format!("container logs: {e}")),
        },
        None => notes.push("the node's engine is not running: no container logs".into()),
    }
    match files_from_stubs(env).await {
        Ok(bytes) => match append_files(&mut tar, &bytes) {
            Ok(n) => count += n,
            Err(e) => notes.push(format!("log files: {e}")),
        },
        Err(stubs_err) => match files_from_host(engine, env, &mut tar).await {
            Ok(n) => count += n,
            Err(e) => notes.push(format!(
                "log files: stubs unreachable ({stubs_err}) and {e}"
            )),
        },
    }
    match write_archive(engine, env, tar) {
        Ok(path) => {
            let mut s = format!("{count} entries archived to {path}");
            if !notes.is_empty() {
                s.push_str(&format!(" ({})", notes.join("; ")));
            }
            s
        }
        Err(e) => format!("archive not written: {e}"),
    }
}

/// The running node's engine of an env, if it answers.
pub(super) async fn inner_docker(engine: &Engine, env: &Env) -> Option<Docker> {
    let sock = engine.cfg.run_dir.join(&env.id).join("docker.sock");
    // No `ready` yet: the daemon is still starting and would only time out.
    let ready = engine.cfg.run_dir.join(&env.id).join("ready");
    if !sock.exists() || !ready.exists() {
        return None;
    }
    let d = Docker::connect_with_unix(&sock.to_string_lossy(), 30, bollard::API_DEFAULT_VERSION)
        .ok()?;
    tokio::time::timeout(Duration::from_secs(3), d.negotiate_version())
        .await
        .ok()?
        .ok()
}

/// The env's pod containers in the inner engine as (pod, container, id); pause
/// containers hold namespaces and write nothing worth keeping.
async fn pod_containers(
    inner: &Docker,
    env: &Env,
) -> Result<Vec<(String, String, String)>, bollard::errors::Error> {
    let list = labelled_containers(inner, &format!("{LABEL_ENV}={}", env.id)).await?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            let labels = c.labels.unwrap_or_default();
            let pod = labels.get(LABEL_POD)?.clone();
            let container = labels.get(LABEL_CONTAINER)?.clone();
            (container != "pause").then_some((pod, container, c.id?))
        })
        .collect())
}

async fn container_logs(
    inner: &Docker,
    env: &Env,
    tar: &mut tar::Builder<Vec<u8>>,
) -> Result<usize, String> {
    let list = pod_containers(inner, env)
        .await
        .map_err(|e| e.to_string())?;
    let mut n = 0;
    for (pod, container, id) in list {
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .build();
        let mut stream = inner.logs(&id, Some(opts));
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => buf.extend_from_slice(&c.into_bytes()),
                Err(e) => {
                    buf.extend_from_slice(format!("\n[envd: log stream ended: {e}]\n").as_bytes());
                    break;
                }
            }
        }
        append(tar, &format!("{pod}/{container}.log"), &buf).map_err(|e| e.to_string())?;
        n += 1;
    }
    Ok(n)
}

async fn files_from_stubs(env: &Env) -> Result<Vec<u8>, String> {
    let ip = env.node_ip.as_deref().ok_or("no node IP")?;
    let url = format!("http://{ip}:{STUBS_PORT}/_envd/logs.tar.gz");
    let resp = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("GET {url} answered {}", resp.status()));
    }
    Ok(resp.bytes().await.map_err(|e| e.to_string())?.to_vec())
}

/// Re-roots the stubs archive (`<pod>/<file>`) under `<pod>/files/<file>`.
fn append_files(tar: &mut tar::Builder<Vec<u8>>, gz: &[u8]) -> Result<usize, String> {
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut n = 0;
    for entry in a.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let Some((pod, rest)) = path.split_once('/') else {
            continue;
        };
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(|e| e.to_string())?;
        append(tar, &format!("{pod}/files/{rest}"), &data).map_err(|e| e.to_string())?;
        n += 1;
    }
    Ok(n)
}

/// When the sidecar is down, the log files are still on the node's volume.
async fn files_from_host(
    engine: &Engine,
    env: &Env,
    tar: &mut tar::Builder<Vec<u8>>,
) -> Result<usize, String> {
    let vol = engine
        .host()
        .inspect_volume(&format!("envd-{}-docker", env.short_id()))
        .await
        .map_err(|e| format!("no node volume: {e}"))?;
    let root = std::path::Path::new(&vol.mountpoint).join(LOG_DIR);
    let mut n = 0;
    for entry in walkdir::WalkDir::new(&root).into_iter().flatten() {
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(&root) else {
            continue;
        };
        let rel = rel.to_string_lossy().to_string();
        let Some((pod, rest)) = rel.split_once('/') else {
            continue;
        };
        let data = std::fs::read(entry.path()).map_err(|e| e.to_string())?;
        append(tar, &format!("{pod}/files/{rest}"), &data).map_err(|e| e.to_string())?;
        n += 1;
    }
    Ok(n)
}

fn append(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(crate::store::now_ms() as u64 / 1000);
    tar.append_data(&mut h, path, data)
}

fn write_archive(
    engine: &Engine,
    env: &Env,
    tar: tar::Builder<Vec<u8>>,
) -> std::io::Result<String> {
    let path = engine.cfg.archive_path(&env.id);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let raw = tar.into_inner()?;
    let mut gz =
        flate2::write::GzEncoder::new(std::fs::File::create(&tmp)?, flate2::Compression::fast());
    gz.write_all(&raw)?;
    gz.finish()?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path.display().to_string())
}

/// A live tail of a running env: the last `tail` lines of every pod container, then what
/// they write, each line prefixed `<pod>/<container> | `. Ends when the node goes.
pub(super) async fn live(
    engine: &Engine,
    env: &Env,
    tail: u32,
) -> crate::Result<impl futures_util::Stream<Item = Vec<u8>> + use<>> {
    let inner = inner_docker(engine, env).await.ok_or_else(|| {
        crate::Error::Conflict(format!(
            "environment `{}` has no running node to follow",
            env.name
        ))
    })?;
    let list = pod_containers(&inner, env)
        .await
        .map_err(|source| crate::Error::Docker {
            context: "listing the env's containers".into(),
            source,
        })?;
    let mut streams = vec![];
    for (pod, container, id) in list {
        let prefix = format!("{pod}/{container} | ");
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(true)
            .tail(&tail.to_string())
            .build();
        let lines = inner.logs(&id, Some(opts)).filter_map(move |chunk| {
            let prefix = prefix.clone();
            async move {
                let bytes = chunk.ok()?.into_bytes();
                let text = String::from_utf8_lossy(&bytes);
                Some(
                    text.lines()
                        .map(|l| format!("{prefix}{l}\n"))
                        .collect::<String>()
                        .into_bytes(),
                )
            }
        });
        streams.push(Box::pin(lines));
    }
    Ok(futures_util::stream::select_all(streams))
}
