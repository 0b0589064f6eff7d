//! `envd config set`: new answers for a ready env, re-rendered, uploaded into the named pod
//! (and every other pod the same answers change) and applied as each pod's template says
//! (`on_change`: restart, or a signal).

use std::collections::BTreeMap;
use std::time::Instant;

use bollard::Docker;
use bollard::query_parameters::{
    KillContainerOptionsBuilder, RemoveContainerOptionsBuilder, RestartContainerOptionsBuilder,
};
use futures_util::future::try_join_all;
use serde::Serialize;

use super::{Engine, archive, pods, ready};
use crate::error::{DockerContext, Error, Result};
use crate::spec::order::{Condition, awaited};
use crate::spec::{Container, Facts, OnChange, Plan, Pod};
use crate::store::{Env, State};

/// What a config change did to the pod.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PodChange {
    pub pod: String,
    /// Every pod the answers changed, the named one first (e.g. a password that the
    /// app's settings use too).
    pub pods: Vec<String>,
    /// Answers whose value changed (names only: values may be passwords).
    pub changed: Vec<String>,
    /// `unchanged`, `restarted`, `signalled HUP`, and/or `recreated <container>`.
    pub action: String,
}

impl Engine {
    /// Validates `answers` against the env's template like a create, records them, then
    /// applies the re-rendered pod: its files uploaded, then restarted or signalled;
    /// containers whose env, command, image or limits changed are recreated. Waits for the
    /// pod's readiness check before answering; a pod that does not get ready with the new
    /// answers gets the previous ones back, and the request fails naming the answer.
    pub async fn configure_pod(
        &self,
        id: &str,
        pod_name: &str,
        answers: &BTreeMap<String, String>,
    ) -> Result<PodChange> {
        // Checked before the lock too: a creating env's reconcile holds it for minutes.
        let env = self.store.get(id).await?;
        require_ready(&env, "config set")?;
        // One change or reconcile of an env at a time: a second change merges onto the
        // first one's answers, and a teardown waits for the pod to be settled.
        let lock = self.lock_for(&env.id);
        let _held = lock.lock().await;
        let env = self.store.get(&env.id).await?;
        require_ready(&env, "config set")?;
        let old_plan = self.plan(&env)?;
        let old_pods = pods::all_pods(self, &old_plan)?;
        find_pod(&env, &old_pods, pod_name)?;
        if answers.is_empty() {
            return Err(Error::invalid(
                "request",
                "answers",
                "give at least one answer to change, e.g. maxmemory=64mb",
            ));
        }
        let mut merged = env.answers.clone();
        merged.extend(answers.clone());
        let new_plan = render(&env, &merged)?;
        let new_pods = pods::all_pods(self, &new_plan)?;
        let changed: Vec<String> = answers
            .iter()
            .filter(|(k, v)| env.answers.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        let field = format!("answers.{}", answers.keys().next().map_or("", |k| k));
        // Every pod the answers change, the named one first; a change that does not touch
        // the named pod is refused (the user meant another pod).
        let mut affected: Vec<(&Pod, &Pod)> = old_pods
            .iter()
            .zip(&new_pods)
            .filter(|(o, n)| o != n)
            .collect();
        affected.sort_by_key(|(o, _)| o.name != pod_name);
        if !affected.is_empty() && affected[0].0.name != pod_name {
            let names: Vec<&str> = affected.iter().map(|(o, _)| o.name.as_str()).collect();
            return Err(Error::invalid(
                "request",
                field,
                format!(
                    "this does not change pod `{pod_name}` but {}; name that pod instead",
                    names.join(", ")
                ),
            ));
        }
        if let Some((o, _)) = affected.iter().find(|(o, n)| n.ports != o.ports) {
            return Err(Error::invalid(
                "request",
                field,
                format!(
                    "this changes the ports of pod `{}`, which a live env cannot; recreate the env",
                    o.name
                ),
            ));
        }
        self.store.update_answers(&env.id, &merged).await?;
        let pods: Vec<String> = affected.iter().map(|(o, _)| o.name.clone()).collect();
        if affected.is_empty() {
            return Ok(PodChange {
                pod: pod_name.into(),
                pods,
                changed,
                action: "unchanged".into(),
            });
        }

        let t = Instant::now();
        let inner = archive::inner_docker(self, &env).await.ok_or_else(|| {
            Error::Conflict(format!(
                "environment `{}` has no running node; its reconcile will bring it back",
                env.name
            ))
        })?;
        let step = format!("config:{pod_name}");
        let record = |note: String| {
            let (store, id, step) = (&self.store, &env.id, &step);
            async move { store.event(id, step, &note, Some(t.elapsed())).await }
        };
        let mut actions = vec![];
        for (i, (old, new)) in affected.iter().enumerate() {
            let applied = async {
                let action = self.apply(&env, &inner, old, new).await?;
                ready::wait_recorded(self, &env, &inner, new).await?;
                Ok::<String, Error>(action)
            };
            match applied.await {
                Ok(action) if affected.len() == 1 => actions.push(action),
                Ok(action) => actions.push(format!("{}: {action}", new.name)),
                Err(e) => {
                    let back = self.roll_back(&env, &inner, &affected[..=i]).await;
                    let note = format!("answers {} not taken: {e}; {back}", changed.join(", "));
                    record(note).await?;
                    return Err(Error::invalid(
                        "request",
                        field,
                        format!(
                            "pod `{}` did not get ready with these answers: {e}; {back}",
                            new.name
                        ),
                    ));
                }
            }
        }
        let action = actions.join("; ");
        record(format!("answers {} changed: {action}", changed.join(", "))).await?;
        Ok(PodChange {
            pod: pod_name.into(),
            pods,
            changed,
            action,
        })
    }

    /// The env's recorded answers and the pods' previous config, back (last changed
    /// first); says how that went.
    async fn roll_back(&self, env: &Env, inner: &Docker, changed: &[(&Pod, &Pod)]) -> String {
        let undone = async {
            self.store.update_answers(&env.id, &env.answers).await?;
            for (old, new) in changed.iter().rev() {
                self.apply(env, inner, new, old).await?;
                ready::wait_recorded(self, env, inner, old).await?;
            }
            Ok::<(), Error>(())
        };
        match undone.await {
            Ok(()) => "the previous answers are back and the pods are ready".into(),
            Err(e) => format!("going back to the previous answers failed too: {e}"),
        }
    }

    async fn apply(&self, env: &Env, inner: &Docker, old: &Pod, new: &Pod) -> Result<String> {
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
            let all = pods::all_pods(self, &self.plan(env)?)?;
            let once = awaited(&all, Condition::Completed).contains_key(new.name.as_str());
            let node = self.ensure_node(env).await?;
            pods::ensure_pod(self, env, &node, inner, new, once).await?;
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
}

/// Pod operations need a ready env: one being created or torn down has no stable pods.
pub(super) fn require_ready(env: &Env, what: &str) -> Result<()> {
    if env.state != State::Ready || env.desired == "gone" {
        return Err(Error::Conflict(format!(
            "environment `{}` is {}{}; {what} needs a ready env",
            env.name,
            env.state.as_str(),
            if env.desired == "gone" {
                " and being removed"
            } else {
                ""
            }
        )));
    }
    Ok(())
}

pub(super) fn find_pod<'a>(env: &Env, pods: &'a [Pod], name: &str) -> Result<&'a Pod> {
    pods.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
        Error::NotFound(format!(
            "pod `{name}` in environment `{}` (pods: {})",
            env.name,
            names.join(", ")
        ))
    })
}

fn without_files(c: &Container) -> Container {
    Container {
        files: vec![],
        ..c.clone()
    }
}

/// The plan with new answers, its errors worded as a request's (like a create's).
fn render(env: &Env, answers: &BTreeMap<String, String>) -> Result<Plan> {
    let facts = Facts {
        env_id: env.id.clone(),
        env_name: env.name.clone(),
        node_ip: env.node_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
    };
    Plan::render(&env.template, &env.template_src, answers, &facts)
        .map_err(crate::service::answers_error)
}
