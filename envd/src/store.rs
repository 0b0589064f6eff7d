//! The state store: envs, IP leases and events, in SQLite (default) or PostgreSQL via
//! sqlx's `Any` driver. All SQL of envd lives here.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::error::{Error, Result};

pub use crate::lifecycle::{Desired, EventKind, EventStep, State, Step};

#[derive(Debug, Clone, Serialize)]
pub struct Env {
    pub id: String,
    pub name: String,
    pub key: Option<String>,
    pub owner: String,
    pub template: String,
    #[serde(skip)]
    pub template_src: String,
    #[serde(skip)]
    pub answers: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub state: State,
    pub desired: Desired,
    pub step: Step,
    pub error: Option<String>,
    pub node_ip: Option<String>,
    pub keep_on_failure: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub ready_at: Option<i64>,
    pub expires_at: i64,
    /// Init files uploaded with the create request, by pod.
    #[serde(skip)]
    pub init: crate::spec::init::Init,
    /// The env this one was cloned from.
    pub clone_of: Option<String>,
    /// With `clone_of`: the source's databases are copied in once the pods are ready.
    pub with_data: bool,
    /// The warm pool's key while the env waits in it (`pooled`); none once taken.
    #[serde(skip)]
    pub pool: Option<String>,
    /// The name its host objects carry when not its own (a taken pooled env's).
    #[serde(skip)]
    pub host_name: Option<String>,
}

impl Env {
    pub fn short_id(&self) -> &str {
        short_id(&self.id)
    }
}

/// The part of a uuid v7 that differs between envs created in the same millisecond too.
pub fn short_id(id: &str) -> &str {
    let hex = id.rsplit('-').next().unwrap_or(id);
    &hex[hex.len().saturating_sub(8)..]
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub id: i64,
    pub env_id: String,
    pub at: i64,
    /// `kind`, or `kind:pod` for a pod's event (e.g. `ready:mysql`).
    pub step: String,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub message: String,
    pub duration_ms: Option<i64>,
}

pub struct NewEnv {
    pub id: String,
    pub name: String,
    pub key: Option<String>,
    pub owner: String,
    pub template: String,
    pub template_src: String,
    pub answers: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub keep_on_failure: bool,
    pub expires_at: i64,
    pub init: crate::spec::init::Init,
    pub clone_of: Option<String>,
    pub with_data: bool,
}

/// What a create did: a new env, or the live one already holding the key.
pub enum Created {
    New(Env),
    Existing(Env),
}

/// What a listing shows: live envs (not gone or failed) unless a `state` or `all` says
/// otherwise, newest first, at most `limit` of them after `after`.
#[derive(Debug, Default, Clone)]
pub struct EnvFilter {
    pub state: Option<State>,
    pub owner: Option<String>,
    pub key: Option<String>,
    pub label: Option<(String, String)>,
    /// Finished envs (gone, failed) too: the history.
    pub all: bool,
    /// At most this many (none: every match).
    pub limit: Option<u32>,
    /// Only envs listed after this one (the last of the previous page).
    pub after: Option<Cursor>,
}

/// Where a page of a listing ends: the (created_at, id) of its last env, the sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: i64,
    pub id: String,
}

impl Cursor {
    pub fn of(env: &Env) -> Cursor {
        Cursor {
            created_at: env.created_at,
            id: env.id.clone(),
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.created_at, self.id)
    }
}

