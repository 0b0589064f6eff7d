//! Warm pools: their settings and counters, the envs built for them, and the take of one
//! by a create (one statement picks and renames it, so no two creates get the same one,
//! also across instances on PostgreSQL).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sqlx::Row;

use super::{Created, Env, NewEnv, Store, env_from_row, is_unique_violation, json, now_ms};
use crate::error::{Error, Result};
use crate::lifecycle::EventKind;

/// One pool's settings and counters as stored.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PoolRow {
    pub name: String,
    /// `name` or `name:version` of a catalog template (without a version: the newest).
    pub template: String,
    /// The answers given (the template's defaults for the rest).
    pub answers: BTreeMap<String, String>,
    pub min: u32,
    pub max: u32,
    /// Creates that took a pooled env.
    pub claims: i64,
    /// Creates of this template that found none (see the reasons in `/metrics`).
    pub misses: i64,
    pub updated_at: i64,
}

/// What a create asks of the env it takes.
pub struct Take<'a> {
    /// The pool (its key matches the create's template version and answers).
    pub pool: &'a str,
    pub key: &'a str,
    pub name: &'a str,
    pub env_key: Option<&'a str>,
    pub owner: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub expires_at: i64,
    pub keep_on_failure: bool,
    /// Answers the take applies before the handover (a pool of other answers).
    pub change: Option<TakeChange<'a>>,
}

/// Answers a take gives the env it takes, recorded as its config generation 1 (a pooled
/// env never had one: only ready envs take changes) for its loop to apply.
pub struct TakeChange<'a> {
    /// The create's answers; the env keeps its generated passwords where these give none.
    pub given: &'a BTreeMap<String, String>,
    /// The pool's answers (the env's answers besides its generated passwords).
    pub pool_given: &'a BTreeMap<String, String>,
    /// Names of the answers that differ.
    pub changed: &'a [String],
    /// Pods they change (none: only the answers are recorded).
    pub pods: &'a [String],
}

/// A live env built for a pool: its id, key and state.
#[derive(Debug, Clone)]
pub struct PoolMember {
    pub id: String,
    pub key: String,
    pub state: crate::lifecycle::State,
}

/// What a take sets of the env it takes ($2..$8), then `$9`.. of a rebuild.
macro_rules! take_set {
    () => {
        "UPDATE envs SET pool = NULL, host_name = COALESCE(host_name, name), name = $2, env_key = $3, owner = $4, labels = $5, expires_at = $6, keep_on_failure = $7, created_at = $8, updated_at = $8, ready_at = NULL, state = 'creating', step = 'pods'"
    };
}

/// The pick of the oldest pooled env of pool key $1, up to its end (each dialect closes it).
macro_rules! take_pick {
    () => {
        " WHERE id = (SELECT id FROM envs WHERE pool = $1 AND state = 'pooled' AND desired = 'ready' AND error IS NULL ORDER BY updated_at LIMIT 1"
    };
}

/// The end of the pick: PostgreSQL skips rows another transaction is taking; SQLite runs
/// one writing statement at a time, so there the pick and the update are one already.
macro_rules! take_end {
    (postgres) => {
        " FOR UPDATE SKIP LOCKED) AND state = 'pooled' RETURNING id, answers"
    };
    (sqlite) => {
        ") AND state = 'pooled' RETURNING id, answers"
    };
}

impl Store {
    pub async fn upsert_pool(&self, p: &PoolRow) -> Result<()> {
        sqlx::query("INSERT INTO pools (name, template, answers, min_size, max_size, claims, misses, updated_at) VALUES ($1, $2, $3, $4, $5, 0, 0, $6) ON CONFLICT (name) DO UPDATE SET template = $2, answers = $3, min_size = $4, max_size = $5, updated_at = $6")
            .bind(&p.name)
            .bind(&p.template)
            .bind(json(&p.answers))
            .bind(i64::from(p.min))
            .bind(i64::from(p.max))
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn pools(&self) -> Result<Vec<PoolRow>> {
        let rows = sqlx::query("SELECT name, template, answers, min_size, max_size, claims, misses, updated_at FROM pools ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let answers: String = r.try_get(2)?;
                let size = |i: usize| -> Result<u32> {
                    Ok(u32::try_from(r.try_get::<i64, _>(i)?).unwrap_or(0))
                };
                Ok(PoolRow {
                    name: r.try_get(0)?,
                    template: r.try_get(1)?,
                    answers: serde_json::from_str(&answers).unwrap_or_default(),
                    min: size(3)?,
                    max: size(4)?,
                    claims: r.try_get(5)?,
                    misses: r.try_get(6)?,
                    updated_at: r.try_get(7)?,
                })
            })
            .collect()
    }

