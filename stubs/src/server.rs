//! The HTTP side: the sidecar's own endpoints and the stubs.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::archive::stream_archive;
use crate::config::Stubs;
use crate::time::rfc3339;

/// How many received requests `/_envd/requests` keeps (the oldest are dropped).
pub const MAX_RECORDED: usize = 10_000;

#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    pub time: String,
    /// The status the stubs answered (404: no stub matched).
    pub status: u16,
}

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    stubs: Stubs,
    log_dir: PathBuf,
    requests: Mutex<Vec<RecordedRequest>>,
}

impl AppState {
    pub fn new(stubs: Stubs, log_dir: PathBuf) -> Self {
        AppState {
            inner: Arc::new(Inner {
                stubs,
                log_dir,
                requests: Mutex::new(Vec::new()),
            }),
        }
    }

    fn record(&self, r: RecordedRequest) {
        let mut reqs = match self.inner.requests.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if reqs.len() >= MAX_RECORDED {
            reqs.remove(0);
        }
        reqs.push(r);
    }

    fn recorded(&self) -> Vec<RecordedRequest> {
        match self.inner.requests.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn clear(&self) {
        match self.inner.requests.lock() {
            Ok(mut g) => g.clear(),
            Err(poisoned) => poisoned.into_inner().clear(),
        }
    }
}

/// The sidecar's router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/_envd/healthz", get(healthz))
        .route("/_envd/logs.tar.gz", get(logs))
        .route("/_envd/requests", get(requests).delete(clear_requests))
        .fallback(stub)
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn logs(State(state): State<AppState>) -> Response {
    let mut rx = stream_archive(state.inner.log_dir.clone());
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (
        [
            (header::CONTENT_TYPE, "application/gzip"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"logs.tar.gz\"",
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn requests(State(state): State<AppState>) -> Response {
    axum::Json(state.recorded()).into_response()
}

async fn clear_requests(State(state): State<AppState>) -> StatusCode {
    state.clear();
    StatusCode::NO_CONTENT
}

#[derive(Serialize)]
struct NoStub<'a> {
    error: String,
    method: &'a str,
    path: &'a str,
    stubs: Vec<crate::config::StubSummary>,
}

async fn stub(State(state): State<AppState>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let response = match state.inner.stubs.find(&method, &path) {
        Some(s) => {
            let mut resp = Response::new(Body::from(s.body.clone()));
            *resp.status_mut() = s.status;
            let headers = resp.headers_mut();
            for (k, v) in &s.headers {
                headers.append(k.clone(), v.clone());
            }
            if !headers.contains_key(header::CONTENT_TYPE) && !s.body.is_empty() {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(s.default_content_type),
                );
            }
            resp
        }
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(NoStub {
                error: format!("no stub for {method} {path}"),
                method: method.as_str(),
                path: &path,
                stubs: state.inner.stubs.summaries(),
            }),
        )
            .into_response(),
    };
    let status = response.status().as_u16();
    let time = rfc3339(SystemTime::now());
    println!("{time} {method} {path} {status}");
    state.record(RecordedRequest {
        method: method.to_string(),
        path,
        query,
        time,
        status,
    });
    response
}
