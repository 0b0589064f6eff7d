//! Warm pools: envs of one template + answers built ahead and kept ready (`pooled`), so a
//! matching create takes one instead of waiting for a build. Settings come from the config
//! file and `envd pool set`; the refill keeps each pool at its size in the background, one
//! build at a time, never while users' creates are being built cold, within a budget.
//!
//! "claim" names the engine's per-env ownership (store/claims.rs); taking a pooled env is
//! a *take* here, recorded as a `claimed` event.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::{Catalog, TemplateSource};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::lifecycle::{EventKind, State};
use crate::quota::Quotas;
use crate::service::{CreateRequest, Limits, millis};
use crate::spec::{Facts, Plan};
use crate::store::{Created, NewEnv, PoolRow, Store, Take, TakeChange, now_ms, short_id};

mod applied;
pub mod nodes;
pub use applied::{Applied, answers_after, applicable};

/// The owner of envs waiting in a pool: no user's, so no user sees or pays for them.
pub const POOL_OWNER: &str = "envd-pool";

/// Failed builds of a pool within a minute after which it stops building for a while.
const FAILURES_BEFORE_PAUSE: i64 = 3;

/// The most envs one pool keeps.
pub const MAX_SIZE: u32 = 50;

/// A pool as the config file and `PUT /v1/pools/{name}` give it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// The pool's name; default: the template as given.
    #[serde(default)]
    pub name: Option<String>,
    /// `name` or `name:version` of a catalog template.
    #[schema(example = "full")]
    pub template: String,
    /// Answers; the template's defaults for the rest (passwords it generates are made
    /// per env, and match any create that gives none).
    #[serde(default, deserialize_with = "crate::spec::questions::scalar_map")]
    pub answers: BTreeMap<String, String>,
    /// Envs kept ready; 0 drains the pool.
    #[serde(default)]
    pub min: u32,
    /// At most this many (default: `min`); more are torn down.
    #[serde(default)]
    pub max: Option<u32>,
}

/// Where the refill may build: how much of the host pooled envs may hold in all.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    /// Cores of every pooled env's containers together (none: no bound).
    pub cpus: Option<f64>,
    /// Bytes of memory of every pooled env's containers together.
    pub memory: Option<i64>,
}

/// `GET /v1/pools`: a pool's settings and where it is.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PoolView {
    pub name: String,
    pub template: String,
    /// The template version and answers hash a create must match.
    pub key: Option<String>,
    pub answers: BTreeMap<String, String>,
    pub min: u32,
    pub max: u32,
    /// Envs waiting, ready to take.
    pub ready: u32,
    /// Envs being built for it.
    pub creating: u32,
    pub claims: i64,
    pub misses: i64,
    /// claims / (claims + misses), when there was any.
    pub hit_rate: Option<f64>,
    /// Why the pool cannot be keyed now (e.g. its template went away).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The key a create must match to take from a pool: the template's name and version and
/// a hash of the resolved answers (generated passwords left out), and whether the
/// template renders the env's name (then a renamed pooled env would differ: no take).
pub struct Keyed {
    pub key: String,
    pub uses_env_name: bool,
}

pub fn key_of(tpl: &TemplateSource, given: &BTreeMap<String, String>) -> Result<Keyed> {
    let values = key_values(tpl, given)?;
    let text = serde_json::to_string(&values).unwrap_or_default();
    let hash = format!("{:x}", Sha256::digest(text.as_bytes()));
    Ok(Keyed {
        key: format!("{}:{}#{}", tpl.name, tpl.version, &hash[..16]),
        uses_env_name: tpl.text.contains("env_name"),
    })
}

/// The resolved answers a key is made of: every question's value, generated passwords
/// blank (each env has its own).
fn key_values(
    tpl: &TemplateSource,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    let questions = crate::spec::questions::from_text(&tpl.origin, &tpl.text)?;
    let resolved = crate::spec::answers::resolve(&tpl.origin, &questions, given)
        .map_err(crate::service::answers_error)?;
    let mut values = resolved.values;
    for name in resolved.generated.keys() {
        values.insert(name.clone(), String::new());
    }
    Ok(values)
}

