//! Checks of what envd needs on this host: `envd doctor`, and `envd serve` at start.

use crate::engine::{EngineConfig, NodeMode};

pub struct Check {
    pub ok: bool,
    pub what: String,
    /// What to do when it fails.
    pub remedy: String,
}

pub const IMAGES: &[&str] = &[
    "envd/node",
    "envd/pause",
    "envd/stubs",
    "envd/mysql",
    "envd/mongo",
    "envd/redis",
    "envd/app",
];

pub async fn run(cfg: &EngineConfig) -> Vec<Check> {
    let mut out = vec![];
    let root = nix_is_root();
    out.push(Check {
        ok: root,
        what: "running as root (netlink and network namespaces)".into(),
        remedy: "run envd serve as root (sudo)".into(),
    });
    let docker = crate::engine::host_docker_at(cfg.docker_host.as_deref()).await;
    out.push(Check {
        ok: docker.is_ok(),
        what: format!(
            "host Docker Engine reachable at {}",
            cfg.docker_host.as_deref().unwrap_or("/var/run/docker.sock")
        ),
        remedy: docker
            .as_ref()
            .err()
            .map(|e| format!("{e}; start it: systemctl start docker"))
            .unwrap_or_default(),
    });
    let mode = cfg.node_mode.resolve();
    out.push(Check {
        ok: true,
        what: match mode {
            NodeMode::Privileged => "nodes run --privileged (the host allows every capability)".into(),
            _ => "nodes run with the explicit capability set (--privileged is refused here: no CAP_SYS_RESOURCE)".into(),
        },
        remedy: String::new(),
    });
    if let Ok(d) = &docker {
        for img in IMAGES {
            let tag = format!("{img}:latest");
            let ok = d.inspect_image(&tag).await.is_ok();
            out.push(Check {
                ok,
                what: format!("image {tag} built"),
                remedy: "run scripts/build-images".into(),
            });
        }
    }
    let seed = cfg.seed_dir.join("current");
    out.push(Check {
        ok: seed.join("skel/.envd-seed").is_file(),
        what: format!("image seed for nodes at {}", seed.display()),
        remedy: "run scripts/build-images (it runs scripts/build-seed)".into(),
    });
    let data_ok = std::fs::create_dir_all(&cfg.data_dir).is_ok();
    out.push(Check {
        ok: data_ok,
        what: format!("data dir {} writable", cfg.data_dir.display()),
        remedy: "choose another --data-dir".into(),
    });
    out
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|v| v.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
