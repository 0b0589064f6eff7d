//! The node: a dind container on the host engine, its data-root volume seeded with every
//! envd image, its inner dockerd reached over a socket in a host directory, and its fixed
//! IP attached as `eth1` by netcfg.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
};

use super::Engine;
use crate::error::{DockerContext, Error, IoContext, Result};
use crate::store::Env;

pub const LABEL_ENV: &str = "envd.env";
pub const LABEL_ROLE: &str = "envd.role";
/// The inner data root's directory where every pod writes its log files (one dir per pod).
pub const LOG_DIR: &str = "envd-logs";

/// How a node gets the powers dind needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeMode {
    /// `--privileged` where the host allows it, else the explicit set.
    Auto,
    Privileged,
    /// cap_add ALL minus SYS_RESOURCE, unconfined seccomp/apparmor/systempaths, all devices.
    Explicit,
}

impl NodeMode {
    pub fn resolve(self) -> NodeMode {
        match self {
            NodeMode::Auto if host_has_sys_resource() => NodeMode::Privileged,
            NodeMode::Auto => NodeMode::Explicit,
            m => m,
        }
    }
}

/// `--privileged` needs every capability in the bounding set; our hosts lack CAP_SYS_RESOURCE.
pub fn host_has_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|bits| bits & (1 << CAP_SYS_RESOURCE) != 0)
}

/// The host engine, at whatever API version it speaks (ours is 20.10, API 1.41).
pub async fn host_docker() -> Result<Docker> {
    host_docker_at(None).await
}

/// The host engine at `addr` (`unix:///path` or a socket path), else at DOCKER_HOST or
/// /var/run/docker.sock. envd shares paths with it (volumes, /run/envd), so it is local.
pub async fn host_docker_at(addr: Option<&str>) -> Result<Docker> {
    let d = match addr {
        Some(a) => Docker::connect_with_unix(
            a.trim_start_matches("unix://"),
            120,
            bollard::API_DEFAULT_VERSION,
        ),
        None => Docker::connect_with_local_defaults(),
    }
    .ctx(|| "connecting to the host Docker Engine".into())?;
    let at = addr.unwrap_or("/var/run/docker.sock");
    d.negotiate_version()
        .await
        .ctx(|| format!("talking to the host Docker Engine at {at}; is it running?"))
}

/// What the engine knows of a running node.
pub struct Node {
    pub container: String,
    pub pid: u32,
    pub sock_dir: PathBuf,
    /// The node's data root as seen from the host (the volume's mountpoint).
    pub data_root: PathBuf,
}

impl Node {
    pub fn log_dir(&self) -> PathBuf {
        self.data_root.join(LOG_DIR)
    }
}

pub fn node_name(env: &Env) -> String {
    // A taken pooled env is renamed; its node keeps the name it was made with.
    let name = env.host_name.as_deref().unwrap_or(&env.name);
    format!("envd-{name}-{}", env.short_id())
}

fn volume_name(env: &Env) -> String {
    format!("envd-{}-docker", env.short_id())
}

fn labels(env: &Env, role: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_ENV.to_string(), env.id.clone()),
        (LABEL_ROLE.to_string(), role.to_string()),
    ])
}

