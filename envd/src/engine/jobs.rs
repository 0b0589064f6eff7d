//! Scheduled jobs: `reap` (pre-expiry warnings, then teardown of expired envs), `sweep`
//! (host objects of no live env) and `retain-logs` (old archives). Schedules are cron
//! expressions with 6 fields (seconds first). Several envd on one database run each
//! scheduled slot once: the run is recorded under a unique (job, slot) before it starts.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use cron::Schedule;
use serde::Serialize;

use super::Engine;
use super::sweep::Found;
use crate::error::{Error, IoContext, Result};
use crate::lifecycle::EventKind;
use crate::store::{Env, JobRun, now_ms};

pub const JOBS: [&str; 3] = ["reap", "sweep", "retain-logs"];

#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Job name → schedule.
    pub schedules: BTreeMap<&'static str, Schedule>,
    /// Archives older than this are deleted by `retain-logs`.
    pub log_retention: Duration,
    /// How long before expiry the warning (event + webhook) goes out.
    pub expiry_warning: Duration,
    /// Receives `{"event": "env.expiring", ...}` as a JSON POST.
    pub webhook_url: Option<String>,
    /// The sweep leaves objects younger than this alone.
    pub sweep_grace: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        let mut schedules = BTreeMap::new();
        for (job, expr) in [
            ("reap", "0 * * * * *"),
            ("sweep", "0 */5 * * * *"),
            ("retain-logs", "0 30 3 * * *"),
        ] {
            if let Ok(s) = Schedule::from_str(expr) {
                schedules.insert(job, s);
            }
        }
        JobsConfig {
            schedules,
            log_retention: Duration::from_secs(30 * 24 * 3600),
            expiry_warning: Duration::from_secs(600),
            webhook_url: None,
            sweep_grace: super::SWEEP_GRACE,
        }
    }
}

/// A cron expression of the configuration, checked with a message that says the format.
pub fn parse_schedule(field: &str, expr: &str) -> Result<Schedule> {
    Schedule::from_str(expr).map_err(|e| {
        Error::invalid(
            "config",
            field,
            format!(
                "`{expr}` is not a cron expression ({e}); envd's have 6 fields with seconds first: \
                 `sec min hour day-of-month month day-of-week`, e.g. `0 * * * * *` for every minute"
            ),
        )
    })
}

/// Checks a job name from a request or the CLI.
pub fn job_name(name: &str) -> Result<&'static str> {
    JOBS.iter()
        .find(|j| **j == name)
        .copied()
        .ok_or_else(|| Error::NotFound(format!("job `{name}` (jobs: {})", JOBS.join(", "))))
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobReport {
    pub job: String,
    pub dry_run: bool,
    pub duration_ms: i64,
    /// What the job found; `freed` says whether each was acted on.
    #[schema(value_type = Vec<Object>)]
    pub found: Vec<Found>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub name: String,
    /// Cron expression (6 fields, seconds first).
    pub schedule: String,
    pub next_run: Option<String>,
    pub last_run: Option<JobRun>,
}

impl Engine {
    /// Runs a job now (asked by hand), recorded like a scheduled run.
    pub async fn run_job(
        self: &Arc<Self>,
        job: &str,
        dry_run: bool,
        grace: Option<Duration>,
    ) -> Result<JobReport> {
        let job = job_name(job)?;
        let run = self
            .store
            .claim_job_run(job, None, &self.runner, dry_run)
            .await?
            .ok_or_else(|| Error::Conflict(format!("job `{job}` could not be recorded")))?;
        self.execute(run, job, dry_run, grace).await
    }

    async fn execute(
        self: &Arc<Self>,
        run: i64,
        job: &'static str,
        dry_run: bool,
        grace: Option<Duration>,
    ) -> Result<JobReport> {
        let t = std::time::Instant::now();
        let found = match job {
            "reap" => self.reap_job(dry_run).await,
            "sweep" => {
                self.sweep(grace.unwrap_or(self.cfg.jobs.sweep_grace), dry_run)
                    .await
            }
            _ => self.retain_logs(dry_run).await,
        };
        let (ok, result) = match &found {
            Ok(f) => (true, serde_json::json!({ "found": f })),
            Err(e) => (false, serde_json::json!({ "error": e.to_string() })),
        };
        self.store.finish_job_run(run, ok, &result).await?;
        Ok(JobReport {
            job: job.to_string(),
            dry_run,
            duration_ms: t.elapsed().as_millis() as i64,
            found: found?,
        })
    }

