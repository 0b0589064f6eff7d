//! The pull side of the Registry API v2, for nodes: `GET|HEAD /v2/`, manifests and blobs
//! of uploads (`up/<key>`) and of the cached registries (`<host>/<path>`).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::upstream::Cause;
use super::{Registry, blobs::hex_of};

pub fn router(reg: Arc<Registry>) -> Router {
    Router::new()
        .route(
            "/v2/",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], "{}") }),
        )
        .route("/v2/{*rest}", get(pull))
        .with_state(reg)
}

async fn pull(State(reg): State<Arc<Registry>>, Path(rest): Path<String>) -> Response {
    if let Some((name, r)) = rest.rsplit_once("/manifests/") {
        manifest(&reg, name, r).await
    } else if let Some((name, d)) = rest.rsplit_once("/blobs/") {
        blob(&reg, name, d).await
    } else {
        error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no such endpoint")
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
    (status, axum::Json(body)).into_response()
}

fn cause_response(c: &Cause) -> Response {
    match c {
        Cause::NotFound => error(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            "not found upstream",
        ),
        // Not 401: the node would try to log in to envd.
        Cause::Unauthorized => error(
            StatusCode::FORBIDDEN,
            "DENIED",
            "upstream refused envd's credentials",
        ),
        other => error(StatusCode::BAD_GATEWAY, "UNAVAILABLE", &other.to_string()),
    }
}

/// A manifest's media type, from its own `mediaType` or its shape (OCI makes it optional).
fn media_type(bytes: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    match v.get("mediaType").and_then(|m| m.as_str()) {
        Some(m) => m.to_string(),
        None if v.get("manifests").is_some() => "application/vnd.oci.image.index.v1+json".into(),
        None => "application/vnd.oci.image.manifest.v1+json".into(),
    }
}

fn manifest_response(digest: &str, bytes: Vec<u8>) -> Response {
    let mut r = (StatusCode::OK, bytes.clone()).into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&media_type(&bytes)) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(digest) {
        h.insert("docker-content-digest", v);
    }
    r
}

async fn manifest(reg: &Registry, name: &str, r: &str) -> Response {
    if let Some(key) = name.strip_prefix("up/") {
        let Some(digest) = reg.published(key) else {
            return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no such upload");
        };
        if r != "latest" && r != digest {
            return error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "no such manifest",
            );
        }
        return match reg.blobs.read(&digest) {
            Ok(b) => manifest_response(&digest, b),
            Err(e) => error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", &e.to_string()),
        };
    }
    let (up, component, path) = match upstream_of(reg, name) {
        Ok(found) => found,
        Err(why) => return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", why),
    };
    if hex_of(r).is_some() && reg.blobs.has(r) {
        return match reg.blobs.read(r) {
            Ok(b) => manifest_response(r, b),
            Err(e) => error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", &e.to_string()),
        };
    }
    let tag_file = reg.tag_file(component, path, r);
    let cached = std::fs::read_to_string(&tag_file).ok();
    // A tag moves (a CI pushes each build under the branch's tag): ask the registry what
    // it points at now with a HEAD (no pull), and pull only a manifest not held yet.
    let head = up.get(&format!("{path}/manifests/{r}"), true).await;
    let current = match &head {
        Ok(resp) => resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        Err(Cause::Unreachable(_)) => cached.clone(),
        Err(c) => {
            reg.fail(&up.host, path, r, c.clone());
            return cause_response(c);
        }
    };
    if let Some(d) = current.filter(|d| reg.blobs.has(d))
        && let Ok(b) = reg.blobs.read(&d)
    {
        return manifest_response(&d, b);
    }
    let got = match up.get(&format!("{path}/manifests/{r}"), false).await {
        Ok(resp) => resp
            .bytes()
            .await
            .map_err(|e| Cause::Unreachable(e.to_string())),
        Err(c) => Err(c),
    };
    let bytes = match got {
        Ok(b) => b.to_vec(),
        Err(c) => {
            reg.fail(&up.host, path, r, c.clone());
            return cause_response(&c);
        }
    };
    let digest = match reg.blobs.put(&bytes) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", &e.to_string()),
    };
    if hex_of(r).is_some() && r != digest {
        return error(
            StatusCode::BAD_GATEWAY,
            "UNAVAILABLE",
            "the registry's manifest does not match its digest",
        );
    }
    if hex_of(r).is_none() {
        if let Some(d) = tag_file.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let _ = std::fs::write(&tag_file, &digest);
    }
    manifest_response(&digest, bytes)
}

