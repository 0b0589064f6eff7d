//! `envd templates import`: a docker-compose file becomes an envd template. Pure: text
//! in, template text and notes (what was mapped, changed or left out) out. The mapping
//! table is in docs/templates.md.

use std::collections::{BTreeMap, HashSet};

use docker_compose_types::Service;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::error::{Error, Result};
use crate::spec::{Facts, Plan, STUBS_POD};

mod collect;
mod images;
mod interpolate;
mod service;
#[cfg(test)]
mod tests;

pub use collect::{Collected, collect};
pub use images::ImageMap;
pub use interpolate::dotenv;

/// A file a bind mount of the compose file names, as the client read it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportFile {
    pub content: String,
    /// Unix mode; default 0644.
    #[serde(default)]
    pub mode: Option<u32>,
}

/// What to convert.
pub struct Input<'a> {
    pub name: &'a str,
    pub version: &'a str,
    /// The compose file's text, named `source` in errors.
    pub compose: &'a str,
    pub source: &'a str,
    /// Files by the path the compose file writes (`./nginx.conf`; a directory's files as
    /// `./init/01.sql`).
    pub files: &'a BTreeMap<String, ImportFile>,
    /// Values for `${VAR}` (the `.env` beside the compose file).
    pub vars: &'a BTreeMap<String, String>,
    pub images: &'a ImageMap,
}

#[derive(Debug)]
pub struct Output {
    pub template: String,
    pub notes: Vec<String>,
}

/// Top-level keys that need no note: they are mapped or mean nothing here.
const TOP_QUIET: &[&str] = &["version", "name", "services"];

pub fn convert(input: &Input) -> Result<Output> {
    let src = input.source;
    let mut doc: Value = serde_yaml::from_str(input.compose)
        .map_err(|e| Error::invalid(src, "(document)", e.to_string()))?;
    let mut unset = vec![];
    interpolate::interpolate_value(&mut doc, input.vars, &mut unset)
        .map_err(|e| Error::invalid(src, "(interpolation)", e))?;
    let mut notes: Vec<String> = vec![];
    unset.sort();
    unset.dedup();
    if !unset.is_empty() {
        notes.push(format!(
            "variables not set and without default, left empty: {} (put them in a .env beside the compose file)",
            unset.join(", ")
        ));
    }
    let Some(Value::Mapping(top)) = Some(&doc) else {
        return Err(Error::invalid(
            src,
            "(document)",
            "a compose file is a mapping with `services:`",
        ));
    };
    for (k, v) in top {
        let key = k.as_str().unwrap_or("?");
        if TOP_QUIET.contains(&key) || key.starts_with("x-") {
            continue;
        }
        let what = match key {
            "volumes" => "named volumes are not kept: every env starts empty",
            "networks" => "all pods share the env's one network",
            _ => "not mapped",
        };
        let names: Vec<&str> = v
            .as_mapping()
            .map(|m| m.keys().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        notes.push(format!("{key} {}: {what}", names.join(", ")));
    }
    let services = match top.get("services") {
        Some(Value::Mapping(m)) if !m.is_empty() => m,
        _ => {
            return Err(Error::invalid(
                src,
                "services",
                "the compose file declares no services",
            ));
        }
    };

    // Parse each service on its own so an error names it.
    let mut parsed: Vec<(String, Service, Value)> = vec![];
    for (k, v) in services {
        let name = k.as_str().unwrap_or("?").to_string();
        let mut raw = v.clone();
        normalize(&mut raw);
        let svc: Service = serde_path_to_error::deserialize(raw.clone()).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                format!("services.{name}")
            } else {
                format!("services.{name}.{path}")
            };
            Error::invalid(src, field, e.into_inner().to_string())
        })?;
        if !svc.profiles.is_empty() {
            notes.push(format!(
                "{name}: left out, it runs only with profile {}",
                svc.profiles.join(", ")
            ));
            continue;
        }
        parsed.push((name, svc, raw));
    }

    let pod_names = pod_names(parsed.iter().map(|(n, _, _)| n.as_str()), &mut notes);
    let mut ctx = service::Ctx {
        src,
        files: input.files,
        images: input.images,
        pod_names: &pod_names,
        taken_ports: parsed
            .iter()
            .flat_map(|(n, s, _)| {
                service::published(s)
                    .into_iter()
                    .map(move |(h, _)| (h, n.clone()))
            })
            .collect(),
        notes: &mut notes,
    };
    let mut pods = vec![];
    for (name, svc, raw) in &parsed {
        pods.push(service::pod(&mut ctx, name, svc, raw)?);
    }
    // `links: [db:database]`: the db pod answers to `database` too.
    for (_, svc, _) in &parsed {
        for link in &svc.links {
            if let Some((target, alias)) = link.split_once(':')
                && let Some(pod_name) = pod_names.get(target)
                && let Some(p) = pods.iter_mut().find(|p| &p.name == pod_name)
                && !p.aliases.iter().any(|a| a == alias)
            {
                p.aliases.push(alias.to_string());
            }
        }
    }
    service::dedupe_aliases(&mut pods, &mut notes);

    let plan = Plan {
        name: input.name.to_string(),
        version: input.version.to_string(),
        description: format!("Imported from {src}."),
        deadline: None,
        variables: vec![],
        pods,
        stubs: vec![],
    };
    let template = to_yaml(&plan, src, &notes)?;
    // What the import wrote must be a valid template: check it as a create would.
    let facts = Facts {
        env_id: "import".into(),
        env_name: "import".into(),
        node_ip: "10.213.0.2".into(),
    };
    Plan::render(src, &template, &BTreeMap::new(), &facts)?;
    Ok(Output { template, notes })
}

