//! The REST API under `/v1`. Handlers stay thin: extract, call `service`, map the result.
//! Every error is an RFC 7807 `application/problem+json`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use crate::auth::{AuthConfig, Caller, Gate};
use crate::catalog::Catalog;
use crate::engine::Engine;
use crate::error::{Error, FieldError};
use crate::lifecycle::{EventKind, Step};
use crate::quota::Admission;
use crate::service::{self, CreateRequest, Endpoint, Limits};
use crate::store::{Created, Env, EnvFilter, State as EnvState};

mod access;
mod clone;
mod doc;
mod hooks;
mod images;
mod import;
mod jobs;
mod listing;
mod pods;
mod pools;
pub(crate) mod templates;

use access::Security;
pub use access::owner_of;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub catalog: Catalog,
    pub limits: Limits,
    /// Tokens, guarded routes, allowed origins.
    pub auth: AuthConfig,
    /// Per-owner quotas of creates and clones.
    pub quotas: Arc<Admission>,
}

impl AppState {
    /// The env `id` (id or name) if the caller may see it: another owner's is not found.
    pub(crate) async fn env_of(&self, caller: &Caller, id: &str) -> Result<Env, Error> {
        self.engine.store.get_scoped(id, caller.scope()).await
    }

    /// The env as the API shows it.
    pub(crate) fn view(&self, env: &Env) -> EnvView {
        EnvView::of(env, &self.engine.views)
    }
}

pub fn router(state: AppState) -> Router {
    let gate = Gate::new(state.auth.clone(), state.engine.store.clone());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/v1/templates", get(templates::templates))
        .route("/v1/templates/import", post(import::import))
        .route(
            "/v1/envs",
            // Room for init files (at most 8 MiB of content) beside the request.
            post(create)
                .layer(axum::extract::DefaultBodyLimit::max(10 << 20))
                .get(listing::list)
                .delete(delete_by_key),
        )
        .route("/v1/envs/{id}/clone", post(clone::clone_env))
        .route("/v1/envs/{id}", get(get_env).delete(delete))
        .route("/v1/envs/{id}/extend", post(extend))
        .route("/v1/envs/{id}/logs", get(logs))
        .route("/v1/envs/{id}/events", get(events))
        .route("/v1/jobs", get(jobs::list))
        .route("/v1/jobs/{name}/run", post(jobs::run))
        .merge(pods::routes())
        .merge(images::routes())
        .merge(hooks::routes())
        .merge(access::routes())
        .merge(pools::routes())
        .merge(crate::ui::routes())
        .route(
            "/v1/templates/{name}",
            axum::routing::delete(templates::delete),
        )
        .layer(axum::middleware::from_fn_with_state(
            gate,
            crate::auth::guard,
        ))
        .fallback(not_found)
        .layer(axum::Extension(Arc::new(listing::Listings::default())))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "envd", description = "Ephemeral test environments"),
    paths(
        healthz,
        templates::templates,
        import::import,
        create,
        listing::list,
        get_env,
        delete,
        delete_by_key,
        extend,
        logs,
        events,
        metrics,
        openapi,
        jobs::list,
        jobs::run,
        clone::clone_env,
        pods::configure,
        pods::exec_once,
        pods::exec_ws,
        templates::delete,
        access::whoami,
        access::quota,
        access::tokens,
        access::create_token,
        access::revoke_token,
        access::audit,
        pools::list,
        pools::set,
        images::push,
        images::list,
        images::remove,
        hooks::github,
        hooks::gitlab
    ),
    modifiers(&Security),
    components(schemas(
        CreateRequest,
        EnvView,
        PodView,
        Endpoint,
        Problem,
        ExtendRequest,
        crate::engine::JobView,
        crate::engine::JobReport,
        service::CloneRequest,
        crate::spec::init::InitFile,
        import::ImportRequest,
        import::ImportView,
        FieldError,
        templates::TemplateView,
        crate::pool::PoolSpec,
        crate::pool::PoolView,
        crate::store::UploadedImage,
        hooks::HookOutcome,
        pods::ConfigRequest,
        pods::ConfigChangeView,
        crate::engine::PodChange,
        pods::ExecBody,
        pods::ExecResult,
        access::WhoAmI,
        access::TokenRequest,
        access::NewTokenView,
        crate::store::TokenRow,
        crate::store::AuditEntry,
        crate::quota::QuotaView,
        crate::quota::Quota,
        crate::quota::Usage,
        crate::auth::Role
    ))
)]
pub struct ApiDoc;

