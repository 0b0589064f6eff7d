//! The types the driver's host-facing methods speak (events, exec, logs, swept objects),
//! so the engine, the API and the jobs never see a Docker client's own types.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::Stream;
use futures_util::stream::BoxStream;
use tokio::io::AsyncWrite;

use crate::error::Result;

/// Ids of envs whose node the host saw start, die or restart.
pub type HostEvents = BoxStream<'static, String>;

/// Live log lines of an env's pods, `<pod>/<container> | <line>\n`.
pub type LogLines = BoxStream<'static, Vec<u8>>;

/// A chunk of an exec's output (a TTY's output is `Stdout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecChunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// Output of an exec, in the order it was written.
pub type ExecOutput = Pin<Box<dyn Stream<Item = Result<ExecChunk>> + Send>>;

/// What can be asked of a running exec.
#[async_trait]
pub trait ExecControl: Send + Sync {
    /// The command's exit code, once its output ended.
    async fn exit_code(&self) -> Result<i64>;
    /// Sets the TTY's size (columns, rows).
    async fn resize(&self, cols: u16, rows: u16) -> Result<()>;
}

pub type ExecHandle = Arc<dyn ExecControl>;

/// A running exec: its output, its stdin, and a handle for its exit code and TTY size.
pub struct Exec {
    pub output: ExecOutput,
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
    pub handle: ExecHandle,
}

/// What a host object swept by envd is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A container on the host (a node).
    Container,
    Volume,
    /// A network attachment on envd's bridge.
    Veth,
    /// A container inside a node's engine.
    InnerContainer,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Container => "container",
            ObjectKind::Volume => "volume",
            ObjectKind::Veth => "veth",
            ObjectKind::InnerContainer => "inner-container",
        }
    }
}

/// A host object carrying envd's label (or, for a veth, sitting on envd's bridge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostObject {
    pub kind: ObjectKind,
    pub name: String,
    /// The env it is labelled with; empty when the host does not say (a veth whose
    /// attachment lost its record).
    pub env_id: String,
    /// Unix seconds; none when the host does not keep it (veths).
    pub created: Option<i64>,
    /// An inner container's pod and container labels, when it has them.
    pub labels: Option<(String, String)>,
}
