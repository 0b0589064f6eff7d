//! Scheduled jobs: list them, run one now.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use std::time::Duration;

use super::{ApiResult, AppState, Problem};
use crate::engine::{JobReport, JobView};

/// Each job: its cron schedule, next run, and last run with what it found and freed.
#[utoipa::path(get, path = "/v1/jobs", responses((status = 200, body = Vec<JobView>)))]
pub(super) async fn list(State(s): State<AppState>) -> ApiResult<Json<Vec<JobView>>> {
    Ok(Json(s.engine.jobs().await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct JobParams {
    /// Only list what the job would act on.
    #[serde(default)]
    dry_run: bool,
    /// sweep: leave objects younger than this alone (default from the configuration).
    grace: Option<String>,
}

/// Runs a job now: `reap`, `sweep` or `retain-logs`.
#[utoipa::path(post, path = "/v1/jobs/{name}/run", params(("name" = String, Path, description = "reap, sweep or retain-logs"), JobParams),
    responses((status = 200, body = JobReport), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn run(
    State(s): State<AppState>,
    Path(name): Path<String>,
    super::ApiQuery(q): super::ApiQuery<JobParams>,
) -> ApiResult<Json<JobReport>> {
    let grace = match q.grace.as_deref() {
        Some(g) => Some(bounded_grace(super::duration_param(
            "grace",
            Some(g),
            Duration::ZERO,
        )?)?),
        None => None,
    };
    Ok(Json(s.engine.run_job(&name, q.dry_run, grace).await?))
}

/// Longer than this, a grace period frees nothing anyway; far longer, it would overflow.
const MAX_GRACE: Duration = Duration::from_secs(366 * 24 * 3600);

fn bounded_grace(g: Duration) -> Result<Duration, crate::Error> {
    if g > MAX_GRACE {
        return Err(crate::Error::invalid(
            "query",
            "grace",
            format!(
                "at most {}; a longer grace frees nothing",
                humantime::format_duration(MAX_GRACE)
            ),
        ));
    }
    Ok(g)
}
