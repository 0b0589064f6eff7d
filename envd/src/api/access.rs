//! Who am I, quotas, tokens and the audit trail; and the OpenAPI side of access: the
//! bearer scheme, each operation's roles (`x-envd-roles`) and its problem responses.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

use super::{ApiJson, ApiResult, AppState, Json, Problem};
use crate::auth::{self, Access, Caller, Role};
use crate::error::Error;
use crate::quota::QuotaView;
use crate::store::{AuditEntry, AuditFilter, TokenRow};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/quota", get(quota))
        .route("/v1/tokens", get(tokens).post(create_token))
        .route("/v1/tokens/{id}", delete(revoke_token))
        .route("/v1/audit", get(audit))
}

/// The owner a create or clone gets: the token's. A body may repeat it, never change it.
pub fn owner_of(caller: &Caller, asked: Option<String>) -> Result<String, Error> {
    match asked {
        Some(o) if o != caller.owner => Err(Error::invalid(
            "request",
            "owner",
            format!(
                "an env belongs to its token's owner (`{}`); leave owner out",
                caller.owner
            ),
        )),
        _ => Ok(caller.owner.clone()),
    }
}

/// The owner a listing shows: the caller's; an admin's `?owner=` or every owner.
pub(super) fn listed_owner(
    caller: &Caller,
    asked: Option<String>,
) -> Result<Option<String>, Error> {
    match (caller.scope(), asked) {
        (None, asked) => Ok(asked),
        (Some(own), Some(o)) if o != own => Err(Error::invalid(
            "query",
            "owner",
            format!("you see the envs of your token's owner `{own}` only; leave owner out"),
        )),
        (Some(own), _) => Ok(Some(own.to_string())),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    /// The token's name.
    pub name: String,
    pub role: Role,
    pub owner: String,
}

/// The caller's token: name, role, owner.
#[utoipa::path(get, path = "/v1/whoami", responses((status = 200, body = WhoAmI)))]
pub(super) async fn whoami(caller: Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: caller.actor,
        role: caller.role,
        owner: caller.owner,
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct OwnerParams {
    /// Admin only: another owner's.
    owner: Option<String>,
}

/// The caller's owner's quota: what it holds beside its limits.
#[utoipa::path(get, path = "/v1/quota", params(OwnerParams), responses((status = 200, body = QuotaView)))]
pub(super) async fn quota(
    State(s): State<AppState>,
    caller: Caller,
    super::ApiQuery(q): super::ApiQuery<OwnerParams>,
) -> ApiResult<Json<QuotaView>> {
    let owner = listed_owner(&caller, q.owner)?.unwrap_or(caller.owner);
    let quotas = &s.quotas.quotas;
    Ok(Json(QuotaView {
        usage: quotas.usage(&s.engine.store, &owner, None).await?,
        limit: quotas.of(&owner),
        owner,
    }))
}

/// Every token (never the token itself): name, role, owner, expiry, last use, revocation.
#[utoipa::path(get, path = "/v1/tokens", responses((status = 200, body = [TokenRow])))]
pub(super) async fn tokens(State(s): State<AppState>) -> ApiResult<Json<Vec<TokenRow>>> {
    Ok(Json(s.engine.store.tokens().await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// 1-64 of letters, digits, `.`, `_`, `@`, `-`; unique among live tokens.
    pub name: String,
    /// viewer, user, ci or admin.
    pub role: String,
    /// The team or person whose envs the token acts on.
    pub owner: String,
    /// e.g. `30d`; default: never.
    #[serde(default)]
    pub expires: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct NewTokenView {
    /// The bearer token. Shown this once: only its hash is kept.
    pub token: String,
    #[serde(flatten)]
    pub row: TokenRow,
}

/// Makes a token; the answer holds it, once.
#[utoipa::path(post, path = "/v1/tokens", request_body = TokenRequest,
    responses((status = 201, body = NewTokenView), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn create_token(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<TokenRequest>,
) -> ApiResult<(
    StatusCode,
    axum::Extension<auth::Subject>,
    Json<NewTokenView>,
)> {
    let role: Role = req.role.parse()?;
    let expires = match &req.expires {
        Some(e) => Some(
            humantime::parse_duration(e)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    Error::invalid(
                        "request",
                        "expires",
                        format!("`{e}` is not a duration; write e.g. 30d"),
                    )
                })?,
        ),
        None => None,
    };
    let (token, row) = auth::issue(&s.engine.store, &req.name, role, &req.owner, expires).await?;
    tracing::info!(name = %row.name, role = %row.role, owner = %row.owner, "token created");
    let subject = axum::Extension(auth::Subject(row.name.clone()));
    Ok((
        StatusCode::CREATED,
        subject,
        Json(NewTokenView { token, row }),
    ))
}

/// Revokes a token (by id or name): it gets 401 from now on.
#[utoipa::path(delete, path = "/v1/tokens/{id}", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = TokenRow), (status = 404, body = Problem)))]
pub(super) async fn revoke_token(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenRow>> {
    let row = s.engine.store.revoke_token(&id).await?;
    tracing::info!(name = %row.name, "token revoked");
    Ok(Json(row))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditParams {
    /// A token's name.
    actor: Option<String>,
    owner: Option<String>,
    method: Option<String>,
    /// Part of the path, e.g. an env's id.
    target: Option<String>,
    status: Option<i64>,
    /// Entries from this time on (RFC 3339) or this long ago (e.g. `1h`).
    since: Option<String>,
    /// At most this many, newest first (default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u16>,
}

/// The audit trail of mutating requests, newest first.
#[utoipa::path(get, path = "/v1/audit", params(AuditParams), responses((status = 200, body = [AuditEntry]), (status = 422, body = Problem)))]
pub(super) async fn audit(
    State(s): State<AppState>,
    super::ApiQuery(q): super::ApiQuery<AuditParams>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    let since = match q.since.as_deref() {
        None => None,
        Some(t) => Some(since_ms(t)?),
    };
    let limit = i64::from(q.limit.unwrap_or(100));
    if !(1..=10_000).contains(&limit) {
        return Err(Error::invalid("query", "limit", "give 1 to 10000 entries").into());
    }
    let f = AuditFilter {
        actor: q.actor,
        owner: q.owner,
        method: q.method.map(|m| m.to_ascii_uppercase()),
        target: q.target,
        status: q.status,
        since,
        limit,
    };
    Ok(Json(s.engine.store.audit(&f).await?))
}

fn since_ms(t: &str) -> Result<i64, Error> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(at.timestamp_millis());
    }
    humantime::parse_duration(t)
        .map(|d| crate::store::now_ms() - d.as_millis() as i64)
        .map_err(|_| {
            Error::invalid(
                "query",
                "since",
                format!("`{t}` is neither a time (2026-01-31T10:00:00Z) nor a duration (1h)"),
            )
        })
}

/// Declares the bearer scheme, and on each operation its security, its roles
/// (`x-envd-roles`, from [`auth::RULES`]) and 401/403/404 problems; every 4xx/5xx is
/// `application/problem+json`.
pub(super) struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, op) in [
                ("GET", item.get.as_mut()),
                ("POST", item.post.as_mut()),
                ("PUT", item.put.as_mut()),
                ("PATCH", item.patch.as_mut()),
                ("DELETE", item.delete.as_mut()),
            ] {
                let Some(op) = op else { continue };
                let rule = auth::RULES
                    .iter()
                    .find(|r| r.method == method && r.path == path.as_str());
                // A route without a rule gets no roles: the authorization test fails on it.
                if let Some(rule) = rule {
                    describe(op, path, rule);
                }
                for (status, resp) in op.responses.responses.iter_mut() {
                    if (status.starts_with('4') || status.starts_with('5'))
                        && let RefOr::T(r) = resp
                    {
                        r.content.clear();
                        r.content.insert(
                            "application/problem+json".into(),
                            RefOr::T(problem_content()),
                        );
                    }
                }
            }
        }
    }
}

