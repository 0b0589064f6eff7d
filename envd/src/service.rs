//! What the API, CLI and jobs ask of envd, as plain functions over the store: they write
//! desired state and read recorded state; only the engine acts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::quota::Admission;
use crate::spec::{Facts, Plan};
use crate::store::{Created, Env, NewEnv, Store, now_ms, short_id};

mod clone;
pub use clone::{CloneRequest, clone, clone_admitted};

/// A template's render at create; its fuel ends it well before.
const RENDER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Limits {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    /// Host directories `dirs:` sources may come from (`--dirs-root`); none by default.
    pub dirs_roots: Vec<std::path::PathBuf>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            default_ttl: Duration::from_secs(2 * 3600),
            max_ttl: Duration::from_secs(7 * 24 * 3600),
            dirs_roots: vec![],
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// `name` or `name:version` of a catalog template.
    #[schema(min_length = 1, example = "minimal")]
    pub template: String,
    /// Strings; numbers and bools are read as their text.
    #[serde(default, deserialize_with = "crate::spec::questions::scalar_map")]
    pub answers: BTreeMap<String, String>,
    #[serde(default)]
    pub name: Option<String>,
    /// CI key, e.g. the branch: a live env with this key is returned instead of a new one.
    #[serde(default)]
    pub key: Option<String>,
    /// e.g. `2h`, `30m`.
    #[serde(default)]
    pub ttl: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The env's owner is the token's: leave it out, or repeat the token's owner.
    #[serde(default)]
    pub owner: Option<String>,
    /// With a key: tear down the live env holding it and make a new one.
    #[serde(default)]
    pub recreate: bool,
    /// Keep a failed env's node for debugging instead of freeing it.
    #[serde(default)]
    pub keep_on_failure: bool,
    /// Init data by pod: files the database image applies at its first start
    /// (`*.sql` mysql, `*.json` mongo, `*.redis` redis); at most 8 MiB in all.
    #[serde(default)]
    pub init: crate::spec::init::Init,
    /// Directories by pod, copied into the pod's `dirs:` paths instead of host
    /// directories: base64 of a gzip'd tar of the directory's contents; at most 4 MiB
    /// compressed in all (`envd create --dir POD=DIR` makes them).
    #[serde(default)]
    pub dirs: BTreeMap<String, String>,
    /// Images by `pod` or `pod/container`, over the template's: any reference, pulled
    /// through envd's registry cache or uploaded with `envd images push`.
    #[serde(default)]
    pub images: BTreeMap<String, String>,
}

/// A duration in ms for timestamps, saturating (a configured maximum may be huge).
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub fn parse_ttl(field: &str, s: &str, limits: &Limits) -> Result<Duration> {
    let d = humantime::parse_duration(s).map_err(|e| {
        Error::invalid(
            "request",
            field,
            format!("`{s}` is not a duration ({e}); write e.g. 30m or 2h"),
        )
    })?;
    if d.is_zero() {
        return Err(Error::invalid("request", field, "a TTL must be positive"));
    }
    if d > limits.max_ttl {
        return Err(Error::invalid(
            "request",
            field,
            format!(
                "{s} is longer than the maximum TTL {}; ask for less",
                humantime::format_duration(limits.max_ttl)
            ),
        ));
    }
    Ok(d)
}

/// Validates everything, then records the env as `requested`. Nothing is touched on the
/// host here; the caller kicks the engine.
pub async fn create(
    store: &Store,
    catalog: &Catalog,
    limits: &Limits,
    req: CreateRequest,
) -> Result<Created> {
    create_admitted(store, catalog, limits, req, None).await
}

