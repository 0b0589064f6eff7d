//! Per-owner quotas: live envs, their CPU and memory, and creates per minute. A create or
//! clone that would cross one is refused (429) before anything is recorded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::spec::{Facts, Plan};
use crate::store::{Env, Store, now_ms};

/// The limits of one owner.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Quota {
    /// Live envs (not being torn down).
    pub max_envs: u32,
    /// Cores of the live envs' containers.
    pub max_cpus: f64,
    /// Bytes of memory of the live envs' containers.
    pub max_memory: i64,
    /// Creates and clones in any 60 s.
    pub creates_per_minute: u32,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            max_envs: 20,
            max_cpus: 32.0,
            max_memory: 64 << 30,
            creates_per_minute: 30,
        }
    }
}

/// A quota as the config file writes it: every key optional, over the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaFile {
    pub max_envs: Option<u32>,
    pub max_cpus: Option<f64>,
    /// e.g. `64g`.
    pub max_memory: Option<String>,
    pub creates_per_minute: Option<u32>,
}

impl QuotaFile {
    /// This file's keys over `base`; `field` names the table in messages.
    pub fn over(&self, field: &str, base: Quota) -> Result<Quota> {
        let max_memory = match &self.max_memory {
            Some(m) => crate::spec::parse_memory(m)
                .map_err(|r| Error::invalid("config", format!("{field}.max_memory"), r))?,
            None => base.max_memory,
        };
        let q = Quota {
            max_envs: self.max_envs.unwrap_or(base.max_envs),
            max_cpus: self.max_cpus.unwrap_or(base.max_cpus),
            max_memory,
            creates_per_minute: self.creates_per_minute.unwrap_or(base.creates_per_minute),
        };
        if q.max_cpus.is_nan() || q.max_cpus <= 0.0 {
            return Err(Error::invalid(
                "config",
                format!("{field}.max_cpus"),
                "must be a positive number of cores",
            ));
        }
        Ok(q)
    }
}

/// Every owner's quota and how a container without limits is counted.
#[derive(Debug, Clone)]
pub struct Quotas {
    pub default: Quota,
    pub owners: BTreeMap<String, Quota>,
    /// Cores counted for a container whose template sets no `cpus` (serve's
    /// `default_cpus` when set).
    pub container_cpus: f64,
    /// Bytes counted for a container whose template sets no `memory`.
    pub container_memory: i64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            default: Quota::default(),
            owners: BTreeMap::new(),
            container_cpus: 0.5,
            container_memory: 512 << 20,
        }
    }
}

/// What an owner holds now.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub envs: u32,
    pub cpus: f64,
    pub memory: i64,
    /// Creates and clones in the last 60 s.
    pub creates_last_minute: u32,
}

/// `GET /v1/quota`: one owner's usage beside its limits.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QuotaView {
    pub owner: String,
    pub usage: Usage,
    pub limit: Quota,
}

impl Quotas {
    pub fn of(&self, owner: &str) -> Quota {
        self.owners.get(owner).copied().unwrap_or(self.default)
    }

    /// Cores and bytes of memory a plan's containers count.
    pub fn demand(&self, plan: &Plan) -> (f64, i64) {
        let mut cpus = 0.0;
        let mut memory = 0;
        for c in plan.pods.iter().flat_map(|p| &p.containers) {
            cpus += c.cpus.unwrap_or(self.container_cpus);
            memory += c
                .memory
                .as_deref()
                .and_then(|m| crate::spec::parse_memory(m).ok())
                .unwrap_or(self.container_memory);
        }
        (cpus, memory)
    }

    fn demand_of(&self, env: &Env) -> (f64, i64) {
        let facts = Facts {
            env_id: env.id.clone(),
            env_name: env.name.clone(),
            node_ip: env.node_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
        };
        match Plan::render(&env.template, &env.template_src, &env.answers, &facts) {
            Ok(plan) => self.demand(&plan),
            Err(_) => (0.0, 0),
        }
    }

    /// The owner's usage, leaving out the env `except` (one being replaced).
    pub async fn usage(&self, store: &Store, owner: &str, except: Option<&str>) -> Result<Usage> {
        let mut u = Usage::default();
        for env in store.live_of(owner).await? {
            if Some(env.id.as_str()) == except {
                continue;
            }
            let (c, m) = self.demand_of(&env);
            u.envs += 1;
            u.cpus += c;
            u.memory += m;
        }
        let n = store.created_since(owner, now_ms() - 60_000).await?;
        u.creates_last_minute = u32::try_from(n).unwrap_or(u32::MAX);
        Ok(u)
    }

    /// Refuses a new env of `plan` for `owner` that would cross a quota.
    pub async fn admit(
        &self,
        store: &Store,
        owner: &str,
        plan: &Plan,
        replacing: Option<&str>,
    ) -> Result<()> {
        let q = self.of(owner);
        let u = self.usage(store, owner, replacing).await?;
        let (cpus, memory) = self.demand(plan);
        let over = |quota: &str, usage: String, limit: String| Error::Quota {
            owner: owner.to_string(),
            quota: quota.to_string(),
            usage,
            limit,
        };
        if u.creates_last_minute >= q.creates_per_minute {
            return Err(over(
                "creates_per_minute",
                u.creates_last_minute.to_string(),
                q.creates_per_minute.to_string(),
            ));
        }
        if u.envs + 1 > q.max_envs {
            return Err(over("max_envs", u.envs.to_string(), q.max_envs.to_string()));
        }
        if u.cpus + cpus > q.max_cpus + 1e-9 {
            return Err(over(
                "max_cpus",
                format!("{} + {}", u.cpus, cpus),
                q.max_cpus.to_string(),
            ));
        }
        if u.memory + memory > q.max_memory {
            return Err(over(
                "max_memory",
                format!("{} + {}", mib(u.memory), mib(memory)),
                mib(q.max_memory),
            ));
        }
        Ok(())
    }
}