/// An RFC 7807 problem.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every bad field of the request, when there are several to fix (RFC 7807 extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// 429: the quota crossed (`max_envs`, `max_cpus`, `max_memory`, `creates_per_minute`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
    /// 429: what the owner holds (plus what the request asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<String>,
    /// 429: the quota's limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

pub struct ApiError(pub StatusCode, pub String, pub String, pub Option<Fields>);

/// What a problem names: one field, or every bad one, or the quota crossed. Built from a
/// string too, so `Some("key".into())` reads as before.
pub enum Fields {
    One(String),
    Each(Vec<FieldError>),
    /// Quota, usage and limit (boxed: it keeps every error small).
    Quota(Box<[String; 3]>),
}

impl From<&str> for Fields {
    fn from(f: &str) -> Self {
        Fields::One(f.to_string())
    }
}

impl From<String> for Fields {
    fn from(f: String) -> Self {
        Fields::One(f)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid { ref field, .. } => {
                let title = if field == "template" {
                    "Unknown template"
                } else {
                    "Invalid input"
                };
                ApiError(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    title.into(),
                    e.to_string(),
                    Some(field.clone().into()),
                )
            }
            Error::InvalidFields { ref fields, .. } => ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid input".into(),
                e.to_string(),
                Some(Fields::Each(fields.clone())),
            ),
            Error::NotFound(_) => ApiError(
                StatusCode::NOT_FOUND,
                "Not found".into(),
                // Only an unknown env is helped by the env list.
                if matches!(&e, Error::NotFound(what) if what.starts_with("environment") || what.starts_with("live environment"))
                {
                    format!("{e}; list environments with GET /v1/envs")
                } else {
                    e.to_string()
                },
                None,
            ),
            Error::Conflict(_) => {
                ApiError(StatusCode::CONFLICT, "Conflict".into(), e.to_string(), None)
            }
            Error::Quota {
                ref quota,
                ref usage,
                ref limit,
                ..
            } => ApiError(
                StatusCode::TOO_MANY_REQUESTS,
                "Quota exceeded".into(),
                e.to_string(),
                Some(Fields::Quota(Box::new([
                    quota.clone(),
                    usage.clone(),
                    limit.clone(),
                ]))),
            ),
            Error::PoolExhausted(_) => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "No capacity".into(),
                e.to_string(),
                None,
            ),
            Error::Docker { .. } => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "Engine unavailable".into(),
                e.to_string(),
                None,
            ),
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error".into(),
                    "envd could not complete the request; its log has the cause".into(),
                    None,
                )
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = match r {
            JsonRejection::JsonDataError(_) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        let detail = r.body_text();
        // serde names the field in its message, e.g. "unknown field `tmpl`" or "missing field `template`".
        let field = detail.split('`').nth(1).map(Fields::from);
        ApiError(
            status,
            "Malformed request body".into(),
            format!("{detail}; send a JSON object as documented at /openapi.json"),
            field,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ApiError(status, title, detail, fields) = self;
        let mut p = Problem {
            kind: "about:blank".into(),
            title,
            status: status.as_u16(),
            detail,
            field: None,
            errors: None,
            quota: None,
            usage: None,
            limit: None,
        };
        match fields {
            None => {}
            Some(Fields::One(f)) => p.field = Some(f),
            Some(Fields::Each(all)) => {
                p.field = (all.len() == 1).then(|| all[0].field.clone());
                p.errors = Some(all);
            }
            Some(Fields::Quota(q)) => {
                let [quota, usage, limit] = *q;
                p.quota = Some(quota);
                p.usage = Some(usage);
                p.limit = Some(limit);
            }
        }
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            serde_json::to_string(&p).unwrap_or_default(),
        )
            .into_response()
    }
}

