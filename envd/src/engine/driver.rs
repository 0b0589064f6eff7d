//! The node-driver seam: everything host-specific the engine does goes through
//! [`NodeDriver`], so the loop (observe → decide → act) is the same whether nodes are
//! dind containers on the local engine ([`LocalDind`]) or the in-memory fake the tests
//! use. The driver reports what *is* ([`Observed`]); the engine decides what to do.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::error::Result;
use crate::spec::{Container, Dir, File, Plan, Pod};
use crate::store::Env;

pub mod fake;
mod local;
mod seam;

pub use fake::FakeDriver;
pub use local::LocalDind;
pub use seam::{
    Exec, ExecChunk, ExecControl, ExecHandle, ExecOutput, HostEvents, HostObject, LogLines,
    ObjectKind,
};

/// The pod's network-namespace holder, beside its containers in [`PodObs`].
pub const PAUSE: &str = "pause";

/// The node container on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeObs {
    Absent,
    Stopped,
    Running,
}

/// One container in the node's engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerObs {
    /// Created, never started.
    Created,
    Running,
    Exited {
        code: i64,
    },
}

/// A container as observed, with the stamp of the files last uploaded into it (none
/// until an upload completed: the stamp is written after the files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSeen {
    pub state: ContainerObs,
    pub files: Option<String>,
}

/// A pod's containers by name ([`PAUSE`] for its pause container); a missing one is absent.
pub type PodObs = BTreeMap<String, ContainerSeen>;

/// What is there of an env now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub node: NodeObs,
    /// The node's inner engine answers.
    pub inner: bool,
    /// The env's IP is attached to the node as it runs now.
    pub ip: bool,
    pub pods: BTreeMap<String, PodObs>,
}

impl Observed {
    /// Nothing at all (no node): what a fresh env looks like.
    pub fn nothing() -> Self {
        Observed {
            node: NodeObs::Absent,
            inner: false,
            ip: false,
            pods: BTreeMap::new(),
        }
    }
}

/// Names the files a container must hold: stable across renders of the same content, so
/// an upload is redone exactly when the files changed or never completed.
pub fn files_stamp(files: &[File], dirs: &[Dir]) -> Option<String> {
    if files.is_empty() && dirs.is_empty() {
        return None;
    }
    // FNV-1a: no new dependency, and stable across Rust versions (unlike DefaultHasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes.iter().chain(&[0u8]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for f in files {
        feed(f.path.as_bytes());
        feed(f.content.as_bytes());
        feed(&f.mode.to_le_bytes());
    }
    for d in dirs {
        feed(d.source.as_bytes());
        feed(d.path.as_bytes());
    }
    Some(format!("{h:016x}"))
}

/// Everything host-specific of an env's node, its network and its pods. Every method is
/// idempotent and keyed by the env id; none records anything in the store.
#[async_trait]
pub trait NodeDriver: Send + Sync {
    /// Whether the host engine answers (new envs are refused when not).
    async fn ping(&self) -> Result<()>;
    /// What exists of the env's node and the given pods.
    async fn observe(&self, env: &Env, pods: &[Pod]) -> Result<Observed>;
    /// Creates what is missing of the node and starts it.
    async fn ensure_node(&self, env: &Env) -> Result<()>;
    /// Waits until the node's inner engine answers.
    async fn wait_inner(&self, env: &Env) -> Result<()>;
    /// Attaches the env's leased IP to the node.
    async fn attach_ip(&self, env: &Env) -> Result<()>;
    /// Creates what is missing of a pod: its pause (started) and its containers (created,
    /// not started, files not uploaded).
    async fn create_pod(&self, env: &Env, pod: &Pod, once: bool) -> Result<()>;
    /// Writes a container's files, then their stamp.
    async fn upload_files(&self, env: &Env, pod: &Pod, container: &Container) -> Result<()>;
    /// Starts a created or stopped container ([`PAUSE`] for the pod's pause).
    async fn start(&self, env: &Env, pod: &Pod, container: &str) -> Result<()>;
    /// Moves a running pod from its `old` config to its `new` one (files uploaded,
    /// containers whose spec changed recreated, then restarted or signalled as the pod's
    /// `on_change` says); returns what it did.
    async fn change_pod(&self, env: &Env, old: &Pod, new: &Pod) -> Result<String>;
    /// Waits until the pod answers its readiness check (within the check's deadline).
    async fn wait_ready(&self, env: &Env, pod: &Pod) -> Result<()>;
    /// Copies the databases of `source` into the env's pods.
    async fn copy_data(&self, env: &Env, source: &Env, plan: &Plan) -> Result<()>;
    /// Archives every log of the env; best effort, returns a summary.
    async fn collect(&self, env: &Env) -> String;
    /// Frees everything of the env on the host; "not found" is success.
    async fn free(&self, env: &Env) -> Result<()>;
    /// The host objects the env still owns (containers, volumes, attachments), by name.
    async fn owned(&self, env: &Env) -> Result<Vec<String>>;
    /// The host's node events as they happen; the stream ends when the host engine goes
    /// away (the caller resyncs, then asks again).
    async fn host_events(&self) -> Result<HostEvents>;
    /// Whether `<pod>-<container>` runs now; a conflict when the env's node does not.
    async fn container_running(&self, env: &Env, pod: &str, container: &str) -> Result<bool>;
    /// Runs a command in a pod's running container, its output streamed.
    async fn exec(
        &self,
        env: &Env,
        pod: &str,
        container: &str,
        req: &crate::engine::ExecRequest,
    ) -> Result<Exec>;
    /// The last `tail` lines of every pod container, then what they write; ends when the
    /// node goes.
    async fn follow_logs(&self, env: &Env, tail: u32) -> Result<LogLines>;
    /// Every host object labelled as envd's (nodes, volumes, attachments on its bridge).
    async fn host_objects(&self) -> Result<Vec<HostObject>>;
    /// Every container in the env's node's engine, labelled or not; none when that
    /// engine does not answer.
    async fn node_objects(&self, env: &Env) -> Result<Option<Vec<HostObject>>>;
    /// Removes an object listed by [`NodeDriver::host_objects`] or
    /// [`NodeDriver::node_objects`]; "not found" is success.
    async fn remove_object(&self, obj: &HostObject) -> Result<()>;
    /// Where to report image pulls as they progress (the engine hands it over once, at
    /// start); a driver that reaches the engine itself may ignore it.
    fn report_pulls(&self, _feed: crate::engine::registry::progress::PullFeed) {}
}