fn problem_content() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .build()
}

fn problem_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content("application/problem+json", problem_content())
            .build(),
    )
}

fn describe(op: &mut utoipa::openapi::path::Operation, path: &str, rule: &auth::Rule) {
    let guarded = !matches!(rule.access, Access::Open);
    let roles: Vec<&str> = auth::rules::roles(rule)
        .iter()
        .map(|r| r.as_str())
        .collect();
    let mut ext = utoipa::openapi::extensions::Extensions::default();
    ext.insert("x-envd-roles".into(), serde_json::json!(roles));
    ext.insert(
        "x-envd-token".into(),
        serde_json::json!(match rule.access {
            Access::Open => "none",
            Access::Metrics | Access::OpenApi => "configurable",
            Access::Roles(_) | Access::Page(_) => "required",
        }),
    );
    op.extensions
        .get_or_insert_with(Default::default)
        .merge(ext);
    let responses = &mut op.responses.responses;
    if guarded {
        op.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
        responses.entry("401".into()).or_insert_with(|| {
            problem_response("no valid token: missing, unknown, expired or revoked")
        });
        responses.entry("403".into()).or_insert_with(|| {
            problem_response("the token's role may not do this, or a cross-origin browser request")
        });
    } else {
        op.security = Some(vec![SecurityRequirement::default()]);
    }
    // Open unless the operator guards it: a token is optional, and used when given.
    if matches!(rule.access, Access::Metrics | Access::OpenApi) {
        op.security = Some(vec![
            SecurityRequirement::default(),
            SecurityRequirement::new("bearer", Vec::<String>::new()),
        ]);
    }
    if path.contains('{') {
        responses
            .entry("404".into())
            .or_insert_with(|| problem_response("not found, or another owner's"));
    }
}
