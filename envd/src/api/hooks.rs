//! `POST /v1/hooks/github` and `/v1/hooks/gitlab`: the forges' deliveries, authenticated
//! by the hook's secret instead of a token (a bad or missing signature is 401 and does
//! nothing); see `crate::hooks` for what each event does. Every delivery is in the audit
//! trail: which hook, the event and branch, what was done and the status (never the
//! secret, the signature or the body).

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;

use super::{ApiError, ApiResult, AppState, Json};
use crate::error::Error;
use crate::hooks::{self, Event, Forge};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/hooks/github", post(github))
        .route("/v1/hooks/gitlab", post(gitlab))
}

/// What a delivery did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HookOutcome {
    /// `teardown`, `deploy` or `ignored`.
    pub action: String,
    /// The env acted on.
    pub env: Option<String>,
    pub detail: String,
}

/// A GitHub delivery (`pull_request`, `push`; others are ignored), signed with
/// `X-Hub-Signature-256`.
#[utoipa::path(post, path = "/v1/hooks/github", request_body = serde_json::Value,
    responses((status = 200, body = HookOutcome, description = "nothing to do"),
    (status = 202, body = HookOutcome, description = "a teardown or deploy was requested"),
    (status = 401, body = super::Problem, description = "the signature does not match the hook's secret"),
    (status = 409, body = super::Problem, description = "the branch's env is not ready for a deploy")))]
pub async fn github(
    State(s): State<AppState>,
    client: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    audited(&s, Forge::GitHub, client, &headers, &body).await
}

/// A GitLab delivery (`Merge Request Hook`, `Push Hook`; others are ignored), with the
/// hook's secret token in `X-Gitlab-Token`.
#[utoipa::path(post, path = "/v1/hooks/gitlab", request_body = serde_json::Value,
    responses((status = 200, body = HookOutcome, description = "nothing to do"),
    (status = 202, body = HookOutcome, description = "a teardown or deploy was requested"),
    (status = 401, body = super::Problem, description = "the token does not match the hook's secret"),
    (status = 409, body = super::Problem, description = "the branch's env is not ready for a deploy")))]
pub async fn gitlab(
    State(s): State<AppState>,
    client: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    audited(&s, Forge::GitLab, client, &headers, &body).await
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// A delivery, then its line in the audit trail (who: the hook; what: event, branch,
/// action, env; the status answered).
async fn audited(
    s: &AppState,
    forge: Forge,
    client: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let (name, event_header) = match forge {
        Forge::GitHub => ("github", "x-github-event"),
        Forge::GitLab => ("gitlab", "x-gitlab-event"),
    };
    let mut audit = Audit {
        // Unverified yet: kept short.
        event: header(headers, event_header)
            .unwrap_or_default()
            .chars()
            .take(64)
            .collect(),
        branch: None,
        action: "refused".into(),
    };
    let result = deliver(s, forge, headers, body, &mut audit).await;
    let (status, what) = match &result {
        Ok(r) => (r.status(), audit.action.clone()),
        Err(e) => (e.0, format!("{}: {}", audit.action, e.1)), // the title, never a body
    };
    let branch = audit
        .branch
        .map(|b| format!(" branch `{b}`"))
        .unwrap_or_default();
    let route = format!("/v1/hooks/{name}");
    let entry = crate::store::AuditEntry {
        id: 0,
        at: crate::store::now_ms(),
        actor: format!("hook:{name}"),
        owner: hook_config(s, forge).map(|c| c.owner.clone().unwrap_or_else(|| "ci".into())),
        role: None,
        method: "POST".into(),
        route: route.clone(),
        target: route,
        subject: Some(format!("{}{branch}: {what}", audit.event)),
        status: i64::from(status.as_u16()),
        client: client.map_or("unknown".into(), |c| c.0.0.to_string()),
    };
    if let Err(e) = s.engine.store.record_audit(&entry).await {
        tracing::error!("recording the audit entry of a {name} delivery: {e}");
    }
    result
}

fn hook_config(s: &AppState, forge: Forge) -> Option<&crate::hooks::HookConfig> {
    match forge {
        Forge::GitHub => s.engine.cfg.hooks.github.as_ref(),
        Forge::GitLab => s.engine.cfg.hooks.gitlab.as_ref(),
    }
}

/// What the audit says of a delivery, filled in as it is handled.
struct Audit {
    event: String,
    branch: Option<String>,
    /// `refused` (bad signature), `ignored`, `teardown env <id>`, `deploy …`.
    action: String,
}

async fn deliver(
    s: &AppState,
    forge: Forge,
    headers: &HeaderMap,
    body: &[u8],
    audit: &mut Audit,
) -> ApiResult<Response> {
    let (sig, event, name) = match forge {
        Forge::GitHub => (
            header(headers, "x-hub-signature-256"),
            header(headers, "x-github-event"),
            "github",
        ),
        Forge::GitLab => (
            header(headers, "x-gitlab-token"),
            header(headers, "x-gitlab-event"),
            "gitlab",
        ),
    };
    let cfg = hook_config(s, forge);
    let Some(cfg) = cfg.filter(|c| hooks::verify(forge, &c.secret, sig, body)) else {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "Unauthorized".into(),
            format!(
                "the delivery's signature does not match the {name} hook's secret (set [hooks.{name}] secret in envd's config and the same secret in the forge)"
            ),
            None,
        ));
    };
    let payload: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Error::invalid("request", "body", format!("not a JSON delivery: {e}")))?;
    let owner = cfg.owner.clone().unwrap_or_else(|| "ci".into());
    audit.branch = hooks::branch_of(forge, event.unwrap_or_default(), &payload);
    audit.action = "failed".into();
    let mut outcome = |status, action: &str, env: Option<String>, detail: String| {
        audit.action = match &env {
            Some(id) => format!("{action} env {id} ({detail})"),
            None => format!("{action} ({detail})"),
        };
        let o = HookOutcome {
            action: action.into(),
            env,
            detail,
        };
        Ok((status, Json(o)).into_response())
    };
    match hooks::interpret(forge, cfg, event.unwrap_or_default(), &payload) {
        Event::Ignored(why) => outcome(StatusCode::OK, "ignored", None, why),
        Event::Teardown { key } => match s.engine.store.live_by_key(&owner, &key).await? {
            None => outcome(
                StatusCode::OK,
                "ignored",
                None,
                format!("no live env of `{owner}` holds key `{key}`"),
            ),
            Some(env) => {
                s.engine.store.request_teardown(&env.id).await?;
                s.engine.kick(&env.id);
                outcome(
                    StatusCode::ACCEPTED,
                    "teardown",
                    Some(env.id),
                    format!("key `{key}`: tearing down"),
                )
            }
        },
        Event::Deploy { key, target, image } => {
            let Some(env) = s.engine.store.live_by_key(&owner, &key).await? else {
                return outcome(
                    StatusCode::OK,
                    "ignored",
                    None,
                    format!("no live env of `{owner}` holds key `{key}`"),
                );
            };
            let pod = target.split('/').next().unwrap_or_default().to_string();
            let answers = BTreeMap::from([(crate::spec::images::key(&target), image.clone())]);
            let change = s.engine.request_config(&env.id, &pod, &answers).await?;
            outcome(
                StatusCode::ACCEPTED,
                "deploy",
                Some(env.id),
                format!("{target}: {image} (generation {})", change.generation),
            )
        }
    }
}