    /// Live envs built for pools (not asked to go): being built or waiting.
    pub async fn pool_members(&self) -> Result<Vec<PoolMember>> {
        let rows = sqlx::query("SELECT id, pool, state FROM envs WHERE pool IS NOT NULL AND state NOT IN ('gone', 'failed') AND desired <> 'gone' AND error IS NULL ORDER BY created_at")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PoolMember {
                    id: r.try_get(0)?,
                    key: r.try_get(1)?,
                    state: r.try_get::<String, _>(2)?.parse()?,
                })
            })
            .collect()
    }

    /// Records env `new` for the pool `pool` of key `key` (`requested`) if that pool
    /// holds fewer than `min` live envs and builds none; false if not.
    /// The check and the insert are one transaction that first writes the pool's row, so
    /// refills of instances sharing the store take turns: none builds past the size, nor
    /// two at once for a pool.
    pub async fn create_pool_env(
        &self,
        new: &NewEnv,
        pool: &str,
        key: &str,
        min: u32,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // The row lock (PostgreSQL), the database's write lock (SQLite) until the end.
        sqlx::query("UPDATE pools SET updated_at = updated_at WHERE name = $1")
            .bind(pool)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(CASE WHEN state <> 'pooled' THEN 1 ELSE 0 END), 0) AS BIGINT) FROM envs WHERE pool = $1 AND state NOT IN ('gone', 'failed') AND desired <> 'gone' AND error IS NULL")
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
        let (have, building): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        if have >= i64::from(min) || building > 0 {
            return Ok(false);
        }
        let now = now_ms();
        sqlx::query(concat!("INSERT INTO envs (", env_columns!(), ") VALUES ($1, $2, NULL, $3, $4, $5, $6, $7, 'requested', 'ready', 'requested', NULL, NULL, 0, $8, $8, NULL, $9, $10, NULL, 0, $11, NULL)"))
            .bind(&new.id)
            .bind(&new.name)
            .bind(&new.owner)
            .bind(&new.template)
            .bind(&new.template_src)
            .bind(json(&new.answers))
            .bind(json(&new.labels))
            .bind(now)
            .bind(new.expires_at)
            .bind(serde_json::to_string(&new.init).unwrap_or_else(|_| "{}".into()))
            .bind(key)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO events (env_id, at, step, message, duration_ms) VALUES ($1, $2, $3, $4, NULL)")
            .bind(&new.id)
            .bind(now)
            .bind(EventKind::Requested.as_str())
            .bind(format!("template {} (warm pool {pool})", new.template))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.changed(&new.id).await;
        Ok(true)
    }

    /// Envs of users' creates still being built (a refill waits for them): cold, on a
    /// spare node, or a pooled env taken and being probed again.
    pub async fn cold_creating(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM envs WHERE pool IS NULL AND state IN ('requested', 'creating') AND desired <> 'gone'")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Takes the oldest pooled env of `t.key` for a create in one transaction: the env
    /// gets the create's name, key, owner, labels and TTL, goes back to `creating` (its
    /// loop probes every pod again) and records `claimed`. `None` when the pool has none.
    pub async fn take_pooled(&self, t: &Take<'_>) -> Result<Option<Created>> {
        let sql = if self.postgres {
            concat!(take_set!(), take_pick!(), take_end!(postgres))
        } else {
            concat!(take_set!(), take_pick!(), take_end!(sqlite))
        };
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let taken = sqlx::query(sql)
            .bind(t.key)
            .bind(t.name)
            .bind(t.env_key)
            .bind(t.owner)
            .bind(json(t.labels))
            .bind(t.expires_at)
            .bind(i64::from(t.keep_on_failure))
            .bind(now)
            .fetch_optional(&mut *tx)
            .await;
        let (id, answers): (String, String) = match taken {
            Ok(Some(row)) => (row.try_get(0)?, row.try_get(1)?),
            Ok(None) => return Ok(None),
            Err(e) if is_unique_violation(&e) => {
                drop(tx);
                return self
                    .take_refused(t.owner, t.env_key, t.name)
                    .await
                    .map(Some);
            }
            Err(e) => return Err(e.into()),
        };
        let mut message = format!("taken from warm pool {}", t.pool);
        if let Some(c) = &t.change {
            let before: BTreeMap<String, String> =
                serde_json::from_str(&answers).unwrap_or_default();
            let after = crate::pool::answers_after(&before, c.pool_given, c.given);
            record_take_change(&mut tx, &id, c, &before, &after, now).await?;
            message.push_str(&format!(
                "; answers {} applied before the handover (config generation 1)",
                c.changed.join(", ")
            ));
        }
        sqlx::query("INSERT INTO events (env_id, at, step, message, duration_ms) VALUES ($1, $2, $3, $4, NULL)")
            .bind(&id)
            .bind(now)
            .bind(EventKind::Claimed.as_str())
            .bind(message)
            .execute(&mut *tx)
            .await?;
        self.close_take(tx, t.pool, &id).await.map(Some)
    }

    /// Ends a take of env `id` from pool `pool`: the pool's claim counted, the transaction
    /// committed, waiters told; the env as it is now.
    async fn close_take(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Any>,
        pool: &str,
        id: &str,
    ) -> Result<Created> {
        sqlx::query("UPDATE pools SET claims = claims + 1 WHERE name = $1")
            .bind(pool)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.changed(id).await;
        Ok(Created::New(self.get(id).await?))
    }

    /// A take's name or key was held meanwhile: the live env holding the key is the
    /// answer, else the name is taken.
    async fn take_refused(&self, owner: &str, key: Option<&str>, name: &str) -> Result<Created> {
        if let Some(key) = key
            && let Some(env) = self.live_by_key(owner, key).await?
        {
            return Ok(Created::Existing(env));
        }
        Err(Error::Conflict(format!(
            "a live environment is already named `{name}`; choose another name or remove it first"
        )))
    }

    /// Takes the oldest spare node of pool `pool` (key `key`) for the create `new`, in one
    /// transaction: the env becomes `new` (template, answers, init data, name, owner, ...)
    /// on the node that is up already, goes to `creating` (its loop builds every pod) and
    /// records a `cold` event saying `why` no warm pool served it. `None` when none waits.
    pub async fn take_spare_node(
        &self,
        pool: &str,
        key: &str,
        new: &NewEnv,
        why: &str,
    ) -> Result<Option<Created>> {
        macro_rules! rebuild {
            () => {
                ", template = $9, template_src = $10, answers = $11, init = $12"
            };
        }
        let sql = if self.postgres {
            concat!(take_set!(), rebuild!(), take_pick!(), take_end!(postgres))
        } else {
            concat!(take_set!(), rebuild!(), take_pick!(), take_end!(sqlite))
        };
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let taken = sqlx::query(sql)
            .bind(key)
            .bind(&new.name)
            .bind(&new.key)
            .bind(&new.owner)
            .bind(json(&new.labels))
            .bind(new.expires_at)
            .bind(i64::from(new.keep_on_failure))
            .bind(now)
            .bind(&new.template)
            .bind(&new.template_src)
            .bind(json(&new.answers))
            .bind(serde_json::to_string(&new.init).unwrap_or_else(|_| "{}".into()))
            .fetch_optional(&mut *tx)
            .await;
        let id: String = match taken {
            Ok(Some(row)) => row.try_get(0)?,
            Ok(None) => return Ok(None),
            Err(e) if is_unique_violation(&e) => {
                drop(tx);
                return self
                    .take_refused(&new.owner, new.key.as_deref(), &new.name)
                    .await
                    .map(Some);
            }
            Err(e) => return Err(e.into()),
        };
        let message = format!("{why}; its pods are built on a spare node of pool {pool}");
        super::event_query(&id, EventKind::Cold.into(), &message, None)
            .execute(&mut *tx)
            .await?;
        self.close_take(tx, pool, &id).await.map(Some)
    }

    /// Counts a create of a pool's template that found no env to take.
    pub async fn count_miss(&self, pool: &str, reason: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE pools SET misses = misses + 1 WHERE name = $1")
            .bind(pool)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO pool_misses (pool, reason, n) VALUES ($1, $2, 1) ON CONFLICT (pool, reason) DO UPDATE SET n = pool_misses.n + 1")
            .bind(pool)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Misses as (pool, reason, count).
    pub async fn pool_misses(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query("SELECT pool, reason, n FROM pool_misses ORDER BY pool, reason")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// A pool env's build is done: it waits in the pool. Only while still being built
    /// for it (a drain may have asked it to go meanwhile).
    pub async fn mark_pooled(&self, id: &str, message: &str, took: Duration) -> Result<bool> {
        // The state and its `pooled` event in one transaction: whoever sees one sees both.
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE envs SET state = 'pooled', step = 'ready', updated_at = $2 WHERE id = $1 AND state = 'creating' AND pool IS NOT NULL")
            .bind(id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        let marked = done.rows_affected() > 0;
        if marked {
            super::event_query(id, EventKind::Pooled.into(), message, Some(took))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.changed(id).await;
        Ok(marked)
    }

    /// Records why a pooled env is failed, only while nobody took it: its loop then
    /// tears it down. Returns whether it was.
    pub async fn discard_pooled(&self, id: &str, cause: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE envs SET error = $2, updated_at = $3 WHERE id = $1 AND state = 'pooled' AND error IS NULL")
            .bind(id)
            .bind(cause)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        self.changed(id).await;
        Ok(done.rows_affected() > 0)
    }

    /// Asks a pool's env to go while nobody took it (a drain). Returns whether it was.
    pub async fn drain_pooled(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE envs SET desired = 'gone', updated_at = $2 WHERE id = $1 AND pool IS NOT NULL AND state IN ('requested', 'creating', 'pooled')")
            .bind(id)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        self.changed(id).await;
        Ok(done.rows_affected() > 0)
    }

    /// Durations of finished pool builds (`pooled` events): (sum in s, count).
    pub async fn refill_durations(&self) -> Result<(f64, i64)> {
        self.step_durations(EventKind::Pooled).await
    }

    /// How many envs built for pool key `key` failed since `since` (ms).
    pub async fn pool_failures_since(&self, key: &str, since: i64) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM envs WHERE pool = $1 AND error IS NOT NULL AND updated_at >= $2",
        )
        .bind(key)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Live pooled envs of one key, oldest first.
    pub async fn pooled_envs(&self, key: &str) -> Result<Vec<Env>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            env_columns!(),
            " FROM envs WHERE pool = $1 AND state = 'pooled' AND desired = 'ready' AND error IS NULL ORDER BY updated_at"
        ))
        .bind(key)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(env_from_row).collect()
    }
}

