//! An in-memory node driver: nodes, IPs and containers are map entries, readiness is
//! scripted per pod. It lets the engine's loop and the API run in a plain `cargo test`
//! (no root, no Docker), and records what it was asked to do.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use futures_util::StreamExt;

use super::{
    ContainerObs, ContainerSeen, Exec, ExecChunk, ExecControl, HostEvents, HostObject, LogLines,
    NodeDriver, NodeObs, ObjectKind, Observed, PAUSE, files_stamp,
};
use crate::engine::ExecRequest;
use crate::engine::registry::progress::{LayerUpdate, PullFeed};
use crate::error::{Error, Result};
use crate::spec::{Container, Plan, Pod};
use crate::store::Env;

/// How a pod answers its readiness check.
#[derive(Debug, Clone)]
pub enum Readiness {
    /// Answers after this long.
    After(Duration),
    /// Never answers: the check fails with this reason once its deadline passes
    /// (immediately here: the fake has no clock to wait on).
    Never(String),
    /// Never answers and never gives up (a create only a delete or deadline ends).
    Hang,
    /// Fails (at once) while a container's env or a file of the pod holds this text: a
    /// config value the service refuses.
    FailsWith(String),
}

#[derive(Debug, Default)]
struct FakeEnv {
    node: Option<bool>,
    /// When the node was created (unix seconds): the sweep's grace counts from there.
    created: i64,
    inner: bool,
    ip: bool,
    pods: BTreeMap<String, BTreeMap<String, ContainerSeen>>,
}

#[derive(Default)]
struct Inner {
    envs: HashMap<String, FakeEnv>,
    readiness: HashMap<String, Readiness>,
    /// Exit codes of containers (`pod/container`) that exit as soon as they start.
    exits: HashMap<String, i64>,
    /// Exit codes of commands run in containers (`pod/container`); default 0.
    exec_exits: HashMap<String, i64>,
    log: Vec<String>,
    /// What a pull of an image (by name) says, layer by layer, when a pod needs it.
    pulls: HashMap<String, Vec<LayerUpdate>>,
    /// Where pulls are reported (the engine's feed).
    feed: Option<PullFeed>,
}

pub struct FakeDriver {
    inner: Mutex<Inner>,
    /// The host events of the fake's nodes (a stop or restart sends one).
    events: tokio::sync::broadcast::Sender<String>,
}

impl Default for FakeDriver {
    fn default() -> Self {
        FakeDriver {
            inner: Mutex::default(),
            events: tokio::sync::broadcast::channel(64).0,
        }
    }
}