/// `Json` whose rejections are problems too.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `Query` whose rejections are problems too (400, naming the parameter).
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        let detail = r.body_text();
        // serde_urlencoded names the parameter first, e.g. "…: wait: provided string was not …".
        let field = detail
            .strip_prefix("Failed to deserialize query string: ")
            .and_then(|d| d.split_once(':'))
            .map(|(f, _)| Fields::from(f.trim()));
        ApiError(
            StatusCode::BAD_REQUEST,
            "Malformed query string".into(),
            format!("{detail}; see the parameters at /openapi.json"),
            field,
        )
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvView {
    pub id: String,
    pub name: String,
    pub key: Option<String>,
    pub owner: String,
    pub template: String,
    pub state: EnvState,
    pub step: Step,
    pub error: Option<String>,
    pub node_ip: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// As given at create (plus generated passwords), passwords masked.
    pub answers: BTreeMap<String, String>,
    pub created_at: String,
    pub ready_at: Option<String>,
    pub expires_at: String,
    pub endpoints: BTreeMap<String, Endpoint>,
    /// The env this one was cloned from.
    pub clone_of: Option<String>,
    /// Its pods and their containers (only in the answer of `GET /v1/envs/{id}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PodView {
    pub name: String,
    pub containers: Vec<String>,
}

pub(crate) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

impl EnvView {
    /// The env's view, its rendered parts from `views` (see [`service::Views`]).
    pub fn of(e: &Env, views: &service::Views) -> Self {
        let (endpoints, answers) = views.parts(e);
        EnvView {
            id: e.id.clone(),
            name: e.name.clone(),
            key: e.key.clone(),
            owner: e.owner.clone(),
            template: e.template.clone(),
            state: e.state,
            step: e.step,
            error: e.error.clone(),
            node_ip: e.node_ip.clone(),
            labels: e.labels.clone(),
            answers,
            created_at: rfc3339(e.created_at),
            ready_at: e.ready_at.map(rfc3339),
            expires_at: rfc3339(e.expires_at),
            endpoints,
            clone_of: e.clone_of.clone(),
            pods: vec![],
        }
    }
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "envd is up")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Prometheus text: envs by state, create and teardown durations, pool use.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain", description = "Prometheus metrics")))]
async fn metrics(State(s): State<AppState>) -> ApiResult<Response> {
    use std::fmt::Write;
    let store = &s.engine.store;
    let mut out = String::new();
    let counts = store.state_counts().await?;
    let _ = writeln!(
        out,
        "# HELP envd_envs Environments by state.\n# TYPE envd_envs gauge"
    );
    for state in EnvState::ALL {
        let n = counts
            .iter()
            .find(|(k, _)| k == state)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        let _ = writeln!(out, "envd_envs{{state=\"{state}\"}} {n}");
    }
    for (step, name, help) in [
        (
            EventKind::Ready,
            "envd_create_duration_seconds",
            "From request to ready.",
        ),
        (
            EventKind::Freeing,
            "envd_teardown_free_duration_seconds",
            "Freeing a torn-down env's objects.",
        ),
        (
            EventKind::Collecting,
            "envd_teardown_logs_duration_seconds",
            "Archiving a torn-down env's logs.",
        ),
    ] {
        let (sum, count) = store.step_durations(step).await?;
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} summary\n{name}_sum {sum}\n{name}_count {count}"
        );
    }
    let pool = s.engine.cfg.pool()?;
    let _ = writeln!(
        out,
        "# HELP envd_pool_leases Node IPs leased.\n# TYPE envd_pool_leases gauge\nenvd_pool_leases {}",
        store.lease_count().await?
    );
    let _ = writeln!(
        out,
        "# HELP envd_pool_capacity Node IPs in the pool.\n# TYPE envd_pool_capacity gauge\nenvd_pool_capacity {}",
        pool.capacity()
    );
    crate::pool::metrics(&mut out, store, &s.catalog).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "the OpenAPI 3 document of this API")))]
