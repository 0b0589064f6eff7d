//! Which envd image stands in for a compose image (the labs have no registry), and the
//! native readiness check and endpoint of the databases envd knows.

use std::collections::BTreeMap;

use super::interpolate::lit;
use crate::spec::{CheckKind, Endpoint, Ready};

/// Compose image pattern -> envd image. A pattern is `repo` or `repo:*` (any tag) or
/// `repo:tag`; `docker.io/` and `library/` are ignored on both sides of the match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMap(pub BTreeMap<String, String>);

impl Default for ImageMap {
    fn default() -> Self {
        ImageMap(
            [
                ("mysql:*", "envd/mysql:latest"),
                ("mariadb:*", "envd/mysql:latest"),
                ("mongo:*", "envd/mongo:latest"),
                ("redis:*", "envd/redis:latest"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        )
    }
}

impl ImageMap {
    /// The defaults with `extra` entries added (an extra pattern replaces a default).
    pub fn with(extra: BTreeMap<String, String>) -> Self {
        let mut m = ImageMap::default();
        m.0.extend(extra);
        m
    }

    /// The envd image for `image`, if a pattern matches; an exact tag wins over `*`.
    pub fn lookup(&self, image: &str) -> Option<&str> {
        let (repo, tag) = split(image);
        let exact = self
            .0
            .iter()
            .find(|(p, _)| split(p) == (repo.clone(), tag.clone()));
        let any = self.0.iter().find(|(p, _)| {
            let (prepo, ptag) = split(p);
            prepo == repo && (ptag == "*" || (ptag == "latest" && !p.contains(':')))
        });
        exact.or(any).map(|(_, v)| v.as_str())
    }
}

/// `(repository, tag)` of an image reference, without registry-default prefixes or digest.
fn split(image: &str) -> (String, String) {
    let image = image.split('@').next().unwrap_or(image);
    let image = image.strip_prefix("docker.io/").unwrap_or(image);
    let image = image.strip_prefix("library/").unwrap_or(image);
    // A `:` after the last `/` is the tag (a registry host may carry a port).
    let slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[slash..].rfind(':') {
        Some(i) => (
            image[..slash + i].to_string(),
            image[slash + i + 1..].to_string(),
        ),
        None => (image.to_string(), "latest".to_string()),
    }
}

/// The database family of an image, by its repository's last name.
pub fn kind_of(image: &str) -> Option<CheckKind> {
    let (repo, _) = split(image);
    match repo.rsplit('/').next().unwrap_or(&repo) {
        "mysql" | "mariadb" | "percona" => Some(CheckKind::Mysql),
        "mongo" | "mongodb" => Some(CheckKind::Mongo),
        "redis" | "valkey" => Some(CheckKind::Redis),
        _ => None,
    }
}

/// The port the database listens on inside its container.
pub fn default_port(kind: CheckKind) -> u16 {
    match kind {
        CheckKind::Mysql => 3306,
        CheckKind::Mongo => 27017,
        _ => 6379,
    }
}

/// Native check and endpoint at published `port`, credentials from the container's env
/// (the official images' variables) and a redis `--requirepass` in its command.
pub fn native(
    kind: CheckKind,
    port: u16,
    env: &BTreeMap<String, String>,
    command: &[String],
) -> (Ready, Endpoint) {
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
    let enc = |s: &str| lit(&crate::urlencode(s));
    let (user, password, url) = match kind {
        CheckKind::Mysql => {
            let (user, password) = match (get("MYSQL_ROOT_PASSWORD"), get("MYSQL_USER")) {
                (Some(pw), _) => (Some("root".to_string()), Some(pw)),
                (None, Some(u)) => (Some(u), get("MYSQL_PASSWORD")),
                (None, None) => (Some("root".to_string()), None),
            };
            let auth = match (&user, &password) {
                (Some(u), Some(p)) => format!("{}:{}@", enc(u), enc(p)),
                (Some(u), None) => format!("{}@", enc(u)),
                _ => String::new(),
            };
            let db = get("MYSQL_DATABASE").map(|d| lit(&d)).unwrap_or_default();
            let url = format!("mysql://{auth}{{{{ node_ip }}}}:{port}/{db}");
            (user, password, url)
        }
        CheckKind::Mongo => {
            let user = get("MONGO_INITDB_ROOT_USERNAME");
            let password = get("MONGO_INITDB_ROOT_PASSWORD");
            let url = match (&user, &password) {
                (Some(u), Some(p)) => format!(
                    "mongodb://{}:{}@{{{{ node_ip }}}}:{port}/?authSource=admin",
                    enc(u),
                    enc(p)
                ),
                _ => format!("mongodb://{{{{ node_ip }}}}:{port}/"),
            };
            (user, password, url)
        }
        _ => {
            let from_cmd = command
                .iter()
                .position(|a| a == "--requirepass")
                .and_then(|i| command.get(i + 1))
                .cloned();
            let password = from_cmd.or_else(|| get("REDIS_PASSWORD"));
            let auth = password
                .as_ref()
                .map(|p| format!(":{}@", enc(p)))
                .unwrap_or_default();
            let url = format!("redis://{auth}{{{{ node_ip }}}}:{port}/0");
            (None, password, url)
        }
    };
    let ready = Ready {
        kind,
        port: Some(port),
        user: user.map(|u| lit(&u)),
        password: password.map(|p| lit(&p)),
        path: None,
        command: vec![],
        container: None,
        deadline: None,
    };
    (ready, Endpoint { port, url })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_images_map_to_envd_images() {
        let m = ImageMap::default();
        for (image, want) in [
            ("mysql:8", Some("envd/mysql:latest")),
            ("mysql", Some("envd/mysql:latest")),
            ("docker.io/library/mariadb:11.4", Some("envd/mysql:latest")),
            ("mongo:7@sha256:abcd", Some("envd/mongo:latest")),
            ("redis:7-alpine", Some("envd/redis:latest")),
            ("bitnami/redis:7", None),
            ("registry:5000/redis:7", None),
            ("nginx:1.27", None),
        ] {
            assert_eq!(m.lookup(image), want, "{image}");
        }
        let m = ImageMap::with([("nginx:1.27".to_string(), "envd/web:1".to_string())].into());
        assert_eq!(m.lookup("nginx:1.27"), Some("envd/web:1"));
        assert_eq!(m.lookup("nginx:1.26"), None);
    }

    #[test]
    fn native_checks_take_credentials_from_the_env() {
        let env: BTreeMap<String, String> = [
            ("MYSQL_ROOT_PASSWORD".to_string(), "p@ss".to_string()),
            ("MYSQL_DATABASE".to_string(), "shop".to_string()),
        ]
        .into();
        let (r, e) = native(CheckKind::Mysql, 3307, &env, &[]);
        assert_eq!(r.user.as_deref(), Some("root"));
        assert_eq!(r.password.as_deref(), Some("p@ss"));
        assert_eq!(e.url, "mysql://root:p%40ss@{{ node_ip }}:3307/shop");
        let cmd: Vec<String> = ["redis-server", "--requirepass", "s3"]
            .map(String::from)
            .into();
        let (r, e) = native(CheckKind::Redis, 6379, &BTreeMap::new(), &cmd);
        assert_eq!(r.password.as_deref(), Some("s3"));
        assert_eq!(e.url, "redis://:s3@{{ node_ip }}:6379/0");
    }
}