impl FakeDriver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes a command run in `pod/container` exit with `code`.
    pub fn set_exec_exit(&self, pod: &str, container: &str, code: i64) {
        self.with(|i| i.exec_exits.insert(format!("{pod}/{container}"), code));
    }

    /// A node on the fake host whose env no store holds (left by a crash), created
    /// `age` ago, with one container inside.
    pub fn add_orphan(&self, env_id: &str, age: Duration) {
        let created = chrono::Utc::now().timestamp() - age.as_secs() as i64;
        let mut pod = BTreeMap::new();
        pod.insert(
            "app".to_string(),
            ContainerSeen {
                state: ContainerObs::Running,
                files: None,
            },
        );
        self.with(|i| {
            i.envs.insert(
                env_id.to_string(),
                FakeEnv {
                    node: Some(true),
                    created,
                    inner: true,
                    ip: true,
                    pods: BTreeMap::from([("app".to_string(), pod)]),
                },
            )
        });
    }

    /// How many host-event streams are open.
    pub fn event_listeners(&self) -> usize {
        self.events.receiver_count()
    }

    /// Whether the fake host holds anything of the env.
    pub fn holds(&self, env_id: &str) -> bool {
        self.with(|i| i.envs.contains_key(env_id))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn act(&self, env: &Env, what: String) {
        self.with(|i| i.log.push(format!("{} {what}", env.short_id())));
    }

    /// Scripts how `pod` (of every env) answers its check; default: at once.
    pub fn set_readiness(&self, pod: &str, r: Readiness) {
        self.with(|i| i.readiness.insert(pod.to_string(), r));
    }

    /// Makes `pod/container` exit with `code` whenever it starts (a one-shot job).
    pub fn set_exit(&self, pod: &str, container: &str, code: i64) {
        self.with(|i| i.exits.insert(format!("{pod}/{container}"), code));
    }

    /// Makes every pod using `image` pull it first, its engine saying `updates`.
    pub fn script_pull(&self, image: &str, updates: Vec<LayerUpdate>) {
        self.with(|i| i.pulls.insert(image.to_string(), updates));
    }

    /// Reports the scripted pulls of the pod's images, as a node's engine would.
    async fn pull_images(&self, env: &Env, pod: &Pod) {
        for c in &pod.containers {
            let (script, feed) = self.with(|i| (i.pulls.get(&c.image).cloned(), i.feed.clone()));
            let (Some(script), Some(feed)) = (script, feed) else {
                continue;
            };
            let mut report = feed.reporter(&env.id, &pod.name, &c.image);
            for u in &script {
                report.layer(u).await;
            }
            report.finish().await;
            self.act(env, format!("pull {}", c.image));
        }
    }

    /// Everything asked of the driver so far, `<short id> <action> [<what>]`.
    pub fn log(&self) -> Vec<String> {
        self.with(|i| i.log.clone())
    }

    /// How often `action` was done for the env.
    pub fn count(&self, env: &Env, action: &str) -> usize {
        let prefix = format!("{} {action}", env.short_id());
        self.log()
            .iter()
            .filter(|l| **l == prefix || l.starts_with(&format!("{prefix} ")))
            .count()
    }

    /// Overrides what is observed of one container (a crash window, a dead process).
    pub fn set_container(&self, env_id: &str, pod: &str, container: &str, seen: ContainerSeen) {
        self.with(|i| {
            i.envs
                .entry(env_id.to_string())
                .or_default()
                .pods
                .entry(pod.to_string())
                .or_default()
                .insert(container.to_string(), seen)
        });
    }

    /// What a restart of the host engine does to a node: stopped, its IP and inner
    /// engine gone, every container exited.
    pub fn stop_node(&self, env_id: &str) {
        self.with(|i| {
            if let Some(e) = i.envs.get_mut(env_id) {
                e.node = Some(false);
                e.inner = false;
                e.ip = false;
                for c in e.pods.values_mut().flat_map(|p| p.values_mut()) {
                    c.state = ContainerObs::Exited { code: 137 };
                }
            }
        });
        // What the host engine tells of a node that died; nobody may be listening.
        let _ = self.events.send(env_id.to_string());
    }

    /// Detaches the env's IP (what a lost veth looks like).
    pub fn drop_ip(&self, env_id: &str) {
        self.with(|i| {
            if let Some(e) = i.envs.get_mut(env_id) {
                e.ip = false;
            }
        });
    }

    fn inner_up(&self, env: &Env) -> Result<()> {
        let up = self.with(|i| i.envs.get(&env.id).is_some_and(|e| e.inner));
        if up {
            Ok(())
        } else {
            Err(Error::step(
                "inner-engine",
                "the fake node's engine is down",
            ))
        }
    }
}

#[async_trait]
impl NodeDriver for FakeDriver {
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn observe(&self, env: &Env, _pods: &[Pod]) -> Result<Observed> {
        Ok(self.with(|i| match i.envs.get(&env.id) {
            None => Observed::nothing(),
            Some(e) => Observed {
                node: match e.node {
                    None => NodeObs::Absent,
                    Some(false) => NodeObs::Stopped,
                    Some(true) => NodeObs::Running,
                },
                inner: e.inner,
                ip: e.ip,
                pods: if e.inner {
                    e.pods.clone()
                } else {
                    BTreeMap::new()
                },
            },
        }))
    }

    async fn ensure_node(&self, env: &Env) -> Result<()> {
        let created = self.with(|i| {
            let e = i.envs.entry(env.id.clone()).or_default();
            let created = e.node.is_none();
            if created {
                e.created = chrono::Utc::now().timestamp();
            }
            e.node = Some(true);
            created
        });
        self.act(
            env,
            if created { "create-node" } else { "start-node" }.into(),
        );
        Ok(())
    }

    async fn wait_inner(&self, env: &Env) -> Result<()> {
        let ok = self.with(|i| match i.envs.get_mut(&env.id) {
            Some(e) if e.node == Some(true) => {
                e.inner = true;
                true
            }
            _ => false,
        });
        self.act(env, "wait-inner".into());
        if ok {
            Ok(())
        } else {
            Err(Error::step("inner-engine", "the fake node is not running"))
        }
    }

    async fn attach_ip(&self, env: &Env) -> Result<()> {
        self.with(|i| {
            if let Some(e) = i.envs.get_mut(&env.id) {
                e.ip = true;
            }
        });
        self.act(env, "attach-ip".into());
        Ok(())
    }

