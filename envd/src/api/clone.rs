//! `POST /v1/envs/{id}/clone`: records a new env from the source's template and answers;
//! the engine copies the data (`with_data`) once the clone's pods are ready.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{ApiJson, ApiResult, AppState, CreateParams, EnvView, wait_for};
use crate::auth::Caller;
use crate::service::{self, CloneRequest};
use crate::store::State as EnvState;

/// A new env from a ready env's template, answers and init files; `with_data` copies the
/// contents of its MySQL, Mongo and Redis pods.
#[utoipa::path(post, path = "/v1/envs/{id}/clone", request_body = CloneRequest,
    params(("id" = String, Path, description = "id or name of a ready env"), CreateParams),
    responses((status = 201, body = EnvView), (status = 404, body = super::Problem),
    (status = 429, body = super::Problem, description = "a quota of the owner would be crossed"),
    (status = 409, body = super::Problem, description = "the source is not ready"), (status = 422, body = super::Problem)))]
pub(super) async fn clone_env(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    super::ApiQuery(q): super::ApiQuery<CreateParams>,
    ApiJson(mut req): ApiJson<CloneRequest>,
) -> ApiResult<Response> {
    req.owner = Some(super::owner_of(&caller, req.owner.take())?);
    let src = s.env_of(&caller, &id).await?;
    let timeout = super::duration_param(
        "timeout",
        q.timeout.as_deref(),
        std::time::Duration::from_secs(600),
    )?;
    s.engine.ping().await?;
    let env =
        service::clone_admitted(&s.engine.store, &s.limits, src, req, Some(&s.quotas)).await?;
    s.engine.kick(&env.id);
    let env = if q.wait {
        wait_for(&s, &env.id, EnvState::is_settled, timeout).await?
    } else {
        env
    };
    Ok(super::with_subject(
        (StatusCode::CREATED, Json(s.view(&env))).into_response(),
        &env.id,
    ))
}
