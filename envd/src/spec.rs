//! Templates and plans: a template (YAML) plus answers and the env's facts render into a
//! validated [`Plan`], before anything is stored or started. See docs/templates.md.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::error::{Error, Result};

pub mod answers;
pub mod dirs;
pub mod images;
pub mod init;
pub mod questions;
pub mod uploads;

pub use dirs::Dir;
mod change;
mod facts;
pub mod order;
pub use change::OnChange;
pub use questions::{Kind, Question};

/// What envd knows of an env when rendering its template.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    pub env_id: String,
    pub env_name: String,
    /// The node's fixed IP; a placeholder while validating before a lease exists.
    pub node_ip: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// How long creation may take before the env fails.
    #[serde(default, with = "humantime_serde")]
    pub deadline: Option<Duration>,
    /// The questions; `questions:` is read as the same list.
    #[serde(default, alias = "questions")]
    pub variables: Vec<Question>,
    pub pods: Vec<Pod>,
    /// Canned HTTP responses served by the env's stubs sidecar (stubs.yaml entries).
    #[serde(default)]
    pub stubs: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pod {
    pub name: String,
    pub containers: Vec<Container>,
    /// Ports published on the node's IP (same number inside and outside unless `targets`).
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Published port -> the containers' port it forwards to, where they differ.
    #[serde(default)]
    pub targets: BTreeMap<u16, u16>,
    /// Extra names other pods reach this pod by (e.g. a compose service's original name).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Pods to wait for before this one starts, with what to wait for.
    #[serde(default)]
    pub depends_on: BTreeMap<String, order::Condition>,
    #[serde(default)]
    pub ready: Option<Ready>,
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    /// How the pod takes a change of its rendered config (`envd config set`).
    #[serde(default)]
    pub on_change: OnChange,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Container {
    pub name: String,
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub files: Vec<File>,
    /// Host directories copied in before start, see [`dirs`].
    #[serde(default)]
    pub dirs: Vec<Dir>,
    #[serde(default)]
    pub cpus: Option<f64>,
    /// e.g. `512m`, `1g`.
    #[serde(default)]
    pub memory: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub path: String,
    pub content: String,
    #[serde(default = "default_mode")]
    pub mode: u32,
}

fn default_mode() -> u32 {
    0o644
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Mysql,
    Mongo,
    Redis,
    Http,
    Tcp,
    Exec,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    pub kind: CheckKind,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// HTTP path (default `/`).
    #[serde(default)]
    pub path: Option<String>,
    /// Command for `exec` checks, run in `container` (default: the pod's first).
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub deadline: Option<Duration>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub port: u16,
    /// What a client passes to its driver, e.g. `mysql://root:pw@{{ node_ip }}:3306/test`.
    pub url: String,
}

pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);
pub const DEFAULT_READY_DEADLINE: Duration = Duration::from_secs(120);
/// Pod names envd itself uses inside every env.
pub const STUBS_POD: &str = "stubs";

impl Plan {
    /// Renders `source` (the template text, named `source_name` in errors) with the answers
    /// and facts, and validates the result.
    pub fn render(
        source_name: &str,
        source: &str,
        answers: &BTreeMap<String, String>,
        facts: &Facts,
    ) -> Result<Plan> {
        let mut doc = parse_yaml(source_name, source)?;
        let questions = questions::parse(source_name, &doc)?;
        let (answers, image_overrides) = images::split(answers);
        let values = answers::resolve(source_name, &questions, &answers)?.values;

        let mut ctx: HashMap<String, minijinja::Value> = values
            .into_iter()
            .map(|(k, v)| (k, minijinja::Value::from(v)))
            .collect();
        ctx.insert("env_id".into(), facts.env_id.clone().into());
        ctx.insert("env_name".into(), facts.env_name.clone().into());
        ctx.insert("node_ip".into(), facts.node_ip.clone().into());
        ctx.insert("pods".into(), facts::pods_value(&doc));
        let mut jinja = Environment::new();
        jinja.set_undefined_behavior(UndefinedBehavior::Strict);
        // Bounds each string's render in time and memory: nested loops end with an error.
        jinja.set_fuel(Some(RENDER_FUEL));
        let mut budget = MAX_RENDERED_BYTES;
        if let Value::Mapping(map) = &mut doc {
            for key in ["pods", "stubs"] {
                if let Some(v) = map.get_mut(key) {
                    render_strings(source_name, &jinja, &ctx, v, key, &mut budget)?;
                }
            }
        }

        let mut plan: Plan = serde_path_to_error::deserialize(doc).map_err(|e| {
            let field = e.path().to_string();
            Error::invalid(source_name, field, e.into_inner().to_string())
        })?;
        // As checked: `password: true` read as `type: password`.
        plan.variables = questions;
        plan.validate(source_name)?;
        images::apply(&mut plan, source_name, &image_overrides)?;
        Ok(plan)
    }