/// A take's answers: the env's, and its config generation 1 for the pods they change.
async fn record_take_change(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    c: &TakeChange<'_>,
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    now: i64,
) -> Result<()> {
    if let Some(pod) = c.pods.first() {
        let list = |v: &[String]| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        sqlx::query("INSERT INTO config_changes (env_id, generation, pod, answers_before, answers_after, changed, pods, status, outcome, created_at) VALUES ($1, 1, $2, $3, $4, $5, $6, 'pending', NULL, $7)")
            .bind(id)
            .bind(pod)
            .bind(json(before))
            .bind(json(after))
            .bind(list(c.changed))
            .bind(list(c.pods))
            .bind(now)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("UPDATE envs SET answers = $2 WHERE id = $1")
        .bind(id)
        .bind(json(after))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::lifecycle::{State, Step};
    use crate::store::{NewEnv, short_id};

    async fn stores() -> Vec<(Store, tempfile::TempDir)> {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("envd.db").display());
        let mut out = vec![(Store::open(&url).await.unwrap(), dir)];
        if let Some(pg) = crate::store::tests::postgres_url() {
            out.push((
                Store::open(&pg).await.unwrap(),
                tempfile::tempdir().unwrap(),
            ));
        }
        out
    }

    fn new_env() -> NewEnv {
        let id = uuid::Uuid::now_v7().to_string();
        NewEnv {
            name: format!("pool-t-{}", short_id(&id)),
            id,
            key: None,
            owner: "envd-pool".into(),
            template: "minimal:1".into(),
            template_src: "name: minimal".into(),
            answers: BTreeMap::new(),
            labels: BTreeMap::new(),
            keep_on_failure: false,
            expires_at: now_ms() + 3_600_000,
            init: Default::default(),
            clone_of: None,
            with_data: false,
        }
    }

    /// A `minimal` pool of `size` with a key and name of this run's own (the PostgreSQL
    /// store is shared): (key, name).
    async fn own_pool(s: &Store, size: u32) -> (String, String) {
        let key = format!("minimal:1#{}", uuid::Uuid::now_v7().simple());
        let pool = format!("p-{}", &key[key.len() - 8..]);
        s.upsert_pool(&PoolRow {
            name: pool.clone(),
            template: "minimal".into(),
            answers: BTreeMap::new(),
            min: size,
            max: size,
            claims: 0,
            misses: 0,
            updated_at: 0,
        })
        .await
        .unwrap();
        (key, pool)
    }

    #[tokio::test]
    async fn concurrent_takes_get_distinct_envs_on_both_stores() {
        for (s, _d) in stores().await {
            let (key, pool) = own_pool(&s, 3).await;
            let mut pooled = BTreeSet::new();
            for _ in 0..3 {
                let Created::New(env) = s.create_env_in(new_env(), Some(&key)).await.unwrap()
                else {
                    panic!("new")
                };
                s.set_state(&env.id, State::Creating, Step::Pods, None)
                    .await
                    .unwrap();
                assert!(
                    s.mark_pooled(&env.id, "pooled", Duration::ZERO)
                        .await
                        .unwrap()
                );
                pooled.insert(env.id);
            }
            let labels = BTreeMap::new();
            let names: Vec<String> = (0..10)
                .map(|i| format!("taker-{i}-{}", &key[key.len() - 8..]))
                .collect();
            let takes = names.iter().map(|name| {
                let t = Take {
                    pool: &pool,
                    key: &key,
                    name,
                    env_key: None,
                    owner: "qa",
                    labels: &labels,
                    expires_at: now_ms() + 60_000,
                    keep_on_failure: false,
                    change: None,
                };
                let s = s.clone();
                async move { s.take_pooled(&t).await.unwrap() }
            });
            let got = futures_util::future::join_all(takes).await;
            let taken: BTreeSet<String> = got
                .into_iter()
                .flatten()
                .map(|c| match c {
                    Created::New(e) | Created::Existing(e) => {
                        assert_eq!(e.owner, "qa");
                        assert_eq!(e.state, State::Creating);
                        assert!(e.pool.is_none() && e.host_name.is_some());
                        e.id
                    }
                })
                .collect();
            assert_eq!(taken, pooled, "postgres: {}", s.is_postgres());
            let row = s
                .pools()
                .await
                .unwrap()
                .into_iter()
                .find(|p| p.name == pool)
                .unwrap();
            assert_eq!(row.claims, 3);
            // A taken env is no longer a pool's: neither discarded nor drained by it.
            let one = pooled.iter().next().unwrap();
            assert!(!s.discard_pooled(one, "x").await.unwrap());
            assert!(!s.drain_pooled(one).await.unwrap());
        }
    }

    #[tokio::test]
    async fn concurrent_refills_build_one_env_at_a_time_and_never_past_the_size() {
        for (s, _d) in stores().await {
            let (key, pool) = own_pool(&s, 2).await;
            // Ten refills (of as many instances) at once: one builds.
            let tries = (0..10).map(|_| {
                let (s, pool, key) = (s.clone(), pool.clone(), key.clone());
                async move { s.create_pool_env(&new_env(), &pool, &key, 2).await.unwrap() }
            });
            let made = futures_util::future::join_all(tries).await;
            assert_eq!(made.iter().filter(|m| **m).count(), 1, "{made:?}");
            // Built: the next one may go; with two, none.
            for m in s.pool_members().await.unwrap() {
                if m.key == key {
                    s.set_state(&m.id, State::Creating, Step::Pods, None)
                        .await
                        .unwrap();
                    assert!(
                        s.mark_pooled(&m.id, "pooled", Duration::ZERO)
                            .await
                            .unwrap()
                    );
                }
            }
            assert!(s.create_pool_env(&new_env(), &pool, &key, 2).await.unwrap());
            for m in s.pool_members().await.unwrap() {
                if m.key == key && m.state != State::Pooled {
                    s.set_state(&m.id, State::Creating, Step::Pods, None)
                        .await
                        .unwrap();
                    assert!(
                        s.mark_pooled(&m.id, "pooled", Duration::ZERO)
                            .await
                            .unwrap()
                    );
                }
            }
            assert!(!s.create_pool_env(&new_env(), &pool, &key, 2).await.unwrap());
            let mine = s.pool_members().await.unwrap();
            assert_eq!(mine.iter().filter(|m| m.key == key).count(), 2);
        }
    }
}
