//! `copy-data` of a clone made `with_data`: once the clone's pods are ready, the contents of
//! the source env's databases replace the clone's. A database is a pod whose readiness
//! check is `mysql`, `mongo` or `redis`; the check's port and credentials are used.
//!  - MySQL: `mariadb-dump` of the user databases in the source container, moved as a
//!    file through the two inner engines, applied with `mariadb` in the clone's.
//!  - Mongo: every document and index of the user databases, through the driver.
//!  - Redis: every key of every database with DUMP/RESTORE (TTLs kept).
//!
//! Each step replaces what it copies (drop and re-create), so a retried copy after a crash
//! ends the same. Users and grants are not copied: the clone has the same answers.

use std::net::IpAddr;
use std::time::Instant;

use bollard::Docker;
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};

use super::Engine;
use super::ready::exec_with_env;
use crate::error::{Error, Result};
use crate::lifecycle::{Desired, EventKind, EventStep};
use crate::spec::{CheckKind, Plan, Pod, Ready};
use crate::store::{Env, State};

const STEP: &str = crate::lifecycle::Step::CopyData.as_str();
const DUMP: &str = "/tmp/envd-copy.sql";

/// One side of a copy: an env's node IP, its inner engine and the pod.
struct Side<'a> {
    ip: IpAddr,
    inner: &'a Docker,
    pod: &'a Pod,
    ready: &'a Ready,
}

impl Side<'_> {
    fn container(&self) -> String {
        format!("{}-{}", self.pod.name, self.pod.containers[0].name)
    }
    fn port(&self) -> u16 {
        self.ready.port.unwrap_or(0)
    }
}

pub(super) async fn copy_data(
    engine: &Engine,
    env: &Env,
    source_id: &str,
    inner: &Docker,
    plan: &Plan,
) -> Result<()> {
    let source = engine.store.get(source_id).await?;
    if source.state != State::Ready || source.desired == Desired::Gone {
        return Err(Error::step(
            STEP,
            format!(
                "the source env `{}` is {} (not ready): its data cannot be read; clone it again once it is ready",
                source.name,
                source.state.as_str()
            ),
        ));
    }
    let src_inner = super::archive::inner_docker(engine, &source.id)
        .await
        .ok_or_else(|| {
            Error::step(
                STEP,
                format!(
                    "the node of the source env `{}` does not answer",
                    source.name
                ),
            )
        })?;
    let src_plan = engine.plan(&source)?;
    let src_ip = node_ip(&source)?;
    let dst_ip = node_ip(env)?;
    for pod in &plan.pods {
        let Some(ready) = pod.ready.as_ref().filter(|r| is_database(r.kind)) else {
            continue;
        };
        let (src_pod, src_ready) = src_plan
            .pod(&pod.name)
            .and_then(|p| p.ready.as_ref().map(|r| (p, r)))
            .ok_or_else(|| {
                Error::step(
                    STEP,
                    format!("the source env has no database pod `{}`", pod.name),
                )
            })?;
        let src = Side {
            ip: src_ip,
            inner: &src_inner,
            pod: src_pod,
            ready: src_ready,
        };
        let dst = Side {
            ip: dst_ip,
            inner,
            pod,
            ready,
        };
        let t = Instant::now();
        let what = match ready.kind {
            CheckKind::Mysql => copy_mysql(&src, &dst).await,
            CheckKind::Mongo => copy_mongo(&src, &dst).await,
            _ => copy_redis(&src, &dst).await,
        }
        .map_err(|e| Error::step(format!("{STEP} of pod {}", pod.name), e))?;
        engine
            .store
            .event(
                &env.id,
                EventStep::pod(EventKind::CopyData, &pod.name),
                &format!("copied from {}: {what}", source.name),
                Some(t.elapsed()),
            )
            .await?;
    }
    Ok(())
}

fn is_database(kind: CheckKind) -> bool {
    matches!(kind, CheckKind::Mysql | CheckKind::Mongo | CheckKind::Redis)
}

fn node_ip(env: &Env) -> Result<IpAddr> {
    env.node_ip
        .as_deref()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::step(STEP, format!("env `{}` has no node IP", env.name)))
}

type CopyResult = std::result::Result<String, String>;

