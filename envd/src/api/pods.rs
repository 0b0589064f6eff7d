//! Operations on a ready env's pods: `PATCH .../pods/{pod}` (config set) and
//! `.../pods/{pod}/exec` (a WebSocket session, or a one-shot POST).

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::{ApiError, ApiJson, ApiResult, AppState, Json};
use crate::auth::Caller;
use crate::engine::{ExecChunk, ExecRequest, ExecTarget, PodChange, field_of};
use crate::error::Error;
use crate::lifecycle::ChangeStatus;
use crate::store::ConfigChange;
use std::time::Duration;

/// Output kept per stream by the one-shot exec; the WebSocket streams without limit.
const MAX_OUTPUT: usize = 8 << 20;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/envs/{id}/pods/{pod}", patch(configure))
        .route(
            "/v1/envs/{id}/pods/{pod}/exec",
            get(exec_ws).post(exec_once),
        )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigRequest {
    /// Template variables to change, validated like a create's answers.
    #[serde(default)]
    pub answers: BTreeMap<String, String>,
    /// Deploy: the pod's (or `container`'s) new image; its changed containers are
    /// recreated with the same files, env, volumes and IP, or the old image comes back.
    #[serde(default)]
    pub image: Option<String>,
    /// With `image`: which container of the pod (needed when it has several).
    #[serde(default)]
    pub container: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConfigParams {
    /// Answer once the change is applied (200) or rolled back (422), not once recorded.
    #[serde(default)]
    wait: bool,
    /// How long to wait, e.g. `5m` (default 10m).
    timeout: Option<String>,
}

/// `envd config set`: new answers recorded as the env's next config generation (202);
/// the env's loop re-renders the pods they change, uploads their files and restarts or
/// signals them (`on_change`), each waited ready, or puts the previous answers back.
/// With `?wait=true`, answers once that is done: 200, or 422 naming the answer.
#[utoipa::path(patch, path = "/v1/envs/{id}/pods/{pod}", request_body = ConfigRequest,
    params(("id" = String, Path), ("pod" = String, Path), ConfigParams),
    responses((status = 202, body = ConfigChangeView, description = "recorded; being applied"),
    (status = 200, body = PodChange, description = "applied (with ?wait=true)"),
    (status = 404, body = super::Problem),
    (status = 409, body = super::Problem, description = "the env is not ready, or another change is being applied"),
    (status = 422, body = super::Problem, description = "an answer is invalid or a pod did not take it; `field` names it")))]
pub async fn configure(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, pod)): Path<(String, String)>,
    super::ApiQuery(q): super::ApiQuery<ConfigParams>,
    ApiJson(req): ApiJson<ConfigRequest>,
) -> ApiResult<Response> {
    let timeout = super::duration_param("timeout", q.timeout.as_deref(), Duration::from_secs(600))?;
    let env = s.env_of(&caller, &id).await?;
    let mut req = req;
    super::images::deploy_answers(&pod, &mut req)?;
    let change = s.engine.request_config(&env.id, &pod, &req.answers).await?;
    if !q.wait {
        let view = ConfigChangeView::from(&change);
        return Ok((StatusCode::ACCEPTED, Json(view)).into_response());
    }
    let done = wait_change(&s, &change.env_id, change.generation, timeout).await?;
    match done.status {
        ChangeStatus::Applied => {
            let view = PodChange {
                pod: done.pod,
                pods: done.pods,
                changed: done.changed,
                action: done.outcome.unwrap_or_default(),
                generation: done.generation,
            };
            Ok((StatusCode::OK, Json(view)).into_response())
        }
        ChangeStatus::RolledBack => Err(Error::invalid(
            "request",
            field_of(&req.answers),
            done.outcome.unwrap_or_default(),
        )
        .into()),
        _ => Ok((StatusCode::ACCEPTED, Json(ConfigChangeView::from(&done))).into_response()),
    }
}