/// Validates a pool and stores it (over one of the same name).
pub async fn set(store: &Store, catalog: &Catalog, spec: PoolSpec) -> Result<PoolRow> {
    let name = spec.name.clone().unwrap_or_else(|| spec.template.clone());
    crate::spec::check_name("request", "name", &name.replace(':', "-"))?;
    let max = spec.max.unwrap_or(spec.min);
    if spec.min > max || max > MAX_SIZE {
        return Err(Error::invalid(
            "request",
            "max",
            format!(
                "a pool keeps min <= max <= {MAX_SIZE} envs (got min {}, max {max})",
                spec.min
            ),
        ));
    }
    let tpl = nodes::template_of(catalog, &spec.template)?;
    let keyed = key_of(&tpl, &spec.answers)?;
    for other in store.pools().await? {
        if other.name != name
            && let Ok(t) = nodes::template_of(catalog, &other.template)
            && key_of(&t, &other.answers).is_ok_and(|k| k.key == keyed.key)
        {
            return Err(Error::Conflict(format!(
                "pool `{}` already keeps this template with these answers; set that one",
                other.name
            )));
        }
    }
    let row = PoolRow {
        name,
        template: spec.template,
        answers: spec.answers,
        min: spec.min,
        max,
        claims: 0,
        misses: 0,
        updated_at: now_ms(),
    };
    store.upsert_pool(&row).await?;
    Ok(row)
}

/// Every pool with its counts.
pub async fn views(store: &Store, catalog: &Catalog) -> Result<Vec<PoolView>> {
    let members = store.pool_members().await?;
    let mut out = vec![];
    for p in store.pools().await? {
        let tpl = nodes::template_of(catalog, &p.template);
        // Passwords are never shown; without the template, no answer is.
        let shown = match &tpl {
            Ok(t) => crate::spec::answers::shown_of(&t.origin, &t.text, &p.answers),
            Err(_) => p
                .answers
                .keys()
                .map(|k| (k.clone(), crate::spec::questions::MASK.to_string()))
                .collect(),
        };
        let keyed = tpl.and_then(|t| key_of(&t, &p.answers));
        let (key, problem) = match keyed {
            Ok(k) => (Some(k.key), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let count = |pooled: bool| {
            members
                .iter()
                .filter(|m| Some(&m.key) == key.as_ref() && (m.state == State::Pooled) == pooled)
                .count() as u32
        };
        let asked = p.claims + p.misses;
        out.push(PoolView {
            ready: count(true),
            creating: count(false),
            hit_rate: (asked > 0).then(|| p.claims as f64 / asked as f64),
            name: p.name,
            template: p.template,
            key,
            answers: shown,
            min: p.min,
            max: p.max,
            claims: p.claims,
            misses: p.misses,
            problem,
        })
    }
    Ok(out)
}

/// Why a create was built cold.
fn cold_reason(req: &CreateRequest) -> Option<&'static str> {
    if !req.init.is_empty() {
        Some("init-data")
    } else if !req.dirs.is_empty() {
        Some("dirs")
    } else if !req.images.is_empty() {
        Some("images")
    } else {
        None
    }
}

/// What became of a create's look into the pools.
pub enum Outcome {
    Taken(Box<Created>),
    /// Built cold: why (recorded as its `cold` event).
    Cold(String),
}

/// The pool a create takes from, its key, and what the take applies.
struct Picked<'a> {
    pool: &'a PoolRow,
    key: String,
    applied: Option<Applied>,
}