impl Engine {
    /// Creates what is missing of the node and starts it; a no-op on a running node.
    pub(super) async fn ensure_node(&self, host: &Docker, env: &Env) -> Result<Node> {
        let name = node_name(env);
        let sock_dir = self.cfg.run_dir.join(&env.id);
        std::fs::create_dir_all(&sock_dir).io_ctx(|| format!("creating {}", sock_dir.display()))?;

        let vol = volume_name(env);
        let volume = match host.inspect_volume(&vol).await {
            Ok(v) => v,
            Err(_) => host
                .create_volume(VolumeCreateRequest {
                    name: Some(vol.clone()),
                    labels: Some(labels(env, "volume")),
                    ..Default::default()
                })
                .await
                .ctx(|| format!("creating volume {vol}"))?,
        };
        let data_root = PathBuf::from(&volume.mountpoint);
        // The seed this node starts from, pinned by its hash dir: a later rebuild of the
        // images moves `current` but not this node's seed.
        let current = self.cfg.seed_dir.join("current");
        let seed = std::fs::canonicalize(&current).map_err(|e| {
            Error::step(
                "node",
                format!(
                    "no image seed at {} ({e}); run scripts/build-images",
                    current.display()
                ),
            )
        })?;
        if !seed.join("skel/.envd-seed").is_file() {
            return Err(Error::step(
                "node",
                format!(
                    "{} is not a complete image seed; run scripts/build-images (it runs scripts/build-seed)",
                    seed.display()
                ),
            ));
        }
        let seed_hash = seed
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();

        let existing = host
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await;
        if existing.is_err() {
            let body = ContainerCreateBody {
                image: Some(self.cfg.node_image.clone()),
                hostname: Some(format!("envd-{}", env.short_id())),
                labels: Some({
                    let mut l = labels(env, "node");
                    l.insert("envd.seed".into(), seed_hash.clone());
                    l
                }),
                stop_timeout: Some(15),
                env: Some(vec![
                    format!("ENVD_CGROUP_PARENT=/envd-{}", env.short_id()),
                    // envd's registry for nodes (users' images) speaks plain HTTP on the gateway.
                    format!(
                        "ENVD_DOCKERD_ARGS=--insecure-registry {}/32",
                        self.cfg.gateway
                    ),
                ]),
                host_config: Some(node_host_config(
                    self.cfg.node_mode.resolve(),
                    &sock_dir,
                    &seed,
                    &vol,
                    labels(env, "volume"),
                )),
                ..Default::default()
            };
            let opts = CreateContainerOptionsBuilder::default().name(&name).build();
            match host.create_container(Some(opts), body).await {
                Ok(_) => {}
                // Created meanwhile by an earlier, interrupted pass: fine.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) => {}
                Err(e) => {
                    return Err(Error::Docker {
                        context: format!("creating node {name} from {}", self.cfg.node_image),
                        source: e,
                    });
                }
            }
        }
        let info = host
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .ctx(|| format!("inspecting node {name}"))?;
        let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        let info = if running {
            info
        } else {
            // A stale socket would make us talk to nobody.
            let _ = std::fs::remove_file(sock_dir.join("docker.sock"));
            let _ = std::fs::remove_file(sock_dir.join("ready"));
            host.start_container(&name, None)
                .await
                .ctx(|| format!("starting node {name}"))?;
            host.inspect_container(&name, None::<InspectContainerOptions>)
                .await
                .ctx(|| format!("inspecting node {name}"))?
        };
        let pid = info
            .state
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                Error::step(
                    "node",
                    format!("node {name} is not running (no PID); see `docker logs {name}`"),
                )
            })?;
        Ok(Node {
            container: name,
            pid: pid as u32,
            sock_dir,
            data_root,
        })
    }

    /// Attaches the env's leased IP as `eth1` in the node (idempotent, so also after restarts).
    pub(super) async fn ensure_ip(&self, env: &Env, node: &Node) -> Result<()> {
        let ip: std::net::IpAddr = env
            .node_ip
            .as_deref()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::step("network", "the env has no leased IP"))?;
        let gw = ipnetwork::IpNetwork::new(self.cfg.gateway, self.cfg.cidr.prefix())
            .map_err(|e| Error::step("network", e.to_string()))?;
        netcfg::ensure_bridge(&self.cfg.bridge, gw).await?;
        let address = ipnetwork::IpNetwork::new(ip, self.cfg.cidr.prefix())
            .map_err(|e| Error::step("network", e.to_string()))?;
        let spec = netcfg::AttachSpec::new(&env.id, &self.cfg.bridge, address);
        netcfg::attach(netcfg::Target::Pid(node.pid), &spec).await?;
        Ok(())
    }
}

