//! One compose service -> one pod of one container.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use docker_compose_types::{
    Command, DependsOnOptions, Environment, HealthcheckTest, Networks, Ports, PublishedPort,
    Service, Volumes,
};
use serde_yaml::Value;

use super::ImportFile;
use super::images::{self, ImageMap};
use super::interpolate::{dotenv, lit};
use crate::error::{Error, Result};
use crate::spec::order::Condition;
use crate::spec::{CheckKind, Container, File, Pod, Ready};

pub(super) struct Ctx<'a> {
    pub src: &'a str,
    pub files: &'a BTreeMap<String, ImportFile>,
    pub images: &'a ImageMap,
    /// Service name -> pod name.
    pub pod_names: &'a BTreeMap<String, String>,
    /// Published port -> the service that publishes it.
    pub taken_ports: HashMap<u16, String>,
    pub notes: &'a mut Vec<String>,
}

/// Service keys mapped (or deliberately dropped with their own note) below.
const HANDLED: &[&str] = &[
    "image",
    "build",
    "command",
    "environment",
    "env_file",
    "ports",
    "expose",
    "volumes",
    "healthcheck",
    "depends_on",
    "container_name",
    "hostname",
    "networks",
    "links",
    "mem_limit",
    "deploy",
    "profiles",
];

/// `(published, container)` ports of a service; ranges and UDP are left out.
pub(super) fn published(svc: &Service) -> Vec<(u16, u16)> {
    published_noted(svc, &mut vec![])
}