/// The pool a create may take from: one of the same key, else one whose answers differ
/// only in what the pods' `on_change` applies (then with that change); or why none.
fn pick<'a>(
    catalog: &Catalog,
    tpl: &TemplateSource,
    req: &CreateRequest,
    mine: &[&'a PoolRow],
) -> Result<std::result::Result<Picked<'a>, &'static str>> {
    let keyed = key_of(tpl, &req.answers)?;
    let mut reason = "answers";
    let mut near = None;
    for p in mine {
        let Ok(t) = catalog.get(&p.template) else {
            continue;
        };
        let Ok(k) = key_of(&t, &p.answers) else {
            continue;
        };
        if k.key == keyed.key {
            return Ok(Ok(Picked {
                pool: p,
                key: k.key,
                applied: None,
            }));
        }
        if t.version != tpl.version {
            reason = "version";
        } else if near.is_none()
            && let Ok(Some(a)) = applied::applicable(&t, &p.answers, &req.answers)
        {
            near = Some(Picked {
                pool: p,
                key: k.key,
                applied: Some(a),
            });
        }
    }
    Ok(near.ok_or(reason))
}

/// Takes a pooled env for the create if a pool matches its template version and answers
/// (or differs only in answers the pods' `on_change` applies: they are applied before
/// the handover); else says why not (and counts the miss against the pool of its
/// template, if any).
pub async fn take(
    store: &Store,
    catalog: &Catalog,
    tpl: &TemplateSource,
    req: &CreateRequest,
    name: &str,
    owner: &str,
    expires_at: i64,
) -> Result<Outcome> {
    let pools = store.pools().await?;
    let mine: Vec<&PoolRow> = pools
        .iter()
        .filter(|p| p.template.split(':').next() == Some(tpl.name.as_str()))
        .collect();
    if mine.is_empty() {
        return Ok(Outcome::Cold(format!("no warm pool of {}", tpl.name)));
    }
    let Picked { pool, key, applied } = match pick(catalog, tpl, req, &mine)? {
        Ok(picked) => picked,
        Err(reason) => {
            store.count_miss(&mine[0].name, reason).await?;
            return Ok(Outcome::Cold(format!(
                "no warm pool of {} with these {reason}",
                tpl.name
            )));
        }
    };
    let why = if tpl.text.contains("env_name") {
        Some("env-name")
    } else {
        cold_reason(req)
    };
    if let Some(why) = why {
        store.count_miss(&pool.name, why).await?;
        return Ok(Outcome::Cold(format!(
            "warm pool {} not used: {why}",
            pool.name
        )));
    }
    let change = applied.as_ref().map(|a| TakeChange {
        given: &a.given,
        pool_given: &a.pool_given,
        changed: &a.changed,
        pods: &a.pods,
    });
    let t = Take {
        pool: &pool.name,
        key: &key,
        name,
        env_key: req.key.as_deref(),
        owner,
        labels: &req.labels,
        expires_at,
        keep_on_failure: req.keep_on_failure,
        change,
    };
    match store.take_pooled(&t).await? {
        Some(created) => Ok(Outcome::Taken(Box::new(created))),
        None => {
            store.count_miss(&pool.name, "empty").await?;
            Ok(Outcome::Cold(format!("warm pool {} was empty", pool.name)))
        }
    }
}

/// Records one env for the pool (`requested`; the caller kicks it), unless the pool is
/// full or a pool env is being built by now (another instance's refill): then none.
async fn build_one(
    store: &Store,
    tpl: &TemplateSource,
    pool: &PoolRow,
    key: &str,
    limits: &Limits,
) -> Result<Option<String>> {
    let id = uuid::Uuid::now_v7().to_string();
    let name = format!("pool-{}-{}", tpl.name, short_id(&id));
    let answers = crate::spec::answers::complete(&tpl.origin, &tpl.text, &pool.answers)?;
    let facts = Facts {
        env_id: id.clone(),
        env_name: name.clone(),
        node_ip: "0.0.0.0".into(),
    };
    if tpl.name != nodes::NODE {
        Plan::render(&tpl.origin, &tpl.text, &answers, &facts)?;
    }
    let new = NewEnv {
        id,
        name,
        key: None,
        owner: POOL_OWNER.into(),
        template: format!("{}:{}", tpl.name, tpl.version),
        template_src: tpl.text.clone(),
        answers,
        labels: BTreeMap::from([("envd.pool".to_string(), pool.name.clone())]),
        keep_on_failure: false,
        // A pooled env is rebuilt at least this often.
        expires_at: now_ms().saturating_add(millis(limits.max_ttl)),
        init: Default::default(),
        clone_of: None,
        with_data: false,
    };
    let made = store
        .create_pool_env(&new, &pool.name, key, pool.min)
        .await?;
    Ok(made.then_some(new.id))
}

