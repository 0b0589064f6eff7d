//! The template catalog: built-in templates plus `<dir>/<name>/<version>/template.yaml`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{Error, IoContext, Result};

mod files;

const BUILTIN: &[(&str, &str, &str)] = &[
    (
        "full",
        "1",
        include_str!("../templates/full/1/template.yaml"),
    ),
    (
        "minimal",
        "1",
        include_str!("../templates/minimal/1/template.yaml"),
    ),
];

#[derive(Debug, Clone)]
pub struct TemplateSource {
    pub name: String,
    pub version: String,
    /// Where it came from, for error messages (`builtin:full/1` or a path).
    pub origin: String,
    pub text: String,
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    dir: Option<PathBuf>,
    /// Compose image -> envd image, for `templates import`.
    pub images: crate::compose::ImageMap,
}

impl Catalog {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Catalog {
            dir,
            images: Default::default(),
        }
    }

    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
    }

    /// Built-in names cannot be imported, deleted or overridden by the templates dir.
    pub fn is_builtin(name: &str) -> bool {
        BUILTIN.iter().any(|(n, _, _)| *n == name)
    }

    /// Every template, keyed by name then version; a directory named as a built-in is ignored.
    pub fn all(&self) -> Result<BTreeMap<String, BTreeMap<String, TemplateSource>>> {
        let mut out: BTreeMap<String, BTreeMap<String, TemplateSource>> = BTreeMap::new();
        for (name, version, text) in BUILTIN {
            out.entry(name.to_string()).or_default().insert(
                version.to_string(),
                TemplateSource {
                    name: name.to_string(),
                    version: version.to_string(),
                    origin: format!("builtin:{name}/{version}"),
                    text: text.to_string(),
                },
            );
        }
        let Some(dir) = &self.dir else { return Ok(out) };
        if !dir.exists() {
            return Ok(out);
        }
        for name_entry in
            std::fs::read_dir(dir).io_ctx(|| format!("reading templates dir {}", dir.display()))?
        {
            let name_entry = name_entry.io_ctx(|| format!("reading {}", dir.display()))?;
            let name = name_entry.file_name().to_string_lossy().to_string();
            if !name_entry.path().is_dir() {
                continue;
            }
            if Self::is_builtin(&name) {
                tracing::warn!(
                    "{}: `{name}` is a built-in template; the directory is ignored",
                    name_entry.path().display()
                );
                continue;
            }
            for ver_entry in std::fs::read_dir(name_entry.path())
                .io_ctx(|| format!("reading {}", name_entry.path().display()))?
            {
                let ver_entry =
                    ver_entry.io_ctx(|| format!("reading {}", name_entry.path().display()))?;
                let path = ver_entry.path().join("template.yaml");
                if !path.is_file() {
                    continue;
                }
                let version = ver_entry.file_name().to_string_lossy().to_string();
                let text = std::fs::read_to_string(&path)
                    .io_ctx(|| format!("reading {}", path.display()))?;
                out.entry(name.clone()).or_default().insert(
                    version.clone(),
                    TemplateSource {
                        name: name.clone(),
                        version,
                        origin: path.display().to_string(),
                        text,
                    },
                );
            }
        }
        Ok(out)
    }

    /// `name` or `name:version`; without a version, the latest.
    pub fn get(&self, spec: &str) -> Result<TemplateSource> {
        let (name, version) = match spec.split_once(':') {
            Some((n, v)) => (n, Some(v)),
            None => (spec, None),
        };
        let all = self.all()?;
        let known = || all.keys().cloned().collect::<Vec<_>>().join(", ");
        let versions = all.get(name).ok_or_else(|| {
            Error::invalid(
                "request",
                "template",
                format!("no template `{name}`; known: {}", known()),
            )
        })?;
        let found = match version {
            Some(v) => versions.get(v),
            None => versions
                .values()
                .max_by(|a, b| version_cmp(&a.version, &b.version)),
        };
        let found = found.cloned().ok_or_else(|| {
            let have = versions.keys().cloned().collect::<Vec<_>>().join(", ");
            Error::invalid(
                "request",
                "template",
                format!(
                    "template `{name}` has no version `{}`; versions: {have}",
                    version.unwrap_or("")
                ),
            )
        })?;
        files::inline_source(found)
    }
}

/// Semver-ish order: numbers part by part (10 > 9, 1.10 > 1.9, a leading `v` ignored),
/// then a release after its pre-releases (1.2.0 > 1.2.0-rc1), then the text.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |s: &str| {
        let s = s.strip_prefix('v').unwrap_or(s);
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, Some(p.to_string())),
            None => (s, None),
        };
        let nums: Vec<u64> = core
            .split('.')
            .map(|p| {
                let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().unwrap_or(0)
            })
            .collect();
        // `None` (a release) must sort after `Some(pre)`: compare "is a release" first.
        (nums, pre.is_none(), pre)
    };
    key(a).cmp(&key(b)).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_version_wins_numerically() {
        assert_eq!(version_cmp("10", "9"), std::cmp::Ordering::Greater);
        assert_eq!(version_cmp("1.10", "1.9"), std::cmp::Ordering::Greater);
        let mut vs = [
            "2.0.0",
            "10",
            "1.2.0",
            "1.2.0-rc1",
            "v1.3",
            "9",
            "1.2.0-rc2",
        ];
        vs.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(
            vs,
            [
                "1.2.0-rc1",
                "1.2.0-rc2",
                "1.2.0",
                "v1.3",
                "2.0.0",
                "9",
                "10"
            ]
        );
    }

    #[test]
    fn builtins_are_listed_and_unknown_names_are_explained() {
        let c = Catalog::new(None);
        assert_eq!(c.get("full").unwrap().version, "1");
        let err = c.get("nope").unwrap_err().to_string();
        assert!(err.contains("full") && err.contains("minimal"), "{err}");
        let err = c.get("full:7").unwrap_err().to_string();
        assert!(err.contains("no version `7`"), "{err}");
    }

    #[test]
    fn directory_templates_join_builtins() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mine/2");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(
            p.join("template.yaml"),
            "name: mine\nversion: \"2\"\npods: []\n",
        )
        .unwrap();
        let c = Catalog::new(Some(dir.path().to_path_buf()));
        assert_eq!(c.get("mine").unwrap().version, "2");
        assert!(c.all().unwrap().contains_key("full"));
    }

    #[test]
    fn a_directory_cannot_override_a_builtin() {
        let dir = tempfile::tempdir().unwrap();
        for v in ["1", "2"] {
            let p = dir.path().join("full").join(v);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("template.yaml"), "name: full\npods: []\n").unwrap();
        }
        let c = Catalog::new(Some(dir.path().to_path_buf()));
        let full = c.get("full").unwrap();
        assert_eq!(full.origin, "builtin:full/1");
        assert!(c.get("full:2").is_err());
        assert!(Catalog::is_builtin("minimal") && !Catalog::is_builtin("mine"));
    }
}
