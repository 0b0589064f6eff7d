//! Host directories copied into a container before it starts (`dirs:` of a container),
//! e.g. the code of a service under test given as an answer.

use serde::{Deserialize, Serialize};

use super::Container;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Dir {
    /// A directory on the envd host (the server reads it); empty means nothing to copy,
    /// e.g. when the code is baked into the image.
    pub source: String,
    /// Where its contents land in the container.
    pub path: String,
}

/// The template's side: paths that can be checked without the host.
pub fn check(src: &str, at: &str, c: &Container) -> Result<()> {
    for (k, d) in c.dirs.iter().enumerate() {
        if !d.path.starts_with('/') || d.path.contains("..") {
            return Err(Error::invalid(
                src,
                format!("{at}.dirs[{k}].path"),
                "a directory path in the container must be absolute and not contain `..`",
            ));
        }
        if !d.source.is_empty() && !d.source.starts_with('/') {
            return Err(Error::invalid(
                src,
                format!("{at}.dirs[{k}].source"),
                format!(
                    "`{}` is not an absolute path; give the directory's full path on the envd host",
                    d.source
                ),
            ));
        }
    }
    Ok(())
}

/// The host's side, at create: every source directory exists (the error names the
/// template field and the value, which usually came from an answer).
pub fn check_sources(plan: &super::Plan) -> Result<()> {
    for (i, pod) in plan.pods.iter().enumerate() {
        for (j, c) in pod.containers.iter().enumerate() {
            for (k, d) in c.dirs.iter().enumerate() {
                if d.source.is_empty() || std::path::Path::new(&d.source).is_dir() {
                    continue;
                }
                return Err(Error::invalid(
                    "request",
                    format!("pods[{i}].containers[{j}].dirs[{k}].source"),
                    format!(
                        "`{}` is not a directory on the envd host; answer with a directory the server can read",
                        d.source
                    ),
                ));
            }
        }
    }
    Ok(())
}
