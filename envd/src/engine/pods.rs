//! Pods inside the node: per pod a pause container that holds the network namespace and
//! publishes the pod's ports on the node, and the pod's containers joined to it. Pods find
//! each other by name on the inner network `envd`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, EndpointSettings, HostConfig,
    NetworkCreateRequest, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, UploadToContainerOptionsBuilder,
};

use super::node::{LABEL_ENV, LABEL_ROLE, LOG_DIR, Node};
use super::{Engine, STUBS_PORT};
use crate::error::{DockerContext, Error, IoContext, Result};
use crate::spec::{CheckKind, Container, Dir, File, Plan, Pod, Ready, STUBS_POD};
use crate::store::Env;

pub const NETWORK: &str = "envd";
pub const LABEL_POD: &str = "envd.pod";
pub const LABEL_CONTAINER: &str = "envd.container";

/// The env's own sidecar, run like any pod: log archive and HTTP stubs.
pub fn stubs_pod(engine: &Engine, plan: &Plan) -> Result<Pod> {
    let config = serde_yaml::to_string(&plan.stubs)
        .map_err(|e| Error::invalid(&plan.name, "stubs", e.to_string()))?;
    Ok(Pod {
        name: STUBS_POD.into(),
        ports: vec![STUBS_PORT],
        containers: vec![Container {
            name: "stubs".into(),
            image: engine.cfg.stubs_image.clone(),
            command: vec![],
            env: BTreeMap::new(),
            files: vec![File {
                path: "/etc/stubs/stubs.yaml".into(),
                content: config,
                mode: 0o644,
            }],
            dirs: vec![],
            cpus: None,
            memory: Some("64m".into()),
        }],
        ready: Some(Ready {
            kind: CheckKind::Http,
            port: Some(STUBS_PORT),
            user: None,
            password: None,
            path: Some("/_envd/healthz".into()),
            command: vec![],
            container: None,
            deadline: None,
        }),
        ..Default::default()
    })
}

/// Every pod of the plan plus the stubs sidecar (none for a spare node's empty plan).
pub fn all_pods(engine: &Engine, plan: &Plan) -> Result<Vec<Pod>> {
    let mut pods = plan.pods.clone();
    // A spare node runs nothing: the create that takes it brings its own sidecar.
    if !pods.is_empty() {
        pods.push(stubs_pod(engine, plan)?);
    }
    Ok(pods)
}

pub(super) async fn ensure_network(inner: &Docker, env: &Env) -> Result<()> {
    if inner.inspect_network(NETWORK, None).await.is_ok() {
        return Ok(());
    }
    let req = NetworkCreateRequest {
        name: NETWORK.into(),
        driver: Some("bridge".into()),
        labels: Some(HashMap::from([(LABEL_ENV.to_string(), env.id.clone())])),
        ..Default::default()
    };
    match inner.create_network(req).await {
        Ok(_) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => Ok(()),
        Err(e) => Err(Error::Docker {
            context: "creating the inner network".into(),
            source: e,
        }),
    }
}

fn labels(env: &Env, pod: &str, container: &str, role: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_ENV.to_string(), env.id.clone()),
        (LABEL_ROLE.to_string(), role.to_string()),
        (LABEL_POD.to_string(), pod.to_string()),
        (LABEL_CONTAINER.to_string(), container.to_string()),
    ])
}

/// The pod's `dirs:` with the directory uploaded with the create (if any) as their content.
pub(super) async fn uploaded_dirs(
    engine: &Engine,
    env: &Env,
    pod: &str,
    dirs: &[Dir],
) -> Result<Vec<Dir>> {
    let mut dirs = dirs.to_vec();
    if dirs.is_empty() {
        return Ok(dirs);
    }
    if let Some(b64) = engine.store.upload_of(&env.id, pod).await? {
        let gz = crate::spec::uploads::decode(&BTreeMap::from([(pod.to_string(), b64)]));
        for d in &mut dirs {
            d.upload = gz.get(pod).cloned();
        }
    }
    Ok(dirs)
}