fn published_noted(svc: &Service, skipped: &mut Vec<String>) -> Vec<(u16, u16)> {
    let mut out = vec![];
    match &svc.ports {
        Ports::Short(list) => {
            for p in list {
                let (spec, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                // [ip:]published:container, or container alone.
                let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
                let target = parts[0].parse::<u16>();
                let pubd = parts.get(1).map(|s| s.parse::<u16>());
                match (proto, target, pubd) {
                    ("tcp", Ok(t), None) => out.push((t, t)),
                    ("tcp", Ok(t), Some(Ok(h))) => out.push((h, t)),
                    _ => skipped.push(p.clone()),
                }
            }
        }
        Ports::Long(list) => {
            for p in list {
                let proto = p.protocol.as_deref().unwrap_or("tcp");
                match (proto, &p.published) {
                    ("tcp", None) => out.push((p.target, p.target)),
                    ("tcp", Some(PublishedPort::Single(h))) => out.push((*h, p.target)),
                    ("tcp", Some(PublishedPort::Range(r))) if r.parse::<u16>().is_ok() => {
                        out.push((r.parse().unwrap_or(p.target), p.target))
                    }
                    _ => skipped.push(format!("{}", p.target)),
                }
            }
        }
    }
    out.retain(|(h, t)| *h != 0 && *t != 0);
    out
}

pub(super) fn pod(ctx: &mut Ctx, name: &str, svc: &Service, raw: &Value) -> Result<Pod> {
    let pod_name = ctx.pod_names[name].clone();
    let field = |f: &str| format!("services.{name}.{f}");

    let unmapped: Vec<&str> = raw
        .as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(Value::as_str)
                .filter(|k| !HANDLED.contains(k) && !k.starts_with("x-"))
                .collect()
        })
        .unwrap_or_default();
    if !unmapped.is_empty() {
        ctx.notes
            .push(format!("{name}: not mapped: {}", unmapped.join(", ")));
    }

    // Image, mapped to an offline envd image where configured.
    let Some(compose_image) = svc.image.clone().filter(|i| !i.trim().is_empty()) else {
        return Err(Error::invalid(
            ctx.src,
            field("image"),
            "envd builds no images: build it, load it into the node seed and name it in `image:`",
        ));
    };
    if svc.build_.is_some() {
        ctx.notes.push(format!(
            "{name}: `build:` ignored; the image `{compose_image}` must be in the node seed"
        ));
    }
    let image = match ctx.images.lookup(&compose_image) {
        Some(envd_image) => {
            ctx.notes.push(format!(
                "{name}: image {compose_image} -> {envd_image} (offline envd image)"
            ));
            envd_image.to_string()
        }
        None => compose_image.clone(),
    };
    let kind = images::kind_of(&image).or_else(|| images::kind_of(&compose_image));

    let command = match &svc.command {
        None => vec![],
        Some(Command::Args(a)) => a.clone(),
        Some(Command::Simple(s)) => shlex::split(s).ok_or_else(|| {
            Error::invalid(
                ctx.src,
                field("command"),
                "unbalanced quotes in the command",
            )
        })?,
    };
    if svc.entrypoint.is_some() {
        ctx.notes.push(format!(
            "{name}: `entrypoint:` not mapped; the image's entrypoint runs with the command"
        ));
    }

    let env = environment(ctx, name, svc, &image, &compose_image);
    let files = volumes(ctx, name, svc);

    // Ports: the published number on the node IP, forwarding to the container's port.
    let mut skipped = vec![];
    let mut ports = vec![];
    let mut targets = BTreeMap::new();
    for (h, t) in published_noted(svc, &mut skipped) {
        if ctx.taken_ports.get(&h).is_some_and(|owner| owner != name) || ports.contains(&h) {
            ctx.notes.push(format!(
                "{name}: port {h} already published by another service; left out"
            ));
            continue;
        }
        if h == crate::engine::STUBS_PORT {
            ctx.notes.push(format!(
                "{name}: port {h} belongs to envd's stubs sidecar; left out"
            ));
            continue;
        }
        ports.push(h);
        if h != t {
            targets.insert(h, t);
        }
    }
    if !skipped.is_empty() {
        ctx.notes.push(format!(
            "{name}: ports {} not mapped (only single TCP ports are published)",
            skipped.join(", ")
        ));
    }

    // Readiness: envd's own check for databases it knows, else the healthcheck, else TCP.
    let mut ready = None;
    let mut endpoint = None;
    let check = svc.healthcheck.as_ref().filter(|h| !h.disable);
    let exec = check.and_then(|h| healthcheck(ctx, name, h));
    if let Some(kind) = kind {
        let inner_port = images::default_port(kind);
        let published = ports
            .iter()
            .find(|p| targets.get(*p).unwrap_or(p) == &inner_port)
            .copied();
        let published = published.or_else(|| {
            if ctx.taken_ports.contains_key(&inner_port) || ports.contains(&inner_port) {
                return None;
            }
            ctx.taken_ports.insert(inner_port, name.to_string());
            ports.push(inner_port);
            ctx.notes.push(format!(
                "{name}: port {inner_port} published on the node IP for envd's readiness check and endpoint"
            ));
            Some(inner_port)
        });
        if let Some(port) = published {
            let (r, e) = images::native(kind, port, &env, &command);
            if exec.is_some() {
                ctx.notes.push(format!(
                    "{name}: healthcheck replaced by envd's native {} check",
                    format!("{kind:?}").to_lowercase()
                ));
            }
            ready = Some(r);
            endpoint = Some(e);
        }
    }
    if ready.is_none() {
        ready = exec.or_else(|| {
            ports.first().map(|&p| Ready {
                kind: CheckKind::Tcp,
                port: Some(p),
                user: None,
                password: None,
                path: None,
                command: vec![],
                container: None,
                deadline: None,
            })
        });
    }

    let (cpus, memory) = resources(ctx, name, svc);
    let depends_on = depends_on(ctx, name, svc);
    let aliases = aliases(name, &pod_name, svc);

    Ok(Pod {
        name: pod_name.clone(),
        containers: vec![Container {
            name: pod_name,
            image,
            command: command.iter().map(|a| lit(a)).collect(),
            env: env.iter().map(|(k, v)| (k.clone(), lit(v))).collect(),
            files,
            dirs: vec![],
            cpus,
            memory,
        }],
        ports,
        targets,
        aliases,
        depends_on,
        ready,
        endpoint,
        on_change: Default::default(),
    })
}