fn node_host_config(
    mode: NodeMode,
    sock_dir: &Path,
    seed: &Path,
    volume: &str,
    volume_labels: HashMap<String, String>,
) -> HostConfig {
    let mut hc = HostConfig {
        binds: Some(vec![
            format!("{}:/envd", sock_dir.display()),
            // Read-only image layers shared by every node; the entrypoint links its data
            // root's layers here (images/node/README.md).
            format!("{}:/envd-seed:ro", seed.display()),
            "/sys/fs/cgroup:/sys/fs/cgroup:rw".to_string(),
        ]),
        mounts: Some(vec![Mount {
            target: Some("/var/lib/docker".into()),
            source: Some(volume.to_string()),
            typ: Some(MountType::VOLUME),
            // Docker makes a missing named volume itself: if a free removed ours between
            // its create and this container's (a create cut short by a delete), the one
            // Docker makes still carries the env's label, so the sweep finds it.
            volume_options: Some(MountVolumeOptions {
                labels: Some(volume_labels),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        tmpfs: Some(HashMap::from([("/run".to_string(), String::new())])),
        ..Default::default()
    };
    if mode == NodeMode::Privileged {
        hc.privileged = Some(true);
    } else {
        hc.cap_add = Some(vec!["ALL".into()]);
        hc.cap_drop = Some(vec!["SYS_RESOURCE".into()]);
        hc.security_opt = Some(vec![
            "seccomp=unconfined".into(),
            "apparmor=unconfined".into(),
        ]);
        // What the CLI's `systempaths=unconfined` means at the API: nothing masked or read-only.
        hc.masked_paths = Some(vec![]);
        hc.readonly_paths = Some(vec![]);
        hc.device_cgroup_rules = Some(vec!["a *:* rwm".into()]);
    }
    hc
}

/// Waits for the inner dockerd's socket to answer, then connects to it.
pub async fn wait_inner(node: &Node) -> Result<Docker> {
    let sock = node.sock_dir.join("docker.sock");
    let t = Instant::now();
    let mut last = String::from("socket not there yet");
    while t.elapsed() < Duration::from_secs(60) {
        if node.sock_dir.join("ready").exists()
            && let Ok(d) = Docker::connect_with_unix(
                &sock.to_string_lossy(),
                120,
                bollard::API_DEFAULT_VERSION,
            )
        {
            match d.negotiate_version().await {
                Ok(d) => return Ok(d),
                Err(e) => last = e.to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(Error::step(
        "inner-engine",
        format!(
            "the node's dockerd did not answer at {} within 60 s ({last}); see `docker logs {}`",
            sock.display(),
            node.container
        ),
    ))
}

/// Every container (running or not) carrying `label` (`key` or `key=value`).
pub(super) async fn labelled_containers(
    docker: &Docker,
    label: &str,
) -> std::result::Result<Vec<bollard::models::ContainerSummary>, bollard::errors::Error> {
    let filter = HashMap::from([("label".to_string(), vec![label.to_string()])]);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filter)
        .build();
    docker.list_containers(Some(opts)).await
}

/// Every volume carrying `label` (`key` or `key=value`).
pub(super) async fn labelled_volumes(
    docker: &Docker,
    label: &str,
) -> std::result::Result<Vec<bollard::models::Volume>, bollard::errors::Error> {
    let filter = HashMap::from([("label".to_string(), vec![label.to_string()])]);
    let opts = ListVolumesOptionsBuilder::default()
        .filters(&filter)
        .build();
    Ok(docker
        .list_volumes(Some(opts))
        .await?
        .volumes
        .unwrap_or_default())
}

/// Frees everything of the env on the host: containers, volumes, the veth, its cgroups
/// and socket dir. Best effort: carries on past errors, "not found" is success.
pub(super) async fn free(engine: &Engine, host: &Docker, env: &Env) -> Result<()> {
    let mut errors: Vec<String> = vec![];
    let label = format!("{LABEL_ENV}={}", env.id);
    let containers = labelled_containers(host, &label)
        .await
        .ctx(|| "listing the env's containers".into())?;
    for c in containers {
        let Some(id) = c.id else { continue };
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        if let Err(e) = host
            .remove_container(&id, Some(opts))
            .await
            .ctx(|| format!("removing container {id}"))
            && !e.is_docker_not_found()
        {
            errors.push(e.to_string());
        }
    }
    let vols = labelled_volumes(host, &label)
        .await
        .ctx(|| "listing the env's volumes".into())?;
    for v in vols {
        let opts = RemoveVolumeOptionsBuilder::default().force(true).build();
        if let Err(e) = host
            .remove_volume(&v.name, Some(opts))
            .await
            .ctx(|| format!("removing volume {}", v.name))
            && !e.is_docker_not_found()
        {
            errors.push(e.to_string());
        }
    }
    if let Err(e) = netcfg::detach(&env.id).await {
        errors.push(e.to_string());
    }
    remove_cgroups(&format!("envd-{}", env.short_id()));
    let sock_dir = engine.cfg.run_dir.join(&env.id);
    if let Err(e) = std::fs::remove_dir_all(&sock_dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        errors.push(format!("removing {}: {e}", sock_dir.display()));
    }
    if let Err(e) = engine.store.delete_uploads(&env.id).await {
        errors.push(format!("deleting the uploaded directories: {e}"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::step("freeing", errors.join("; ")))
    }
}

/// The inner dockerd's cgroup parent dirs stay behind in the host's hierarchy when the node
/// is killed; they are empty by then and removed bottom-up.
fn remove_cgroups(parent: &str) {
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for c in controllers.flatten() {
        let dir = c.path().join(parent);
        if !dir.is_dir() {
            continue;
        }
        let mut dirs: Vec<PathBuf> = walkdir::WalkDir::new(&dir)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_dir())
            .map(|e| e.into_path())
            .collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}