/// Creates what is missing of the pod and starts its pause; with `start`, also uploads
/// the files of containers it creates and starts every container (else they are left
/// created, for the engine's loop to upload and start one action at a time).
pub(super) async fn ensure_pod(
    engine: &Engine,
    env: &Env,
    node: &Node,
    inner: &Docker,
    pod: &Pod,
    once: bool,
    start: bool,
) -> Result<bool> {
    // The pod's log dir, made from the host side of the node's data root: writable by the
    // unprivileged users database images run as. The stubs container can write the log
    // tree, so nothing below the data root is followed if it is a link (hostfs).
    let root = node.data_root.clone();
    let pod_name = pod.name.clone();
    tokio::task::spawn_blocking(move || {
        crate::hostfs::ensure_dir(&root, &[LOG_DIR, &pod_name], 0o777)
    })
    .await
    .map_err(|e| Error::step("pods", format!("creating a log dir: {e}")))?
    .io_ctx(|| {
        format!(
            "creating the log dir {} (a link there is refused, never followed)",
            node.log_dir().join(&pod.name).display()
        )
    })?;

    let uploaded;
    let pod = if pod.containers.iter().any(|c| !c.dirs.is_empty()) {
        let mut p = pod.clone();
        for c in &mut p.containers {
            c.dirs = uploaded_dirs(engine, env, &pod.name, &c.dirs).await?;
        }
        uploaded = p;
        &uploaded
    } else {
        pod
    };

    let ports: HashMap<String, Option<Vec<PortBinding>>> = pod
        .ports
        .iter()
        .map(|p| {
            (
                format!("{}/tcp", pod.targets.get(p).unwrap_or(p)),
                Some(vec![PortBinding {
                    host_ip: None,
                    host_port: Some(p.to_string()),
                }]),
            )
        })
        .collect();
    let pause = ContainerCreateBody {
        image: Some(engine.cfg.pause_image.clone()),
        hostname: Some(pod.name.clone()),
        labels: Some(labels(env, &pod.name, "pause", "pause")),
        exposed_ports: Some(
            pod.ports
                .iter()
                .map(|p| format!("{}/tcp", pod.targets.get(p).unwrap_or(p)))
                .collect(),
        ),
        host_config: Some(HostConfig {
            port_bindings: Some(ports),
            network_mode: Some(NETWORK.into()),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                NETWORK.to_string(),
                EndpointSettings {
                    aliases: Some(
                        std::iter::once(&pod.name)
                            .chain(&pod.aliases)
                            .cloned()
                            .collect(),
                    ),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    };
    let restarted_pause = ensure_container(
        inner,
        &pod.name,
        pause,
        Payload {
            files: &[],
            dirs: &[],
            roots: &[],
        },
        false,
        true,
    )
    .await?;
    let mut started = restarted_pause;

    // Every pod writes only its own log dir; the sidecar reads the others' (to serve them
    // as one archive) but cannot replace them.
    let own_logs = format!(
        "/var/lib/docker/{LOG_DIR}/{p}:/var/log/envd/{p}",
        p = pod.name
    );
    let log_binds = if pod.name == STUBS_POD {
        vec![
            format!("/var/lib/docker/{LOG_DIR}:/var/log/envd:ro"),
            own_logs,
        ]
    } else {
        vec![own_logs]
    };
    for c in &pod.containers {
        let name = format!("{}-{}", pod.name, c.name);
        // A container without limits gets serve's configured defaults, if any.
        let memory = match &c.memory {
            Some(m) => Some(
                crate::spec::parse_memory(m).map_err(|r| Error::invalid(&pod.name, "memory", r))?,
            ),
            None => engine.cfg.default_memory,
        };
        let image =
            super::userimages::ensure_image(engine, env, node, inner, &pod.name, &c.image).await?;
        let body = ContainerCreateBody {
            image: Some(image),
            cmd: (!c.command.is_empty()).then(|| c.command.clone()),
            env: Some(c.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels(env, &pod.name, &c.name, "pod")),
            host_config: Some(HostConfig {
                network_mode: Some(format!("container:{}", pod.name)),
                binds: Some(log_binds.clone()),
                memory,
                nano_cpus: c
                    .cpus
                    .or(engine.cfg.default_cpus)
                    .map(|cpus| (cpus * 1e9) as i64),
                ..Default::default()
            }),
            ..Default::default()
        };
        // Containers joined to a pause that restarted hold its old, dead namespace.
        if restarted_pause {
            let _ = inner.stop_container(&name, None).await;
        }
        started |= ensure_container(
            inner,
            &name,
            body,
            Payload {
                files: &c.files,
                dirs: &c.dirs,
                roots: &engine.cfg.dirs_roots,
            },
            once,
            start,
        )
        .await?;
    }
    Ok(started)
}

/// Creates (pushing its files between create and start) and starts a container; starts it
/// again if it exists but is stopped, unless it is a `once` job that exited 0. Returns
/// whether it had to be (re)started. Without `start`, only creates what is missing.
/// What is copied into a container before its first start.
struct Payload<'a> {
    files: &'a [File],
    dirs: &'a [Dir],
    /// Where `dirs` sources may come from.
    roots: &'a [PathBuf],
}

async fn ensure_container(
    inner: &Docker,
    name: &str,
    body: ContainerCreateBody,
    payload: Payload<'_>,
    once: bool,
    start: bool,
) -> Result<bool> {
    let Payload { files, dirs, roots } = payload;
    let image = body.image.clone().unwrap_or_default();
    let state = inner
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .ok()
        .and_then(|i| i.state);
    if !start && state.is_some() {
        return Ok(false);
    }
    if let Some(s) = state {
        let exited_ok =
            s.status == Some(ContainerStateStatusEnum::EXITED) && s.exit_code == Some(0);
        if s.running.unwrap_or(false) || (once && exited_ok) {
            return Ok(false);
        }
    } else {
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        match inner.create_container(Some(opts), body).await {
            Ok(_) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                return Err(Error::step(
                    "pods",
                    format!(
                        "image `{image}` is not in the node (no registry is used): build it with scripts/build-images, or name an envd image"
                    ),
                ));
            }
            Err(e) => {
                return Err(Error::Docker {
                    context: format!("creating {name}"),
                    source: e,
                });
            }
        }
        if !start {
            return Ok(false);
        }
        upload_files(inner, name, files, dirs, roots).await?;
    }
    inner
        .start_container(name, None)
        .await
        .ctx(|| format!("starting {name}"))?;
    Ok(true)
}

/// Writes the rendered files (and copied host directories) into a container, created or
/// running.
pub(super) async fn upload_files(
    inner: &Docker,
    name: &str,
    files: &[File],
    dirs: &[Dir],
    roots: &[PathBuf],
) -> Result<()> {
    if files.is_empty() && dirs.is_empty() {
        return Ok(());
    }
    let (files, dirs, roots) = (files.to_vec(), dirs.to_vec(), roots.to_vec());
    let tar =
        tokio::task::spawn_blocking(move || super::upload::container_tar(&files, &dirs, &roots))
            .await
            .map_err(|e| Error::step("pods", format!("packing files: {e}")))??;
    let opts = UploadToContainerOptionsBuilder::default().path("/").build();
    inner
        .upload_to_container(name, Some(opts), bollard::body_full(tar.into()))
        .await
        .ctx(|| format!("uploading config files into {name}"))
}