async fn copy_mysql(src: &Side<'_>, dst: &Side<'_>) -> CopyResult {
    use mysql_async::prelude::Queryable;
    let user = src.ready.user.clone().unwrap_or_else(|| "root".into());
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(src.ip.to_string())
        .tcp_port(src.port())
        .user(Some(user.clone()))
        .pass(src.ready.password.clone());
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .map_err(|e| format!("connecting to the source: {e}"))?;
    let all: Vec<String> = conn
        .query("SHOW DATABASES")
        .await
        .map_err(|e| format!("listing the source's databases: {e}"))?;
    let _ = conn.disconnect().await;
    let dbs: Vec<String> = all
        .into_iter()
        .filter(|d| {
            !matches!(
                d.as_str(),
                "mysql" | "information_schema" | "performance_schema" | "sys"
            )
        })
        .collect();
    if dbs.is_empty() {
        return Ok("no databases".into());
    }
    let pw = |s: &Side| {
        vec![format!(
            "MYSQL_PWD={}",
            s.ready.password.clone().unwrap_or_default()
        )]
    };
    // Arguments go through "$@": database names need no quoting by us.
    let mut dump = vec![
        "sh".to_string(),
        "-c".into(),
        format!(
            "u=$1; shift; mariadb-dump -u\"$u\" --single-transaction --routines --events --triggers --add-drop-database --databases \"$@\" > {DUMP}"
        ),
        "sh".into(),
        user.clone(),
    ];
    dump.extend(dbs.iter().cloned());
    run(src, dump, pw(src)).await?;
    let moved = move_dump(src, dst).await;
    let _ = exec_with_env(
        src.inner,
        &src.container(),
        vec!["rm".into(), "-f".into(), DUMP.into()],
        vec![],
    )
    .await;
    moved?;
    let dst_user = dst.ready.user.clone().unwrap_or_else(|| "root".into());
    let load = vec![
        "sh".to_string(),
        "-c".into(),
        format!("mariadb -u\"$1\" < {DUMP}; rc=$?; rm -f {DUMP}; exit $rc"),
        "sh".into(),
        dst_user,
    ];
    run(dst, load, pw(dst)).await?;
    Ok(format!("{} database(s): {}", dbs.len(), dbs.join(", ")))
}

async fn run(
    side: &Side<'_>,
    cmd: Vec<String>,
    env: Vec<String>,
) -> std::result::Result<(), String> {
    let (code, out) = exec_with_env(side.inner, &side.container(), cmd, env)
        .await
        .map_err(|e| e.to_string())?;
    if code == 0 {
        Ok(())
    } else {
        Err(format!(
            "in {} exited {code}: {}",
            side.container(),
            out.trim()
        ))
    }
}

/// The dump as a tar from the source's engine straight into the clone's: streamed, never
/// held whole (a dump may be gigabytes).
async fn move_dump(src: &Side<'_>, dst: &Side<'_>) -> std::result::Result<(), String> {
    let opts = DownloadFromContainerOptionsBuilder::default()
        .path(DUMP)
        .build();
    let tar = src
        .inner
        .download_from_container(&src.container(), Some(opts))
        .map_err(std::io::Error::other);
    let opts = UploadToContainerOptionsBuilder::default()
        .path("/tmp")
        .build();
    dst.inner
        .upload_to_container(&dst.container(), Some(opts), bollard::body_try_stream(tar))
        .await
        .map_err(|e| format!("moving {DUMP} of {} into the clone: {e}", src.container()))
}

fn mongo_uri(s: &Side) -> String {
    let auth = match (&s.ready.user, &s.ready.password) {
        (Some(u), Some(p)) => format!("{}:{}@", crate::urlencode(u), crate::urlencode(p)),
        _ => String::new(),
    };
    format!(
        "mongodb://{auth}{}:{}/?authSource=admin&directConnection=true&serverSelectionTimeoutMS=5000",
        s.ip,
        s.port()
    )
}

