//! Log collection before teardown: `docker logs` of every inner container plus the files
//! each pod wrote to its log directory (read from the node's volume without following a
//! link), into one archive `<data-dir>/logs/<env-id>.tar.gz` laid out as
//! `<pod>/<container>.log` and `<pod>/files/...`. Streamed to disk and bounded (see
//! [`LogLimits`]): a container that writes gigabytes costs envd no memory and a collection
//! that runs past its time limit ends with a partial archive. Best effort: whatever can be
//! read is kept, and the summary says what.

use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::LogsOptionsBuilder;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::Engine;
use super::logsink::{Cut, LogLimits, Sink};
use super::node::{LABEL_ENV, LOG_DIR, labelled_containers};
use super::pods::{LABEL_CONTAINER, LABEL_POD};
use crate::hostfs::walk_files;
use crate::store::Env;

pub(super) async fn collect(engine: &Engine, host: &Docker, env: &Env) -> String {
    let limits: LogLimits = engine.cfg.logs.clone();
    let deadline = Instant::now()
        .checked_add(limits.time)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(24 * 3600));
    let path = engine.cfg.archive_path(&env.id);
    let sink = {
        let (path, limits) = (path.clone(), limits.clone());
        tokio::task::spawn_blocking(move || Sink::create(&path, limits)).await
    };
    let mut sink = match sink {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return format!("archive not written: {e}"),
        Err(e) => return format!("archive not written: {e}"),
    };
    let mut notes = vec![];

    match inner_docker(engine, &env.id).await {
        Some(inner) => match container_logs(&inner, env, sink, deadline).await {
            (Some(s), r) => {
                sink = s;
                if let Err(e) = r {
                    notes.push(format!("container logs: {e}"));
                }
            }
            (None, r) => return format!("archive not written: {r:?}"),
        },
        None => notes.push("the node's engine is not running: no container logs".into()),
    }
    let (back, r) = files_from_host(host, env, sink, deadline).await;
    let Some(mut sink) = back else {
        return format!("archive not written: {r:?}");
    };
    if let Err(e) = r {
        notes.push(format!("log files: {e}"));
    }
    if sink.partial.is_none() && Instant::now() >= deadline {
        sink.partial = Some(format!(
            "the collection time limit of {} passed",
            humantime::format_duration(limits.time)
        ));
    }
    let summary = |s: &Sink| {
        let mut text = format!("{} entries", s.entries);
        if s.cut > 0 {
            text.push_str(&format!(
                " ({} bytes kept, {} cut by the limits)",
                s.kept, s.cut
            ));
        }
        if let Some(p) = &s.partial {
            text.push_str(&format!("; partial: {p}"));
        }
        text
    };
    let head = summary(&sink);
    match tokio::task::spawn_blocking(move || sink.finish()).await {
        Ok(Ok(path)) => {
            let mut s = format!("{head} archived to {}", path.display());
            if !notes.is_empty() {
                s.push_str(&format!(" ({})", notes.join("; ")));
            }
            s
        }
        Ok(Err(e)) => format!("archive not written: {e}"),
        Err(e) => format!("archive not written: {e}"),
    }
}