fn mib(bytes: i64) -> String {
    format!("{}m", bytes >> 20)
}

/// The quotas with the lock that makes check-then-record one step within this envd.
#[derive(Debug, Default)]
pub struct Admission {
    pub quotas: Quotas,
    lock: tokio::sync::Mutex<()>,
}

impl Admission {
    pub fn new(quotas: Quotas) -> Self {
        Admission {
            quotas,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Held from the check until the env is recorded, so two creates at once cannot both
    /// take the last unit of a quota.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }
}

/// The `[quota]` table of the config file: the default quota, how a container without
/// limits counts, and `[quota.owners.<owner>]` overrides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaTable {
    pub max_envs: Option<u32>,
    pub max_cpus: Option<f64>,
    pub max_memory: Option<String>,
    pub creates_per_minute: Option<u32>,
    /// Cores counted for a container without `cpus` when serve has no `default_cpus`.
    pub container_cpus: Option<f64>,
    /// Memory counted for a container without `memory` when serve has no `default_memory`.
    pub container_memory: Option<String>,
    #[serde(default)]
    pub owners: BTreeMap<String, QuotaFile>,
}

impl QuotaTable {
    /// The quotas, with serve's default limits (when set) counted for containers without.
    pub fn resolve(
        &self,
        default_cpus: Option<f64>,
        default_memory: Option<i64>,
    ) -> Result<Quotas> {
        let base = QuotaFile {
            max_envs: self.max_envs,
            max_cpus: self.max_cpus,
            max_memory: self.max_memory.clone(),
            creates_per_minute: self.creates_per_minute,
        }
        .over("quota", Quota::default())?;
        let mut owners = BTreeMap::new();
        for (owner, q) in &self.owners {
            owners.insert(
                owner.clone(),
                q.over(&format!("quota.owners.{owner}"), base)?,
            );
        }
        let fallback = Quotas::default();
        let container_memory = match (&self.container_memory, default_memory) {
            (_, Some(m)) => m,
            (Some(m), None) => crate::spec::parse_memory(m)
                .map_err(|r| Error::invalid("config", "quota.container_memory", r))?,
            (None, None) => fallback.container_memory,
        };
        Ok(Quotas {
            default: base,
            owners,
            container_cpus: default_cpus
                .or(self.container_cpus)
                .unwrap_or(fallback.container_cpus),
            container_memory,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Created, NewEnv};

    fn plan(text: &str) -> Plan {
        let facts = Facts {
            env_id: "e".into(),
            env_name: "e".into(),
            node_ip: "0.0.0.0".into(),
        };
        Plan::render("test", text, &Default::default(), &facts).unwrap()
    }

    const TWO: &str = "name: two\nversion: \"1\"\npods:\n  - name: a\n    containers:\n      - { name: a, image: x, cpus: 1.5, memory: 1g }\n      - { name: b, image: x }\n";

    #[test]
    fn a_container_without_limits_counts_the_configured_default() {
        let q = Quotas {
            container_cpus: 0.25,
            container_memory: 128 << 20,
            ..Default::default()
        };
        assert_eq!(q.demand(&plan(TWO)), (1.75, (1 << 30) + (128 << 20)));
    }

    #[tokio::test]
    async fn cpu_is_counted_over_the_owners_live_envs_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("q.db").display()))
            .await
            .unwrap();
        let q = Quotas {
            default: Quota {
                max_cpus: 4.0,
                ..Quota::default()
            },
            ..Default::default()
        };
        let two = plan(TWO);
        for owner in ["qa", "qa", "other", "other"] {
            q.admit(&store, owner, &two, None).await.unwrap();
            let id = uuid::Uuid::now_v7().to_string();
            let Created::New(_) = store
                .create_env(NewEnv {
                    name: format!("q-{}", crate::store::short_id(&id)),
                    id,
                    key: None,
                    owner: owner.into(),
                    template: "two:1".into(),
                    template_src: TWO.into(),
                    answers: Default::default(),
                    labels: Default::default(),
                    keep_on_failure: false,
                    expires_at: now_ms() + 60_000,
                    init: Default::default(),
                    clone_of: None,
                    with_data: false,
                })
                .await
                .unwrap()
            else {
                panic!("new")
            };
        }
        // 2 x 2 cores held: a third crosses 4, named with usage and limit.
        match q.admit(&store, "qa", &two, None).await {
            Err(Error::Quota {
                quota,
                usage,
                limit,
                owner,
            }) => {
                assert_eq!((quota.as_str(), owner.as_str()), ("max_cpus", "qa"));
                assert_eq!((usage.as_str(), limit.as_str()), ("4 + 2", "4"));
            }
            other => panic!("{other:?}"),
        }
        let u = q.usage(&store, "qa", None).await.unwrap();
        assert_eq!((u.envs, u.cpus, u.creates_last_minute), (2, 4.0, 2));
    }
}
