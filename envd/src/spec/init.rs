//! Init data uploaded with a create request: files a database image applies on its first
//! start, placed in `/docker-entrypoint-initdb.d/` of the pod's first container
//! (`*.sql` for envd/mysql, `*.json` for envd/mongo, `*.redis` for envd/redis).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{File, Plan};
use crate::error::{Error, Result};

/// Where the database images look for init files.
pub const INIT_DIR: &str = "/docker-entrypoint-initdb.d";
/// All init files of one request together; they live in the store and in the request body.
pub const MAX_INIT_BYTES: usize = 8 << 20;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InitFile {
    /// A plain file name, e.g. `01-schema.sql`; the image applies files in name order.
    pub name: String,
    pub content: String,
}

/// Init files by pod name.
pub type Init = BTreeMap<String, Vec<InitFile>>;

/// Checks the files against the rendered plan: the pod exists, names are plain and not
/// taken by the template's own files, the total size is bounded.
pub fn validate(init: &Init, plan: &Plan) -> Result<()> {
    let mut total = 0usize;
    for (pod_name, files) in init {
        let Some(pod) = plan.pod(pod_name) else {
            let known: Vec<&str> = plan.pods.iter().map(|p| p.name.as_str()).collect();
            return Err(Error::invalid(
                "request",
                format!("init.{pod_name}"),
                format!(
                    "the template has no pod `{pod_name}`; pods: {}",
                    known.join(", ")
                ),
            ));
        };
        let taken: HashSet<&str> = pod.containers[0]
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        let mut names = HashSet::new();
        for (i, f) in files.iter().enumerate() {
            let at = format!("init.{pod_name}[{i}].name");
            let plain = !f.name.is_empty()
                && f.name.len() <= 100
                && !f.name.starts_with('.')
                && f.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !plain {
                return Err(Error::invalid(
                    "request",
                    at,
                    format!(
                        "`{}` is not a plain file name: use letters, digits, `.`, `_` and `-`, e.g. 01-seed.sql",
                        f.name
                    ),
                ));
            }
            if !names.insert(f.name.as_str()) || taken.contains(path(&f.name).as_str()) {
                return Err(Error::invalid(
                    "request",
                    at,
                    format!(
                        "`{}` is given twice for pod `{pod_name}` (or the template has a file of that name); rename one",
                        f.name
                    ),
                ));
            }
            total += f.content.len();
        }
    }
    if total > MAX_INIT_BYTES {
        return Err(Error::invalid(
            "request",
            "init",
            format!(
                "the init files hold {total} bytes, more than {MAX_INIT_BYTES}; seed less data, or bake it into an image"
            ),
        ));
    }
    Ok(())
}

/// Adds the init files to the first container of their pods (validated before).
pub fn apply(plan: &mut Plan, init: &Init) {
    for pod in plan.pods.iter_mut() {
        if let Some(files) = init.get(&pod.name) {
            pod.containers[0].files.extend(files.iter().map(|f| File {
                path: path(&f.name),
                content: f.content.clone(),
                mode: 0o644,
            }));
        }
    }
}

fn path(name: &str) -> String {
    format!("{INIT_DIR}/{name}")
}
