//! envd's registry for nodes: one small HTTP server (the Registry API v2, pull side only)
//! on the host bridge's gateway address, which every node reaches over its `eth1` and
//! trusts as an insecure registry. It serves
//! - `up/<key>`: the images owners uploaded (`envd images push`), stored here as
//!   uncompressed layers (no gzip on upload, none to undo per node);
//! - `<host>/<path>`: a pull-through cache of each registry configured in envd's config
//!   (`[registries."host"]`, with its credentials, which stay in envd): a blob is fetched
//!   from the registry once and served to every later node from disk.
//!
//! Debian's `docker-registry` was measured for this and not used: its proxy mode cannot
//! answer a Basic-auth registry (it only finds credentials for Bearer realms), proxies one
//! registry per process, and gzips what it stores; see docs/images.md.

mod blobs;
mod flights;
mod gc;
pub mod progress;
pub mod reference;
pub mod save;
mod serve;
pub mod upstream;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;

pub use blobs::Blobs;
pub use reference::ImageRef;
pub use upstream::{Cause, UpstreamConfig};

use crate::error::{Error, IoContext, Result};
use upstream::Upstream;

/// The registry settings of envd's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Port on the bridge gateway address where nodes pull from envd.
    pub port: u16,
    /// Registries templates may name, by host (`registry.lab`, `10.0.0.5:5000`).
    pub registries: BTreeMap<String, UpstreamConfig>,
    /// Largest `docker save` archive one push may send.
    pub max_upload: u64,
    /// Bytes of uploaded images one owner may keep.
    pub quota: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            port: 5310,
            registries: BTreeMap::new(),
            max_upload: 4 << 30,
            quota: 20 << 30,
        }
    }
}

pub struct Registry {
    pub cfg: RegistryConfig,
    root: PathBuf,
    pub blobs: Blobs,
    /// By repository component (`host_component`).
    upstreams: BTreeMap<String, Upstream>,
    /// The last failure of each `host/path:reference`, for a pull's error message.
    failures: Mutex<HashMap<String, Cause>>,
    listening: tokio::sync::OnceCell<SocketAddr>,
    /// One upstream fetch per blob at a time.
    pub flights: flights::Flights,
    /// Pushes hold it shared while their blobs are not yet recorded by an upload; the
    /// blob cleanup holds it alone, so it never deletes a blob a push is about to claim.
    pub gc: tokio::sync::RwLock<()>,
}

impl Registry {
    /// Reads each registry's CA (a bad one is a config error naming its key).
    pub fn new(cfg: RegistryConfig, data_dir: &Path) -> Result<Registry> {
        let root = data_dir.join("registry");
        let mut upstreams = BTreeMap::new();
        for (h, c) in &cfg.registries {
            if c.insecure {
                tracing::warn!(
                    "registry {h}: insecure = true, its TLS certificate is not verified (a lab registry only)"
                );
            }
            upstreams.insert(reference::host_component(h), Upstream::new(h, c.clone())?);
        }
        Ok(Registry {
            blobs: Blobs::new(&root),
            root,
            upstreams,
            cfg,
            failures: Mutex::new(HashMap::new()),
            listening: tokio::sync::OnceCell::new(),
            flights: flights::Flights::default(),
            gc: tokio::sync::RwLock::new(()),
        })
    }

    /// Whether a template may name images of this registry host.
    pub fn knows(&self, host: &str) -> bool {
        self.upstreams
            .contains_key(&reference::host_component(host))
    }

    /// Serves nodes at `<gateway>:<port>` from now on (once; the bridge must exist).
    pub async fn listen(self: &Arc<Self>, gateway: IpAddr) -> Result<SocketAddr> {
        let me = Arc::clone(self);
        self.listening
            .get_or_try_init(|| async move {
                let addr = SocketAddr::new(gateway, me.cfg.port);
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .io_ctx(|| format!("listening for nodes' image pulls on {addr}"))?;
                let app = serve::router(Arc::clone(&me));
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(l, app).await {
                        tracing::error!("envd's registry for nodes on {addr} stopped: {e}");
                    }
                });
                Ok::<_, Error>(addr)
            })
            .await
            .copied()
    }

    /// Where an uploaded image's manifest digest is kept.
    fn upload_file(&self, key: &str) -> Option<PathBuf> {
        (key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.root.join("uploads").join(key))
    }

    /// Makes an upload pullable as `up/<key>:latest`.
    pub fn publish(&self, key: &str, manifest: &str) -> Result<()> {
        let p = self
            .upload_file(key)
            .ok_or_else(|| Error::step("images", format!("`{key}` is not an upload key")))?;
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).io_ctx(|| format!("creating {}", d.display()))?;
        }
        std::fs::write(&p, manifest).io_ctx(|| format!("writing {}", p.display()))
    }

    /// No node can pull the upload any more (its blobs stay: others may share them).
    pub fn unpublish(&self, key: &str) {
        if let Some(p) = self.upload_file(key) {
            let _ = std::fs::remove_file(p);
        }
    }

    fn published(&self, key: &str) -> Option<String> {
        std::fs::read_to_string(self.upload_file(key)?).ok()
    }

    fn tag_file(&self, component: &str, path: &str, tag: &str) -> PathBuf {
        self.root.join("tags").join(component).join(path).join(tag)
    }

    fn fail(&self, host: &str, path: &str, reference: &str, cause: Cause) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(format!("{host}/{path}:{reference}"), cause);
    }

    /// Why the cache could not get `image` from its registry last time, if it tried.
    pub fn failure(&self, image: &ImageRef) -> Option<Cause> {
        let host = image.host.as_deref()?;
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&format!("{host}/{}:{}", image.path, image.reference()))
    }
}

/// The hex of a `sha256:<hex>` digest, checked (it names a file).
pub fn blobs_hex(digest: &str) -> Option<&str> {
    blobs::hex_of(digest)
}

/// A fresh, unguessable upload key (nodes' pods can reach envd's registry, so an
/// upload's name must not be derivable from its owner and reference).
pub fn new_key() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
