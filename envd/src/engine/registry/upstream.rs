//! A registry envd's cache pulls from: its address, credentials and TLS trust (from envd's
//! config only), the Basic or Bearer-token handshake, and why a request failed, in words.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{ACCEPT, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use serde::Deserialize;

use crate::error::{Error, Result};

/// What envd's config says of one registry host (`[registries."host"]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL, default `https://<host>`; `http://…` for a lab registry without TLS.
    pub url: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A PEM file with the CA(s) that sign the registry's certificate (a lab registry's
    /// own CA), trusted besides the system's roots; read when envd starts.
    pub ca: Option<PathBuf>,
    /// Accept any certificate from this registry (a lab registry only; warned at start).
    #[serde(default)]
    pub insecure: bool,
}

/// Every manifest kind a node's engine can pull.
pub const MANIFEST_TYPES: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// Why the upstream did not give what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    NotFound,
    Unauthorized,
    Unreachable(String),
    /// The TLS handshake with `host` failed: `why` says how (never a credential).
    Tls {
        host: String,
        why: String,
    },
    Other(String),
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::NotFound => write!(f, "not found"),
            Cause::Unauthorized => write!(
                f,
                "unauthorized (the registry refused envd's credentials; check username/password of this registry in envd's config)"
            ),
            Cause::Unreachable(why) => write!(f, "unreachable ({why})"),
            Cause::Tls { host, why } => write!(
                f,
                "TLS: {why} — set registry.registries.\"{host}\".ca in envd's config to the CA that signed it (or insecure = true for a lab registry)"
            ),
            Cause::Other(why) => write!(f, "{why}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub host: String,
    base: String,
    cfg: UpstreamConfig,
    http: reqwest::Client,
}

impl Upstream {
    /// The client of one configured registry; its CA file is read here, so a bad one is
    /// a config error at start naming the key, not a failed pull later.
    pub fn new(host: &str, cfg: UpstreamConfig) -> Result<Upstream> {
        let base = cfg
            .url
            .clone()
            .unwrap_or_else(|| format!("https://{host}"))
            .trim_end_matches('/')
            .to_string();
        let key = |k: &str| format!("registry.registries.\"{host}\".{k}");
        let mut http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if let Some(path) = &cfg.ca {
            let pem = std::fs::read(path).map_err(|e| {
                Error::invalid(
                    "config",
                    key("ca"),
                    format!("cannot read `{}`: {e}", path.display()),
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    Error::invalid(
                        "config",
                        key("ca"),
                        format!("`{}` holds no PEM certificate", path.display()),
                    )
                })?;
            http = http.tls_certs_merge(certs);
        }
        if cfg.insecure {
            http = http.tls_danger_accept_invalid_certs(true);
        }
        let http = http
            .build()
            .map_err(|e| Error::invalid("config", key("ca"), format!("TLS setup: {e}")))?;
        Ok(Upstream {
            host: host.to_string(),
            base,
            cfg,
            http,
        })
    }

    /// Why a request did not get an answer: a TLS failure named as such, else unreachable.
    fn cause(&self, e: reqwest::Error) -> Cause {
        match tls_failure(&e) {
            Some(why) => Cause::Tls {
                host: self.host.clone(),
                why,
            },
            None => unreachable(e),
        }
    }

    /// GETs (or HEADs) `/v2/<path>`, answering the registry's auth challenge once.
    pub async fn get(&self, path: &str, head: bool) -> Result<Response, Cause> {
        let url = format!("{}/v2/{path}", self.base);
        let send = |auth: Option<String>| {
            let mut req = if head {
                self.http.head(&url)
            } else {
                self.http.get(&url)
            };
            req = req.header(ACCEPT, MANIFEST_TYPES);
            if let Some(a) = auth {
                req = req.header(reqwest::header::AUTHORIZATION, a);
            }
            req.send()
        };
        let r = send(None).await.map_err(|e| self.cause(e))?;
        let r = if r.status() == StatusCode::UNAUTHORIZED {
            let challenge = r
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let auth = self.authorization(&challenge).await?;
            send(Some(auth)).await.map_err(|e| self.cause(e))?
        } else {
            r
        };
        match r.status() {
            s if s.is_success() => Ok(r),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(Cause::Unauthorized),
            StatusCode::NOT_FOUND => Err(Cause::NotFound),
            s => Err(Cause::Other(format!("answered HTTP {s}"))),
        }
    }

    /// The Authorization header the challenge asks for: Basic, or a Bearer token from
    /// the challenge's realm (Harbor, Docker Hub).
    async fn authorization(&self, challenge: &str) -> Result<String, Cause> {
        let (user, pass) = match (&self.cfg.username, &self.cfg.password) {
            (Some(u), Some(p)) => (u.clone(), p.clone()),
            _ => (String::new(), String::new()),
        };
        let lower = challenge.to_ascii_lowercase();
        if lower.starts_with("basic") {
            if user.is_empty() {
                return Err(Cause::Unauthorized);
            }
            use base64::Engine;
            let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            return Ok(format!("Basic {b}"));
        }
        if !lower.starts_with("bearer") {
            return Err(Cause::Unauthorized);
        }
        let params = challenge_params(&challenge[6..]);
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or(Cause::Unauthorized)?;
        let query = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in params.iter().filter(|(k, _)| k != "realm") {
                q.append_pair(k, v);
            }
            q.finish()
        };
        let sep = if realm.contains('?') { '&' } else { '?' };
        let mut req = self.http.get(format!("{realm}{sep}{query}"));
        if !user.is_empty() {
            req = req.basic_auth(user, Some(pass));
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let r = req.send().await.map_err(|e| self.cause(e))?;
        if !r.status().is_success() {
            return Err(Cause::Unauthorized);
        }
        let t: Token = r
            .json()
            .await
            .map_err(|e| Cause::Other(format!("its token service answered no token: {e}")))?;
        t.token
            .or(t.access_token)
            .map(|t| format!("Bearer {t}"))
            .ok_or(Cause::Unauthorized)
    }
}

/// The rustls error in a request's error chain, in words.
fn tls_failure(e: &reqwest::Error) -> Option<String> {
    use rustls::CertificateError as C;
    Some(match find_rustls(e, 0)? {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "certificate not trusted".into()
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "certificate expired".into()
        }
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => "certificate not valid for this host name".into(),
        rustls::Error::InvalidCertificate(other) => format!("certificate not accepted ({other})"),
        other => format!("handshake failed ({other})"),
    })
}