/// Pod names from service names: `[a-z0-9-]`, at most 40, unique, never `stubs`.
fn pod_names<'a>(
    services: impl Iterator<Item = &'a str>,
    notes: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let mut used = HashSet::new();
    let mut out = BTreeMap::new();
    for s in services {
        let mut base: String = s
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        base = base.trim_matches('-').chars().take(36).collect();
        if base.is_empty() || base == STUBS_POD {
            base = format!("svc-{base}").trim_end_matches('-').to_string();
        }
        let mut name = base.clone();
        let mut n = 2;
        while !used.insert(name.clone()) {
            name = format!("{base}-{n}");
            n += 1;
        }
        if name != s {
            notes.push(format!(
                "{s}: pod `{name}` (pod names are [a-z0-9-]); other pods still reach it as `{s}`"
            ));
        }
        out.insert(s.to_string(), name);
    }
    out
}

/// Numbers where the compose types want strings (`ports: [8080]`, `expose: [80]`).
fn normalize(svc: &mut Value) {
    let Value::Mapping(m) = svc else { return };
    for key in ["ports", "expose"] {
        if let Some(Value::Sequence(items)) = m.get_mut(key) {
            for it in items {
                if let Value::Number(n) = it {
                    *it = Value::String(n.to_string());
                }
            }
        }
    }
}

/// The plan as YAML without empty or default fields, headed by the import's notes.
fn to_yaml(plan: &Plan, src: &str, notes: &[String]) -> Result<String> {
    let mut v =
        serde_yaml::to_value(plan).map_err(|e| Error::invalid(src, "(template)", e.to_string()))?;
    prune(&mut v);
    let body =
        serde_yaml::to_string(&v).map_err(|e| Error::invalid(src, "(template)", e.to_string()))?;
    let mut head = format!("# Imported from {src} by `envd templates import`.\n");
    for n in notes {
        head.push_str(&format!("# - {}\n", n.replace('\n', " ")));
    }
    Ok(format!("{head}{body}"))
}

fn prune(v: &mut Value) {
    match v {
        Value::Mapping(m) => {
            for (_, item) in m.iter_mut() {
                prune(item);
            }
            m.retain(|k, item| {
                let empty = match item {
                    Value::Null => true,
                    Value::Sequence(s) => s.is_empty(),
                    Value::Mapping(m) => m.is_empty(),
                    _ => false,
                };
                let default_mode = k.as_str() == Some("mode") && item.as_u64() == Some(0o644);
                !(empty || default_mode)
            });
        }
        Value::Sequence(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}