/// The refill: what it needs and how often it looks.
#[derive(Clone)]
pub struct Refill {
    pub engine: Arc<Engine>,
    pub catalog: Catalog,
    pub limits: Limits,
    pub quotas: Quotas,
    pub budget: Budget,
    pub tick: Duration,
    /// How often every pooled env's pods are probed.
    pub health_every: Duration,
}

impl Refill {
    /// Runs forever: keeps each pool at its size, probes pooled envs now and then.
    pub async fn run(self) {
        let mut last_health = Instant::now();
        loop {
            if let Err(e) = self.once().await {
                tracing::warn!("warm pool refill: {e}");
            }
            if last_health.elapsed() >= self.health_every {
                last_health = Instant::now();
                self.health().await;
            }
            tokio::time::sleep(self.tick).await;
        }
    }

    /// One look: drain what is over size or no longer wanted, then start at most one
    /// build (none while another pool build or a user's cold create runs).
    pub async fn once(&self) -> Result<()> {
        let store = &self.engine.store;
        let members = store.pool_members().await?;
        let mut wanted: Vec<(PoolRow, TemplateSource, String)> = vec![];
        for p in store.pools().await? {
            if let Ok(t) = nodes::template_of(&self.catalog, &p.template)
                && let Ok(k) = key_of(&t, &p.answers)
            {
                wanted.push((p, t, k.key));
            }
        }
        let keys: HashSet<&str> = wanted.iter().map(|(_, _, k)| k.as_str()).collect();
        // Pools removed, changed or sized down: their extra envs go, unbuilt ones first.
        let mut drained = vec![];
        for m in &members {
            if !keys.contains(m.key.as_str()) {
                drained.push(m.id.clone());
            }
        }
        for (p, _, key) in &wanted {
            let mut mine: Vec<_> = members.iter().filter(|m| &m.key == key).collect();
            mine.sort_by_key(|m| m.state == State::Pooled);
            let over = mine.len().saturating_sub(p.max as usize);
            drained.extend(mine.iter().take(over).map(|m| m.id.clone()));
        }
        for id in drained {
            if store.drain_pooled(&id).await? {
                tracing::info!(env = %id, "warm pool: draining");
                self.engine.kick(&id);
            }
        }
        let building = members.iter().any(|m| m.state != State::Pooled);
        if building || store.cold_creating().await? > 0 {
            return Ok(());
        }
        for (p, t, key) in &wanted {
            let have = members.iter().filter(|m| &m.key == key).count();
            if have >= p.min as usize {
                continue;
            }
            // Builds that keep failing (an image missing, a check never passing) are not
            // retried at once: the pool waits a minute after the third.
            let minute_ago = now_ms() - 60_000;
            if store.pool_failures_since(key, minute_ago).await? >= FAILURES_BEFORE_PAUSE {
                tracing::debug!(pool = %p.name, "warm pool: builds keep failing, waiting");
                continue;
            }
            if !self.within_budget(&members, t, p).await? {
                tracing::debug!(pool = %p.name, "warm pool: over its budget, not refilling");
                continue;
            }
            if let Some(id) = build_one(store, t, p, key, &self.limits).await? {
                tracing::info!(pool = %p.name, env = %id, "warm pool: building one");
                self.engine.kick(&id);
            }
            return Ok(());
        }
        Ok(())
    }

