//! The local dind driver: nodes are containers on this host's Docker Engine, their inner
//! engines reached over sockets in host directories, their IPs attached by netcfg, pods
//! probed from this host. It delegates to the engine's host modules (node, pods, ready,
//! archive, clone), which act through the engine's config and host connection.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{ContainerStateStatusEnum, ContainerSummaryStateEnum};
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, InspectContainerOptions, UploadToContainerOptionsBuilder,
};
use futures_util::TryStreamExt;

mod change;
mod events;
mod exec;
mod sweep;

use super::{
    ContainerObs, ContainerSeen, Exec, HostEvents, HostObject, LogLines, NodeDriver, NodeObs,
    ObjectKind, Observed, PAUSE, files_stamp,
};
use crate::engine::node::{self, LABEL_ENV, labelled_containers, labelled_volumes};
use crate::engine::pods::{LABEL_CONTAINER, LABEL_POD};
use crate::engine::{Engine, archive, clone, pods, ready};
use crate::error::{DockerContext, Error, Result};
use crate::spec::{Container, File, Plan, Pod};
use crate::store::Env;

/// Where a container's files stamp lives: written after its files, so its presence says
/// the upload completed.
const STAMP: &str = "/.envd-files";

pub struct LocalDind {
    engine: Weak<Engine>,
    /// The host engine, where nodes are containers.
    host: Docker,
    /// A client per env for its node's engine: requests dial the node's socket each
    /// time, so one client outlives a node restart; made once, not at every pass.
    inner: Mutex<HashMap<String, Docker>>,
    /// Pods are created side by side and each makes sure the inner network exists: Docker
    /// takes two creates of one name as two networks, so the check-then-create is one at
    /// a time.
    network: tokio::sync::Mutex<()>,
}

impl LocalDind {
    /// A driver acting through `engine` (made with `Arc::new_cyclic`, so it holds no cycle).
    pub fn new(engine: Weak<Engine>, host: Docker) -> Self {
        LocalDind {
            engine,
            host,
            inner: Mutex::new(HashMap::new()),
            network: tokio::sync::Mutex::new(()),
        }
    }

    fn engine(&self) -> Result<Arc<Engine>> {
        self.engine
            .upgrade()
            .ok_or_else(|| Error::Conflict("envd is shutting down".into()))
    }

    async fn inner(&self, engine: &Engine, env: &Env) -> Result<Docker> {
        if let Some(d) = self.clients().get(&env.id) {
            return Ok(d.clone());
        }
        let d = archive::inner_docker(engine, &env.id)
            .await
            .ok_or_else(|| {
                Error::step(
                    "inner-engine",
                    format!(
                        "the node's engine of `{}` does not answer; the loop brings it back",
                        env.name
                    ),
                )
            })?;
        self.clients().insert(env.id.clone(), d.clone());
        Ok(d)
    }

    /// The env's node engine for a pod operation: a conflict when the node does not run.
    async fn node_engine(&self, env: &Env) -> Result<Docker> {
        let engine = self.engine()?;
        archive::inner_docker(&engine, &env.id)
            .await
            .ok_or_else(|| {
                Error::Conflict(format!("environment `{}` has no running node", env.name))
            })
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<String, Docker>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn node_ip(env: &Env) -> Result<IpAddr> {
    env.node_ip
        .as_deref()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::step("readiness", "the env has no node IP"))
}

#[async_trait]
impl NodeDriver for LocalDind {
    async fn ping(&self) -> Result<()> {
        let ping = tokio::time::timeout(Duration::from_secs(5), self.host.ping())
            .await
            .unwrap_or(Err(bollard::errors::Error::RequestTimeoutError));
        ping.map(|_| ()).ctx(|| {
            "the host Docker Engine does not answer; start it (systemctl start docker) or check --docker-host".into()
        })
    }

    async fn observe(&self, env: &Env, _pods: &[Pod]) -> Result<Observed> {
        let engine = self.engine()?;
        let name = node::node_name(env);
        let mut seen = Observed::nothing();
        match self
            .host
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => {
                let running = info.state.and_then(|s| s.running).unwrap_or(false);
                seen.node = if running {
                    NodeObs::Running
                } else {
                    NodeObs::Stopped
                };
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(seen),
            Err(e) => {
                return Err(Error::Docker {
                    context: format!("inspecting node {name}"),
                    source: e,
                });
            }
        }
        if seen.node != NodeObs::Running {
            return Ok(seen);
        }
        seen.ip = netcfg::list()
            .await?
            .iter()
            .any(|a| a.id == env.id && a.peer_alive);
        // The entrypoint writes `ready` once its daemon answers with the images in place.
        if !engine.cfg.run_dir.join(&env.id).join("ready").exists() {
            return Ok(seen);
        }
        let Ok(inner) = self.inner(&engine, env).await else {
            return Ok(seen);
        };
        match observe_pods(&inner, env).await {
            Ok(pods) => {
                seen.inner = true;
                seen.pods = pods;
            }
            // Its engine stopped answering: dialled afresh once it is waited for again.
            Err(e) => {
                tracing::debug!(env = %env.id, "the node's engine: {e}");
                self.clients().remove(&env.id);
            }
        }
        Ok(seen)
    }

