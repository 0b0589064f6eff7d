//! The stubs file (`STUBS_CONFIG`, default `/etc/stubs/stubs.yaml`): a YAML list of
//! canned responses.
//!
//! ```yaml
//! - method: GET
//!   path: /v1/users/42
//!   status: 200
//!   headers: { x-stub: "yes" }
//!   json: { id: 42, name: Ada }
//! - method: POST
//!   path: /v1/payments/*      # a trailing `*` matches any path with this prefix
//!   status: 201
//!   body: "created"
//! ```
//!
//! `method` is an HTTP method or `*` (any); `status` defaults to 200; `body` (text)
//! and `json` (any YAML value, sent as JSON) are alternatives. A missing file means
//! no stubs. The first stub that matches a request answers it.

use std::collections::BTreeMap;
use std::path::Path;

use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};

/// Paths under this prefix belong to the sidecar itself.
pub const RESERVED_PREFIX: &str = "/_envd/";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {err}")]
    Read { path: String, err: std::io::Error },
    #[error("{path}: not a YAML list of stubs: {err}")]
    Parse {
        path: String,
        err: serde_yaml::Error,
    },
    #[error("{path}: stub {index} ({method} {stub_path}): field `{field}`: {reason}")]
    Invalid {
        path: String,
        index: usize,
        method: String,
        stub_path: String,
        field: &'static str,
        reason: String,
    },
}

/// One stub as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStub {
    method: String,
    path: String,
    #[serde(default = "default_status")]
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    json: Option<serde_json::Value>,
}

fn default_status() -> u16 {
    200
}

/// A validated stub.
#[derive(Debug, Clone)]
pub struct Stub {
    /// `None`: any method.
    pub method: Option<Method>,
    pub path: PathPattern,
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Vec<u8>,
    /// Content type used when `headers` sets none.
    pub default_content_type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Exact(String),
    Prefix(String),
}

impl PathPattern {
    fn parse(s: &str) -> Self {
        match s.strip_suffix('*') {
            Some(prefix) => PathPattern::Prefix(prefix.to_owned()),
            None => PathPattern::Exact(s.to_owned()),
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => p == path,
            PathPattern::Prefix(p) => path.starts_with(p.as_str()),
        }
    }

    pub fn as_written(&self) -> String {
        match self {
            PathPattern::Exact(p) => p.clone(),
            PathPattern::Prefix(p) => format!("{p}*"),
        }
    }
}

impl Stub {
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method) && self.path.matches(path)
    }

    /// What the 404 answer and the logs show of this stub.
    pub fn summary(&self) -> StubSummary {
        StubSummary {
            method: self
                .method
                .as_ref()
                .map_or("*".to_owned(), |m| m.to_string()),
            path: self.path.as_written(),
            status: self.status.as_u16(),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StubSummary {
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// The loaded stubs, in file order.
#[derive(Debug, Clone, Default)]
pub struct Stubs {
    pub stubs: Vec<Stub>,
}

impl Stubs {
    /// Loads `path`; a missing file is no stubs.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &name),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(ConfigError::Read { path: name, err }),
        }
    }

    /// Parses the YAML text of a stubs file named `name` (for messages).
    pub fn parse(text: &str, name: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let raw: Option<Vec<RawStub>> =
            serde_yaml::from_str(text).map_err(|err| ConfigError::Parse {
                path: name.to_owned(),
                err,
            })?;
        let stubs = raw
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, r)| validate(r, i, name))
            .collect::<Result<_, _>>()?;
        Ok(Stubs { stubs })
    }

    /// The first stub that answers `method` `path`.
    pub fn find(&self, method: &Method, path: &str) -> Option<&Stub> {
        self.stubs.iter().find(|s| s.matches(method, path))
    }

    pub fn summaries(&self) -> Vec<StubSummary> {
        self.stubs.iter().map(Stub::summary).collect()
    }
}