/// Walks an error chain for a rustls error. It comes up inside an `io::Error` (hyper-rustls
/// wraps tokio-rustls's io error in another), whose `source()` skips its payload, so each
/// io error's payload is looked into.
fn find_rustls<'a>(
    err: &'a (dyn std::error::Error + 'static),
    depth: u8,
) -> Option<&'a rustls::Error> {
    if depth > 16 {
        return None;
    }
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let payload = err
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|p| find_rustls(p, depth + 1));
    payload.or_else(|| find_rustls(err.source()?, depth + 1))
}

fn unreachable(e: reqwest::Error) -> Cause {
    // reqwest's text names the URL (never credentials: they travel in headers).
    let mut why = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        why = format!("{why}: {s}");
        src = s.source();
    }
    Cause::Unreachable(why)
}

/// `realm="…",service="…",scope="…"` as pairs.
fn challenge_params(s: &str) -> Vec<(String, String)> {
    let mut out = vec![];
    let mut rest = s.trim();
    while let Some((k, v)) = rest.split_once('=') {
        let k = k.trim().trim_start_matches(',').trim().to_string();
        let v = v.trim_start();
        let (val, after) = if let Some(q) = v.strip_prefix('"') {
            match q.split_once('"') {
                Some((val, after)) => (val.to_string(), after),
                None => (q.to_string(), ""),
            }
        } else {
            match v.split_once(',') {
                Some((val, after)) => (val.to_string(), after),
                None => (v.to_string(), ""),
            }
        };
        out.push((k, val));
        rest = after.trim_start_matches(',').trim();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_ca_file_is_a_config_error_naming_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        for (path, why) in [
            (dir.path().join("missing.pem"), "cannot read"),
            (not_pem, "holds no PEM certificate"),
        ] {
            let cfg = UpstreamConfig {
                ca: Some(path),
                ..Default::default()
            };
            let e = Upstream::new("registry.lab", cfg).unwrap_err().to_string();
            assert!(
                e.contains(r#"config: registry.registries."registry.lab".ca: "#),
                "{e}"
            );
            assert!(e.contains(why), "{e}");
        }
        let insecure = UpstreamConfig {
            insecure: true,
            ..Default::default()
        };
        assert!(Upstream::new("registry.lab", insecure).is_ok());
    }

    #[test]
    fn reads_a_bearer_challenge() {
        let p = challenge_params(
            r#" realm="https://h.lab/service/token",service="harbor-registry",scope="repository:shop/web:pull""#,
        );
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://h.lab/service/token".into()),
                ("service".into(), "harbor-registry".into()),
                ("scope".into(), "repository:shop/web:pull".into()),
            ]
        );
    }
}
