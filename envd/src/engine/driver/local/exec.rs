//! Exec in a pod's container through the node's engine (the local driver's side of
//! `envd exec`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::{InspectContainerOptions, ResizeExecOptions};
use futures_util::StreamExt;

use crate::engine::ExecRequest;
use crate::engine::driver::{Exec, ExecChunk, ExecControl};
use crate::error::{DockerContext, Error, Result};

pub(super) async fn running(inner: &Docker, name: &str) -> Result<bool> {
    Ok(inner
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .ctx(|| format!("inspecting {name}"))?
        .state
        .and_then(|s| s.running)
        .unwrap_or(false))
}

pub(super) async fn start(inner: &Docker, name: &str, req: &ExecRequest) -> Result<Exec> {
    let created = inner
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
    match inner
        .start_exec(&created.id, Some(opts))
        .await
        .ctx(|| format!("exec in {name}"))?
    {
        StartExecResults::Attached { output, input } => {
            let output = output.filter_map(|chunk| async move {
                match chunk {
                    Ok(LogOutput::StdErr { message }) => {
                        Some(Ok(ExecChunk::Stderr(message.to_vec())))
                    }
                    Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                        Some(Ok(ExecChunk::Stdout(message.to_vec())))
                    }
                    Ok(LogOutput::StdIn { .. }) => None,
                    Err(source) => Some(Err(Error::Docker {
                        context: "reading an exec's output".into(),
                        source,
                    })),
                }
            });
            Ok(Exec {
                output: Box::pin(output),
                input,
                handle: Arc::new(Handle {
                    inner: inner.clone(),
                    id: created.id,
                }),
            })
        }
        StartExecResults::Detached => Err(Error::step("exec", "the exec started detached")),
    }
}

struct Handle {
    inner: Docker,
    id: String,
}

#[async_trait]
impl ExecControl for Handle {
    /// The engine may need a moment after the output ended to record the exit code.
    async fn exit_code(&self) -> Result<i64> {
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

    async fn resize(&self, cols: u16, rows: u16) -> Result<()> {
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