/// `env_file:` then `environment:` (which wins); for envd/mysql standing in for mariadb,
/// `MARIADB_*` is also given as the `MYSQL_*` envd/mysql reads.
fn environment(
    ctx: &mut Ctx,
    name: &str,
    svc: &Service,
    image: &str,
    compose_image: &str,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let env_files = match &svc.env_file {
        None => vec![],
        Some(docker_compose_types::StringOrList::Simple(s)) => vec![s.clone()],
        Some(docker_compose_types::StringOrList::List(l)) => l.clone(),
    };
    for f in env_files {
        match ctx.files.get(&f) {
            Some(file) => env.extend(dotenv(&file.content)),
            None => ctx.notes.push(format!(
                "{name}: env_file {f} was not sent; its variables are missing"
            )),
        }
    }
    let mut from_host = vec![];
    match &svc.environment {
        Environment::List(items) => {
            for it in items {
                match it.split_once('=') {
                    Some((k, v)) => {
                        env.insert(k.to_string(), v.to_string());
                    }
                    None => from_host.push(it.clone()),
                }
            }
        }
        Environment::KvPair(map) => {
            for (k, v) in map {
                match v {
                    Some(v) => {
                        env.insert(k.clone(), v.to_string());
                    }
                    None => from_host.push(k.clone()),
                }
            }
        }
    }
    if !from_host.is_empty() {
        ctx.notes.push(format!(
            "{name}: {} take their value from the host's environment in compose; not set",
            from_host.join(", ")
        ));
    }
    if image.contains("envd/mysql") && compose_image.contains("mariadb") {
        let extra: Vec<(String, String)> = env
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix("MARIADB_")?;
                let mysql = format!("MYSQL_{rest}");
                (!env.contains_key(&mysql)).then(|| (mysql, v.clone()))
            })
            .collect();
        env.extend(extra);
    }
    env
}

/// Bind mounts of files the client sent become files uploaded into the container.
fn volumes(ctx: &mut Ctx, name: &str, svc: &Service) -> Vec<File> {
    let mut files = vec![];
    for v in &svc.volumes {
        let (source, target, kind) = match v {
            Volumes::Simple(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                match parts.as_slice() {
                    [t] => (String::new(), t.to_string(), "volume"),
                    [s, t, ..] => {
                        let bind = s.starts_with(['.', '/', '~']);
                        (
                            s.to_string(),
                            t.to_string(),
                            if bind { "bind" } else { "volume" },
                        )
                    }
                    [] => continue,
                }
            }
            Volumes::Advanced(a) => (
                a.source.clone().unwrap_or_default(),
                a.target.clone(),
                if a._type == "bind" { "bind" } else { "volume" },
            ),
        };
        if kind != "bind" {
            let what = if source.is_empty() {
                "anonymous volume".to_string()
            } else {
                format!("volume `{source}`")
            };
            ctx.notes.push(format!(
                "{name}: {what} at {target} not kept (every env starts empty)"
            ));
            continue;
        }
        let src = source.trim_end_matches('/');
        let target = target.trim_end_matches('/');
        let mut found = false;
        for (path, f) in ctx.files {
            let rel = if path == src {
                Some(String::new())
            } else {
                path.strip_prefix(&format!("{src}/"))
                    .map(|r| format!("/{r}"))
            };
            if let Some(rel) = rel {
                found = true;
                files.push(File {
                    path: format!("{target}{rel}"),
                    content: lit(&f.content),
                    mode: f.mode.unwrap_or(0o644),
                });
            }
        }
        if !found {
            ctx.notes.push(format!(
                "{name}: bind mount {source} was not sent (missing, empty or not a text file); not mapped"
            ));
        }
    }
    files
}

/// A healthcheck as an exec check; its deadline covers compose's retries.
fn healthcheck(ctx: &mut Ctx, name: &str, h: &docker_compose_types::Healthcheck) -> Option<Ready> {
    let command: Vec<String> = match h.test.as_ref()? {
        HealthcheckTest::Single(s) => vec!["sh".into(), "-c".into(), s.clone()],
        HealthcheckTest::Multiple(v) => match v.split_first() {
            Some((first, rest)) if first == "CMD" => rest.to_vec(),
            Some((first, rest)) if first == "CMD-SHELL" => {
                vec!["sh".into(), "-c".into(), rest.join(" ")]
            }
            _ => return None,
        },
    };
    if command.is_empty() {
        return None;
    }
    let dur = |s: &Option<String>, d: u64| {
        s.as_deref()
            .and_then(|s| humantime::parse_duration(s).ok())
            .unwrap_or(Duration::from_secs(d))
    };
    let retries = if h.retries > 0 {
        u32::try_from(h.retries).unwrap_or(u32::MAX)
    } else {
        3
    };
    // Checked: the durations are the compose file's, and a huge one only means "the most".
    let max = Duration::from_secs(600);
    let deadline = dur(&h.interval, 30)
        .checked_add(dur(&h.timeout, 30))
        .and_then(|try_one| try_one.checked_mul(retries))
        .and_then(|d| d.checked_add(dur(&h.start_period, 0)))
        .unwrap_or(max)
        .clamp(Duration::from_secs(30), max);
    ctx.notes.push(format!(
        "{name}: healthcheck -> exec check `{}`, deadline {}",
        command.join(" "),
        humantime::format_duration(deadline)
    ));
    Some(Ready {
        kind: CheckKind::Exec,
        port: None,
        user: None,
        password: None,
        path: None,
        command: command.iter().map(|c| lit(c)).collect(),
        container: None,
        deadline: Some(deadline),
    })
}