/// A recorded config change.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ConfigChangeView {
    pub generation: i64,
    pub pod: String,
    pub pods: Vec<String>,
    pub changed: Vec<String>,
    /// `pending`, `applied`, `rolling-back` or `rolled-back`.
    pub status: ChangeStatus,
    pub outcome: Option<String>,
}

impl From<&ConfigChange> for ConfigChangeView {
    fn from(c: &ConfigChange) -> Self {
        ConfigChangeView {
            generation: c.generation,
            pod: c.pod.clone(),
            pods: c.pods.clone(),
            changed: c.changed.clone(),
            status: c.status,
            outcome: c.outcome.clone(),
        }
    }
}

/// Waits until the change is closed, the env goes away, or the timeout passes.
async fn wait_change(
    s: &AppState,
    env_id: &str,
    generation: i64,
    timeout: Duration,
) -> ApiResult<ConfigChange> {
    let t = std::time::Instant::now();
    let mut changes = s.engine.store.subscribe();
    loop {
        let change = s.engine.store.change(env_id, generation).await?;
        if !change.status.is_open() || t.elapsed() > timeout {
            return Ok(change);
        }
        let env = s.engine.store.get(env_id).await?;
        if env.state.is_final() || env.desired == crate::lifecycle::Desired::Gone {
            return Err(Error::Conflict(format!(
                "environment `{}` is being removed; its config change {generation} was not applied",
                env.name
            ))
            .into());
        }
        let next = crate::store::Store::next_change(&mut changes, env_id);
        let _ = tokio::time::timeout(Duration::from_secs(1), next).await;
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    pub cmd: Vec<String>,
    /// Default: the pod's first container.
    #[serde(default)]
    pub container: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ExecResult {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i64,
    /// Output beyond 8 MiB per stream was dropped; use the WebSocket for more.
    pub truncated: bool,
}

/// Runs a non-interactive command and answers with its output and exit code.
#[utoipa::path(post, path = "/v1/envs/{id}/pods/{pod}/exec", request_body = ExecBody,
    params(("id" = String, Path), ("pod" = String, Path)),
    responses((status = 200, body = ExecResult), (status = 404, body = super::Problem),
    (status = 409, body = super::Problem), (status = 422, body = super::Problem)))]
pub async fn exec_once(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, pod)): Path<(String, String)>,
    ApiJson(body): ApiJson<ExecBody>,
) -> ApiResult<Json<ExecResult>> {
    let env = s.env_of(&caller, &id).await?;
    let req = ExecRequest {
        cmd: body.cmd,
        container: body.container,
        tty: false,
        stdin: false,
    };
    let exec = s
        .engine
        .exec_target(&env.id, &pod, &req)
        .await?
        .start(&req)
        .await?;
    let (mut stdout, mut stderr, mut truncated) = (Vec::new(), Vec::new(), false);
    let mut output = exec.output;
    while let Some(chunk) = output.next().await {
        let (buf, bytes) = match chunk? {
            ExecChunk::Stderr(bytes) => (&mut stderr, bytes),
            ExecChunk::Stdout(bytes) => (&mut stdout, bytes),
        };
        let room = MAX_OUTPUT.saturating_sub(buf.len());
        truncated |= bytes.len() > room;
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
    Ok(Json(ExecResult {
        stdout: String::from_utf8_lossy(&stdout).into(),
        stderr: String::from_utf8_lossy(&stderr).into(),
        exit_code: exec.handle.exit_code().await?,
        truncated,
    }))
}

/// A command in a pod's container over a WebSocket (`envd exec`). Query: `cmd` (repeated,
/// one per argument), `container`, `tty`, `stdin`. Server frames: binary, first byte 1
/// (stdout, or the TTY) or 2 (stderr) then the bytes; last a text frame `{"exit_code": N}`
/// (or `{"error": "..."}`). Client frames: binary = stdin bytes; text
/// `{"eof": true}` closes stdin, `{"resize": [cols, rows]}` sizes the TTY.
#[utoipa::path(get, path = "/v1/envs/{id}/pods/{pod}/exec",
    params(("id" = String, Path), ("pod" = String, Path),
        ("cmd" = Vec<String>, Query, description = "the command, one `cmd=` per argument"),
        ("container" = Option<String>, Query), ("tty" = Option<bool>, Query), ("stdin" = Option<bool>, Query)),
    responses((status = 101, description = "WebSocket session"), (status = 400, body = super::Problem),
    (status = 404, body = super::Problem), (status = 409, body = super::Problem), (status = 422, body = super::Problem)))]