    pub fn deadline(&self) -> Duration {
        self.deadline.unwrap_or(DEFAULT_DEADLINE)
    }

    pub fn pod(&self, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.name == name)
    }

    fn validate(&self, src: &str) -> Result<()> {
        if self.pods.is_empty() {
            return Err(Error::invalid(
                src,
                "pods",
                "a template needs at least one pod",
            ));
        }
        let mut pod_names = HashSet::new();
        let mut port_owner: HashMap<u16, &str> = HashMap::new();
        for (i, pod) in self.pods.iter().enumerate() {
            let at = format!("pods[{i}]");
            check_name(src, &format!("{at}.name"), &pod.name)?;
            if pod.name == STUBS_POD {
                return Err(Error::invalid(
                    src,
                    format!("{at}.name"),
                    "`stubs` is envd's own sidecar pod; declare canned responses under `stubs:` and name this pod otherwise",
                ));
            }
            if !pod_names.insert(pod.name.as_str()) {
                return Err(Error::invalid(
                    src,
                    format!("{at}.name"),
                    format!(
                        "pod `{}` is declared twice; pod names must be unique",
                        pod.name
                    ),
                ));
            }
            pod.on_change.check(src, &format!("{at}.on_change"))?;
            if pod.containers.is_empty() {
                return Err(Error::invalid(
                    src,
                    format!("{at}.containers"),
                    "a pod needs at least one container",
                ));
            }
            for &port in &pod.ports {
                if port == 0 {
                    return Err(Error::invalid(
                        src,
                        format!("{at}.ports"),
                        "port 0 is not a port; use 1-65535",
                    ));
                }
                if port == crate::engine::STUBS_PORT {
                    return Err(Error::invalid(
                        src,
                        format!("{at}.ports"),
                        format!("port {port} is taken by envd's stubs sidecar; choose another"),
                    ));
                }
                if let Some(other) = port_owner.insert(port, &pod.name) {
                    return Err(Error::invalid(
                        src,
                        format!("{at}.ports"),
                        format!(
                            "port {port} is published by pods `{other}` and `{}`; each port of the node IP belongs to one pod",
                            pod.name
                        ),
                    ));
                }
            }
            let mut cnames = HashSet::new();
            for (j, c) in pod.containers.iter().enumerate() {
                let cat = format!("{at}.containers[{j}]");
                check_name(src, &format!("{cat}.name"), &c.name)?;
                if !cnames.insert(c.name.as_str()) {
                    return Err(Error::invalid(
                        src,
                        format!("{cat}.name"),
                        format!(
                            "container `{}` is declared twice in pod `{}`",
                            c.name, pod.name
                        ),
                    ));
                }
                if c.image.trim().is_empty() {
                    return Err(Error::invalid(
                        src,
                        format!("{cat}.image"),
                        "an image is required, e.g. envd/redis:latest",
                    ));
                }
                if let Some(cpus) = c.cpus
                    && !(cpus > 0.0 && cpus <= 256.0)
                {
                    return Err(Error::invalid(
                        src,
                        format!("{cat}.cpus"),
                        "cpus must be a positive number of cores, e.g. 0.5",
                    ));
                }
                if let Some(m) = &c.memory {
                    parse_memory(m).map_err(|r| Error::invalid(src, format!("{cat}.memory"), r))?;
                }
                dirs::check(src, &cat, c)?;
                for (k, f) in c.files.iter().enumerate() {
                    if !f.path.starts_with('/') || f.path.ends_with('/') || f.path.contains("..") {
                        return Err(Error::invalid(
                            src,
                            format!("{cat}.files[{k}].path"),
                            "a file path must be absolute, name a file and not contain `..`",
                        ));
                    }
                }
            }
            if let Some(r) = &pod.ready {
                let rat = format!("{at}.ready");
                match r.kind {
                    CheckKind::Exec => {
                        if r.command.is_empty() {
                            return Err(Error::invalid(
                                src,
                                format!("{rat}.command"),
                                "an exec check needs a command, e.g. [\"true\"]",
                            ));
                        }
                        if let Some(cn) = &r.container
                            && !cnames.contains(cn.as_str())
                        {
                            return Err(Error::invalid(
                                src,
                                format!("{rat}.container"),
                                format!("pod `{}` has no container `{cn}`", pod.name),
                            ));
                        }
                    }
                    _ => match r.port {
                        None => {
                            return Err(Error::invalid(
                                src,
                                format!("{rat}.port"),
                                "this check needs the port to probe",
                            ));
                        }
                        Some(p) if !pod.ports.contains(&p) => {
                            return Err(Error::invalid(
                                src,
                                format!("{rat}.port"),
                                format!("port {p} is not in the pod's ports; add it to `ports`"),
                            ));
                        }
                        _ => {}
                    },
                }
            }
            if let Some(e) = &pod.endpoint
                && !pod.ports.contains(&e.port)
            {
                return Err(Error::invalid(
                    src,
                    format!("{at}.endpoint.port"),
                    format!(
                        "port {} is not in the pod's ports; add it to `ports`",
                        e.port
                    ),
                ));
            }
        }
        order::validate(src, &self.pods)
    }
}