impl std::str::FromStr for Cursor {
    type Err = Error;
    fn from_str(s: &str) -> Result<Cursor> {
        let bad = || {
            Error::invalid(
                "query",
                "cursor",
                "not a cursor of this listing; take it from the previous page's Link header",
            )
        };
        // What the schema says too: `^[0-9]{1,18}\.[0-9a-z-]{1,64}$`.
        let (at, id) = s.split_once('.').ok_or_else(bad)?;
        let digits = !at.is_empty() && at.len() <= 18 && at.bytes().all(|b| b.is_ascii_digit());
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-');
        if !digits || !id_ok {
            return Err(bad());
        }
        let created_at = at.parse().map_err(|_| bad())?;
        Ok(Cursor {
            created_at,
            id: id.to_string(),
        })
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    postgres: bool,
    /// The id of every env whose state or events were just recorded by this process:
    /// waiters wake on it instead of polling.
    changed: tokio::sync::broadcast::Sender<String>,
    /// Image pulls as they progress (never stored; see `images.rs`).
    pulls: tokio::sync::broadcast::Sender<PullProgress>,
    /// What tells whether anything was written since (see `version.rs`).
    version: version::Version,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

macro_rules! env_columns {
    () => {
        "id, name, env_key, owner, template, template_src, answers, labels, state, desired, step, error, node_ip, keep_on_failure, created_at, updated_at, ready_at, expires_at, init, clone_of, with_data, pool, host_name"
    };
}

/// [`env_columns`] without the init data, for listings.
macro_rules! list_columns {
    () => {
        "id, name, env_key, owner, template, template_src, answers, labels, state, desired, step, error, node_ip, keep_on_failure, created_at, updated_at, ready_at, expires_at, '{}' AS init, clone_of, with_data, pool, host_name"
    };
}

impl Store {
    /// Opens (creating the SQLite file when needed) and migrates the store.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let postgres = url.starts_with("postgres:") || url.starts_with("postgresql:");
        let url = if url.starts_with("sqlite:") && !url.contains('?') && !url.contains(":memory:") {
            format!("{url}?mode=rwc")
        } else {
            url.to_string()
        };
        if let Some(path) = sqlite_file(&url) {
            private_file(&path)?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if postgres { 10 } else { 4 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if !postgres {
                        // WAL lets readers (API) run beside the engine's writes; busy_timeout
                        // makes a writer wait for the lock instead of failing at once.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        if postgres {
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        } else {
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        }
        let (changed, _) = tokio::sync::broadcast::channel(1024);
        let (pulls, _) = tokio::sync::broadcast::channel(256);
        if postgres {
            tokio::spawn(listen(url.clone(), changed.clone(), pulls.clone()));
        }
        let version = version::Version::open(&url).await?;
        Ok(Store {
            pool,
            postgres,
            changed,
            pulls,
            version,
        })
    }

    /// Env ids as their state or events are recorded: by this process, and on
    /// PostgreSQL by every instance on the store (LISTEN/NOTIFY).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.changed.subscribe()
    }

    /// Waits for the next record of env `id` (or a lag: then the caller looks anyway).
    pub async fn next_change(rx: &mut tokio::sync::broadcast::Receiver<String>, id: &str) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match rx.recv().await {
                Ok(changed) if changed == id => return,
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => return,
                Err(RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }

    async fn changed(&self, id: &str) {
        if self.postgres {
            // Other instances' waiters (and ours, through the listener) hear of it.
            let notified = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(id)
                .execute(&self.pool)
                .await;
            if let Err(e) = notified {
                tracing::debug!("NOTIFY {CHANNEL}: {e}");
            }
        }
        // No receiver is fine: nobody waits.
        let _ = self.changed.send(id.to_string());
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    /// Inserts a requested env; with a key held by a live env, returns that env instead.
    pub async fn create_env(&self, new: NewEnv) -> Result<Created> {
        self.create_env_in(new, None).await
    }

    /// [`Store::create_env`], for the warm pool of key `pool` when given.
    pub async fn create_env_in(&self, new: NewEnv, pool: Option<&str>) -> Result<Created> {
        if let Some(key) = &new.key
            && let Some(env) = self.live_by_key(&new.owner, key).await?
        {
            return Ok(Created::Existing(env));
        }
        let now = now_ms();
        let res = sqlx::query(concat!("INSERT INTO envs (", env_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'requested', 'ready', 'requested', NULL, NULL, $9, $10, $10, NULL, $11, $12, $13, $14, $15, NULL)"))
        .bind(&new.id)
        .bind(&new.name)
        .bind(&new.key)
        .bind(&new.owner)
        .bind(&new.template)
        .bind(&new.template_src)
        .bind(json(&new.answers))
        .bind(json(&new.labels))
        .bind(i64::from(new.keep_on_failure))
        .bind(now)
        .bind(new.expires_at)
        .bind(serde_json::to_string(&new.init).unwrap_or_else(|_| "{}".into()))
        .bind(&new.clone_of)
        .bind(i64::from(new.with_data))
        .bind(pool)
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                // A concurrent create took the key first: that env is the answer.
                if let Some(key) = &new.key
                    && let Some(env) = self.live_by_key(&new.owner, key).await?
                {
                    return Ok(Created::Existing(env));
                }
                return Err(Error::Conflict(format!(
                    "a live environment is already named `{}`; choose another name or remove it first",
                    new.name
                )));
            }
            Err(e) => return Err(e.into()),
        }
        self.event(
            &new.id,
            EventKind::Requested,
            &format!("template {}", new.template),
            None,
        )
        .await?;
        Ok(Created::New(self.get(&new.id).await?))
    }

    /// The owner's live env holding a CI key (keys are scoped per owner).
    pub async fn live_by_key(&self, owner: &str, key: &str) -> Result<Option<Env>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            env_columns!(),
            " FROM envs WHERE env_key = $1 AND owner = $2 AND state NOT IN ('gone', 'failed')"
        ))
        .bind(key)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| env_from_row(&r)).transpose()
    }

    /// By id, or by name (the live env of that name, else the newest).
    pub async fn get(&self, id_or_name: &str) -> Result<Env> {
        self.get_scoped(id_or_name, None).await
    }

    /// [`Store::get`] among one owner's envs (`None`: every owner's). Another owner's env
    /// is not found, worded as one that does not exist.
    pub async fn get_scoped(&self, id_or_name: &str, owner: Option<&str>) -> Result<Env> {
        let row = sqlx::query(concat!("SELECT ", env_columns!(), " FROM envs WHERE (id = $1 OR name = $1) AND ($2 = '' OR owner = $2) ORDER BY (CASE WHEN id = $1 THEN 0 WHEN state NOT IN ('gone', 'failed') THEN 1 ELSE 2 END), created_at DESC LIMIT 1"))
        .bind(id_or_name)
        .bind(owner.unwrap_or_default())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => env_from_row(&r),
            None => Err(Error::NotFound(format!("environment `{id_or_name}`"))),
        }
    }

    /// Envs as `f` says, newest first; their init data is left out (a listing never
    /// shows it, and it may be megabytes).
    pub async fn list(&self, f: &EnvFilter) -> Result<Vec<Env>> {
        // A label filter is applied here, after the query: the limit too, then.
        let sql_limit = match (f.limit, &f.label) {
            (Some(n), None) => i64::from(n),
            _ => i64::MAX,
        };
        let (after_at, after_id) = match &f.after {
            Some(c) => (c.created_at, c.id.as_str()),
            None => (i64::MAX, ""),
        };
        // Two texts rather than a parameter for "live only": with a bound value beside the
        // partial indexes' `state NOT IN (...)`, SQLite was seen preparing the statement
        // again at every run (likely checking whether the value lets it use them).
        macro_rules! listing {
            ($live:literal) => {
                concat!("SELECT ", list_columns!(), " FROM envs WHERE ($1 = '' OR state = $1) AND ($2 = '' OR owner = $2) AND ($3 = '' OR env_key = $3)", $live, " AND (created_at < $4 OR (created_at = $4 AND id < $5)) ORDER BY created_at DESC, id DESC LIMIT $6")
            };
        }
        let sql = if f.all || f.state.is_some() {
            listing!("")
        } else {
            listing!(" AND state NOT IN ('gone', 'failed')")
        };
        let rows = sqlx::query(sql)
            .bind(f.state.map(|s| s.as_str()).unwrap_or(""))
            .bind(f.owner.clone().unwrap_or_default())
            .bind(f.key.clone().unwrap_or_default())
            .bind(after_at)
            .bind(after_id)
            .bind(sql_limit)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let env = env_from_row(r)?;
            if let Some((k, v)) = &f.label
                && env.labels.get(k) != Some(v)
            {
                continue;
            }
            out.push(env);
            if f.limit.is_some_and(|n| out.len() >= n as usize) {
                break;
            }
        }
        Ok(out)
    }

    /// The owner's envs that count against its quota: not finished, not being torn down.
    pub async fn live_of(&self, owner: &str) -> Result<Vec<Env>> {
        let rows = sqlx::query(concat!("SELECT ", env_columns!(), " FROM envs WHERE owner = $1 AND state NOT IN ('gone', 'failed') AND desired <> 'gone' ORDER BY created_at"))
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(env_from_row).collect()
    }

    /// How many envs the owner created (clones too) since `since` (ms).
    pub async fn created_since(&self, owner: &str, since: i64) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM envs WHERE owner = $1 AND created_at >= $2")
            .bind(owner)
            .bind(since)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Ids of envs the engine still has work for or holds objects of.
    pub async fn active_ids(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id FROM envs WHERE state NOT IN ('gone', 'failed') ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>(0)?))
            .collect()
    }

    pub async fn set_state(
        &self,
        id: &str,
        state: State,
        step: Step,
        error: Option<&str>,
    ) -> Result<()> {
        state_query(id, state, step, error)
            .execute(&self.pool)
            .await?;
        self.changed(id).await;
        Ok(())
    }

    /// Sets the state and records its event in one transaction, so whoever sees the env
    /// in `state` also sees the event that says so.
    pub async fn set_state_with_event(
        &self,
        id: &str,
        state: State,
        step: Step,
        event: impl Into<EventStep>,
        message: &str,
        duration: Option<Duration>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        state_query(id, state, step, None).execute(&mut *tx).await?;
        event_query(id, event.into(), message, duration)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.changed(id).await;
        Ok(())
    }

    pub async fn set_step(&self, id: &str, step: Step) -> Result<()> {
        sqlx::query("UPDATE envs SET step = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(step.shown().as_str())
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Asks for teardown; the engine acts on it. A failed env kept for debugging is let go:
    /// it goes back to `collecting`, and its teardown ends in `failed` again.
    pub async fn request_teardown(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE envs SET desired = 'gone', state = CASE WHEN state = 'failed' AND keep_on_failure = 1 THEN 'collecting' ELSE state END, keep_on_failure = 0, updated_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        self.changed(id).await;
        Ok(())
    }

    /// Lets a CI key go from an env being replaced (`recreate`).
    pub async fn release_key(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE envs SET env_key = NULL, updated_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Live envs whose TTL has passed: the reaper's work.
    pub async fn expired_ids(&self, now: i64) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM envs WHERE state NOT IN ('gone', 'failed') AND desired <> 'gone' AND expires_at <= $1")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>(0)?))
            .collect()
    }

    pub async fn set_expires_at(&self, id: &str, expires_at: i64) -> Result<()> {
        // A new expiry earns a new warning.
        sqlx::query(
            "UPDATE envs SET expires_at = $2, updated_at = $3, warned_at = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(expires_at)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replaces the env's answers (`config set`, validated by the caller).
    pub async fn update_answers(&self, id: &str, answers: &BTreeMap<String, String>) -> Result<()> {
        sqlx::query("UPDATE envs SET answers = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(json(answers))
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Allocates the env's node IP and moves it to `creating` in one transaction; the
    /// UNIQUE constraint on the lease makes concurrent allocations (also from several
    /// envd on one database) retry instead of colliding.
    pub async fn lease_and_create(
        &self,
        id: &str,
        pool: &netcfg::IpPool,
        pool_name: &str,
    ) -> Result<IpAddr> {
        for attempt in 0..50u32 {
            match self.try_lease(id, pool).await {
                Ok(Some(ip)) => {
                    self.changed(id).await;
                    return Ok(ip);
                }
                Ok(None) => return Err(Error::PoolExhausted(pool_name.to_string())),
                Err(Error::Store(e)) if is_unique_violation(&e) || is_busy(&e) => {
                    tokio::time::sleep(Duration::from_millis(5 + u64::from(attempt) * 7)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict(
            "could not take an IP lease after 50 attempts; the store is too contended".into(),
        ))
    }

    async fn try_lease(&self, id: &str, pool: &netcfg::IpPool) -> Result<Option<IpAddr>> {
        let mut tx = self.pool.begin().await?;
        if let Some(row) = sqlx::query("SELECT ip FROM leases WHERE env_id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        {
            let ip: String = row.try_get(0)?;
            tx.commit().await?;
            return parse_ip(&ip).map(Some);
        }
        let rows = sqlx::query("SELECT ip FROM leases")
            .fetch_all(&mut *tx)
            .await?;
        let mut in_use = HashSet::new();
        for r in &rows {
            in_use.insert(parse_ip(&r.try_get::<String, _>(0)?)?);
        }
        let ip = match pool.allocate(&in_use) {
            Ok(ip) => ip,
            Err(_) => return Ok(None),
        };
        let now = now_ms();
        sqlx::query("INSERT INTO leases (ip, env_id, created_at) VALUES ($1, $2, $3)")
            .bind(ip.to_string())
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE envs SET state = 'creating', step = 'lease', node_ip = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(ip.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(ip))
    }

    /// Counts for `/metrics`: envs by state, leases, and the sum/count of the durations
    /// recorded for `step` events (e.g. `ready`, `freeing`).
    pub async fn state_counts(&self) -> Result<Vec<(State, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM envs GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?.parse()?, r.try_get(1)?)))
            .collect()
    }

    /// Envs that may hold host objects: not finished, or failed and kept for debugging.
    pub async fn holding_ids(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM envs WHERE state NOT IN ('gone', 'failed') OR (state = 'failed' AND keep_on_failure = 1)")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>(0)?))
            .collect()
    }

    /// Every lease as (ip, env id).
    pub async fn leases(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT ip, env_id FROM leases ORDER BY ip")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Every lease as (ip, env id, taken at in ms).
    pub async fn leases_since(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query("SELECT ip, env_id, created_at FROM leases ORDER BY ip")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    pub async fn lease_count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM leases")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    pub async fn step_durations(&self, kind: EventKind) -> Result<(f64, i64)> {
        let row = sqlx::query("SELECT CAST(COALESCE(SUM(duration_ms), 0) AS BIGINT), COUNT(duration_ms) FROM events WHERE step = $1")
            .bind(kind.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get::<i64, _>(0)? as f64 / 1000.0, row.try_get(1)?))
    }

    pub async fn release_lease(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE env_id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Frees the lease `ip` of `env_id` if it was taken before `before_ms` and its env is
    /// not live: one statement, so a lease whose env is (or became) live is never touched.
    /// Returns whether it was freed.
    pub async fn release_orphan_lease(
        &self,
        ip: &str,
        env_id: &str,
        before_ms: i64,
    ) -> Result<bool> {
        let done = sqlx::query(concat!(
            "DELETE FROM leases WHERE ip = $1 AND env_id = $2 AND created_at <= $3 ",
            "AND NOT EXISTS (SELECT 1 FROM envs WHERE envs.id = leases.env_id ",
            "AND (envs.state NOT IN ('gone', 'failed') OR (envs.state = 'failed' AND envs.keep_on_failure = 1)))"
        ))
        .bind(ip)
        .bind(env_id)
        .bind(before_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Whether the env is one this store still holds host objects for (see [`Store::holding_ids`]).
    pub async fn holds(&self, id: &str) -> Result<bool> {
        let row = sqlx::query("SELECT COUNT(*) FROM envs WHERE id = $1 AND (state NOT IN ('gone', 'failed') OR (state = 'failed' AND keep_on_failure = 1))")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    /// Stores the uploaded directory (base64 of a gzip'd tar) of one pod of an env.
    pub async fn put_upload(&self, env_id: &str, pod: &str, data: &str) -> Result<()> {
        sqlx::query("INSERT INTO uploads (env_id, pod, data) VALUES ($1, $2, $3)")
            .bind(env_id)
            .bind(pod)
            .bind(data)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The env's uploaded directories by pod (base64 of gzip'd tars).
    pub async fn uploads(&self, env_id: &str) -> Result<BTreeMap<String, String>> {
        let rows = sqlx::query("SELECT pod, data FROM uploads WHERE env_id = $1")
            .bind(env_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// The uploaded directory of one pod of an env, if any.
    pub async fn upload_of(&self, env_id: &str, pod: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT data FROM uploads WHERE env_id = $1 AND pod = $2")
            .bind(env_id)
            .bind(pod)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub async fn delete_uploads(&self, env_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM uploads WHERE env_id = $1")
            .bind(env_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn lease_of(&self, id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT ip FROM leases WHERE env_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub async fn event(
        &self,
        id: &str,
        step: impl Into<EventStep>,
        message: &str,
        duration: Option<Duration>,
    ) -> Result<()> {
        event_query(id, step.into(), message, duration)
            .execute(&self.pool)
            .await?;
        self.changed(id).await;
        Ok(())
    }

    pub async fn events(&self, id: &str, after: i64) -> Result<Vec<Event>> {
        let rows = sqlx::query("SELECT id, env_id, at, step, message, duration_ms FROM events WHERE env_id = $1 AND id > $2 ORDER BY id")
            .bind(id)
            .bind(after)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let step: String = r.try_get(3)?;
                let EventStep { kind, pod } = step.parse()?;
                Ok(Event {
                    id: r.try_get(0)?,
                    env_id: r.try_get(1)?,
                    at: r.try_get(2)?,
                    step,
                    kind,
                    pod,
                    message: r.try_get(4)?,
                    duration_ms: r.try_get(5)?,
                })
            })
            .collect()
    }
}

/// The PostgreSQL channel on which every instance announces the envs it recorded.
const CHANNEL: &str = "envd_changes";

/// Relays the store's notifications into `tx` (and pull progress into `pulls`);
/// reconnects when the database goes away.
async fn listen(
    url: String,
    tx: tokio::sync::broadcast::Sender<String>,
    pulls: tokio::sync::broadcast::Sender<PullProgress>,
) {
    loop {
        if let Ok(mut l) = sqlx::postgres::PgListener::connect(&url).await
            && l.listen_all([CHANNEL, images::PULLS_CHANNEL]).await.is_ok()
        {
            while let Ok(n) = l.recv().await {
                if n.channel() == images::PULLS_CHANNEL {
                    if let Ok(p) = serde_json::from_str(n.payload()) {
                        let _ = pulls.send(p);
                    }
                } else {
                    let _ = tx.send(n.payload().to_string());
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn json(m: &BTreeMap<String, String>) -> String {
    serde_json::to_string(m).unwrap_or_else(|_| "{}".into())
}

fn parse_ip(s: &str) -> Result<IpAddr> {
    s.parse()
        .map_err(|_| Error::invalid("store", "leases.ip", format!("`{s}` is not an IP address")))
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

fn state_query<'q>(id: &'q str, state: State, step: Step, error: Option<&'q str>) -> AnyQuery<'q> {
    let now = now_ms();
    sqlx::query("UPDATE envs SET state = $2, step = $3, error = COALESCE($4, error), updated_at = $5, ready_at = CASE WHEN $2 = 'ready' THEN COALESCE(ready_at, $5) ELSE ready_at END WHERE id = $1")
        .bind(id)
        .bind(state.as_str())
        .bind(step.shown().as_str())
        .bind(error)
        .bind(now)
}

fn event_query<'q>(
    id: &'q str,
    step: EventStep,
    message: &'q str,
    duration: Option<Duration>,
) -> AnyQuery<'q> {
    sqlx::query(
        "INSERT INTO events (env_id, at, step, message, duration_ms) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(now_ms())
    .bind(step.to_string())
    .bind(message)
    .bind(duration.map(|d| d.as_millis() as i64))
}

fn env_from_row(r: &AnyRow) -> Result<Env> {
    let map = |s: String| serde_json::from_str::<BTreeMap<String, String>>(&s).unwrap_or_default();
    Ok(Env {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        key: r.try_get("env_key")?,
        owner: r.try_get("owner")?,
        template: r.try_get("template")?,
        template_src: r.try_get("template_src")?,
        answers: map(r.try_get("answers")?),
        labels: map(r.try_get("labels")?),
        state: r.try_get::<String, _>("state")?.parse()?,
        desired: r.try_get::<String, _>("desired")?.parse()?,
        step: r.try_get::<String, _>("step")?.parse()?,
        error: r.try_get("error")?,
        node_ip: r.try_get("node_ip")?,
        keep_on_failure: r.try_get::<i64, _>("keep_on_failure")? != 0,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        ready_at: r.try_get("ready_at")?,
        expires_at: r.try_get("expires_at")?,
        init: serde_json::from_str(&r.try_get::<String, _>("init")?).unwrap_or_default(),
        clone_of: r.try_get("clone_of")?,
        with_data: r.try_get::<i64, _>("with_data")? != 0,
        pool: r.try_get("pool")?,
        host_name: r.try_get("host_name")?,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn is_busy(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.message().contains("locked") || d.message().contains("busy"))
}

mod claims;
mod config;
mod pools;
pub use config::{ConfigChange, NewChange};
pub use pools::{PoolMember, PoolRow, Take, TakeChange};
mod audit;
mod jobs;
mod tokens;
pub use audit::{AuditEntry, AuditFilter};
pub use jobs::JobRun;
pub use tokens::{NewToken, TokenRow};
mod images;
pub use images::{PullProgress, UploadedImage};

mod version;

#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod tests;

/// The file of a `sqlite://path?...` URL (not `:memory:`).
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.contains(":memory:")).then(|| path.into())
}

/// The store holds every env's passwords: its file (and so SQLite's -wal and -shm, which
/// take its mode) is the owner's alone, whatever the umask.
fn private_file(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let ctx = |source| Error::Io {
        context: format!("creating the store file {}", path.display()),
        source,
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(ctx)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(ctx)?;
    for side in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(side);
        if let Err(e) = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(ctx(e));
        }
    }
    Ok(())
}