async fn openapi() -> Json<serde_json::Value> {
    Json(doc::document())
}

async fn not_found() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "Not found".into(),
        "no such route; see /openapi.json".into(),
        None,
    )
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct CreateParams {
    /// Answer only once the env is ready (or failed).
    #[serde(default)]
    wait: bool,
    /// How long to wait, e.g. `5m` (default 10m).
    timeout: Option<String>,
}

/// A duration query parameter (`30s`, `5m`, `2h`), or its default.
pub(crate) fn duration_param(
    field: &str,
    v: Option<&str>,
    default: Duration,
) -> Result<Duration, Error> {
    match v {
        Some(t) => humantime::parse_duration(t).map_err(|e| {
            Error::invalid(
                "query",
                field,
                format!("`{t}` is not a duration ({e}); write e.g. 5m"),
            )
        }),
        None => Ok(default),
    }
}

#[utoipa::path(post, path = "/v1/envs", request_body = CreateRequest, params(CreateParams),
    responses((status = 201, body = EnvView), (status = 200, body = EnvView, description = "a live env already holds the key"),
    (status = 400, body = Problem), (status = 422, body = Problem), (status = 409, body = Problem),
    (status = 429, body = Problem, description = "a quota of the owner would be crossed: `quota`, `usage`, `limit`")))]
async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<CreateParams>,
    ApiJson(mut req): ApiJson<CreateRequest>,
) -> ApiResult<Response> {
    let timeout = duration_param("timeout", q.timeout.as_deref(), Duration::from_secs(600))?;
    let recreate = req.recreate;
    req.owner = Some(owner_of(&caller, req.owner.take())?);
    // Refuse now rather than record an env no engine can build.
    s.engine.ping().await?;
    let created =
        service::create_admitted(&s.engine.store, &s.catalog, &s.limits, req, Some(&s.quotas))
            .await?;
    let (status, env) = match created {
        Created::New(env) => (StatusCode::CREATED, env),
        Created::Existing(env) => (StatusCode::OK, env),
    };
    s.engine.kick(&env.id);
    if recreate {
        // The replaced env was asked to go: let the engine see it now, not at the next resync.
        s.engine.resync().await?;
    }
    let env = if q.wait {
        wait_for(&s, &env.id, EnvState::is_settled, timeout).await?
    } else {
        env
    };
    Ok(with_subject(
        (status, Json(s.view(&env))).into_response(),
        &env.id,
    ))
}

/// Names the env a request made or acted on, for the audit trail.
pub(crate) fn with_subject(mut resp: Response, id: &str) -> Response {
    resp.extensions_mut()
        .insert(crate::auth::Subject(id.to_string()));
    resp
}

/// Waits until the recorded state is `done` or the timeout passes.
async fn wait_for(
    s: &AppState,
    id: &str,
    done: fn(EnvState) -> bool,
    timeout: Duration,
) -> ApiResult<Env> {
    let t = std::time::Instant::now();
    let mut changes = s.engine.store.subscribe();
    loop {
        let env = s.engine.store.get(id).await?;
        if done(env.state) || t.elapsed() > timeout {
            return Ok(env);
        }
        // Woken by this instance's records; now and then for another instance's.
        let next = crate::store::Store::next_change(&mut changes, &env.id);
        let _ = tokio::time::timeout(Duration::from_secs(1), next).await;
    }
}