/// Whether an upload's manifest lists `digest` (its config or a layer): a node may pull
/// only what the upload it names holds.
/// The configured registry a cached repository (`<component>/<path>`) comes from, with
/// the two parts of the name; else why not (a `NAME_UNKNOWN`).
fn upstream_of<'a, 'n>(
    reg: &'a Registry,
    name: &'n str,
) -> Result<(&'a super::upstream::Upstream, &'n str, &'n str), &'static str> {
    let Some((component, path)) = name.split_once('/') else {
        return Err("no such repository");
    };
    match reg.upstreams.get(component) {
        Some(up) => Ok((up, component, path)),
        None => Err("registry not configured in envd"),
    }
}

fn upload_holds(reg: &Registry, key: &str, digest: &str) -> bool {
    let Some(m) = reg.published(key).and_then(|d| reg.blobs.read(&d).ok()) else {
        return false;
    };
    let v: serde_json::Value = serde_json::from_slice(&m).unwrap_or_default();
    let config = v.pointer("/config/digest").and_then(|d| d.as_str()) == Some(digest);
    config
        || v.get("layers").and_then(|l| l.as_array()).is_some_and(|l| {
            l.iter()
                .any(|x| x.get("digest").and_then(|d| d.as_str()) == Some(digest))
        })
}

async fn blob(reg: &Registry, name: &str, digest: &str) -> Response {
    if hex_of(digest).is_none() {
        return error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "not a sha256 digest");
    }
    if let Some(key) = name.strip_prefix("up/") {
        if !upload_holds(reg, key, digest) {
            return error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "no such blob");
        }
    } else if !reg.blobs.has(digest) {
        let (up, _, path) = match upstream_of(reg, name) {
            Ok(found) => found,
            Err(why) => return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", why),
        };
        // Two nodes asking at once: the second waits here and finds the blob on disk.
        let _flight = reg.flights.enter(digest).await;
        if !reg.blobs.has(digest)
            && let Err(c) = fetch_blob(reg, up, path, digest).await
        {
            reg.fail(&up.host, path, digest, c.clone());
            return cause_response(&c);
        }
    }
    serve_blob(reg, digest).await
}

/// Streams a blob from the registry into the store, checking its digest.
async fn fetch_blob(
    reg: &Registry,
    up: &super::Upstream,
    path: &str,
    digest: &str,
) -> Result<(), Cause> {
    let resp = up.get(&format!("{path}/blobs/{digest}"), false).await?;
    let io = |e: std::io::Error| Cause::Other(format!("storing the blob: {e}"));
    let tmp = reg.blobs.temp().map_err(|e| Cause::Other(e.to_string()))?;
    let mut f = tokio::fs::File::from_std(tmp.as_file().try_clone().map_err(io)?);
    let mut hasher = Sha256::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Cause::Unreachable(e.to_string()))?;
        hasher.update(&chunk);
        f.write_all(&chunk).await.map_err(io)?;
    }
    f.flush().await.map_err(io)?;
    let got = format!("sha256:{}", hex::encode(hasher.finalize()));
    if got != digest {
        return Err(Cause::Other(format!("sent a blob that is not {digest}")));
    }
    reg.blobs
        .commit(tmp, digest)
        .map_err(|e| Cause::Other(e.to_string()))?;
    Ok(())
}

async fn serve_blob(reg: &Registry, digest: &str) -> Response {
    let Some(path) = reg.blobs.path(digest) else {
        return error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "no such blob");
    };
    let Ok(f) = tokio::fs::File::open(&path).await else {
        return error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "no such blob");
    };
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20));
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(digest) {
        h.insert("docker-content-digest", v);
    }
    r
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::Request;
    use sha2::{Digest, Sha256};
    use tower::ServiceExt;

    use super::*;
    use crate::engine::registry::{RegistryConfig, UpstreamConfig};

    /// A registry on loopback that counts blob fetches and answers each only once the
    /// test lets it.
    async fn slow_upstream(
        blob: &'static [u8],
    ) -> (String, Arc<AtomicUsize>, Arc<tokio::sync::Semaphore>) {
        let count = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (c, g) = (Arc::clone(&count), Arc::clone(&gate));
        let app = Router::new().route(
            "/v2/{*rest}",
            get(move || {
                let (c, g) = (Arc::clone(&c), Arc::clone(&g));
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    let _ = g.acquire().await;
                    blob
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = l.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(l, app).await });
        (host, count, gate)
    }

    #[tokio::test]
    async fn two_nodes_asking_for_one_uncached_blob_fetch_it_once() {
        const BLOB: &[u8] = b"a layer both nodes need";
        let (host, count, gate) = slow_upstream(BLOB).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = RegistryConfig {
            registries: BTreeMap::from([(
                host.clone(),
                UpstreamConfig {
                    url: Some(format!("http://{host}")),
                    ..Default::default()
                },
            )]),
            ..Default::default()
        };
        let reg = Arc::new(Registry::new(cfg, dir.path()).unwrap());
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(BLOB)));
        let uri = format!(
            "/v2/{}/lab/web/blobs/{digest}",
            crate::engine::registry::reference::host_component(&host)
        );
        let ask = || {
            let (app, uri) = (router(Arc::clone(&reg)), uri.clone());
            tokio::spawn(async move {
                let r = app
                    .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                let status = r.status();
                let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
                (status, body)
            })
        };
        let (a, b) = (ask(), ask());
        // Both asks are in: one fetching (held by the upstream), one waiting for it.
        while reg.flights.waiting(&digest) < 2 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(10);
        for got in [a.await.unwrap(), b.await.unwrap()] {
            assert_eq!(got.0, StatusCode::OK);
            assert_eq!(&got.1[..], BLOB);
        }
        assert_eq!(count.load(Ordering::SeqCst), 1, "fetched upstream once");
        assert!(reg.blobs.has(&digest));
    }
}