/// [`create`] within the owner's quotas (when given): a new env that would cross one is
/// refused before anything is recorded; a live env already holding the key is returned.
pub async fn create_admitted(
    store: &Store,
    catalog: &Catalog,
    limits: &Limits,
    req: CreateRequest,
    admission: Option<&Admission>,
) -> Result<Created> {
    let tpl = catalog.get(&req.template)?;
    let ttl = match &req.ttl {
        Some(s) => parse_ttl("ttl", s, limits)?,
        None => limits.default_ttl,
    };
    if let Some(name) = &req.name {
        crate::spec::check_name("request", "name", name)?;
    }
    if let Some(key) = &req.key
        && (key.is_empty() || key.len() > 200 || key.chars().any(|c| c.is_control()))
    {
        return Err(Error::invalid(
            "request",
            "key",
            "a key is 1-200 printable characters, e.g. the branch name",
        ));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let name = req
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", tpl.name, short_id(&id)));
    // Validate the answers against the template now, with a placeholder IP.
    let facts = Facts {
        env_id: id.clone(),
        env_name: name.clone(),
        node_ip: "0.0.0.0".into(),
    };
    // Every bad answer at once, before anything is stored; generated passwords are made
    // here, once, and stored with the answers so each later render sees the same ones.
    // On a blocking thread and bounded in time (rendering is bounded by fuel as well).
    let mut given = req.answers.clone();
    given.extend(
        req.images
            .iter()
            .map(|(t, r)| (crate::spec::images::key(t), r.clone())),
    );
    let (origin, text) = (tpl.origin.clone(), tpl.text.clone());
    let render = tokio::task::spawn_blocking(move || {
        crate::spec::answers::complete(&origin, &text, &given).and_then(|answers| {
            let plan = Plan::render(&origin, &text, &answers, &facts)?;
            Ok((answers, plan))
        })
    });
    let (answers, plan) = tokio::time::timeout(RENDER_TIMEOUT, render)
        .await
        .map_err(|_| {
            Error::invalid(
                &tpl.origin,
                "(template)",
                "rendering took longer than 10 s; simplify the template",
            )
        })?
        .map_err(|e| Error::step("render", e.to_string()))?
        .map_err(answers_error)?;
    crate::spec::init::validate(&req.init, &plan)?;
    let mut plan = plan;
    let uploads = crate::spec::uploads::validate(&req.dirs, &plan)?;
    crate::spec::uploads::apply(&mut plan, &uploads);
    crate::spec::dirs::check_sources(&plan, &limits.dirs_roots)?;
    let owner = req.owner.clone().unwrap_or_else(|| "anonymous".into());
    let live = match &req.key {
        Some(key) => store.live_by_key(&owner, key).await?,
        None => None,
    };
    let _admitted = match admission {
        Some(a) => {
            let guard = a.lock().await;
            if let Some(env) = &live
                && !req.recreate
            {
                return Ok(Created::Existing(env.clone()));
            }
            let replacing = live.as_ref().map(|e| e.id.as_str());
            a.quotas.admit(store, &owner, &plan, replacing).await?;
            Some(guard)
        }
        None => None,
    };
    if req.recreate
        && let Some(old) = live
    {
        store.request_teardown(&old.id).await?;
        store.release_key(&old.id).await?;
    }
    let expires_at = now_ms().saturating_add(millis(ttl));
    let cold =
        match crate::pool::take(store, catalog, &tpl, &req, &name, &owner, expires_at).await? {
            crate::pool::Outcome::Taken(created) => return Ok(*created),
            crate::pool::Outcome::Cold(why) => why,
        };
    let new = NewEnv {
        id,
        name,
        key: req.key.clone(),
        owner,
        template: format!("{}:{}", tpl.name, tpl.version),
        template_src: tpl.text.clone(),
        answers,
        labels: req.labels.clone(),
        keep_on_failure: req.keep_on_failure,
        expires_at,
        init: req.init.clone(),
        clone_of: None,
        with_data: false,
    };
    // A spare node, if one waits, saves the node and its engine; else a new one.
    let created = match crate::pool::nodes::take(store, &new, &cold).await? {
        Some(created) => created,
        None => {
            let created = store.create_env(new).await?;
            if let Created::New(env) = &created {
                crate::pool::record_cold(store, &env.id, &cold).await?;
            }
            created
        }
    };
    if let Created::New(env) = &created {
        for (pod, data) in &req.dirs {
            store.put_upload(&env.id, pod, data).await?;
        }
    }
    Ok(created)
}

/// Errors of the answers, worded as the request's (they are its fields), naming the template.
pub fn answers_error(e: Error) -> Error {
    match e {
        Error::Invalid {
            source_name,
            field,
            reason,
        } if field.starts_with("answers.") => Error::Invalid {
            source_name: "request".into(),
            field,
            reason: format!("{reason} (template {source_name})"),
        },
        Error::InvalidFields {
            source_name,
            fields,
        } => Error::InvalidFields {
            source_name: format!("request (template {source_name})"),
            fields,
        },
        other => other,
    }
}

/// Pushes the expiry to now + ttl, within the maximum lifetime from creation.
pub async fn extend(store: &Store, limits: &Limits, id: &str, ttl: &str) -> Result<Env> {
    let env = store.get(id).await?;
    if env.state.is_final() || env.desired == crate::lifecycle::Desired::Gone {
        return Err(Error::Conflict(format!(
            "environment `{}` is {}; only a live env can be extended",
            env.name,
            env.state.as_str()
        )));
    }
    let d = parse_ttl("ttl", ttl, limits)?;
    let max = env.created_at.saturating_add(millis(limits.max_ttl));
    let want = now_ms().saturating_add(millis(d));
    if want > max {
        return Err(Error::invalid(
            "request",
            "ttl",
            format!(
                "that would outlive the maximum lifetime {} of an env; ask for less",
                humantime::format_duration(limits.max_ttl)
            ),
        ));
    }
    store.set_expires_at(&env.id, want).await?;
    store
        .event(
            &env.id,
            crate::lifecycle::EventKind::Extend,
            &format!("expires in {ttl}"),
            None,
        )
        .await?;
    store.get(&env.id).await
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub url: String,
}

/// The env's endpoints, keyed by pod, once it has an IP.
pub fn endpoints(env: &Env) -> BTreeMap<String, Endpoint> {
    let Some(ip) = &env.node_ip else {
        return BTreeMap::new();
    };
    let facts = Facts {
        env_id: env.id.clone(),
        env_name: env.name.clone(),
        node_ip: ip.clone(),
    };
    let Ok(plan) = Plan::render(&env.template, &env.template_src, &env.answers, &facts) else {
        return BTreeMap::new();
    };
    plan.pods
        .iter()
        .filter_map(|p| {
            p.endpoint.as_ref().map(|e| {
                (
                    p.name.clone(),
                    Endpoint {
                        host: ip.clone(),
                        port: e.port,
                        url: e.url.clone(),
                    },
                )
            })
        })
        .collect()
}

/// What a view of an env renders: its endpoints while live, its answers with passwords
/// masked.
pub type ViewParts = (BTreeMap<String, Endpoint>, BTreeMap<String, String>);

/// The rendered parts of live envs' views, by env id, each kept with the exact inputs it
/// was rendered from: a listing renders each env's template once, not at every request,
/// and a part is only ever shown for the env and the inputs it was made of. A finished
/// env's entry goes (its view has no endpoints and is rarely asked for).
#[derive(Default)]
pub struct Views {
    seen: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Rendered>>>,
}

/// One env's parts and what they were rendered from (the template source of an env id
/// never changes, but it is compared all the same: a few KB, cheaper than a render).
struct Rendered {
    name: String,
    template: String,
    template_src: String,
    answers: BTreeMap<String, String>,
    node_ip: Option<String>,
    parts: ViewParts,
}

impl Rendered {
    fn made_of(&self, env: &Env) -> bool {
        self.name == env.name
            && self.node_ip == env.node_ip
            && self.template == env.template
            && self.answers == env.answers
            && self.template_src == env.template_src
    }
}

impl Views {
    /// Enough for every live env of a busy host; past it, the cache starts over.
    const MAX: usize = 4096;

    /// The env's view parts, rendered once per change of what they are made of.
    pub fn parts(&self, env: &Env) -> ViewParts {
        if env.state.is_final() {
            self.forget(&env.id);
            return view_parts(env);
        }
        let hit = self.lock().get(&env.id).cloned();
        if let Some(r) = hit.filter(|r| r.made_of(env)) {
            return r.parts.clone();
        }
        let rendered = Rendered {
            name: env.name.clone(),
            template: env.template.clone(),
            template_src: env.template_src.clone(),
            answers: env.answers.clone(),
            node_ip: env.node_ip.clone(),
            parts: view_parts(env),
        };
        let parts = rendered.parts.clone();
        let mut seen = self.lock();
        if seen.len() >= Self::MAX && !seen.contains_key(&env.id) {
            seen.clear();
        }
        seen.insert(env.id.clone(), std::sync::Arc::new(rendered));
        parts
    }

    /// Drops what was rendered for env `id` (it is gone).
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, std::sync::Arc<Rendered>>>
    {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Renders an env's view parts (see [`Views::parts`] for the cached way).
pub fn view_parts(env: &Env) -> ViewParts {
    // A finished env has no endpoints any more.
    let endpoints = if env.state.is_final() {
        BTreeMap::new()
    } else {
        endpoints(env)
    };
    let shown = crate::spec::answers::shown_of(&env.template, &env.template_src, &env.answers);
    (endpoints, shown)
}