#[utoipa::path(get, path = "/v1/envs/{id}", params(("id" = String, Path, description = "id or name")), responses((status = 200, body = EnvView), (status = 404, body = Problem)))]
async fn get_env(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<EnvView>> {
    let env = s.env_of(&caller, &id).await?;
    let mut view = s.view(&env);
    // A template that no longer renders still has a view, without its pods.
    if let Ok(plan) = s.engine.plan(&env) {
        view.pods = plan
            .pods
            .iter()
            .map(|p| PodView {
                name: p.name.clone(),
                containers: p.containers.iter().map(|c| c.name.clone()).collect(),
            })
            .collect();
    }
    Ok(Json(view))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DeleteParams {
    #[serde(default)]
    wait: bool,
}

#[utoipa::path(delete, path = "/v1/envs/{id}", params(("id" = String, Path, description = "id or name"), DeleteParams), responses((status = 202, body = EnvView, description = "teardown under way"), (status = 200, body = EnvView, description = "already torn down, or torn down when `wait`"), (status = 404, body = Problem)))]
async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeleteParams>,
) -> ApiResult<Response> {
    let env = s.env_of(&caller, &id).await?;
    teardown(&s, env, q.wait).await
}

async fn teardown(s: &AppState, env: Env, wait: bool) -> ApiResult<Response> {
    s.engine.store.request_teardown(&env.id).await?;
    s.engine.kick(&env.id);
    let env = if wait {
        wait_for(s, &env.id, EnvState::is_final, Duration::from_secs(300)).await?
    } else {
        s.engine.store.get(&env.id).await?
    };
    let status = if env.state.is_final() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(with_subject(
        (status, Json(s.view(&env))).into_response(),
        &env.id,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct KeyParams {
    /// The CI key of the live env to tear down.
    #[param(required = true)]
    key: Option<String>,
    /// Admin: the owner whose key it is, when several owners hold the key.
    owner: Option<String>,
    #[serde(default)]
    wait: bool,
}

#[utoipa::path(delete, path = "/v1/envs", params(KeyParams), responses((status = 202, body = EnvView, description = "teardown under way"), (status = 200, body = EnvView, description = "torn down when `wait`"), (status = 404, body = Problem), (status = 400, body = Problem), (status = 409, body = Problem, description = "several owners hold the key: name one")))]
async fn delete_by_key(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<KeyParams>,
) -> ApiResult<Response> {
    let key = q.key.ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "Missing key".into(),
            "DELETE /v1/envs needs ?key=KEY (or use DELETE /v1/envs/{id})".into(),
            Some("key".into()),
        )
    })?;
    let mut live: Vec<Env> = s
        .engine
        .store
        .list(&EnvFilter {
            key: Some(key.clone()),
            owner: access::listed_owner(&caller, q.owner)?,
            ..Default::default()
        })
        .await?
        .into_iter()
        .filter(|e| !e.state.is_final())
        .collect();
    // Keys are per owner: an admin naming no owner may match several.
    if live.len() > 1 {
        let owners: Vec<&str> = live.iter().map(|e| e.owner.as_str()).collect();
        return Err(Error::Conflict(format!(
            "owners {} each hold key `{key}`; add ?owner=",
            owners.join(", ")
        ))
        .into());
    }
    let env = live
        .pop()
        .ok_or_else(|| Error::NotFound(format!("live environment with key `{key}`")))?;
    teardown(&s, env, q.wait).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    /// New time to live from now, e.g. `1h`.
    pub ttl: String,
}

#[utoipa::path(post, path = "/v1/envs/{id}/extend", request_body = ExtendRequest, params(("id" = String, Path)), responses((status = 200, body = EnvView), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn extend(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ExtendRequest>,
) -> ApiResult<Json<EnvView>> {
    let env = s.env_of(&caller, &id).await?;
    let env = service::extend(&s.engine.store, &s.limits, &env.id, &req.ttl).await?;
    Ok(Json(s.view(&env)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LogParams {
    /// Follow a running env's pods instead of fetching the archive.
    #[serde(default)]
    follow: bool,
    /// With `follow`: how many past lines of each container first (default 100).
    tail: Option<u32>,
}

#[utoipa::path(get, path = "/v1/envs/{id}/logs", params(("id" = String, Path), LogParams), responses((status = 200, content_type = "application/gzip", description = "the log archive; with ?follow=true a live text tail, `<pod>/<container> | line`"), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn logs(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<LogParams>,
) -> ApiResult<Response> {
    let env = s.env_of(&caller, &id).await?;
    if q.follow {
        let lines = s.engine.live_logs(&env, q.tail.unwrap_or(100)).await?;
        let body = axum::body::Body::from_stream(lines.map(Ok::<_, std::convert::Infallible>));
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response());
    }
    let path = s.engine.cfg.archive_path(&env.id);
    // Streamed from disk: an archive may be hundreds of megabytes.
    match tokio::fs::File::open(&path).await {
        Ok(file) => Ok((
            [
                (header::CONTENT_TYPE, "application/gzip".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{}.tar.gz\"", env.name),
                ),
            ],
            axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file)),
        )
            .into_response()),
        Err(_) => Err(ApiError(
            StatusCode::CONFLICT,
            "No archive yet".into(),
            format!(
                "environment `{}` is {}: its logs are archived at teardown; follow them live with ?follow=true, or remove it first (DELETE /v1/envs/{})",
                env.name,
                env.state.as_str(),
                env.name
            ),
            None,
        )),
    }
}