    /// Whether one more env of `p` keeps every pooled env within the budget.
    async fn within_budget(
        &self,
        members: &[crate::store::PoolMember],
        t: &TemplateSource,
        p: &PoolRow,
    ) -> Result<bool> {
        if self.budget.cpus.is_none() && self.budget.memory.is_none() {
            return Ok(true);
        }
        let demand = |env_id: &str, name: &str, answers: &BTreeMap<String, String>, src: &str| {
            let facts = Facts {
                env_id: env_id.into(),
                env_name: name.into(),
                node_ip: "0.0.0.0".into(),
            };
            Plan::render(&t.origin, src, answers, &facts)
                .map(|plan| self.quotas.demand(&plan))
                .unwrap_or((0.0, 0))
        };
        let (mut cpus, mut memory) = demand("x", "x", &p.answers, &t.text);
        for m in members {
            let env = self.engine.store.get(&m.id).await?;
            let (c, b) = demand(&env.id, &env.name, &env.answers, &env.template_src);
            cpus += c;
            memory += b;
        }
        Ok(self.budget.cpus.is_none_or(|max| cpus <= max)
            && self.budget.memory.is_none_or(|max| memory <= max))
    }

    /// Probes every pooled env; one that fails is torn down (the refill replaces it).
    pub async fn health(&self) {
        let Ok(members) = self.engine.store.pool_members().await else {
            return;
        };
        for m in members.iter().filter(|m| m.state == State::Pooled) {
            match self.engine.check_pooled(&m.id).await {
                Ok(true) => {}
                Ok(false) => tracing::info!(env = %m.id, "warm pool: unhealthy env discarded"),
                Err(e) => tracing::warn!(env = %m.id, "warm pool health check: {e}"),
            }
        }
    }
}

/// Records a create's `cold` event with why no pooled env was taken.
pub async fn record_cold(store: &Store, env_id: &str, why: &str) -> Result<()> {
    store.event(env_id, EventKind::Cold, why, None).await
}

/// The pools' part of `/metrics`: size, takes, misses by reason, refill durations.
pub async fn metrics(out: &mut String, store: &Store, catalog: &Catalog) -> Result<()> {
    use std::fmt::Write;
    let views = views(store, catalog).await?;
    let gauge = |out: &mut String, name: &str, help: &str, kind: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    // One series per pool for each of these, all read off the pool's view.
    type Series = (
        &'static str,
        &'static str,
        &'static str,
        fn(&PoolView) -> i64,
    );
    let per_pool: [Series; 4] = [
        (
            "envd_warm_pool_ready",
            "Envs waiting in a warm pool.",
            "gauge",
            |v| i64::from(v.ready),
        ),
        (
            "envd_warm_pool_creating",
            "Envs being built for a warm pool.",
            "gauge",
            |v| i64::from(v.creating),
        ),
        (
            "envd_warm_pool_min",
            "A warm pool's size to keep.",
            "gauge",
            |v| i64::from(v.min),
        ),
        (
            "envd_warm_pool_claims_total",
            "Creates that took a pooled env.",
            "counter",
            |v| v.claims,
        ),
    ];
    for (name, help, kind, value) in per_pool {
        gauge(out, name, help, kind);
        for v in &views {
            let _ = writeln!(out, "{name}{{pool=\"{}\"}} {}", v.name, value(v));
        }
    }
    gauge(
        out,
        "envd_warm_pool_misses_total",
        "Creates of a pooled template built cold, by reason.",
        "counter",
    );
    for (pool, reason, n) in store.pool_misses().await? {
        let _ = writeln!(
            out,
            "envd_warm_pool_misses_total{{pool=\"{pool}\",reason=\"{reason}\"}} {n}"
        );
    }
    let (sum, count) = store.refill_durations().await?;
    let name = "envd_warm_pool_refill_duration_seconds";
    gauge(out, name, "Building one env for a warm pool.", "summary");
    let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    Ok(())
}
