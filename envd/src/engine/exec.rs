//! `envd exec`: what is checked before a command runs in a pod's container; the driver
//! runs it, its output streamed, with a TTY and stdin when asked.

use std::sync::Arc;

use super::podops::{find_pod, require_ready};
use super::{Engine, NodeDriver, pods};
use crate::error::{Error, Result};
use crate::store::Env;

pub use super::driver::{Exec, ExecChunk, ExecHandle, ExecOutput};

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
    driver: Arc<dyn NodeDriver>,
    env: Env,
    pod: String,
    container: String,
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
        let running = self
            .driver
            .container_running(&env, &pod.name, &container.name)
            .await?;
        if !running {
            return Err(Error::Conflict(format!(
                "container {pod_name}-{} is not running; see `envd logs {} -f`",
                container.name, env.name
            )));
        }
        Ok(ExecTarget {
            driver: Arc::clone(&self.driver),
            pod: pod.name.clone(),
            container: container.name.clone(),
            env,
        })
    }
}

impl ExecTarget {
    pub async fn start(&self, req: &ExecRequest) -> Result<Exec> {
        self.driver
            .exec(&self.env, &self.pod, &self.container, req)
            .await
    }
}