#[utoipa::path(get, path = "/v1/envs/{id}/events", params(("id" = String, Path)), responses((status = 200, description = "the env's recorded steps, oldest first; with `Accept: text/event-stream`, Server-Sent Events as they happen"), (status = 404, body = Problem)))]
async fn events(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let env = s.env_of(&caller, &id).await?;
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_sse {
        return Ok(Json(s.engine.store.events(&env.id, 0).await?).into_response());
    }
    Ok(axum::response::sse::Sse::new(event_stream(s, env.id))
        .keep_alive(axum::response::sse::KeepAlive::default())
        .into_response())
}

/// The env's events as they are recorded, ending once it is gone or failed.
fn event_stream(
    s: AppState,
    id: String,
) -> impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>
{
    let changes = s.engine.store.subscribe();
    // Pulls as they progress come between the recorded events, as `progress` (not stored).
    let pulls = s.engine.store.subscribe_pulls();
    let start = (s, id, 0i64, false, (changes, pulls));
    futures_util::stream::unfold(start, |(s, id, after, done, mut rx)| async move {
        if done {
            return None;
        }
        loop {
            let events = s.engine.store.events(&id, after).await.unwrap_or_default();
            if let Some(e) = events.into_iter().next() {
                let data = serde_json::to_string(&e).unwrap_or_default();
                let ev = axum::response::sse::Event::default()
                    .event(e.step.clone())
                    .data(data);
                return Some((Ok(ev), (s, id, e.id, false, rx)));
            }
            let finished = s
                .engine
                .store
                .get(&id)
                .await
                .map(|e| e.state.is_final())
                .unwrap_or(true);
            if finished {
                let ev = axum::response::sse::Event::default()
                    .event("end")
                    .data("{}");
                return Some((Ok(ev), (s, id, after, true, rx)));
            }
            let pulled = {
                let (changes, pulls) = &mut rx;
                let next = crate::store::Store::next_change(changes, &id);
                tokio::select! {
                    _ = tokio::time::timeout(Duration::from_secs(1), next) => None,
                    Some(p) = next_pull(pulls, &id) => Some(p),
                }
            };
            if let Some(p) = pulled {
                let ev = axum::response::sse::Event::default()
                    .event("progress")
                    .data(serde_json::to_string(&p).unwrap_or_default());
                return Some((Ok(ev), (s, id, after, false, rx)));
            }
        }
    })
}

/// The next pull progress of env `id`; none once the feed is gone.
async fn next_pull(
    rx: &mut tokio::sync::broadcast::Receiver<crate::store::PullProgress>,
    id: &str,
) -> Option<crate::store::PullProgress> {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match rx.recv().await {
            Ok(p) if p.env_id == id => return Some(p),
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return None,
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod userimages_tests;
