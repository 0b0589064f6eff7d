//! The envd/node contract on the real Docker engine (images/node/README.md):
//! a node started with the explicit capability set, a fresh volume as its data root and
//! the seed mounted read-only at /envd-seed answers on `<hostdir>/docker.sock`, holds every
//! seeded envd image without any pull, runs a redis with a published port that answers
//! PING at the node's IP from the host, stops cleanly on SIGTERM (exit 0, its inner
//! cgroups gone), and leaves nothing behind.
//!
//! Needs: Docker, `scripts/build-images` run (envd/node + the envd images); it runs
//! `scripts/build-seed` itself (a no-op when the seed is current).
//! Unreachable Docker: skipped, or a failure when CI=true.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, PortBinding, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListImagesOptions, RemoveContainerOptionsBuilder,
    RemoveVolumeOptions, StopContainerOptionsBuilder,
};

/// The node image: `ENVD_NODE_IMAGE` (as for scripts/build-seed) or envd/node:latest.
fn node_image() -> String {
    std::env::var("ENVD_NODE_IMAGE").unwrap_or_else(|_| "envd/node:latest".to_string())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn seed_dir() -> PathBuf {
    std::env::var_os("ENVD_SEED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/envd/seed"))
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes the node container, its volume, its host directory and its inner cgroup
/// parents, also when the test panics half-way.
struct NodeGuard {
    name: String,
    dir: PathBuf,
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.name])
            .output();
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.name])
            .output();
        remove_cgroups(&self.name);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The inner dockerd's cgroup parent `/envd-<name>` in every v1 hierarchy (empty dirs).
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else {
        return vec![];
    };
    rd.flatten()
        .map(|e| e.path().join(format!("envd-{name}")))
        .filter(|p| p.is_dir())
        .collect()
}

fn remove_cgroups(name: &str) {
    for d in cgroup_dirs(name) {
        let _ = Command::new("find")
            .arg(&d)
            .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", "+"])
            .output();
    }
}