    async fn ensure_node(&self, env: &Env) -> Result<()> {
        self.engine()?
            .ensure_node(&self.host, env)
            .await
            .map(|_| ())
    }

    async fn wait_inner(&self, env: &Env) -> Result<()> {
        let engine = self.engine()?;
        let node = engine.ensure_node(&self.host, env).await?;
        let inner = node::wait_inner(&node).await?;
        // The pods' network (~0.2 s) is made with the engine, not by the first pod: a
        // spare node has it ready for any template. A pod still makes it if it is missing.
        let _one = self.network.lock().await;
        pods::ensure_network(&inner, env).await
    }

    async fn attach_ip(&self, env: &Env) -> Result<()> {
        let engine = self.engine()?;
        let node = engine.ensure_node(&self.host, env).await?;
        engine.ensure_ip(env, &node).await
    }

    async fn create_pod(&self, env: &Env, pod: &Pod, once: bool) -> Result<()> {
        let engine = self.engine()?;
        let node = engine.ensure_node(&self.host, env).await?;
        let inner = self.inner(&engine, env).await?;
        {
            let _one = self.network.lock().await;
            pods::ensure_network(&inner, env).await?;
        }
        pods::ensure_pod(&engine, env, &node, &inner, pod, once, false).await?;
        Ok(())
    }

    async fn upload_files(&self, env: &Env, pod: &Pod, c: &Container) -> Result<()> {
        let engine = self.engine()?;
        let inner = self.inner(&engine, env).await?;
        let name = format!("{}-{}", pod.name, c.name);
        let dirs = pods::uploaded_dirs(&engine, env, &pod.name, &c.dirs).await?;
        pods::upload_files(&inner, &name, &c.files, &dirs, &engine.cfg.dirs_roots).await?;
        let Some(stamp) = files_stamp(&c.files, &dirs) else {
            return Ok(());
        };
        let tar = crate::engine::upload::container_tar(
            &[File {
                path: STAMP.into(),
                content: stamp,
                mode: 0o644,
            }],
            &[],
            &[],
        )?;
        let opts = UploadToContainerOptionsBuilder::default().path("/").build();
        inner
            .upload_to_container(&name, Some(opts), bollard::body_full(tar.into()))
            .await
            .ctx(|| format!("stamping the files of {name}"))
    }

    async fn start(&self, env: &Env, pod: &Pod, container: &str) -> Result<()> {
        let engine = self.engine()?;
        let inner = self.inner(&engine, env).await?;
        if container == PAUSE {
            // Starting the pause again stops the containers that held its old namespace.
            let node = engine.ensure_node(&self.host, env).await?;
            pods::ensure_pod(&engine, env, &node, &inner, pod, false, false).await?;
            return Ok(());
        }
        let name = format!("{}-{container}", pod.name);
        match inner.start_container(&name, None).await {
            Ok(()) => Ok(()),
            // Already running (started by an interrupted pass): fine.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(Error::Docker {
                context: format!("starting {name}"),
                source: e,
            }),
        }
    }

    async fn change_pod(&self, env: &Env, old: &Pod, new: &Pod) -> Result<String> {
        let engine = self.engine()?;
        let inner = self.inner(&engine, env).await?;
        change::apply(&engine, &self.host, env, &inner, old, new).await
    }

    async fn wait_ready(&self, env: &Env, pod: &Pod) -> Result<()> {
        let Some(check) = &pod.ready else {
            return Ok(());
        };
        let engine = self.engine()?;
        let inner = self.inner(&engine, env).await?;
        ready::wait_pod(node_ip(env)?, &inner, pod, check).await
    }

    async fn copy_data(&self, env: &Env, source: &Env, plan: &Plan) -> Result<()> {
        let engine = self.engine()?;
        let inner = self.inner(&engine, env).await?;
        clone::copy_data(&engine, env, &source.id, &inner, plan).await
    }

    async fn collect(&self, env: &Env) -> String {
        let engine = match self.engine() {
            Ok(engine) => engine,
            Err(e) => return format!("nothing collected: {e}"),
        };
        // Without its IP attached the stubs cannot answer, and asking would wait for ARP
        // to give up (seconds): the log files are read from the host side instead.
        let attached = netcfg::list()
            .await
            .map(|l| l.iter().any(|a| a.id == env.id && a.peer_alive))
            .unwrap_or(true);
        if attached {
            archive::collect(&engine, &self.host, env).await
        } else {
            let unreachable = Env {
                node_ip: None,
                ..env.clone()
            };
            archive::collect(&engine, &self.host, &unreachable).await
        }
    }

    async fn free(&self, env: &Env) -> Result<()> {
        self.clients().remove(&env.id);
        let engine = self.engine()?;
        node::free(&engine, &self.host, env).await
    }

    async fn owned(&self, env: &Env) -> Result<Vec<String>> {
        let label = format!("{LABEL_ENV}={}", env.id);
        let mut out: Vec<String> = labelled_containers(&self.host, &label)
            .await
            .ctx(|| "listing the env's containers".into())?
            .iter()
            .map(|c| format!("container {}", sweep::container_name(c)))
            .collect();
        for v in labelled_volumes(&self.host, &label)
            .await
            .ctx(|| "listing the env's volumes".into())?
        {
            out.push(format!("volume {}", v.name));
        }
        for a in netcfg::list().await? {
            if a.id == env.id {
                out.push(format!("veth {}", a.host_ifname));
            }
        }
        Ok(out)
    }

    async fn host_events(&self) -> Result<HostEvents> {
        Ok(events::node_events(&self.host))
    }

    async fn container_running(&self, env: &Env, pod: &str, container: &str) -> Result<bool> {
        let inner = self.node_engine(env).await?;
        exec::running(&inner, &format!("{pod}-{container}")).await
    }

    async fn exec(
        &self,
        env: &Env,
        pod: &str,
        container: &str,
        req: &crate::engine::ExecRequest,
    ) -> Result<Exec> {
        let inner = self.node_engine(env).await?;
        exec::start(&inner, &format!("{pod}-{container}"), req).await
    }

    async fn follow_logs(&self, env: &Env, tail: u32) -> Result<LogLines> {
        let engine = self.engine()?;
        let inner = archive::inner_docker(&engine, &env.id)
            .await
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "environment `{}` has no running node to follow",
                    env.name
                ))
            })?;
        archive::live(&inner, env, tail).await
    }

    async fn host_objects(&self) -> Result<Vec<HostObject>> {
        let engine = self.engine()?;
        sweep::host_objects(&self.host, &engine.cfg.bridge).await
    }

    async fn node_objects(&self, env: &Env) -> Result<Option<Vec<HostObject>>> {
        let engine = self.engine()?;
        match archive::inner_docker(&engine, &env.id).await {
            Some(inner) => Ok(Some(sweep::node_objects(&inner, &env.id).await?)),
            None => Ok(None),
        }
    }

    async fn remove_object(&self, obj: &HostObject) -> Result<()> {
        let inner = match obj.kind {
            ObjectKind::InnerContainer => {
                archive::inner_docker(&*self.engine()?, &obj.env_id).await
            }
            _ => None,
        };
        sweep::remove(&self.host, inner.as_ref(), obj).await
    }
}