/// Bytes from `512m`, `1g`, `1024k` or a plain number of bytes.
pub fn parse_memory(s: &str) -> std::result::Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let t = t.strip_suffix('i').unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: i64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a size; write e.g. 512m or 2g"))?;
    if n <= 0 {
        return Err(format!("`{s}` must be positive"));
    }
    n.checked_mul(mult)
        .filter(|b| *b >= 6 << 20)
        .ok_or_else(|| format!("`{s}` is out of range; Docker needs at least 6m"))
}

/// Names of envs, pods and containers: short, lowercase, DNS-safe.
pub fn check_name(src: &str, field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            src,
            field,
            format!("`{name}` is not a valid name: use 1-40 lowercase letters, digits and `-`"),
        ))
    }
}

fn yaml_location(e: &serde_yaml::Error) -> String {
    match e.location() {
        Some(l) => format!("line {} column {}", l.line(), l.column()),
        None => "(document)".into(),
    }
}

fn parse_yaml(src: &str, text: &str) -> Result<Value> {
    serde_yaml::from_str(text).map_err(|e| Error::invalid(src, yaml_location(&e), e.to_string()))
}

fn path_suffix(p: &str) -> String {
    if p == "." {
        String::new()
    } else if p.starts_with('[') {
        p.to_string()
    } else {
        format!(".{p}")
    }
}

/// Fuel of one string's render (minijinja: about one instruction or 64 bytes each).
const RENDER_FUEL: u64 = 500_000;
/// All rendered strings of one template together.
const MAX_RENDERED_BYTES: usize = 16 << 20;

fn render_strings(
    src: &str,
    jinja: &Environment,
    ctx: &HashMap<String, minijinja::Value>,
    v: &mut Value,
    path: &str,
    budget: &mut usize,
) -> Result<()> {
    match v {
        Value::String(s) if s.contains("{{") || s.contains("{%") => {
            *s = jinja.render_str(s, ctx).map_err(|e| {
                let why = if e.kind() == minijinja::ErrorKind::OutOfFuel {
                    "the template does too much work here (nested loops?); simplify it".into()
                } else {
                    format!("template error: {e}")
                };
                Error::invalid(src, path, why)
            })?;
            *budget = budget.checked_sub(s.len()).ok_or_else(|| {
                Error::invalid(
                    src,
                    path,
                    format!("the rendered template is larger than {MAX_RENDERED_BYTES} bytes"),
                )
            })?;
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                render_strings(src, jinja, ctx, item, &format!("{path}[{i}]"), budget)?;
            }
        }
        Value::Mapping(map) => {
            for (k, item) in map.iter_mut() {
                let key = k.as_str().unwrap_or("?");
                render_strings(src, jinja, ctx, item, &format!("{path}.{key}"), budget)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests;