    async fn create_pod(&self, env: &Env, pod: &Pod, _once: bool) -> Result<()> {
        self.inner_up(env)?;
        self.pull_images(env, pod).await;
        self.with(|i| {
            let e = i.envs.entry(env.id.clone()).or_default();
            let p = e.pods.entry(pod.name.clone()).or_default();
            p.insert(
                PAUSE.into(),
                ContainerSeen {
                    state: ContainerObs::Running,
                    files: None,
                },
            );
            for c in &pod.containers {
                p.entry(c.name.clone()).or_insert(ContainerSeen {
                    state: ContainerObs::Created,
                    files: None,
                });
            }
        });
        self.act(env, format!("create-pod {}", pod.name));
        Ok(())
    }

    async fn upload_files(&self, env: &Env, pod: &Pod, c: &Container) -> Result<()> {
        self.inner_up(env)?;
        let stamp = files_stamp(&c.files, &c.dirs);
        self.with(|i| {
            if let Some(seen) = i
                .envs
                .get_mut(&env.id)
                .and_then(|e| e.pods.get_mut(&pod.name))
                .and_then(|p| p.get_mut(&c.name))
            {
                seen.files = stamp;
            }
        });
        self.act(env, format!("upload {}/{}", pod.name, c.name));
        Ok(())
    }

    async fn start(&self, env: &Env, pod: &Pod, container: &str) -> Result<()> {
        self.inner_up(env)?;
        let wanted = pod
            .containers
            .iter()
            .find(|c| c.name == container)
            .and_then(|c| files_stamp(&c.files, &c.dirs));
        let bare = self.with(|i| {
            let exit = i.exits.get(&format!("{}/{container}", pod.name)).copied();
            let seen = i
                .envs
                .get_mut(&env.id)
                .and_then(|e| e.pods.get_mut(&pod.name))
                .and_then(|p| p.get_mut(container))?;
            seen.state = match exit {
                Some(code) => ContainerObs::Exited { code },
                None => ContainerObs::Running,
            };
            Some(wanted.is_some() && seen.files != wanted)
        });
        match bare {
            None => Err(Error::step(
                "pods",
                format!("no container {}-{container} to start", pod.name),
            )),
            Some(bare) => {
                let note = if bare { " WITHOUT ITS FILES" } else { "" };
                self.act(env, format!("start {}/{container}{note}", pod.name));
                Ok(())
            }
        }
    }

    async fn change_pod(&self, env: &Env, old: &Pod, new: &Pod) -> Result<String> {
        self.inner_up(env)?;
        let what = if old == new { "unchanged" } else { "restarted" };
        self.act(env, format!("change {} {what}", new.name));
        Ok(what.into())
    }

