//! Clone: a new env from another env's template text, answers and init files; with
//! `with_data` the engine copies the source's databases into it once its pods are ready.

use serde::{Deserialize, Serialize};

use super::{Limits, parse_ttl};
use crate::error::{Error, Result};
use crate::spec::{Facts, Plan};
use crate::store::{Created, Env, NewEnv, State, Store, now_ms, short_id};

#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneRequest {
    /// Default: the source's name and a short id.
    #[serde(default)]
    pub name: Option<String>,
    /// Copy the contents of the source's databases (pods with a mysql, mongo or redis
    /// readiness check).
    #[serde(default)]
    pub with_data: bool,
    /// e.g. `2h`; default the server's default TTL.
    #[serde(default)]
    pub ttl: Option<String>,
    /// The clone's owner is the token's: leave it out, or repeat the token's owner.
    #[serde(default)]
    pub owner: Option<String>,
}

/// Records the clone as `requested`; the source must be ready (its data is read later).
pub async fn clone(store: &Store, limits: &Limits, source: &str, req: CloneRequest) -> Result<Env> {
    let src = store.get(source).await?;
    clone_admitted(store, limits, src, req, None).await
}

/// [`clone`] of a source the caller may see, within the new owner's quotas (when given).
pub async fn clone_admitted(
    store: &Store,
    limits: &Limits,
    src: Env,
    req: CloneRequest,
    admission: Option<&crate::quota::Admission>,
) -> Result<Env> {
    if src.state != State::Ready || src.desired == crate::lifecycle::Desired::Gone {
        return Err(Error::Conflict(format!(
            "environment `{}` is {}{}; only a ready env can be cloned",
            src.name,
            src.state.as_str(),
            if src.desired == crate::lifecycle::Desired::Gone {
                " and being removed"
            } else {
                ""
            }
        )));
    }
    let ttl = match &req.ttl {
        Some(s) => parse_ttl("ttl", s, limits)?,
        None => limits.default_ttl,
    };
    if let Some(name) = &req.name {
        crate::spec::check_name("request", "name", name)?;
    }
    let id = uuid::Uuid::now_v7().to_string();
    let name = req.name.clone().unwrap_or_else(|| {
        let base: String = src.name.chars().take(31).collect();
        format!("{}-{}", base.trim_end_matches('-'), short_id(&id))
    });
    // The source's template text is kept with the env, so a clone is what the source
    // was even if the catalog moved on; its host directories must still be there.
    let facts = Facts {
        env_id: id.clone(),
        env_name: name.clone(),
        node_ip: "0.0.0.0".into(),
    };
    let mut plan = Plan::render(&src.template, &src.template_src, &src.answers, &facts)?;
    let uploads = store.uploads(&src.id).await?;
    crate::spec::uploads::apply(&mut plan, &crate::spec::uploads::decode(&uploads));
    crate::spec::dirs::check_sources(&plan, &limits.dirs_roots)?;
    let owner = req.owner.clone().unwrap_or_else(|| src.owner.clone());
    let _admitted = match admission {
        Some(a) => {
            let guard = a.lock().await;
            a.quotas.admit(store, &owner, &plan, None).await?;
            Some(guard)
        }
        None => None,
    };
    let new = NewEnv {
        id,
        name,
        key: None,
        owner,
        template: src.template.clone(),
        template_src: src.template_src.clone(),
        answers: src.answers.clone(),
        labels: src.labels.clone(),
        keep_on_failure: false,
        expires_at: now_ms().saturating_add(super::millis(ttl)),
        init: src.init.clone(),
        clone_of: Some(src.id.clone()),
        with_data: req.with_data,
    };
    match store.create_env(new).await? {
        Created::New(env) | Created::Existing(env) => {
            // The uploaded directories go with it.
            for (pod, data) in &uploads {
                store.put_upload(&env.id, pod, data).await?;
            }
            let what = if req.with_data {
                "with its data"
            } else {
                "without data"
            };
            store
                .event(
                    &env.id,
                    crate::lifecycle::EventKind::Clone,
                    &format!("clone of {} ({}) {what}", src.name, src.id),
                    None,
                )
                .await?;
            Ok(env)
        }
    }
}
