//! Job runs and the pre-expiry warning mark.

use sqlx::Row;

use super::{Env, Store, is_unique_violation, now_ms};
use crate::error::Result;

/// One run of a scheduled job, as recorded.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct JobRun {
    pub id: i64,
    pub job: String,
    /// The cron time this run was scheduled for (ms); none for a run asked by hand.
    pub slot: Option<i64>,
    pub runner: String,
    pub dry_run: bool,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub ok: Option<bool>,
    /// What the run found and freed, or its error (JSON).
    pub result: Option<serde_json::Value>,
}

impl Store {
    /// Records the start of a run. For a scheduled `slot` only the first envd to ask gets
    /// it (the unique index): the others get `None` and skip that run.
    pub async fn claim_job_run(
        &self,
        job: &str,
        slot: Option<i64>,
        runner: &str,
        dry_run: bool,
    ) -> Result<Option<i64>> {
        let res = sqlx::query("INSERT INTO job_runs (job, slot, runner, dry_run, started_at) VALUES ($1, $2, $3, $4, $5) RETURNING id")
            .bind(job)
            .bind(slot)
            .bind(runner)
            .bind(dry_run as i32)
            .bind(now_ms())
            .fetch_one(&self.pool)
            .await;
        match res {
            Ok(row) => Ok(Some(row.try_get(0)?)),
            Err(e) if is_unique_violation(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn finish_job_run(
        &self,
        id: i64,
        ok: bool,
        result: &serde_json::Value,
    ) -> Result<()> {
        sqlx::query("UPDATE job_runs SET finished_at = $2, ok = $3, result = $4 WHERE id = $1")
            .bind(id)
            .bind(now_ms())
            .bind(ok as i32)
            .bind(result.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The latest run of each job.
    pub async fn last_job_runs(&self) -> Result<Vec<JobRun>> {
        let rows = sqlx::query(concat!(
            "SELECT id, job, slot, runner, dry_run, started_at, finished_at, ok, result FROM job_runs ",
            "WHERE id IN (SELECT MAX(id) FROM job_runs GROUP BY job) ORDER BY job"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_run).collect()
    }

    /// Every recorded run of `job`, oldest first.
    pub async fn job_runs(&self, job: &str) -> Result<Vec<JobRun>> {
        let rows = sqlx::query(concat!(
            "SELECT id, job, slot, runner, dry_run, started_at, finished_at, ok, result FROM job_runs ",
            "WHERE job = $1 ORDER BY id"
        ))
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_run).collect()
    }

    /// Live envs that expire within `within_ms` and were not warned yet.
    pub async fn expiring(&self, now: i64, within_ms: i64) -> Result<Vec<Env>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            env_columns!(),
            " FROM envs WHERE state NOT IN ('gone', 'failed') AND desired <> 'gone' ",
            "AND warned_at IS NULL AND expires_at > $1 AND expires_at <= $2 ORDER BY expires_at"
        ))
        .bind(now)
        .bind(now + within_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(super::env_from_row).collect()
    }

    /// Marks the env warned; false when another runner did it first, so a warning
    /// goes out once.
    pub async fn mark_warned(&self, id: &str) -> Result<bool> {
        let done =
            sqlx::query("UPDATE envs SET warned_at = $2 WHERE id = $1 AND warned_at IS NULL")
                .bind(id)
                .bind(now_ms())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }
}

fn job_run(r: &sqlx::any::AnyRow) -> Result<JobRun> {
    let dry: i64 = r.try_get(4)?;
    let ok: Option<i64> = r.try_get(7)?;
    let result: Option<String> = r.try_get(8)?;
    Ok(JobRun {
        id: r.try_get(0)?,
        job: r.try_get(1)?,
        slot: r.try_get(2)?,
        runner: r.try_get(3)?,
        dry_run: dry != 0,
        started_at: r.try_get(5)?,
        finished_at: r.try_get(6)?,
        ok: ok.map(|v| v != 0),
        result: result.and_then(|s| serde_json::from_str(&s).ok()),
    })
}
