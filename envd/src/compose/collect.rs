//! The client's side of an import: read the compose file, the `.env` beside it and the
//! files its bind mounts and `env_file:` name (relative to the compose file), to send them.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::ImportFile;
use super::interpolate::{dotenv, interpolate_value};
use crate::error::{Error, IoContext, Result};

/// Bigger files are not embedded in a template (a config file is small; data is not).
const MAX_FILE: u64 = 1 << 20;
const MAX_FILES: usize = 200;

/// What `POST /v1/templates/import` takes besides the name.
#[derive(Debug, Default)]
pub struct Collected {
    pub compose: String,
    pub files: BTreeMap<String, ImportFile>,
    pub env: BTreeMap<String, String>,
    /// What could not be read, for the user.
    pub skipped: Vec<String>,
}

pub fn collect(compose_path: &Path) -> Result<Collected> {
    let compose = std::fs::read_to_string(compose_path)
        .io_ctx(|| format!("reading {}", compose_path.display()))?;
    let base = compose_path.parent().unwrap_or(Path::new("."));
    let env = match std::fs::read_to_string(base.join(".env")) {
        Ok(text) => dotenv(&text),
        Err(_) => BTreeMap::new(),
    };
    let src = compose_path.display().to_string();
    let mut doc: Value = serde_yaml::from_str(&compose)
        .map_err(|e| Error::invalid(&src, "(document)", e.to_string()))?;
    interpolate_value(&mut doc, &env, &mut vec![])
        .map_err(|e| Error::invalid(&src, "(interpolation)", e))?;
    let mut out = Collected {
        compose,
        env,
        ..Default::default()
    };
    let services = doc.get("services").and_then(Value::as_mapping);
    for svc in services.into_iter().flat_map(|m| m.values()) {
        for v in svc
            .get("volumes")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let source = match v {
                Value::String(s) => s.split(':').next().filter(|_| s.contains(':')),
                Value::Mapping(_) if v.get("type").and_then(Value::as_str) == Some("bind") => {
                    v.get("source").and_then(Value::as_str)
                }
                _ => None,
            };
            if let Some(s) = source.filter(|s| s.starts_with(['.', '/'])) {
                add(&mut out, base, s.trim_end_matches('/'));
            }
        }
        let env_files = match svc.get("env_file") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Sequence(l)) => l.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        for f in env_files {
            add(&mut out, base, f);
        }
    }
    Ok(out)
}

/// Adds the file at `written` (as the compose file writes it), or every file under it.
fn add(out: &mut Collected, base: &Path, written: &str) {
    let path: PathBuf = base.join(written);
    // Only what lies inside the compose file's directory, links resolved: a bind mount of
    // `/home/me/.ssh` or `./link-to-home` is not sent to the server.
    let inside = |p: &Path| match (std::fs::canonicalize(base), std::fs::canonicalize(p)) {
        (Ok(b), Ok(real)) => real.starts_with(b),
        _ => false,
    };
    if path.exists() && !inside(&path) {
        out.skipped.push(format!(
            "{written}: outside the compose file's directory (not sent); copy it beside the compose file"
        ));
        return;
    }
    let entries: Vec<(String, PathBuf)> = if path.is_dir() {
        walkdir::WalkDir::new(&path)
            .sort_by_file_name()
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| {
                let rel = e
                    .path()
                    .strip_prefix(&path)
                    .ok()?
                    .to_string_lossy()
                    .to_string();
                Some((format!("{written}/{rel}"), e.into_path()))
            })
            .collect()
    } else {
        vec![(written.to_string(), path)]
    };
    for (key, p) in entries {
        if out.files.contains_key(&key) {
            continue;
        }
        if p.exists() && !inside(&p) {
            out.skipped.push(format!(
                "{key}: outside the compose file's directory (not sent); copy it beside the compose file"
            ));
            continue;
        }
        if out.files.len() >= MAX_FILES {
            out.skipped
                .push(format!("{key}: more than {MAX_FILES} files"));
            continue;
        }
        let meta = match std::fs::metadata(&p) {
            Ok(m) => m,
            Err(e) => {
                out.skipped.push(format!("{key}: {e}"));
                continue;
            }
        };
        if meta.len() > MAX_FILE {
            out.skipped.push(format!("{key}: larger than 1 MiB"));
            continue;
        }
        match std::fs::read_to_string(&p) {
            Ok(content) => {
                let exec = meta.permissions().mode() & 0o111 != 0;
                out.files.insert(
                    key,
                    ImportFile {
                        content,
                        mode: exec.then_some(0o755),
                    },
                );
            }
            Err(e) => out
                .skipped
                .push(format!("{key}: {e} (only text files are sent)")),
        }
    }
}