/// The node container, field by field as in images/node/README.md.
/// `volume`: the node's data root (a fresh volume); `run_dir`: the host dir of the socket;
/// `seed`: `$ENVD_SEED_DIR/<hash>`, mounted read-only at /envd-seed.
fn node_config(name: &str, volume: &str, run_dir: &Path, seed: &Path) -> ContainerCreateBody {
    let mount = |typ: MountType, source: &str, target: &str, read_only: bool| Mount {
        typ: Some(typ),
        source: Some(source.to_string()),
        target: Some(target.to_string()),
        read_only: Some(read_only),
        ..Default::default()
    };
    let hash = seed.file_name().unwrap().to_string_lossy().into_owned();
    ContainerCreateBody {
        image: Some(node_image()),
        hostname: Some(name.to_string()),
        env: Some(vec![format!("ENVD_CGROUP_PARENT=/envd-{name}")]),
        labels: Some(HashMap::from([
            ("envd.test".to_string(), "node".to_string()),
            ("envd.role".to_string(), "node".to_string()),
            ("envd.seed".to_string(), hash),
        ])),
        stop_timeout: Some(15),
        host_config: Some(HostConfig {
            cap_add: Some(vec!["ALL".into()]),
            cap_drop: Some(vec!["SYS_RESOURCE".into()]),
            security_opt: Some(vec![
                "seccomp=unconfined".into(),
                "apparmor=unconfined".into(),
            ]),
            // `--security-opt systempaths=unconfined` is CLI-only: the API takes empty lists.
            masked_paths: Some(vec![]),
            readonly_paths: Some(vec![]),
            device_cgroup_rules: Some(vec!["a *:* rwm".into()]),
            tmpfs: Some(HashMap::from([(
                "/run".to_string(),
                "rw,nosuid,nodev,exec,mode=755".to_string(),
            )])),
            mounts: Some(vec![
                mount(MountType::BIND, "/sys/fs/cgroup", "/sys/fs/cgroup", false),
                mount(MountType::VOLUME, volume, "/var/lib/docker", false),
                mount(
                    MountType::BIND,
                    &run_dir.display().to_string(),
                    "/envd",
                    false,
                ),
                mount(
                    MountType::BIND,
                    &seed.display().to_string(),
                    "/envd-seed",
                    true,
                ),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn wait_inner(sock: &Path, deadline: Duration) -> Result<Docker, String> {
    let start = Instant::now();
    loop {
        if sock.exists() {
            let d = Docker::connect_with_unix(
                &sock.display().to_string(),
                120,
                bollard::API_DEFAULT_VERSION,
            )
            .map_err(|e| e.to_string())?;
            if d.ping().await.is_ok() {
                return d.negotiate_version().await.map_err(|e| e.to_string());
            }
        }
        if start.elapsed() > deadline {
            return Err(format!(
                "inner dockerd did not answer on {} within {deadline:?}",
                sock.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn redis_ping(addr: &str, deadline: Duration) -> Result<String, String> {
    let start = Instant::now();
    let client = redis::Client::open(format!("redis://{addr}/")).map_err(|e| e.to_string())?;
    loop {
        let attempt = async {
            let mut c = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut c).await
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(pong)) => return Ok(pong),
            Ok(Err(e)) if start.elapsed() > deadline => return Err(e.to_string()),
            Err(_) if start.elapsed() > deadline => return Err("timed out".into()),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn node_with_seed_runs_redis_reachable_at_node_ip() -> Result<(), Box<dyn std::error::Error>>
{
    // --- host engine ---------------------------------------------------------------
    let host = match Docker::connect_with_local_defaults() {
        Ok(d) => match d.negotiate_version().await {
            Ok(d) if d.ping().await.is_ok() => d,
            _ => unavailable!("Docker is unreachable at the local socket"),
        },
        Err(e) => unavailable!("Docker is unreachable: {e}"),
    };
    if host.inspect_image(&node_image()).await.is_err() {
        unavailable!("no image {}: run scripts/build-images", node_image());
    }

    // --- the seed (built/cached by scripts/build-seed) ----------------------------
    let out = Command::new(workspace_root().join("scripts/build-seed")).output()?;
    if !out.status.success() {
        unavailable!(
            "scripts/build-seed failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let seed = std::fs::canonicalize(seed_dir().join("current"))?;
    let wanted: Vec<String> = std::fs::read_to_string(seed.join("images.txt"))?
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(
        wanted.iter().any(|t| t == "envd/redis:latest"),
        "the seed {} has no envd/redis:latest: {wanted:?}",
        seed.display()
    );

    // --- the node: a fresh volume, a host dir for the socket, the seed read-only ---------
    let short = uuid::Uuid::now_v7().simple().to_string();
    let name = format!("envd-test-node-{}", &short[short.len() - 8..]);
    let dir = std::env::temp_dir().join(&name);
    let guard = NodeGuard {
        name: name.clone(),
        dir: dir.clone(),
    };
    let run_dir = dir.join("run");
    std::fs::create_dir_all(&run_dir)?;
    host.create_volume(VolumeCreateRequest {
        name: Some(name.clone()),
        labels: Some(HashMap::from([
            ("envd.test".to_string(), "node".to_string()),
            ("envd.role".to_string(), "volume".to_string()),
        ])),
        ..Default::default()
    })
    .await?;

    let t1 = Instant::now();
    host.create_container(
        Some(CreateContainerOptionsBuilder::default().name(&name).build()),
        node_config(&name, &name, &run_dir, &seed),
    )
    .await?;
    host.start_container(&name, None).await?;
    let inner = match wait_inner(&run_dir.join("docker.sock"), Duration::from_secs(60)).await {
        Ok(d) => d,
        Err(e) => {
            let logs = run(Command::new("docker").args(["logs", "--tail", "30", &name]))
                .unwrap_or_default();
            panic!("{e}\nnode logs:\n{logs}");
        }
    };
    let t_up = t1.elapsed();

    // --- the images are there, no pull --------------------------------------------------
    let images = inner.list_images(None::<ListImagesOptions>).await?;
    let have: Vec<&String> = images.iter().flat_map(|i| i.repo_tags.iter()).collect();
    for t in &wanted {
        assert!(
            have.contains(&t),
            "{t} not in the node's inner engine (has {have:?})"
        );
    }
    assert!(
        !have.iter().any(|t| t.starts_with("envd/node")),
        "the node image must not be in the seed"
    );

    // --- a redis inside with a published port, PING from the host at the node's IP ---
    let t2 = Instant::now();
    inner
        .create_container(
            Some(
                CreateContainerOptionsBuilder::default()
                    .name("redis")
                    .build(),
            ),
            ContainerCreateBody {
                image: Some("envd/redis:latest".into()),
                exposed_ports: Some(vec!["6379/tcp".into()]),
                host_config: Some(HostConfig {
                    port_bindings: Some(HashMap::from([(
                        "6379/tcp".to_string(),
                        Some(vec![PortBinding {
                            host_ip: None,
                            host_port: Some("6379".into()),
                        }]),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await?;
    inner.start_container("redis", None).await?;
    let node = host.inspect_container(&name, None).await?;
    let ip = node
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|nets| nets.values().find_map(|e| e.ip_address.clone()))
        .filter(|ip| !ip.is_empty())
        .expect("the node has an IP on the host's default bridge");
    let pong = redis_ping(&format!("{ip}:6379"), Duration::from_secs(20)).await?;
    assert_eq!(pong, "PONG");
    let t_redis = t2.elapsed();

    // The inner container's cgroups live under the node's cgroup parent.
    assert!(
        !cgroup_dirs(&name).is_empty() || !Path::new("/sys/fs/cgroup/memory").exists(),
        "no /sys/fs/cgroup/*/envd-{name}: --cgroup-parent not applied"
    );

    // --- SIGTERM: inner containers stopped, dockerd stopped, exit 0 ----------------------
    let t3 = Instant::now();
    host.stop_container(
        &name,
        Some(StopContainerOptionsBuilder::default().t(15).build()),
    )
    .await?;
    let t_stop = t3.elapsed();
    let state = host
        .inspect_container(&name, None)
        .await?
        .state
        .unwrap_or_default();
    assert_eq!(
        state.exit_code,
        Some(0),
        "the node must exit 0 on SIGTERM: {state:?}"
    );
    assert!(
        cgroup_dirs(&name).is_empty(),
        "the node left its inner cgroups behind: {:?}",
        cgroup_dirs(&name)
    );
    assert!(
        !run_dir.join("ready").exists() && !run_dir.join("docker.sock").exists(),
        "ready/docker.sock left in the host dir after a clean stop"
    );

    eprintln!(
        "node: start -> inner socket with {} images {t_up:?}, redis run -> PONG at {ip} {t_redis:?}, stop {t_stop:?}",
        wanted.len()
    );

    host.remove_container(
        &name,
        Some(
            RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build(),
        ),
    )
    .await?;
    host.remove_volume(&name, None::<RemoveVolumeOptions>)
        .await?;
    drop(guard);
    assert!(!dir.exists(), "{} left behind", dir.display());
    // The seed is read-only to the node: nothing of it changed.
    assert_eq!(
        std::fs::read_to_string(seed.join("skel/.envd-seed"))?.trim(),
        seed.file_name().unwrap().to_string_lossy()
    );
    Ok(())
}
