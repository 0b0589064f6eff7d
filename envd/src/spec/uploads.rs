//! Directories uploaded with a create (`envd create --dir POD=DIR`): per pod a gzip'd tar,
//! base64 in the request, copied into every `dirs:` path of the pod's containers in place
//! of a host directory. For users whose code is on their machine, not on the envd host.

use std::collections::BTreeMap;
use std::path::Component;
use std::sync::Arc;

use base64::Engine as _;

use super::Plan;
use crate::error::{Error, Result};

/// All uploads of one request together, compressed (the request body holds them as base64).
pub const MAX_UPLOAD_BYTES: usize = 4 << 20;
/// One upload unpacked.
pub const MAX_UNPACKED_BYTES: u64 = 64 << 20;
const MAX_ENTRIES: usize = 20_000;

/// Uploads by pod name: base64 of a gzip'd tar of the directory's contents.
pub type Uploads = BTreeMap<String, String>;

/// Checks the uploads against the plan (the pod exists and copies a directory somewhere)
/// and their contents (plain relative paths, files, directories and links only, bounded
/// sizes); returns them decoded.
pub fn validate(uploads: &Uploads, plan: &Plan) -> Result<BTreeMap<String, Arc<Vec<u8>>>> {
    let mut total = 0usize;
    let mut out = BTreeMap::new();
    for (pod_name, b64) in uploads {
        let field = format!("dirs.{pod_name}");
        let Some(pod) = plan.pod(pod_name) else {
            let known: Vec<&str> = plan.pods.iter().map(|p| p.name.as_str()).collect();
            return Err(Error::invalid(
                "request",
                field,
                format!(
                    "the template has no pod `{pod_name}`; pods: {}",
                    known.join(", ")
                ),
            ));
        };
        if pod.containers.iter().all(|c| c.dirs.is_empty()) {
            return Err(Error::invalid(
                "request",
                field,
                format!(
                    "the template copies no directory into pod `{pod_name}` (it has no `dirs:`)"
                ),
            ));
        }
        let gz = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| Error::invalid("request", &field, format!("not base64: {e}")))?;
        total += gz.len();
        if total > MAX_UPLOAD_BYTES {
            return Err(Error::invalid(
                "request",
                "dirs",
                format!(
                    "the uploaded directories hold more than {MAX_UPLOAD_BYTES} bytes compressed; upload less (e.g. without build output) or bake it into an image"
                ),
            ));
        }
        check_tar(&field, &gz)?;
        out.insert(pod_name.clone(), Arc::new(gz));
    }
    Ok(out)
}

/// Reads the whole archive once: headers only are trusted for sizes, and reading stops as
/// soon as the declared sizes pass the bound (a gzip bomb unpacks no further).
fn check_tar(field: &str, gz: &[u8]) -> Result<u64> {
    let bad = |reason: String| Error::invalid("request", field, reason);
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut unpacked = 0u64;
    let entries = a
        .entries()
        .map_err(|e| bad(format!("not a gzip'd tar: {e}")))?;
    for (n, entry) in entries.enumerate() {
        let entry = entry.map_err(|e| bad(format!("not a gzip'd tar: {e}")))?;
        if n >= MAX_ENTRIES {
            return Err(bad(format!("more than {MAX_ENTRIES} entries")));
        }
        let path = entry
            .path()
            .map_err(|e| bad(format!("an entry has a bad path: {e}")))?
            .into_owned();
        if !path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(bad(format!(
                "`{}` is not a plain relative path",
                path.display()
            )));
        }
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            return Err(bad(format!(
                "`{}` is neither a file, a directory nor a symbolic link",
                path.display()
            )));
        }
        unpacked = unpacked.saturating_add(entry.size());
        if unpacked > MAX_UNPACKED_BYTES {
            return Err(bad(format!(
                "unpacks to more than {MAX_UNPACKED_BYTES} bytes; upload less or bake it into an image"
            )));
        }
    }
    Ok(unpacked)
}

/// Puts each upload on every `dirs:` entry of its pod's containers.
pub fn apply(plan: &mut Plan, uploads: &BTreeMap<String, Arc<Vec<u8>>>) {
    for pod in &mut plan.pods {
        if let Some(gz) = uploads.get(&pod.name) {
            for d in pod.containers.iter_mut().flat_map(|c| c.dirs.iter_mut()) {
                d.upload = Some(Arc::clone(gz));
            }
        }
    }
}

/// Decodes stored uploads (written by [`validate`]'s caller, so valid).
pub fn decode(stored: &Uploads) -> BTreeMap<String, Arc<Vec<u8>>> {
    stored
        .iter()
        .filter_map(|(pod, b64)| {
            let gz = base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .ok()?;
            Some((pod.clone(), Arc::new(gz)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tgz(entries: &[(&str, &[u8])]) -> String {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            // set_path refuses `..`; a hostile client writes the bytes itself.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        let gz = b.into_inner().unwrap().finish().unwrap();
        base64::engine::general_purpose::STANDARD.encode(gz)
    }

    #[test]
    fn checks_paths_and_sizes() {
        assert_eq!(
            check_tar("f", &decode1(&tgz(&[("a/b.py", b"x")]))).unwrap(),
            1
        );
        for bad in ["../x", "/etc/passwd", "a/../../x"] {
            let e = check_tar("f", &decode1(&tgz(&[(bad, b"x")]))).unwrap_err();
            assert!(e.to_string().contains("plain relative"), "{bad}: {e}");
        }
        let e = check_tar("f", b"not gzip").unwrap_err();
        assert!(e.to_string().contains("gzip"), "{e}");
    }

    fn decode1(b64: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }
}
