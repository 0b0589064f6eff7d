//! The user's images into a node: an image the node lacks (everything but the seeded
//! envd images) is pulled from envd's registry for nodes, which holds the owner's
//! uploads and caches the configured registries; then tagged back to the name the
//! template gives. Failures name the image, the registry and the cause.

use std::time::Instant;

use bollard::Docker;
use bollard::query_parameters::{CreateImageOptionsBuilder, TagImageOptionsBuilder};
use futures_util::StreamExt;

use super::Engine;
use super::node::Node;
use super::registry::progress::{LayerPhase, LayerUpdate, PullFeed, Sums};
use super::registry::{Cause, ImageRef, reference::host_component};
use crate::error::{Error, Result};
use crate::lifecycle::{EventKind, EventStep};
use crate::store::Env;

/// Where a node gets an image from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The owner uploaded it (`envd images push`): `up/<key>:latest`.
    Upload { key: String },
    /// A registry configured in envd, through its cache.
    Registry { host: String },
}

impl Source {
    /// The repository and tag (or digest) a node pulls from envd's registry.
    pub fn pull_name(&self, image: &ImageRef) -> (String, String) {
        match self {
            Source::Upload { key } => (format!("up/{key}"), "latest".into()),
            Source::Registry { host } => (
                format!("{}/{}", host_component(host), image.path),
                image.reference().to_string(),
            ),
        }
    }

    pub fn registry(&self) -> String {
        match self {
            Source::Upload { .. } => "envd (uploads)".into(),
            Source::Registry { host } => host.clone(),
        }
    }
}

/// Where `image` comes from for `owner`: an upload first (a CI's build under a registry's
/// name is found without that registry), then a configured registry.
pub async fn source_of(engine: &Engine, owner: &str, image: &str) -> Result<Source> {
    let r = ImageRef::parse(image).ok_or_else(|| {
        Error::step(
            "pods",
            format!("image `{image}` is not a valid image reference"),
        )
    })?;
    if let Some(up) = engine.store.image_by_ref(owner, &r.canonical()).await? {
        return Ok(Source::Upload { key: up.id });
    }
    match &r.host {
        Some(h) if engine.registry.knows(h) => Ok(Source::Registry { host: h.clone() }),
        Some(h) => Err(Error::step(
            "pods",
            format!(
                "image `{image}`: registry `{h}` is not configured in envd (add [registry.registries.\"{h}\"] to its config), and `{owner}` uploaded no such image (envd images push {image})"
            ),
        )),
        None => Err(Error::step(
            "pods",
            format!(
                "image `{image}` is not in the node: not an envd image, and `{owner}` uploaded no such image (envd images push {image}); or name it with its registry"
            ),
        )),
    }
}

/// Makes `image` present in the node's engine (a no-op when it is); returns the name to
/// create containers with (the template's, but a digest-pinned image's pulled name).
pub(super) async fn ensure_image(
    engine: &Engine,
    env: &Env,
    node: &Node,
    inner: &Docker,
    pod: &str,
    image: &str,
) -> Result<String> {
    if inner.inspect_image(image).await.is_ok() {
        return Ok(image.to_string());
    }
    let t = Instant::now();
    let source = source_of(engine, &env.owner, image).await?;
    let r = ImageRef::parse(image)
        .ok_or_else(|| Error::step("pods", format!("`{image}` is not an image reference")))?;
    let addr = engine
        .registry
        .listen(engine.cfg.gateway)
        .await
        .map_err(|e| Error::step("pods", format!("image `{image}`: {e}")))?;
    let (repo, reference) = source.pull_name(&r);
    engine
        .store
        .event(
            &env.id,
            EventStep::pod(EventKind::Pods, pod),
            &format!("pulling image {image} from {}", source.registry()),
            None,
        )
        .await?;
    // Best effort: without the hints the node downloads layers it already has too.
    let layers = layer_hints(addr, &repo, &reference).await;
    let root = node.data_root.clone();
    let _ = tokio::task::spawn_blocking(move || hint_layers(&root, &layers)).await;
    let from = format!("{addr}/{repo}");
    let opts = if reference.starts_with("sha256:") {
        CreateImageOptionsBuilder::default()
            .from_image(&format!("{from}@{reference}"))
            .build()
    } else {
        CreateImageOptionsBuilder::default()
            .from_image(&from)
            .tag(&reference)
            .build()
    };
    let mut pull = inner.create_image(Some(opts), None, None);
    let mut report = PullFeed::new(engine.store.clone()).reporter(&env.id, pod, image);
    let mut failed = None;
    while let Some(item) = pull.next().await {
        match item {
            Ok(info) => {
                if let Some(u) = layer_update(&info) {
                    report.layer(&u).await;
                }
            }
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        }
    }
    let sums = report.finish().await;
    if let Some(docker_said) = failed {
        let cause = match engine.registry.failure(&r) {
            Some(c) => c.to_string(),
            None if matches!(source, Source::Upload { .. }) => {
                format!("the upload could not be pulled ({docker_said})")
            }
            None => Cause::Other(docker_said).to_string(),
        };
        return Err(Error::step(
            "pods",
            format!(
                "image `{image}` from registry `{}`: {cause}",
                source.registry()
            ),
        ));
    }
    // The node names it as the template does; a digest-pinned one is found by its digest.
    let pulled = if reference.starts_with("sha256:") {
        format!("{from}@{reference}")
    } else {
        format!("{from}:{reference}")
    };
    let (repo_name, tag) = match image.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
        Some((n, t)) => (n.to_string(), t.to_string()),
        None => (image.to_string(), "latest".to_string()),
    };
    if r.digest.is_none() {
        let opts = TagImageOptionsBuilder::default()
            .repo(&repo_name)
            .tag(&tag)
            .build();
        inner.tag_image(&pulled, Some(opts)).await.map_err(|e| {
            Error::step(
                "pods",
                format!("image `{image}`: tagging it in the node: {e}"),
            )
        })?;
    }
    let msg = format!(
        "image {image} pulled from {} in {:.1} s ({})",
        source.registry(),
        t.elapsed().as_secs_f64(),
        fetched(&sums)
    );
    engine
        .store
        .event(
            &env.id,
            EventStep::pod(EventKind::Pods, pod),
            &msg,
            Some(t.elapsed()),
        )
        .await?;
    Ok(if r.digest.is_some() {
        pulled
    } else {
        image.to_string()
    })
}