fn validate(r: RawStub, index: usize, name: &str) -> Result<Stub, ConfigError> {
    let invalid = |field: &'static str, reason: String| ConfigError::Invalid {
        path: name.to_owned(),
        index,
        method: r.method.clone(),
        stub_path: r.path.clone(),
        field,
        reason,
    };
    let method = match r.method.trim() {
        "*" | "ANY" | "any" => None,
        m => Some(
            Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| invalid("method", format!("{m:?} is not an HTTP method")))?,
        ),
    };
    if !r.path.starts_with('/') {
        return Err(invalid("path", "must start with `/`".to_owned()));
    }
    if r.path.starts_with(RESERVED_PREFIX) {
        return Err(invalid(
            "path",
            format!("{RESERVED_PREFIX}* is reserved for the sidecar"),
        ));
    }
    if r.path[..r.path.len() - 1].contains('*') {
        return Err(invalid(
            "path",
            "`*` is only allowed at the end (a prefix match)".to_owned(),
        ));
    }
    let status = StatusCode::from_u16(r.status)
        .ok()
        .filter(|s| (100..=599).contains(&s.as_u16()))
        .ok_or_else(|| invalid("status", format!("{} is not an HTTP status", r.status)))?;
    let mut headers = Vec::with_capacity(r.headers.len());
    for (k, v) in &r.headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| invalid("headers", format!("{k:?} is not a header name")))?;
        let value = HeaderValue::from_str(v).map_err(|_| {
            invalid(
                "headers",
                format!("the value of {k:?} is not a header value"),
            )
        })?;
        headers.push((name, value));
    }
    let (body, default_content_type) = match (&r.body, &r.json) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "json",
                "set either `body` or `json`, not both".to_owned(),
            ));
        }
        (Some(b), None) => (b.clone().into_bytes(), "text/plain; charset=utf-8"),
        (None, Some(j)) => (
            serde_json::to_vec(j).map_err(|e| invalid("json", e.to_string()))?,
            "application/json",
        ),
        (None, None) => (Vec::new(), "text/plain; charset=utf-8"),
    };
    Ok(Stub {
        method,
        path: PathPattern::parse(&r.path),
        status,
        headers,
        body,
        default_content_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Stubs, ConfigError> {
        Stubs::parse(text, "stubs.yaml")
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(s) => panic!("expected an error, got {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    const SAMPLE: &str = r#"
- method: GET
  path: /v1/users/42
  json: {id: 42, name: Ada}
- method: post
  path: /v1/pay/*
  status: 201
  headers: {x-stub: "yes", content-type: text/csv}
  body: "a,b"
- method: "*"
  path: /any
  status: 204
"#;

    #[test]
    fn parses_and_defaults() {
        let s = parse(SAMPLE).expect("valid");
        assert_eq!(s.stubs.len(), 3);
        assert_eq!(s.stubs[0].status, StatusCode::OK);
        assert_eq!(s.stubs[0].default_content_type, "application/json");
        let j: serde_json::Value = serde_json::from_slice(&s.stubs[0].body).expect("json body");
        assert_eq!(j, serde_json::json!({"id": 42, "name": "Ada"}));
        assert_eq!(s.stubs[1].method, Some(Method::POST));
        assert_eq!(s.stubs[1].path, PathPattern::Prefix("/v1/pay/".into()));
        assert_eq!(s.stubs[1].body, b"a,b");
        assert_eq!(s.stubs[2].method, None);
    }

    #[test]
    fn matching_is_exact_or_prefix_and_first_wins() {
        let s = parse(SAMPLE).expect("valid");
        let find = |m: Method, p: &str| s.find(&m, p).map(|st| st.status.as_u16());
        assert_eq!(find(Method::GET, "/v1/users/42"), Some(200));
        assert_eq!(find(Method::GET, "/v1/users/42/"), None);
        assert_eq!(find(Method::GET, "/v1/users/4"), None);
        assert_eq!(find(Method::POST, "/v1/users/42"), None);
        assert_eq!(find(Method::POST, "/v1/pay/"), Some(201));
        assert_eq!(find(Method::POST, "/v1/pay/abc/def"), Some(201));
        assert_eq!(find(Method::GET, "/v1/pay/abc"), None);
        assert_eq!(find(Method::DELETE, "/any"), Some(204));
        assert_eq!(find(Method::GET, "/anything"), None);

        let first = parse(
            "- {method: GET, path: /a*, status: 201}\n- {method: GET, path: /ab, status: 202}",
        )
        .expect("valid");
        assert_eq!(
            first.find(&Method::GET, "/ab").map(|s| s.status.as_u16()),
            Some(201)
        );
    }

    #[test]
    fn empty_or_null_file_is_no_stubs() {
        assert!(parse("").expect("empty").stubs.is_empty());
        assert!(parse("# nothing\n").expect("comment").stubs.is_empty());
        assert!(parse("[]").expect("empty list").stubs.is_empty());
    }

    #[test]
    fn missing_file_is_no_stubs() {
        let s = Stubs::load(Path::new("/nonexistent/stubs.yaml")).expect("missing is fine");
        assert!(s.stubs.is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let e = err("- {method: GET}");
        assert!(e.contains("path"), "{e}");
        let e = err("- {method: GET, path: /a, statsu: 200}");
        assert!(e.contains("statsu"), "{e}");
        let e = err("- {method: GET, path: /a, status: 1000}");
        assert!(e.contains("field `status`") && e.contains("1000"), "{e}");
        let e = err("- {method: GET, path: /a, status: nope}");
        assert!(e.contains("status"), "{e}");
        let e = err("- {method: 'GE T', path: /a}");
        assert!(e.contains("field `method`"), "{e}");
        let e = err("- {method: GET, path: a}");
        assert!(e.contains("field `path`"), "{e}");
        let e = err("- {method: GET, path: /a*b}");
        assert!(e.contains("field `path`"), "{e}");
        let e = err("- {method: GET, path: /_envd/x}");
        assert!(e.contains("reserved"), "{e}");
        let e = err("- {method: GET, path: /a, body: x, json: 1}");
        assert!(e.contains("field `json`"), "{e}");
        let e = err("- {method: GET, path: /a, headers: {'bad header': x}}");
        assert!(e.contains("field `headers`"), "{e}");
        let e = err("method: GET\npath: /a\n");
        assert!(e.contains("not a YAML list"), "{e}");
        // The index and the stub are named.
        let e = err("- {method: GET, path: /ok}\n- {method: GET, path: /b, status: 42}");
        assert!(e.contains("stub 1 (GET /b)"), "{e}");
    }
}
