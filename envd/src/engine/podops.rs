//! `envd config set`: new answers for a ready env, re-rendered, uploaded into the named pod
//! (and every other pod the same answers change) and applied as each pod's template says
//! (`on_change`: restart, or a signal).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::{Engine, pods};
use crate::error::{Error, Result};
use crate::lifecycle::{ChangeStatus, Desired, EventKind, EventStep, Step};
use crate::spec::{Facts, Plan, Pod};
use crate::store::{ConfigChange, Env, NewChange, State};

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
    /// The env's config generation this change made.
    pub generation: i64,
}

impl Engine {
    /// Validates `answers` against the env's template like a create, then records them
    /// as the env's next config generation; the env's loop applies it (see
    /// [`Engine::apply_change`]). Returns the change as recorded (`pending`).
    pub async fn request_config(
        self: &std::sync::Arc<Self>,
        id: &str,
        pod_name: &str,
        answers: &BTreeMap<String, String>,
    ) -> Result<ConfigChange> {
        let env = self.store.get(id).await?;
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
        let field = field_of(answers);
        let affected = affected(&old_pods, &new_pods, pod_name);
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
        let generation = self
            .store
            .record_change(NewChange {
                env_id: env.id.clone(),
                pod: pod_name.into(),
                before: env.answers.clone(),
                after: merged,
                changed,
                pods: affected.iter().map(|(o, _)| o.name.clone()).collect(),
            })
            .await?;
        self.kick(&env.id);
        self.store.change(&env.id, generation).await
    }

    /// Applies an open change to the env's pods (files uploaded, restarted or signalled,
    /// each waited ready), or, when a pod does not take it, the answers before; records
    /// how it went. Run by the env's loop; a crash anywhere in it is resumed from the
    /// recorded status, so the pods end on one generation or the other, never a mix.
    pub(super) async fn apply_change(&self, env: &Env, change: &ConfigChange) -> Result<()> {
        let t = Instant::now();
        let step = EventStep::pod(EventKind::Config, &change.pod);
        let old_pods = pods::all_pods(self, &self.plan_with(env, &change.before)?)?;
        let new_pods = pods::all_pods(self, &self.plan_with(env, &change.after)?)?;
        let affected = affected(&old_pods, &new_pods, &change.pod);
        let changed = change.changed.join(", ");
        if affected.is_empty() {
            let note = "unchanged";
            let msg = format!("answers {changed} changed: {note}");
            return self
                .store
                .finish_change_recorded(
                    &env.id,
                    change.generation,
                    ChangeStatus::Applied,
                    note,
                    step,
                    &msg,
                    Some(t.elapsed()),
                )
                .await;
        }
        let mut why = change.outcome.clone().unwrap_or_default();
        if change.status == ChangeStatus::Pending {
            crate::faults::maybe_abort(Step::Config);
            let mut actions = vec![];
            let mut failed = None;
            for (old, new) in &affected {
                let applied = async {
                    let action = self.driver.change_pod(env, old, new).await?;
                    self.wait_ready_recorded(env, new).await?;
                    Ok::<String, Error>(action)
                };
                match applied.await {
                    Ok(action) if affected.len() == 1 => actions.push(action),
                    Ok(action) => actions.push(format!("{}: {action}", new.name)),
                    Err(e) => {
                        failed = Some(format!(
                            "pod `{}` did not get ready with these answers: {e}",
                            new.name
                        ));
                        break;
                    }
                }
            }
            crate::faults::maybe_abort_after(Step::Config);
            let Some(reason) = failed else {
                let action = actions.join("; ");
                let msg = format!("answers {changed} changed: {action}");
                return self
                    .store
                    .finish_change_recorded(
                        &env.id,
                        change.generation,
                        ChangeStatus::Applied,
                        &action,
                        step,
                        &msg,
                        Some(t.elapsed()),
                    )
                    .await;
            };
            self.store.begin_rollback(change, &reason).await?;
            why = reason;
        }
        // Rolling back: every changed pod back on the answers before, last changed first.
        let undone = async {
            for (old, new) in affected.iter().rev() {
                self.driver.change_pod(env, new, old).await?;
                self.wait_ready_recorded(env, old).await?;
            }
            Ok::<(), Error>(())
        };
        let back = match undone.await {
            Ok(()) => "the previous answers are back and the pods are ready".to_string(),
            Err(e) => format!("going back to the previous answers failed too: {e}"),
        };
        let outcome = format!("{why}; {back}");
        let msg = format!("answers {changed} not taken: {outcome}");
        self.store
            .finish_change_recorded(
                &env.id,
                change.generation,
                ChangeStatus::RolledBack,
                &outcome,
                step,
                &msg,
                Some(t.elapsed()),
            )
            .await
    }

    /// Waits until the pod answers its check; records it (`ready:<pod>`) with the time.
    async fn wait_ready_recorded(&self, env: &Env, pod: &Pod) -> Result<()> {
        let t = Instant::now();
        self.driver.wait_ready(env, pod).await?;
        if let Some(r) = &pod.ready {
            let what = format!("{:?} check passed", r.kind).to_lowercase();
            let step = EventStep::pod(EventKind::Ready, &pod.name);
            self.store
                .event(&env.id, step, &what, Some(t.elapsed()))
                .await?;
        }
        Ok(())
    }

    /// The env's plan with other answers.
    fn plan_with(&self, env: &Env, answers: &BTreeMap<String, String>) -> Result<Plan> {
        let env = Env {
            answers: answers.clone(),
            ..env.clone()
        };
        self.plan(&env)
    }
}

/// Every pod the answers change (old, new), the named one first.
fn affected<'a>(old: &'a [Pod], new: &'a [Pod], named: &str) -> Vec<(&'a Pod, &'a Pod)> {
    let mut affected: Vec<(&Pod, &Pod)> = old.iter().zip(new).filter(|(o, n)| o != n).collect();
    affected.sort_by_key(|(o, _)| o.name != named);
    affected
}

/// The request field a change's error names: its first answer.
pub fn field_of(answers: &BTreeMap<String, String>) -> String {
    format!("answers.{}", answers.keys().next().map_or("", |k| k))
}

/// Pod operations need a ready env: one being created or torn down has no stable pods.
pub(super) fn require_ready(env: &Env, what: &str) -> Result<()> {
    if env.state != State::Ready || env.desired == Desired::Gone {
        return Err(Error::Conflict(format!(
            "environment `{}` is {}{}; {what} needs a ready env",
            env.name,
            env.state.as_str(),
            if env.desired == Desired::Gone {
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
