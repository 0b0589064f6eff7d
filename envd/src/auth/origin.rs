//! Browsers: a web page a QA engineer visits must not drive envd. A request that changes
//! something (any method but GET/HEAD/OPTIONS) or opens a WebSocket (exec), sent with an
//! `Origin`, must come from envd's own origin or one of `allowed_origins`. Requests
//! without an Origin (the CLI, curl, CI) are not browsers' and pass.

use std::net::IpAddr;

use axum::extract::Request;
use axum::http::{Method, StatusCode, header};

use super::{AuthConfig, problem};
use crate::api::ApiError;

/// The 403 problem when the request is a cross-origin one that changes something.
pub(super) fn check(cfg: &AuthConfig, req: &Request) -> Option<ApiError> {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !upgrade && !changes {
        return None;
    }
    let origin = req.headers().get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("(not text)");
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    if allowed(origin, host, &cfg.allowed_origins) {
        return None;
    }
    Some(problem(
        StatusCode::FORBIDDEN,
        "Cross-origin request refused",
        format!(
            "a page from {origin} may not {} here; if that origin is yours, add it to envd's allowed_origins",
            if upgrade {
                "open a WebSocket"
            } else {
                "change anything"
            }
        ),
    ))
}

/// Same origin, or listed. "Same" needs a Host that is an IP literal or `localhost`:
/// a DNS name could be rebound by an attacker to this envd's address, so such hosts
/// must be listed in `allowed_origins`.
pub(super) fn allowed(origin: &str, host: Option<&str>, allow: &[String]) -> bool {
    let origin = origin.trim_end_matches('/');
    if allow
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some(host) = host else { return false };
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    if !rest.eq_ignore_ascii_case(host) {
        return false;
    }
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
}