async fn copy_mongo(src: &Side<'_>, dst: &Side<'_>) -> CopyResult {
    use mongodb::bson::{Document, doc};
    let e = |what: &str| {
        let what = what.to_string();
        move |err: mongodb::error::Error| format!("{what}: {err}")
    };
    let from = mongodb::Client::with_uri_str(mongo_uri(src))
        .await
        .map_err(e("the source"))?;
    let to = mongodb::Client::with_uri_str(mongo_uri(dst))
        .await
        .map_err(e("the clone"))?;
    let dbs: Vec<String> = from
        .list_database_names()
        .await
        .map_err(e("listing the source's databases"))?
        .into_iter()
        .filter(|d| !matches!(d.as_str(), "admin" | "config" | "local"))
        .collect();
    let mut docs_total = 0usize;
    for db in &dbs {
        to.database(db)
            .drop()
            .await
            .map_err(e("dropping in the clone"))?;
        let names = from
            .database(db)
            .list_collection_names()
            .await
            .map_err(e("listing collections"))?;
        for name in names.iter().filter(|n| !n.starts_with("system.")) {
            let src_coll = from.database(db).collection::<Document>(name);
            let dst_coll = to.database(db).collection::<Document>(name);
            let mut cursor = src_coll.find(doc! {}).await.map_err(e("reading"))?;
            let mut batch = Vec::new();
            while let Some(d) = cursor.next().await {
                batch.push(d.map_err(e("reading"))?);
                if batch.len() == 1000 {
                    docs_total += batch.len();
                    dst_coll
                        .insert_many(std::mem::take(&mut batch))
                        .await
                        .map_err(e("writing"))?;
                }
            }
            if batch.is_empty() {
                // An empty collection still exists in the source.
                to.database(db)
                    .create_collection(name)
                    .await
                    .map_err(e("creating a collection"))?;
            } else {
                docs_total += batch.len();
                dst_coll.insert_many(batch).await.map_err(e("writing"))?;
            }
            let indexes: Vec<mongodb::IndexModel> = src_coll
                .list_indexes()
                .await
                .map_err(e("listing indexes"))?
                .try_collect()
                .await
                .map_err(e("listing indexes"))?;
            for ix in indexes {
                let is_id = ix.options.as_ref().and_then(|o| o.name.as_deref()) == Some("_id_");
                if !is_id {
                    dst_coll
                        .create_index(ix)
                        .await
                        .map_err(e("creating an index"))?;
                }
            }
        }
    }
    from.shutdown().immediate(true).await;
    to.shutdown().immediate(true).await;
    Ok(format!(
        "{} database(s) ({}), {docs_total} document(s)",
        dbs.len(),
        dbs.join(", ")
    ))
}

async fn redis_conn(
    s: &Side<'_>,
    db: u32,
) -> std::result::Result<redis::aio::MultiplexedConnection, String> {
    let auth = s
        .ready
        .password
        .as_deref()
        .map(|p| format!(":{}@", crate::urlencode(p)))
        .unwrap_or_default();
    redis::Client::open(format!("redis://{auth}{}:{}/{db}", s.ip, s.port()))
        .map_err(|e| e.to_string())?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("connecting to db {db}: {e}"))
}

async fn copy_redis(src: &Side<'_>, dst: &Side<'_>) -> CopyResult {
    let e = |what: &'static str| move |err: redis::RedisError| format!("{what}: {err}");
    let mut to = redis_conn(dst, 0).await?;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut to)
        .await
        .map_err(e("emptying the clone"))?;
    let mut from = redis_conn(src, 0).await?;
    let info: String = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(&mut from)
        .await
        .map_err(e("INFO keyspace"))?;
    // Lines like `db3:keys=2,expires=0,avg_ttl=0`: the databases holding keys.
    let dbs: Vec<u32> = info
        .lines()
        .filter_map(|l| l.strip_prefix("db")?.split(':').next()?.parse().ok())
        .collect();
    let mut total = 0usize;
    for db in dbs {
        let mut from = redis_conn(src, db).await?;
        let mut to = redis_conn(dst, db).await?;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut from)
                .await
                .map_err(e("SCAN"))?;
            for key in keys {
                let data: Option<Vec<u8>> = redis::cmd("DUMP")
                    .arg(&key)
                    .query_async(&mut from)
                    .await
                    .map_err(e("DUMP"))?;
                // Expired between SCAN and DUMP: nothing to copy.
                let Some(data) = data else { continue };
                let ttl: i64 = redis::cmd("PTTL")
                    .arg(&key)
                    .query_async(&mut from)
                    .await
                    .map_err(e("PTTL"))?;
                if ttl == -2 {
                    continue; // expired meanwhile
                }
                let _: () = redis::cmd("RESTORE")
                    .arg(&key)
                    .arg(ttl.max(0))
                    .arg(data)
                    .arg("REPLACE")
                    .query_async(&mut to)
                    .await
                    .map_err(e("RESTORE"))?;
                total += 1;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    Ok(format!("{total} key(s)"))
}