fn resources(ctx: &mut Ctx, name: &str, svc: &Service) -> (Option<f64>, Option<String>) {
    let limits = svc
        .deploy
        .as_ref()
        .and_then(|d| d.resources.as_ref())
        .and_then(|r| r.limits.as_ref());
    let cpus = limits
        .and_then(|l| l.cpus.as_deref())
        .and_then(|c| c.parse::<f64>().ok());
    let memory = limits
        .and_then(|l| l.memory.clone())
        .or_else(|| svc.mem_limit.clone());
    let memory = memory.filter(|m| {
        let ok = crate::spec::parse_memory(m).is_ok();
        if !ok {
            ctx.notes
                .push(format!("{name}: memory limit {m} not understood; left out"));
        }
        ok
    });
    if svc
        .deploy
        .as_ref()
        .is_some_and(|d| d.replicas.unwrap_or(1) > 1)
    {
        ctx.notes.push(format!(
            "{name}: one replica runs (deploy.replicas ignored)"
        ));
    }
    (cpus, memory)
}

fn depends_on(ctx: &mut Ctx, name: &str, svc: &Service) -> BTreeMap<String, Condition> {
    let deps: Vec<(String, String)> = match &svc.depends_on {
        DependsOnOptions::Simple(v) => v
            .iter()
            .map(|d| (d.clone(), "service_started".to_string()))
            .collect(),
        DependsOnOptions::Conditional(m) => m
            .iter()
            .map(|(d, c)| (d.clone(), c.condition.clone()))
            .collect(),
    };
    let mut out = BTreeMap::new();
    for (dep, cond) in deps {
        let Some(pod) = ctx.pod_names.get(&dep) else {
            ctx.notes.push(format!(
                "{name}: depends on {dep}, which is not imported; dropped"
            ));
            continue;
        };
        let c = match cond.as_str() {
            "service_healthy" => Condition::Ready,
            "service_completed_successfully" => Condition::Completed,
            "service_started" => Condition::Started,
            other => {
                ctx.notes.push(format!(
                    "{name}: depends_on {dep} condition `{other}` unknown; waits until started"
                ));
                Condition::Started
            }
        };
        out.insert(pod.clone(), c);
    }
    out
}

/// Names other services used for this one: its compose name (when the pod's differs),
/// container_name, hostname, network aliases.
fn aliases(name: &str, pod_name: &str, svc: &Service) -> Vec<String> {
    let mut out: Vec<String> = vec![name.to_string()];
    out.extend(svc.container_name.clone());
    out.extend(svc.hostname.clone());
    if let Networks::Advanced(n) = &svc.networks {
        for settings in n.0.values() {
            if let docker_compose_types::MapOrEmpty::Map(s) = settings {
                out.extend(s.aliases.iter().cloned());
            }
        }
    }
    let mut seen = HashSet::new();
    out.retain(|a| a != pod_name && seen.insert(a.to_ascii_lowercase()));
    out
}

/// `links: [db:database]` names the db pod `database` too; a name two pods claim, or a
/// pod's own name, stays with that pod only.
pub(super) fn dedupe_aliases(pods: &mut [Pod], notes: &mut Vec<String>) {
    let names: HashSet<String> = pods.iter().map(|p| p.name.clone()).collect();
    let mut owner: HashMap<String, String> = HashMap::new();
    for p in pods.iter_mut() {
        let pod = p.name.clone();
        p.aliases.retain(|a| {
            let key = a.to_ascii_lowercase();
            let valid = a.len() <= 63
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            let clash = key == crate::spec::STUBS_POD
                || names.contains(&key) && key != pod
                || owner.get(&key).is_some_and(|o| o != &pod);
            if !valid || clash {
                notes.push(format!("{pod}: name `{a}` not given (invalid or taken)"));
                return false;
            }
            owner.insert(key, pod.clone());
            true
        });
    }
}
