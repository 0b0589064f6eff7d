//! Who may do what. Every request passes [`guard`]: the Origin check (browsers), the bearer
//! token (401), the route's rule in [`rules::RULES`] (403), then the handler, which scopes
//! envs to the caller's owner (404); mutating requests are written to the audit trail.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;
use crate::error::{Error, Result};
use crate::store::{AuditEntry, Store, now_ms};

mod origin;
pub mod rules;
mod token;

pub use rules::{Access, RULES, Rule};
pub use token::{TOKEN_PREFIX, bootstrap_admin, check_label, hash, issue, new_token};

/// What a token may do; see the role matrix in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads its owner's envs and the templates.
    Viewer,
    /// Creates, changes and removes its owner's envs; exec.
    User,
    /// As user, without exec.
    Ci,
    /// Everything, every owner.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::User, Role::Ci, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::User => "user",
            Role::Ci => "ci",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "request",
                    "role",
                    format!("`{s}` is not a role; use viewer, user, ci or admin"),
                )
            })
    }
}

/// The authenticated caller of a request, put there by [`guard`].
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name (or `no-auth`).
    pub actor: String,
    pub role: Role,
    pub owner: String,
}

impl Caller {
    /// The owner whose envs this caller sees; `None` for an admin (every owner).
    pub fn scope(&self) -> Option<&str> {
        (self.role != Role::Admin).then_some(self.owner.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> std::result::Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| unauthorized("this route needs a bearer token".into()))
    }
}

/// What a request made or acted on, for the audit trail, when its path does not say: a
/// handler puts it in the response's extensions.
#[derive(Debug, Clone)]
pub struct Subject(pub String);

/// How the API checks its callers.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// `--no-auth`: every caller is an admin of owner `local` (loopback only).
    pub disabled: bool,
    /// `/metrics` needs a token.
    pub guard_metrics: bool,
    /// `/openapi.json` needs a token.
    pub guard_openapi: bool,
    /// Origins (`http://host:port`) allowed besides this envd's own.
    pub allowed_origins: Vec<String>,
    /// Where the admin token was written, for the 401 message.
    pub admin_token_file: Option<PathBuf>,
}

/// The middleware's state.
pub struct Gate {
    pub cfg: AuthConfig,
    store: Store,
    /// Token id -> when its last-used time was last written (written at most each minute).
    touched: Mutex<HashMap<String, i64>>,
}

impl Gate {
    pub fn new(cfg: AuthConfig, store: Store) -> Arc<Gate> {
        Arc::new(Gate {
            cfg,
            store,
            touched: Mutex::new(HashMap::new()),
        })
    }
}

pub(crate) fn problem(status: StatusCode, title: &str, detail: String) -> ApiError {
    ApiError(status, title.into(), detail, None)
}

fn unauthorized(detail: String) -> ApiError {
    problem(StatusCode::UNAUTHORIZED, "Unauthorized", detail)
}

