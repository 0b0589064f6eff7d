//! Config changes of live envs, one generation each: recorded with the env's new answers
//! in one transaction, then applied (or rolled back) by the env's loop.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sqlx::Row;

use super::{Store, is_unique_violation, json, now_ms};
use crate::error::{Error, Result};
use crate::lifecycle::{ChangeStatus, EventStep};

#[derive(Debug, Clone, Serialize)]
pub struct ConfigChange {
    pub env_id: String,
    pub generation: i64,
    /// The pod named by the request.
    pub pod: String,
    #[serde(skip)]
    pub before: BTreeMap<String, String>,
    #[serde(skip)]
    pub after: BTreeMap<String, String>,
    /// Answers whose value changed (names only: values may be passwords).
    pub changed: Vec<String>,
    /// Every pod the answers change, the named one first.
    pub pods: Vec<String>,
    pub status: ChangeStatus,
    /// What was done (`restarted`, ...), or why it was rolled back.
    pub outcome: Option<String>,
}

/// A change to record (its generation is the next one of the env).
pub struct NewChange {
    pub env_id: String,
    pub pod: String,
    pub before: BTreeMap<String, String>,
    pub after: BTreeMap<String, String>,
    pub changed: Vec<String>,
    pub pods: Vec<String>,
}

macro_rules! change_columns {
    () => {
        "env_id, generation, pod, answers_before, answers_after, changed, pods, status, outcome"
    };
}

impl Store {
    /// Records the change and the env's new answers at once; refused (409) while an
    /// earlier change of the env is open.
    pub async fn record_change(&self, c: NewChange) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        // Write first: on SQLite the transaction then holds the write lock (waiting out
        // busy_timeout) instead of reading a snapshot another writer can make stale, which
        // fails the later write at once with SQLITE_BUSY.
        sqlx::query("UPDATE envs SET updated_at = $2 WHERE id = $1")
            .bind(&c.env_id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        let open = sqlx::query(
            "SELECT generation FROM config_changes WHERE env_id = $1 AND status IN ('pending', 'rolling-back')",
        )
        .bind(&c.env_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = open {
            let generation: i64 = row.try_get(0)?;
            return Err(busy(generation));
        }
        let row = sqlx::query(
            "SELECT CAST(COALESCE(MAX(generation), 0) AS BIGINT) FROM config_changes WHERE env_id = $1",
        )
        .bind(&c.env_id)
        .fetch_one(&mut *tx)
        .await?;
        let generation = row.try_get::<i64, _>(0)? + 1;
        let list = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        let inserted = sqlx::query("INSERT INTO config_changes (env_id, generation, pod, answers_before, answers_after, changed, pods, status, outcome, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', NULL, $8)")
            .bind(&c.env_id)
            .bind(generation)
            .bind(&c.pod)
            .bind(json(&c.before))
            .bind(json(&c.after))
            .bind(list(&c.changed))
            .bind(list(&c.pods))
            .bind(now_ms())
            .execute(&mut *tx)
            .await;
        match inserted {
            Ok(_) => {}
            // Another request took this generation first.
            Err(e) if is_unique_violation(&e) => return Err(busy(generation)),
            Err(e) => return Err(e.into()),
        }
        sqlx::query("UPDATE envs SET answers = $2, updated_at = $3 WHERE id = $1")
            .bind(&c.env_id)
            .bind(json(&c.after))
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.changed(&c.env_id).await;
        Ok(generation)
    }

    /// The env's open change, if any (there is at most one).
    pub async fn open_change(&self, env_id: &str) -> Result<Option<ConfigChange>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            change_columns!(),
            " FROM config_changes WHERE env_id = $1 AND status IN ('pending', 'rolling-back') ORDER BY generation LIMIT 1"
        ))
        .bind(env_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| change_from_row(&r)).transpose()
    }

    pub async fn change(&self, env_id: &str, generation: i64) -> Result<ConfigChange> {
        let row = sqlx::query(concat!(
            "SELECT ",
            change_columns!(),
            " FROM config_changes WHERE env_id = $1 AND generation = $2"
        ))
        .bind(env_id)
        .bind(generation)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => change_from_row(&r),
            None => Err(Error::NotFound(format!(
                "config change {generation} of environment `{env_id}`"
            ))),
        }
    }

    /// Closes a change as applied, or rolled back, with what happened.
    pub async fn finish_change(
        &self,
        env_id: &str,
        generation: i64,
        status: ChangeStatus,
        outcome: &str,
    ) -> Result<()> {
        sqlx::query("UPDATE config_changes SET status = $3, outcome = $4 WHERE env_id = $1 AND generation = $2")
            .bind(env_id)
            .bind(generation)
            .bind(status.as_str())
            .bind(outcome)
            .execute(&self.pool)
            .await?;
        self.changed(env_id).await;
        Ok(())
    }

    /// [`Store::finish_change`] and the event that tells it, in one transaction: whoever
    /// sees the change closed also sees why.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_change_recorded(
        &self,
        env_id: &str,
        generation: i64,
        status: ChangeStatus,
        outcome: &str,
        step: EventStep,
        message: &str,
        duration: Option<Duration>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE config_changes SET status = $3, outcome = $4 WHERE env_id = $1 AND generation = $2")
            .bind(env_id)
            .bind(generation)
            .bind(status.as_str())
            .bind(outcome)
            .execute(&mut *tx)
            .await?;
        super::event_query(env_id, step, message, duration)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.changed(env_id).await;
        Ok(())
    }

    /// A pod did not take the change: the answers before are the env's again, and the
    /// change is rolling back (one transaction, so a crash finds one or the other).
    pub async fn begin_rollback(&self, c: &ConfigChange, why: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE envs SET answers = $2, updated_at = $3 WHERE id = $1")
            .bind(&c.env_id)
            .bind(json(&c.before))
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE config_changes SET status = 'rolling-back', outcome = $3 WHERE env_id = $1 AND generation = $2")
            .bind(&c.env_id)
            .bind(c.generation)
            .bind(why)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.changed(&c.env_id).await;
        Ok(())
    }
}

fn busy(generation: i64) -> Error {
    Error::Conflict(format!(
        "config change {generation} of this environment is still being applied; wait for it (PATCH ...?wait=true) and try again"
    ))
}

fn change_from_row(r: &sqlx::any::AnyRow) -> Result<ConfigChange> {
    let map = |s: String| serde_json::from_str::<BTreeMap<String, String>>(&s).unwrap_or_default();
    let list = |s: String| serde_json::from_str::<Vec<String>>(&s).unwrap_or_default();
    Ok(ConfigChange {
        env_id: r.try_get(0)?,
        generation: r.try_get(1)?,
        pod: r.try_get(2)?,
        before: map(r.try_get(3)?),
        after: map(r.try_get(4)?),
        changed: list(r.try_get(5)?),
        pods: list(r.try_get(6)?),
        status: r.try_get::<String, _>(7)?.parse()?,
        outcome: r.try_get(8)?,
    })
}
