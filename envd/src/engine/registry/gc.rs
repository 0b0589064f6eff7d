//! What uploads hold: the blobs each manifest names with their sizes (an owner's quota
//! counts every distinct blob once, however many images share it), and the removal of
//! the blobs no upload and no cached tag names any more.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::Registry;
use crate::error::{Error, IoContext, Result};

impl Registry {
    fn manifest_json(&self, manifest: &str) -> Option<Value> {
        serde_json::from_slice(&self.blobs.read(manifest).ok()?).ok()
    }

    /// The config and layers a manifest names, with their sizes (none when unreadable).
    pub fn manifest_blobs(&self, manifest: &str) -> Vec<(String, u64)> {
        let Some(v) = self.manifest_json(manifest) else {
            return vec![];
        };
        let entry = |e: &Value| {
            let d = e.get("digest")?.as_str()?.to_string();
            Some((d, e.get("size").and_then(Value::as_u64).unwrap_or(0)))
        };
        v.get("config")
            .into_iter()
            .chain(
                v.get("layers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten(),
            )
            .filter_map(entry)
            .collect()
    }

    /// Bytes of the distinct blobs `manifests` name: a layer two images share counts once.
    pub fn distinct_bytes(&self, manifests: &[String]) -> u64 {
        let sizes: HashMap<String, u64> = manifests
            .iter()
            .flat_map(|m| self.manifest_blobs(m))
            .collect();
        sizes.values().sum()
    }

    /// A manifest, the manifests an index lists, and all their blobs, into `out`.
    fn reach(&self, manifest: &str, out: &mut HashSet<String>, depth: u8) {
        if !out.insert(manifest.to_string()) {
            return;
        }
        out.extend(self.manifest_blobs(manifest).into_iter().map(|(d, _)| d));
        if depth == 0 {
            return;
        }
        let listed = self
            .manifest_json(manifest)
            .and_then(|v| v.get("manifests").cloned());
        for m in listed
            .as_ref()
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(d) = m.get("digest").and_then(Value::as_str) {
                self.reach(d, out, depth - 1);
            }
        }
    }

    /// Every blob a tag of the pull-through cache reaches.
    fn cached_blobs(&self) -> HashSet<String> {
        let mut out = HashSet::new();
        let tags = walkdir::WalkDir::new(self.root.join("tags")).follow_links(false);
        for e in tags.into_iter().flatten() {
            if !e.file_type().is_file() {
                continue;
            }
            if let Ok(d) = std::fs::read_to_string(e.path()) {
                self.reach(d.trim(), &mut out, 1);
            }
        }
        out
    }

    /// Deletes the blobs of the `gone` manifests (removed or replaced uploads) that no
    /// manifest in `keep` (every upload left) and no cached tag names; returns how many.
    /// The caller holds [`Registry::gc`] alone. Only regular files under the blob store,
    /// named by a checked digest, are removed: a link is never followed.
    pub async fn collect(self: &Arc<Self>, gone: Vec<String>, keep: Vec<String>) -> Result<usize> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.collect_now(&gone, &keep))
            .await
            .map_err(|e| Error::step("images", format!("removing unused blobs: {e}")))?
    }

    fn collect_now(&self, gone: &[String], keep: &[String]) -> Result<usize> {
        let mut held = self.cached_blobs();
        for m in keep {
            self.reach(m, &mut held, 0);
        }
        let mut unused = HashSet::new();
        for m in gone {
            self.reach(m, &mut unused, 0);
        }
        let mut removed = 0;
        for d in unused.difference(&held) {
            let Some(p) = self.blobs.path(d) else {
                continue;
            };
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_file()) {
                std::fs::remove_file(&p).io_ctx(|| format!("removing {}", p.display()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