/// The env's containers in the node's engine, by pod and container.
async fn observe_pods(
    inner: &Docker,
    env: &Env,
) -> Result<BTreeMap<String, BTreeMap<String, ContainerSeen>>> {
    let list = labelled_containers(inner, &format!("{LABEL_ENV}={}", env.id))
        .await
        .ctx(|| "listing the node's containers".into())?;
    let mut pods: BTreeMap<String, BTreeMap<String, ContainerSeen>> = BTreeMap::new();
    for c in list {
        let labels = c.labels.clone().unwrap_or_default();
        let (Some(pod), Some(container), Some(id)) = (
            labels.get(LABEL_POD),
            labels.get(LABEL_CONTAINER),
            c.id.as_deref(),
        ) else {
            continue;
        };
        let seen = match c.state {
            // The list says enough of a running one: no inspect, no files to read.
            Some(ContainerSummaryStateEnum::RUNNING) => ContainerSeen {
                state: ContainerObs::Running,
                files: None,
            },
            _ => observe_container(inner, id).await?,
        };
        pods.entry(pod.clone())
            .or_default()
            .insert(container.clone(), seen);
    }
    Ok(pods)
}

async fn observe_container(inner: &Docker, id: &str) -> Result<ContainerSeen> {
    let info = inner
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .ctx(|| format!("inspecting container {id}"))?;
    let s = info.state.unwrap_or_default();
    let state = match s.status {
        Some(ContainerStateStatusEnum::RUNNING) | Some(ContainerStateStatusEnum::RESTARTING) => {
            ContainerObs::Running
        }
        Some(ContainerStateStatusEnum::CREATED) => ContainerObs::Created,
        _ => ContainerObs::Exited {
            code: s.exit_code.unwrap_or(-1),
        },
    };
    // A running container got its files before it started; only others are asked.
    let files = if state == ContainerObs::Running {
        None
    } else {
        read_stamp(inner, id).await
    };
    Ok(ContainerSeen { state, files })
}

/// The container's files stamp, if an upload completed.
async fn read_stamp(inner: &Docker, id: &str) -> Option<String> {
    let opts = DownloadFromContainerOptionsBuilder::default()
        .path(STAMP)
        .build();
    let bytes: Vec<u8> = inner
        .download_from_container(id, Some(opts))
        .map_ok(|b| b.to_vec())
        .try_concat()
        .await
        .ok()?;
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut entry = archive.entries().ok()?.next()?.ok()?;
    let mut text = String::new();
    entry.read_to_string(&mut text).ok()?;
    Some(text)
}