pub async fn exec_ws(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, pod)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let req = exec_query(query.as_deref().unwrap_or(""))?;
    let env = s.env_of(&caller, &id).await?;
    let target = s.engine.exec_target(&env.id, &pod, &req).await?;
    let ws = ws.map_err(|r| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "Not a WebSocket request".into(),
            format!(
                "{}: GET .../exec is a WebSocket session (envd exec); for a one-shot command POST {{\"cmd\": [...]}} to the same path",
                r.body_text()
            ),
            None,
        )
    })?;
    Ok(ws.on_upgrade(move |socket| session(socket, target, req)))
}

fn exec_query(q: &str) -> ApiResult<ExecRequest> {
    let mut req = ExecRequest::default();
    let flag = |k: &str, v: &str| match v {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Error::invalid(
            "query",
            k,
            format!("`{v}` is not true or false"),
        )),
    };
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        match k.as_ref() {
            "cmd" => req.cmd.push(v.into_owned()),
            "container" => req.container = Some(v.into_owned()),
            "tty" => req.tty = flag("tty", &v)?,
            "stdin" => req.stdin = flag("stdin", &v)?,
            other => {
                return Err(Error::invalid(
                    "query",
                    other,
                    "unknown parameter; use cmd (repeated), container, tty, stdin",
                )
                .into());
            }
        }
    }
    Ok(req)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Control {
    eof: bool,
    resize: Option<(u16, u16)>,
}

async fn session(mut socket: WebSocket, target: ExecTarget, req: ExecRequest) {
    let exec = match target.start(&req).await {
        Ok(e) => e,
        Err(e) => {
            let _ = send_json(&mut socket, json!({ "error": e.to_string() })).await;
            return;
        }
    };
    let (mut output, mut input, handle) = (exec.output, exec.input, exec.handle);
    let mut stdin_open = req.stdin;
    loop {
        tokio::select! {
            chunk = output.next() => {
                let (tag, bytes) = match chunk {
                    Some(Ok(ExecChunk::Stderr(bytes))) => (2u8, bytes),
                    Some(Ok(ExecChunk::Stdout(bytes))) => (1u8, bytes),
                    Some(Err(e)) => {
                        let _ = send_json(&mut socket, json!({ "error": format!("reading the output: {e}") })).await;
                        return;
                    }
                    None => break,
                };
                let mut frame = Vec::with_capacity(bytes.len() + 1);
                frame.push(tag);
                frame.extend_from_slice(&bytes);
                if socket.send(Message::Binary(frame.into())).await.is_err() {
                    return; // the client went; dropping the attach closes the command's stdin
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(b))) if stdin_open => {
                    if input.write_all(&b).await.and(input.flush().await).is_err() {
                        stdin_open = false;
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    let c: Control = serde_json::from_str(t.as_str()).unwrap_or_default();
                    if c.eof && stdin_open {
                        stdin_open = false;
                        let _ = input.shutdown().await;
                    }
                    if let Some((cols, rows)) = c.resize {
                        let _ = handle.resize(cols, rows).await;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let last = match handle.exit_code().await {
        Ok(code) => json!({ "exit_code": code }),
        Err(e) => json!({ "error": e.to_string() }),
    };
    if send_json(&mut socket, last).await.is_ok() {
        let _ = socket.send(Message::Close(None)).await;
    }
}

async fn send_json(socket: &mut WebSocket, v: serde_json::Value) -> Result<(), axum::Error> {
    socket.send(Message::Text(v.to_string().into())).await
}
