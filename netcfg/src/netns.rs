//! Network namespaces and the dedicated netlink thread.
//!
//! A netlink socket is bound to the network namespace of the thread that opened it. netcfg therefore runs every
//! operation on a fresh OS thread of its own (never a tokio worker, never a `spawn_blocking` pool thread): that
//! thread opens the host socket first, then `setns` into the target namespace only long enough to open the
//! container's sockets, and goes back. The sockets stay bound to their namespaces; the thread exits at the end.

use std::fs::File;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

use crate::{Error, Result};

/// The network namespace to attach to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// The network namespace of a process (`/proc/<pid>/ns/net`), e.g. a container's PID from `docker inspect`.
    Pid(u32),
    /// A namespace file: `/run/netns/<name>`, `/proc/<pid>/ns/net`, or any bind mount of one.
    NetnsPath(PathBuf),
}

impl Target {
    /// The namespace file this target names.
    pub fn path(&self) -> PathBuf {
        match self {
            Target::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            Target::NetnsPath(p) => p.clone(),
        }
    }

    /// Open the namespace file (an fd that keeps the namespace alive while it is open).
    pub(crate) fn open(&self) -> Result<File> {
        let path = self.path();
        File::open(&path).map_err(|e| Error::sys("open netns", path.display().to_string(), e))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path().display())
    }
}

/// Run `f` with the current thread inside the namespace `ns`, then return to the thread's original namespace.
///
/// Only for use on netcfg's own thread ([`run`]): it is how sockets get opened inside the target namespace.
pub(crate) fn with_netns<T>(ns: &File, label: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let own = Path::new("/proc/thread-self/ns/net");
    let orig =
        File::open(own).map_err(|e| Error::sys("open own netns", own.display().to_string(), e))?;
    setns(ns, CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::sys("enter netns", label, io::Error::from(e)))?;
    let out = f();
    // If we cannot go back, report it: the thread is ours and exits soon, but no host socket may be opened on it.
    setns(&orig, CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::sys("return to host netns from", label, io::Error::from(e)))?;
    out
}

fn spawn<T, F, Fut>(op: &'static str, f: F) -> Result<std::thread::JoinHandle<Result<T>>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name("netcfg".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .map_err(|e| Error::sys(op, "tokio runtime", e))?;
            rt.block_on(f())
        })
        .map_err(|e| Error::sys(op, "spawn netlink thread", e))
}

fn joined<T>(op: &'static str, r: std::thread::Result<Result<T>>) -> Result<T> {
    r.unwrap_or_else(|_| {
        Err(Error::sys(
            op,
            "netlink thread",
            io::Error::other("panicked"),
        ))
    })
}

/// Run `f` on a dedicated OS thread with its own current-thread tokio runtime and wait for it without blocking the
/// caller's executor. Dropping the returned future does not cancel the work: the thread finishes the operation, so
/// a cancelled call never leaves a half-made attachment behind.
pub(crate) async fn run<T, F, Fut>(op: &'static str, f: F) -> Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawn(op, move || async move {
        let r = f().await;
        let _ = tx.send(r);
        Ok(())
    })?;
    match rx.await {
        Ok(r) => r,
        Err(_) => Err(Error::sys(
            op,
            "netlink thread",
            io::Error::other("panicked"),
        )),
    }
}

/// Same as [`run`], blocking the calling thread.
pub(crate) fn run_blocking<T, F, Fut>(op: &'static str, f: F) -> Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
    T: Send + 'static,
{
    joined(op, spawn(op, f)?.join())
}
