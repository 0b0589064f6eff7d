//! An in-memory node driver: nodes, IPs and containers are map entries, readiness is
//! scripted per pod. It lets the engine's loop and the API run in a plain `cargo test`
//! (no root, no Docker), and records what it was asked to do.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::{ContainerObs, ContainerSeen, NodeDriver, NodeObs, Observed, PAUSE, files_stamp};
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
    log: Vec<String>,
}

#[derive(Default)]
pub struct FakeDriver {
    inner: Mutex<Inner>,
}

impl FakeDriver {
    pub fn new() -> Self {
        Self::default()
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
}
