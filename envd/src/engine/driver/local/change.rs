//! A config change on the local node's engine: files uploaded, containers whose spec
//! changed recreated, then restarted or signalled as the pod's `on_change` says.

use bollard::Docker;
use bollard::query_parameters::{
    KillContainerOptionsBuilder, RemoveContainerOptionsBuilder, RestartContainerOptionsBuilder,
};
use futures_util::future::try_join_all;

use crate::engine::{Engine, pods};
use crate::error::{DockerContext, Error, Result};
use crate::spec::order::{Condition, awaited};
use crate::spec::{Container, OnChange, Pod};
use crate::store::Env;

/// One pod from its old config to its new one, on the local node's engine: files
/// uploaded, containers whose spec changed recreated, then restarted or signalled.
pub(super) async fn apply(
    engine: &Engine,
    host: &Docker,
    env: &Env,
    inner: &Docker,
    old: &Pod,
    new: &Pod,
) -> Result<String> {
    let mut actions = vec![];
    let mut recreate = vec![];
    let mut files_changed = vec![];
    for c in &new.containers {
        let name = format!("{}-{}", new.name, c.name);
        match old.containers.iter().find(|o| o.name == c.name) {
            Some(o) if without_files(o) == without_files(c) => {
                if o.files != c.files {
                    // Copied host directories (`dirs`) came at create; a config change is its files.
                    pods::upload_files(inner, &name, &c.files, &[], &[]).await?;
                    files_changed.push(name);
                }
            }
            _ => recreate.push(name),
        }
    }
    for name in &recreate {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match inner.remove_container(name, Some(opts)).await {
            Ok(()) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => {
                return Err(Error::Docker {
                    context: format!("removing {name} to recreate it"),
                    source: e,
                });
            }
        }
        actions.push(format!("recreated {name}"));
    }
    if !recreate.is_empty() {
        // A one-shot job (others wait for it to complete) is not started again once done.
        let all = pods::all_pods(engine, &engine.plan(env)?)?;
        let once = awaited(&all, Condition::Completed).contains_key(new.name.as_str());
        let node = engine.ensure_node(host, env).await?;
        pods::ensure_pod(engine, env, &node, inner, new, once, true).await?;
    }
    let rest: Vec<String> = new
        .containers
        .iter()
        .map(|c| format!("{}-{}", new.name, c.name))
        .filter(|n| !recreate.contains(n))
        .collect();
    match &new.on_change {
        OnChange::Restart if !files_changed.is_empty() => {
            try_join_all(rest.iter().map(|name| async move {
                let opts = RestartContainerOptionsBuilder::default().t(10).build();
                inner
                    .restart_container(name, Some(opts))
                    .await
                    .ctx(|| format!("restarting {name}"))
            }))
            .await?;
            actions.push("restarted".into());
        }
        OnChange::Signal(sig) if !files_changed.is_empty() => {
            for name in &files_changed {
                let opts = KillContainerOptionsBuilder::default().signal(sig).build();
                inner
                    .kill_container(name, Some(opts))
                    .await
                    .ctx(|| format!("sending {sig} to {name}"))?;
            }
            actions.push(format!("signalled {sig}"));
        }
        _ => {}
    }
    if actions.is_empty() {
        // Only the readiness check or endpoint changed: nothing runs differently.
        actions.push("unchanged".into());
    }
    Ok(actions.join(", "))
}

fn without_files(c: &Container) -> Container {
    Container {
        files: vec![],
        ..c.clone()
    }
}