/// The running node's engine of an env, if it answers.
pub(super) async fn inner_docker(engine: &Engine, env_id: &str) -> Option<Docker> {
    let sock = engine.cfg.run_dir.join(env_id).join("docker.sock");
    // No `ready` yet: the daemon is still starting and would only time out.
    let ready = engine.cfg.run_dir.join(env_id).join("ready");
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

/// Every container's output, each streamed to a temporary file (up to the room the
/// limits leave; the rest only counted) and then appended.
async fn container_logs(
    inner: &Docker,
    env: &Env,
    mut sink: Sink,
    deadline: Instant,
) -> (Option<Sink>, std::io::Result<()>) {
    let list = match pod_containers(inner, env).await {
        Ok(l) => l,
        Err(e) => return (Some(sink), Err(std::io::Error::other(e))),
    };
    for (pod, container, id) in list {
        if Instant::now() >= deadline {
            sink.partial = Some(format!(
                "the time limit passed before {pod}/{container}.log"
            ));
            break;
        }
        let part = sink.part_path(&id);
        let (kept, cut) = match spool(inner, &id, &part, sink.room(), deadline).await {
            Ok(r) => r,
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                return (Some(sink), Err(e));
            }
        };
        if let Cut::AtLeast(_) = cut {
            sink.partial = Some(format!(
                "the time limit passed while reading {pod}/{container}.log"
            ));
        }
        let name = format!("{pod}/{container}.log");
        let p = part.clone();
        let (back, r) = sink
            .blocking(move |s| s.put(&name, std::fs::File::open(&p)?, kept, cut))
            .await;
        let _ = tokio::fs::remove_file(&part).await;
        match back {
            Some(s) => sink = s,
            None => return (None, r),
        }
        if r.is_err() {
            return (Some(sink), r);
        }
    }
    (Some(sink), Ok(()))
}

/// Streams one container's output into `part`: at most `room` bytes kept, the rest
/// counted until the stream ends or the deadline passes.
async fn spool(
    inner: &Docker,
    id: &str,
    part: &std::path::Path,
    room: u64,
    deadline: Instant,
) -> std::io::Result<(u64, Cut)> {
    let mut file = tokio::fs::File::create(part).await?;
    let opts = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .build();
    let mut stream = inner.logs(id, Some(opts));
    let (mut kept, mut cut) = (0u64, 0u64);
    let mut timed_out = false;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => {
                let bytes = chunk.into_bytes();
                let take = (bytes.len() as u64).min(room - kept);
                if take > 0 {
                    file.write_all(&bytes[..take as usize]).await?;
                    kept += take;
                }
                cut += bytes.len() as u64 - take;
            }
            Ok(Some(Err(e))) => {
                let note = format!("\n[envd: log stream ended: {e}]\n");
                let take = (note.len() as u64).min(room - kept);
                file.write_all(&note.as_bytes()[..take as usize]).await?;
                kept += take;
                break;
            }
            Ok(None) => break,
            Err(_) => {
                timed_out = true;
                break;
            }
        }
    }
    file.flush().await?;
    let cut = match (timed_out, cut) {
        (true, n) => Cut::AtLeast(n),
        (false, 0) => Cut::None,
        (false, n) => Cut::Exactly(n),
    };
    Ok((kept, cut))
}

/// The log files, straight from the node's volume on the host. The tree is the
/// containers' to write: walked through fds, links never followed, FIFOs never opened,
/// each file capped.
async fn files_from_host(
    host: &Docker,
    env: &Env,
    sink: Sink,
    deadline: Instant,
) -> (Option<Sink>, std::io::Result<()>) {
    let vol = match host
        .inspect_volume(&format!("envd-{}-docker", env.short_id()))
        .await
    {
        Ok(v) => v,
        Err(e) => {
            return (
                Some(sink),
                Err(std::io::Error::other(format!("no node volume: {e}"))),
            );
        }
    };
    let root = std::path::PathBuf::from(&vol.mountpoint);
    let deadline = deadline.into_std();
    sink.blocking(move |s| {
        let r = walk_files(&root, &[LOG_DIR], &mut |rel, file| {
            let Some((pod, rest)) = rel.split_once('/') else {
                return Ok(());
            };
            if std::time::Instant::now() >= deadline {
                s.partial.get_or_insert_with(|| {
                    format!("the time limit passed before {pod}/files/{rest}")
                });
                return Ok(());
            }
            s.put_file(&format!("{pod}/files/{rest}"), file)
        });
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    })
    .await
}

/// A live tail of a running env: the last `tail` lines of every pod container, then what
/// they write, each line prefixed `<pod>/<container> | `. Ends when the node goes.
pub(super) async fn live(
    inner: &Docker,
    env: &Env,
    tail: u32,
) -> crate::Result<super::driver::LogLines> {
    let list = pod_containers(inner, env)
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
    Ok(futures_util::stream::select_all(streams).boxed())
}