    /// Each job's schedule, next run and last recorded run.
    pub async fn jobs(&self) -> Result<Vec<JobView>> {
        let mut last: BTreeMap<String, JobRun> = self
            .store
            .last_job_runs()
            .await?
            .into_iter()
            .map(|r| (r.job.clone(), r))
            .collect();
        Ok(JOBS
            .iter()
            .map(|job| {
                let schedule = self.cfg.jobs.schedules.get(job);
                JobView {
                    name: job.to_string(),
                    schedule: schedule.map(|s| s.source().to_string()).unwrap_or_default(),
                    next_run: schedule
                        .and_then(|s| s.upcoming(Utc).next())
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    last_run: last.remove(*job),
                }
            })
            .collect())
    }

    /// Warns the envs about to expire (once each), then tears down the expired ones.
    async fn reap_job(self: &Arc<Self>, dry_run: bool) -> Result<Vec<Found>> {
        let mut out = vec![];
        let within = self.cfg.jobs.expiry_warning.as_millis() as i64;
        for env in self.store.expiring(now_ms(), within).await? {
            let mut f = Found::new("warning", &env.name, &env.id);
            if !dry_run && self.store.mark_warned(&env.id).await? {
                f.error = self.warn_expiring(&env).await.err();
                f.freed = true;
            }
            out.push(f);
        }
        if dry_run {
            for id in self.store.expired_ids(now_ms()).await? {
                let env = self.store.get(&id).await?;
                out.push(Found::new("env", &env.name, &env.id));
            }
        } else {
            for id in self.reap().await? {
                let mut f = Found::new("env", &id, &id);
                f.freed = true;
                out.push(f);
            }
        }
        Ok(out)
    }

    async fn warn_expiring(&self, env: &Env) -> std::result::Result<(), String> {
        let at = rfc3339(env.expires_at);
        let msg = format!(
            "expires at {at}; keep it with `envd extend {} --ttl 1h`",
            env.name
        );
        self.store
            .event(&env.id, EventKind::Expiring, &msg, None)
            .await
            .map_err(|e| e.to_string())?;
        let Some(url) = &self.cfg.jobs.webhook_url else {
            return Ok(());
        };
        let body = serde_json::json!({
            "event": "env.expiring",
            "expires_at": at,
            "expires_in_seconds": (env.expires_at - now_ms()).max(0) / 1000,
            "env": {
                "id": env.id, "name": env.name, "key": env.key, "owner": env.owner,
                "template": env.template, "state": env.state.as_str(), "node_ip": env.node_ip,
                "labels": env.labels, "expires_at": at,
            },
        });
        let sent = reqwest::Client::new()
            .post(url)
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await
            .and_then(|r| r.error_for_status());
        if let Err(e) = sent {
            let why = format!("expiry webhook {url} failed: {e}");
            tracing::warn!(env = %env.id, "{why}");
            let _ = self
                .store
                .event(&env.id, EventKind::Expiring, &why, None)
                .await;
            return Err(why);
        }
        Ok(())
    }

    /// Deletes log archives older than the retention.
    async fn retain_logs(&self, dry_run: bool) -> Result<Vec<Found>> {
        let dir = self.cfg.data_dir.join("logs");
        let mut out = vec![];
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(out);
        };
        let cutoff = SystemTime::now() - self.cfg.jobs.log_retention;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(env_id) = name.strip_suffix(".tar.gz") else {
                continue;
            };
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .io_ctx(|| format!("reading {}", path.display()))?;
            if modified > cutoff {
                continue;
            }
            let mut f = Found::new("archive", &path.display().to_string(), env_id);
            if !dry_run {
                match std::fs::remove_file(&path) {
                    Ok(()) => f.freed = true,
                    Err(e) => f.error = Some(e.to_string()),
                }
            }
            out.push(f);
        }
        Ok(out)
    }
}

/// Starts one task per scheduled job. Each waits for its next cron time, takes that slot
/// in the store (or finds another envd took it) and runs.
pub fn spawn_scheduler(engine: &Arc<Engine>) {
    for (job, schedule) in engine.cfg.jobs.schedules.clone() {
        let engine = Arc::clone(engine);
        tokio::spawn(async move {
            let mut after: DateTime<Utc> = Utc::now();
            loop {
                let Some(next) = schedule.after(&after).next() else {
                    return;
                };
                let wait = (next - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
                after = next;
                let slot = next.timestamp_millis();
                match engine
                    .store
                    .claim_job_run(job, Some(slot), &engine.runner, false)
                    .await
                {
                    Ok(Some(run)) => match engine.execute(run, job, false, None).await {
                        Ok(r) if r.found.is_empty() => {}
                        Ok(r) => tracing::info!(job, found = ?r.found, "job done"),
                        Err(e) => tracing::warn!(job, "job failed: {e}"),
                    },
                    Ok(None) => tracing::debug!(job, slot, "slot taken by another envd"),
                    Err(e) => tracing::warn!(job, "recording the run: {e}"),
                }
            }
        });
    }
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