/// Who is calling, from the Authorization header; a 401 problem when nobody valid.
async fn authenticate(
    gate: &Gate,
    value: Option<&HeaderValue>,
) -> std::result::Result<Caller, ApiError> {
    if gate.cfg.disabled {
        return Ok(Caller {
            actor: "no-auth".into(),
            role: Role::Admin,
            owner: "local".into(),
        });
    }
    let how = "set ENVD_TOKEN or run `envd login` with a token an admin made (`envd token create`)";
    let Some(value) = value else {
        let file = gate
            .cfg
            .admin_token_file
            .as_ref()
            .map(|p| {
                format!(
                    "; on the envd host root finds the admin token in {}",
                    p.display()
                )
            })
            .unwrap_or_default();
        return Err(unauthorized(format!(
            "this route needs a bearer token (Authorization: Bearer …): {how}{file}"
        )));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`".into()))?;
    let row = match gate.store.token_by_hash(&hash(token)).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            return Err(unauthorized(format!(
                "this token is not known to this envd: {how}"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let when = |ms: i64| crate::api::rfc3339(ms);
    if let Some(at) = row.revoked_at {
        return Err(unauthorized(format!(
            "token `{}` was revoked at {}: ask an admin for a new one (`envd token create`), then run `envd login` with it",
            row.name,
            when(at)
        )));
    }
    let now = now_ms();
    if let Some(at) = row.expires_at.filter(|at| *at <= now) {
        return Err(unauthorized(format!(
            "token `{}` expired at {}: ask an admin for a new one (`envd token create`), then run `envd login` with it",
            row.name,
            when(at)
        )));
    }
    let role: Role = row.role.parse()?;
    touch(gate, &row.id, now).await;
    Ok(Caller {
        actor: row.name,
        role,
        owner: row.owner,
    })
}

/// Records the token's last use, at most once a minute per token and process.
async fn touch(gate: &Gate, id: &str, now: i64) {
    let due = {
        let mut t = gate.touched.lock().unwrap_or_else(|p| p.into_inner());
        let due = t.get(id).is_none_or(|last| now - last >= 60_000);
        if due {
            t.insert(id.to_string(), now);
        }
        due
    };
    if due && let Err(e) = gate.store.touch_token(id, now).await {
        tracing::warn!("recording a token's last use: {e}");
    }
}

/// The rule check: the caller, or the 401/403 problem.
async fn admit(
    gate: &Gate,
    rule: Option<&Rule>,
    method: &Method,
    route: &str,
    auth: Option<&HeaderValue>,
) -> std::result::Result<Option<Caller>, ApiError> {
    let Some(rule) = rule else {
        // Another method of a guarded path: nothing runs, the method is just wrong.
        let methods: Vec<&str> = RULES
            .iter()
            .filter(|r| r.path == route)
            .map(|r| r.method)
            .collect();
        if !methods.is_empty() {
            return Err(problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                format!("{route} takes {}", methods.join(", ")),
            ));
        }
        tracing::error!("{method} {route} has no access rule; add one to auth::rules::RULES");
        return Err(problem(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("{method} {route} has no access rule, so nobody may call it"),
        ));
    };
    let roles = match rule.access {
        Access::Open => return Ok(None),
        Access::Metrics if !gate.cfg.guard_metrics => return Ok(None),
        Access::OpenApi if !gate.cfg.guard_openapi => return Ok(None),
        Access::Metrics | Access::OpenApi => &Role::ALL[..],
        Access::Roles(roles) | Access::Page(roles) => roles,
    };
    let caller = authenticate(gate, auth).await?;
    if !roles.contains(&caller.role) {
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        return Err(problem(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "role `{}` may not {method} {route}: it needs {}; ask an admin for such a token",
                caller.role.as_str(),
                names.join(" or ")
            ),
        ));
    }
    Ok(Some(caller))
}

/// The request's token: the Authorization header, else the web UI's session cookie.
fn credential(headers: &axum::http::HeaderMap) -> Option<HeaderValue> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        return Some(v.clone());
    }
    let token = crate::ui::session::token(headers)?;
    HeaderValue::from_str(&format!("Bearer {token}")).ok()
}

/// A request that changes something on the strength of the session cookie alone must
/// carry the page's CSRF token (a bearer header cannot be sent by another site's page).
fn session_csrf(req: &Request) -> Option<ApiError> {
    let h = req.headers();
    let by_cookie =
        h.get(header::AUTHORIZATION).is_none() && crate::ui::session::token(h).is_some();
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let sign_in = matches!(req.uri().path(), "/login" | "/logout");
    if !by_cookie || !changes || sign_in || crate::ui::session::csrf_ok(h, None) {
        return None;
    }
    Some(problem(
        StatusCode::FORBIDDEN,
        "CSRF token missing",
        "a request signed in by the browser's session must carry the page's X-CSRF-Token header; reload the page".into(),
    ))
}

/// Whether `token` may open a web UI session: its caller, or the 401 saying why not.
pub async fn check_token(
    store: &Store,
    cfg: &AuthConfig,
    token: &str,
) -> std::result::Result<Caller, ApiError> {
    let value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| unauthorized("a token has no spaces or control characters".into()))?;
    let gate = Gate::new(cfg.clone(), store.clone());
    authenticate(&gate, Some(&value)).await
}

/// The middleware of every route: origin, token, rule, then the handler; audits mutations.
pub async fn guard(State(gate): State<Arc<Gate>>, mut req: Request, next: Next) -> Response {
    let Some(route) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
    else {
        return next.run(req).await; // no route: the fallback's 404
    };
    let method = req.method().clone();
    let rule = rules::find(&method, &route);
    let audited = rule.is_none_or(|r| r.audit);
    let client = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_else(|| "unknown".into());
    let target = req.uri().path().to_string();
    let refused = origin::check(&gate.cfg, &req).or_else(|| session_csrf(&req));
    let credential = credential(req.headers());
    let outcome = match refused {
        Some(e) => Err(e),
        None => admit(&gate, rule, &method, &route, credential.as_ref()).await,
    };
    let (caller, resp) = match outcome {
        Ok(caller) => {
            if let Some(c) = &caller {
                req.extensions_mut().insert(c.clone());
            }
            (caller, next.run(req).await)
        }
        Err(e)
            if e.0 == StatusCode::UNAUTHORIZED
                && rule.is_some_and(|r| matches!(r.access, Access::Page(_))) =>
        {
            let back = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let to = format!("/login?next={}", crate::urlencode(back));
            (None, axum::response::Redirect::to(&to).into_response())
        }
        Err(e) => {
            let mut resp = e.into_response();
            if resp.status() == StatusCode::UNAUTHORIZED {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            (None, resp)
        }
    };
    if audited {
        let entry = AuditEntry {
            id: 0,
            at: now_ms(),
            actor: caller
                .as_ref()
                .map_or("anonymous".into(), |c| c.actor.clone()),
            owner: caller.as_ref().map(|c| c.owner.clone()),
            role: caller.as_ref().map(|c| c.role.as_str().to_string()),
            method: method.to_string(),
            route,
            target,
            subject: resp.extensions().get::<Subject>().map(|s| s.0.clone()),
            status: i64::from(resp.status().as_u16()),
            client,
        };
        if let Err(e) = gate.store.record_audit(&entry).await {
            tracing::error!(
                "recording the audit entry of {} {}: {e}",
                entry.method,
                entry.target
            );
        }
    }
    resp
}

#[cfg(test)]
mod tests;
