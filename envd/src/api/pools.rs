//! Warm pools: list them with their counts, set one (admins).

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, put};

use super::{ApiJson, ApiResult, AppState, Json, Problem};
use crate::error::Error;
use crate::pool::{PoolSpec, PoolView};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/pools", get(list))
        .route("/v1/pools/{name}", put(set))
}

/// Every warm pool: its template and answers, size bounds, envs ready and being built,
/// takes, misses and hit rate.
#[utoipa::path(get, path = "/v1/pools", responses((status = 200, body = Vec<PoolView>)))]
pub(super) async fn list(State(s): State<AppState>) -> ApiResult<Json<Vec<PoolView>>> {
    Ok(Json(crate::pool::views(&s.engine.store, &s.catalog).await?))
}

/// Sets a warm pool (creates it or changes it): the refill builds up to `min` envs;
/// `min` 0 drains it.
#[utoipa::path(put, path = "/v1/pools/{name}", params(("name" = String, Path, description = "the pool's name, e.g. the template's")),
    request_body = PoolSpec,
    responses((status = 200, body = PoolView), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn set(
    State(s): State<AppState>,
    Path(name): Path<String>,
    ApiJson(mut spec): ApiJson<PoolSpec>,
) -> ApiResult<Json<PoolView>> {
    if let Some(n) = &spec.name
        && n != &name
    {
        return Err(Error::invalid(
            "request",
            "name",
            format!("the path names pool `{name}`; leave name out of the body or repeat it"),
        )
        .into());
    }
    spec.name = Some(name.clone());
    crate::pool::set(&s.engine.store, &s.catalog, spec).await?;
    let view = crate::pool::views(&s.engine.store, &s.catalog)
        .await?
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| Error::NotFound(format!("pool `{name}`")))?;
    Ok(Json(view))
}
