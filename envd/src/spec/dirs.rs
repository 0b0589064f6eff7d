//! Host directories copied into a container before it starts (`dirs:` of a container),
//! e.g. the code of a service under test given as an answer.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Container;
use crate::error::{Error, Result};
use crate::hostfs::{Refused, open_dir_under};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Dir {
    /// A directory on the envd host (the server reads it); empty means nothing to copy,
    /// e.g. when the code is baked into the image.
    pub source: String,
    /// Where its contents land in the container.
    pub path: String,
    /// A directory uploaded with the create for this pod (a gzip'd tar, see
    /// [`super::uploads`]): copied here instead of `source`.
    #[serde(skip)]
    pub upload: Option<std::sync::Arc<Vec<u8>>>,
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

/// The host's side, at create: every source directory lies under one of the operator's
/// `roots` (`--dirs-root`; none by default), reached from it without `..` or a link (the
/// error names the template field and the value, which usually came from an answer).
pub fn check_sources(plan: &super::Plan, roots: &[PathBuf]) -> Result<()> {
    for (i, pod) in plan.pods.iter().enumerate() {
        for (j, c) in pod.containers.iter().enumerate() {
            for (k, d) in c.dirs.iter().enumerate() {
                if d.source.is_empty() || d.upload.is_some() {
                    continue;
                }
                let field = format!("pods[{i}].containers[{j}].dirs[{k}].source");
                open_source(&field, &d.source, roots)?;
            }
        }
    }
    Ok(())
}

/// The source directory, opened beneath its root; `field` is named if it is refused.
pub fn open_source(field: &str, source: &str, roots: &[PathBuf]) -> Result<OwnedFd> {
    open_dir_under(Path::new(source), roots).map_err(|r| {
        let s = source;
        let reason = match r {
            Refused::Outside if roots.is_empty() => format!(
                "`{s}`: this envd copies no host directories (it was started without --dirs-root); upload the directory with `envd create --dir POD=DIR` or bake it into an image"
            ),
            Refused::Outside => format!(
                "`{s}` is not under a directory this envd copies from ({}); put it there",
                roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Refused::NotPlain => {
                format!("`{s}` must be an absolute path without `.` or `..` components")
            }
            Refused::Link => format!(
                "`{s}` goes through a symbolic link; give the real directory under the root"
            ),
            Refused::NotADirectory => format!("`{s}` is not a directory on the envd host"),
            Refused::Unreadable(e) => format!("`{s}` cannot be read by envd ({e})"),
        };
        Error::invalid("request", field, reason)
    })
}
