//! `envd exec`: a command in a pod's container through the node's engine, its output
//! streamed, with a TTY and stdin when asked.

use std::pin::Pin;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::{InspectContainerOptions, ResizeExecOptions};
use futures_util::Stream;
use tokio::io::AsyncWrite;

use super::podops::{find_pod, require_ready};
use super::{Engine, archive, pods};
use crate::error::{DockerContext, Error, Result};

/// What to run where.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    /// Default: the pod's first container.
    pub container: Option<String>,
    pub tty: bool,
    pub stdin: bool,
}

/// A checked target: the env is ready and the container exists and runs.
pub struct ExecTarget {
    inner: Docker,
    container: String,
}

/// Output of an exec: stdout and stderr chunks (console chunks with a TTY).
pub type ExecOutput =
    Pin<Box<dyn Stream<Item = std::result::Result<LogOutput, bollard::errors::Error>> + Send>>;

/// A running exec: its output, its stdin, and a handle for its exit code and TTY size.
pub struct Exec {
    pub output: ExecOutput,
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
    pub handle: ExecHandle,
}

#[derive(Clone)]
pub struct ExecHandle {
    inner: Docker,
    id: String,
}

impl Engine {
    /// Checks everything an exec needs before anything runs (so the API can answer with a
    /// problem before it upgrades to a WebSocket).
    pub async fn exec_target(
        &self,
        env_id: &str,
        pod_name: &str,
        req: &ExecRequest,
    ) -> Result<ExecTarget> {
        let env = self.store.get(env_id).await?;
        require_ready(&env, "exec")?;
        if req.cmd.is_empty() || req.cmd.iter().any(String::is_empty) {
            return Err(Error::invalid(
                "request",
                "cmd",
                "give the command to run, no argument empty, e.g. envd exec ENV POD -- sh -c 'echo hi'",
            ));
        }
        let plan = self.plan(&env)?;
        let all = pods::all_pods(self, &plan)?;
        let pod = find_pod(&env, &all, pod_name)?;
        if pod.name == crate::spec::STUBS_POD {
            return Err(Error::invalid(
                "request",
                "pod",
                format!(
                    "`{pod_name}` is envd's own sidecar: it reads every pod's logs, so exec into it is refused; exec into one of the template's pods"
                ),
            ));
        }
        let container = match &req.container {
            Some(c) => pod.containers.iter().find(|x| &x.name == c),
            None => pod.containers.first(),
        }
        .ok_or_else(|| {
            let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
            Error::NotFound(format!(
                "container `{}` in pod `{pod_name}` (containers: {})",
                req.container.as_deref().unwrap_or(""),
                names.join(", ")
            ))
        })?;
        let name = format!("{pod_name}-{}", container.name);
        let inner = archive::inner_docker(self, &env).await.ok_or_else(|| {
            Error::Conflict(format!("environment `{}` has no running node", env.name))
        })?;
        let running = inner
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .ctx(|| format!("inspecting {name}"))?
            .state
            .and_then(|s| s.running)
            .unwrap_or(false);
        if !running {
            return Err(Error::Conflict(format!(
                "container {name} is not running; see `envd logs {} -f`",
                env.name
            )));
        }
        Ok(ExecTarget {
            inner,
            container: name,
        })
    }
}

impl ExecTarget {
    pub async fn start(&self, req: &ExecRequest) -> Result<Exec> {
        let name = &self.container;
        let created = self
            .inner
            .create_exec(
                name,
                ExecConfig {
                    attach_stdin: Some(req.stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(req.tty),
                    cmd: Some(req.cmd.clone()),
                    ..Default::default()
                },
            )
            .await
            .ctx(|| format!("exec in {name}"))?;
        let opts = StartExecOptions {
            detach: false,
            tty: req.tty,
            output_capacity: None,
        };
        match self
            .inner
            .start_exec(&created.id, Some(opts))
            .await
            .ctx(|| format!("exec in {name}"))?
        {
            StartExecResults::Attached { output, input } => Ok(Exec {
                output,
                input,
                handle: ExecHandle {
                    inner: self.inner.clone(),
                    id: created.id,
                },
            }),
            StartExecResults::Detached => Err(Error::step("exec", "the exec started detached")),
        }
    }
}

impl ExecHandle {
    /// The command's exit code, once its output ended (the engine may need a moment to
    /// record it).
    pub async fn exit_code(&self) -> Result<i64> {
        for _ in 0..100 {
            let i = self
                .inner
                .inspect_exec(&self.id)
                .await
                .ctx(|| "inspecting an exec".into())?;
            if !i.running.unwrap_or(false) {
                return Ok(i.exit_code.unwrap_or(-1));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(Error::step(
            "exec",
            "the command's output ended but it still runs",
        ))
    }

    /// Sets the TTY's size (columns, rows).
    pub async fn resize(&self, cols: u16, rows: u16) -> Result<()> {
        let opts = ResizeExecOptions {
            w: i32::from(cols),
            h: i32::from(rows),
        };
        self.inner
            .resize_exec(&self.id, opts)
            .await
            .ctx(|| "resizing an exec's TTY".into())
    }
}