/// What a pull brought: `2 new layers, 391.2 MB` (the size when the engine said it).
fn fetched(s: &Sums) -> String {
    let layers = match s.fetched {
        1 => "1 new layer".to_string(),
        n => format!("{n} new layers"),
    };
    match s.total {
        0 => layers,
        b @ 1..1_000_000 => format!("{layers}, {} kB", b.div_ceil(1000)),
        b => format!("{layers}, {:.1} MB", b as f64 / 1e6),
    }
}

/// A layer's line of the node engine's pull stream, if it is one.
fn layer_update(info: &bollard::models::CreateImageInfo) -> Option<LayerUpdate> {
    let phase = LayerPhase::from_docker(info.status.as_deref()?)?;
    let detail = info.progress_detail.as_ref();
    let num = |v: Option<i64>| v.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
    Some(LayerUpdate {
        layer: info.id.clone()?,
        phase,
        current: num(detail.and_then(|d| d.current)),
        total: num(detail.and_then(|d| d.total)),
    })
}

/// Each layer's (blob digest, diff id), from the image's manifest and config as envd's
/// registry serves them (which fetches them into its cache first when it must).
async fn layer_hints(
    addr: std::net::SocketAddr,
    repo: &str,
    reference: &str,
) -> Vec<(String, String)> {
    use serde_json::Value;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let req = http.get(format!("http://{addr}/v2/{repo}/{path}")).header(
            reqwest::header::ACCEPT,
            super::registry::upstream::MANIFEST_TYPES,
        );
        async move {
            req.send()
                .await
                .ok()?
                .error_for_status()
                .ok()?
                .json::<Value>()
                .await
                .ok()
        }
    };
    let Some(mut m) = get(format!("manifests/{reference}")).await else {
        return vec![];
    };
    // A multi-platform image: the node pulls this host's platform.
    if let Some(list) = m["manifests"].as_array() {
        let pick = list
            .iter()
            .find(|e| e["platform"]["os"] == "linux" && e["platform"]["architecture"] == "amd64");
        let Some(d) = pick.and_then(|e| e["digest"].as_str()) else {
            return vec![];
        };
        let Some(one) = get(format!("manifests/{d}")).await else {
            return vec![];
        };
        m = one;
    }
    let Some(cfg) = m["config"]["digest"].as_str() else {
        return vec![];
    };
    let Some(cfg) = get(format!("blobs/{cfg}")).await else {
        return vec![];
    };
    let blobs = m["layers"].as_array().cloned().unwrap_or_default();
    let diffs = cfg["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    blobs
        .iter()
        .zip(&diffs)
        .filter_map(|(b, d)| Some((b["digest"].as_str()?.to_string(), d.as_str()?.to_string())))
        .collect()
}

/// Tells the node's engine which layers of the image it holds already (the seeded envd
/// images most are built on): dockerd skips downloading a layer whose blob digest it can
/// map to a diff id present in its layer store. Written into the node's own (unseeded)
/// image store, where dockerd records the same for every layer it pulls.
fn hint_layers(data_root: &std::path::Path, layers: &[(String, String)]) -> std::io::Result<()> {
    let dir = [
        "image",
        "overlay2",
        "distribution",
        "diffid-by-digest",
        "sha256",
    ];
    // Created through fds: a link planted below the data root is refused, not followed.
    crate::hostfs::ensure_dir(data_root, &dir, 0o700)?;
    let path = dir.iter().fold(data_root.to_path_buf(), |p, d| p.join(d));
    for (blob, diff_id) in layers {
        if let Some(hex) = super::registry::blobs_hex(blob) {
            std::fs::write(path.join(hex), diff_id)?;
        }
    }
    Ok(())
}