    async fn wait_ready(&self, env: &Env, pod: &Pod) -> Result<()> {
        self.inner_up(env)?;
        let r = self.with(|i| i.readiness.get(&pod.name).cloned());
        match r {
            None => Ok(()),
            Some(Readiness::After(d)) => {
                tokio::time::sleep(d).await;
                self.act(env, format!("ready {}", pod.name));
                Ok(())
            }
            Some(Readiness::Never(reason)) => Err(Error::step(
                format!("readiness of pod {}", pod.name),
                reason,
            )),
            Some(Readiness::Hang) => std::future::pending().await,
            Some(Readiness::FailsWith(bad)) => {
                let refused = pod.containers.iter().any(|c| {
                    c.env.values().any(|v| v.contains(&bad))
                        || c.files.iter().any(|f| f.content.contains(&bad))
                });
                if refused {
                    Err(Error::step(
                        format!("readiness of pod {}", pod.name),
                        format!("refused {bad}"),
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    async fn copy_data(&self, env: &Env, source: &Env, _plan: &Plan) -> Result<()> {
        self.act(env, format!("copy-data from {}", source.short_id()));
        Ok(())
    }

    async fn collect(&self, env: &Env) -> String {
        let n = self.with(|i| {
            i.envs
                .get(&env.id)
                .map(|e| e.pods.values().map(|p| p.len()).sum::<usize>())
                .unwrap_or(0)
        });
        self.act(env, "collect".into());
        format!("{n} entries archived (fake)")
    }

    async fn free(&self, env: &Env) -> Result<()> {
        self.with(|i| i.envs.remove(&env.id));
        self.act(env, "free".into());
        Ok(())
    }

    async fn owned(&self, env: &Env) -> Result<Vec<String>> {
        Ok(self.with(|i| match i.envs.get(&env.id) {
            None => vec![],
            Some(e) => {
                let mut out = vec![format!("node {}", env.short_id())];
                for (pod, cs) in &e.pods {
                    out.extend(cs.keys().map(|c| format!("container {pod}-{c}")));
                }
                out
            }
        }))
    }

    async fn host_events(&self) -> Result<HostEvents> {
        let events = event_stream(self.events.subscribe());
        Ok(events)
    }

    async fn container_running(&self, env: &Env, pod: &str, container: &str) -> Result<bool> {
        self.inner_up(env).map_err(|_| {
            Error::Conflict(format!("environment `{}` has no running node", env.name))
        })?;
        Ok(self.with(|i| {
            i.envs
                .get(&env.id)
                .and_then(|e| e.pods.get(pod))
                .and_then(|p| p.get(container))
                .is_some_and(|c| c.state == ContainerObs::Running)
        }))
    }

    /// Echoes the command on stdout (and `stderr` on stderr when it is the first
    /// argument); exits as scripted.
    async fn exec(&self, env: &Env, pod: &str, container: &str, req: &ExecRequest) -> Result<Exec> {
        self.inner_up(env)?;
        self.act(env, format!("exec {pod}/{container} {}", req.cmd.join(" ")));
        let code = self.with(|i| {
            i.exec_exits
                .get(&format!("{pod}/{container}"))
                .copied()
                .unwrap_or(0)
        });
        let line = format!("{}\n", req.cmd.join(" ")).into_bytes();
        let chunk = if req.cmd.first().is_some_and(|c| c == "stderr") {
            ExecChunk::Stderr(line)
        } else {
            ExecChunk::Stdout(line)
        };
        Ok(Exec {
            output: Box::pin(futures_util::stream::iter([Ok(chunk)])),
            input: Box::pin(tokio::io::sink()),
            handle: std::sync::Arc::new(FakeExec { code }),
        })
    }

    /// One line per container of the env's pods (pauses hold no logs), then the end.
    async fn follow_logs(&self, env: &Env, tail: u32) -> Result<LogLines> {
        self.inner_up(env).map_err(|_| {
            Error::Conflict(format!(
                "environment `{}` has no running node to follow",
                env.name
            ))
        })?;
        let lines: Vec<Vec<u8>> = self.with(|i| {
            i.envs
                .get(&env.id)
                .map(|e| {
                    e.pods
                        .iter()
                        .flat_map(|(pod, cs)| {
                            cs.keys()
                                .filter(|c| *c != PAUSE)
                                .map(move |c| format!("{pod}/{c} | fake log (tail {tail})\n"))
                        })
                        .map(String::into_bytes)
                        .collect()
                })
                .unwrap_or_default()
        });
        Ok(futures_util::stream::iter(lines).boxed())
    }

    async fn host_objects(&self) -> Result<Vec<HostObject>> {
        Ok(self.with(|i| {
            i.envs
                .iter()
                .filter(|(_, e)| e.node.is_some())
                .map(|(id, e)| HostObject {
                    kind: ObjectKind::Container,
                    name: format!("fake-node-{id}"),
                    env_id: id.clone(),
                    created: Some(e.created),
                    labels: None,
                })
                .collect()
        }))
    }

    async fn node_objects(&self, env: &Env) -> Result<Option<Vec<HostObject>>> {
        Ok(self.with(|i| {
            let e = i.envs.get(&env.id).filter(|e| e.inner)?;
            Some(
                e.pods
                    .iter()
                    .flat_map(|(pod, cs)| {
                        cs.keys().map(move |c| HostObject {
                            kind: ObjectKind::InnerContainer,
                            name: format!("{pod}-{c}"),
                            env_id: env.id.clone(),
                            created: Some(e.created),
                            labels: Some((pod.clone(), c.clone())),
                        })
                    })
                    .collect(),
            )
        }))
    }

    async fn remove_object(&self, obj: &HostObject) -> Result<()> {
        self.with(|i| match obj.kind {
            ObjectKind::InnerContainer => {
                if let (Some(e), Some((pod, c))) = (i.envs.get_mut(&obj.env_id), &obj.labels) {
                    if let Some(p) = e.pods.get_mut(pod) {
                        p.remove(c);
                    }
                    e.pods.retain(|_, p| !p.is_empty());
                }
            }
            _ => {
                i.envs.remove(&obj.env_id);
            }
        });
        self.with(|i| {
            i.log
                .push(format!("remove {} {}", obj.kind.as_str(), obj.name))
        });
        Ok(())
    }

    fn report_pulls(&self, feed: PullFeed) {
        self.with(|i| i.feed = Some(feed));
    }
}

/// A fake exec's handle: it ended as soon as it started.
struct FakeExec {
    code: i64,
}

#[async_trait]
impl ExecControl for FakeExec {
    async fn exit_code(&self) -> Result<i64> {
        Ok(self.code)
    }

    async fn resize(&self, _cols: u16, _rows: u16) -> Result<()> {
        Ok(())
    }
}

/// The events sent from now on, as a stream (a lagging reader skips what it missed).
fn event_stream(rx: tokio::sync::broadcast::Receiver<String>) -> HostEvents {
    futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(id) => return Some((id, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .boxed()
}
