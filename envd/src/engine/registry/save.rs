//! A `docker save` archive into the blob store: its layers copied out uncompressed
//! (straight from their place in the archive, no unpacking), and a schema-2 manifest per
//! image, so a node pulls it like any registry image. Blocking: run in `spawn_blocking`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;
use serde_json::json;

use super::Blobs;
use crate::error::{Error, IoContext, Result};

/// One image of the archive, stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// Its names in the archive (`docker save` keeps them), e.g. `shop:feature-x`.
    pub tags: Vec<String>,
    /// The digest of its manifest.
    pub manifest: String,
    /// Config and layers.
    pub bytes: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

const LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

fn bad(why: impl Into<String>) -> Error {
    Error::invalid(
        "request",
        "body",
        format!("not a `docker save` archive: {}", why.into()),
    )
}

/// Where each file of the archive starts and how long it is; links resolved.
fn index(path: &Path) -> Result<HashMap<String, (u64, u64)>> {
    let f = File::open(path).io_ctx(|| format!("opening {}", path.display()))?;
    let mut ar = tar::Archive::new(f);
    let mut files = HashMap::new();
    let mut links = vec![];
    for e in ar.entries().map_err(|e| bad(e.to_string()))? {
        let e = e.map_err(|e| bad(e.to_string()))?;
        let name = e
            .path()
            .map_err(|e| bad(e.to_string()))?
            .to_string_lossy()
            .to_string();
        let name = name.trim_start_matches("./").to_string();
        match e.header().entry_type() {
            tar::EntryType::Regular => {
                files.insert(name, (e.raw_file_position(), e.size()));
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                if let Ok(Some(t)) = e.link_name() {
                    links.push((name, t.to_string_lossy().to_string()));
                }
            }
            _ => {}
        }
    }
    // `docker save` links a layer shared by two images to its first copy (`../<id>/layer.tar`).
    for (name, target) in links {
        let dir = Path::new(&name).parent().unwrap_or(Path::new(""));
        let mut resolved = vec![];
        for c in dir.join(&target).components() {
            match c {
                std::path::Component::ParentDir => {
                    resolved.pop();
                }
                std::path::Component::Normal(s) => resolved.push(s.to_string_lossy().to_string()),
                _ => {}
            }
        }
        let full = resolved.join("/");
        let hard = files.get(&target).or_else(|| files.get(&full)).copied();
        if let Some(at) = hard {
            files.insert(name, at);
        }
    }
    Ok(files)
}

/// Stores every image of the archive at `path`; nothing is published yet.
pub fn import(path: &Path, blobs: &Blobs) -> Result<Vec<Saved>> {
    let files = index(path)?;
    let mut f = File::open(path).io_ctx(|| format!("opening {}", path.display()))?;
    let mut read = |name: &str| -> Result<Vec<u8>> {
        let (at, len) = *files
            .get(name)
            .ok_or_else(|| bad(format!("no {name} in it")))?;
        f.seek(SeekFrom::Start(at))
            .io_ctx(|| format!("reading {name}"))?;
        let mut v = Vec::with_capacity(len as usize);
        std::io::Read::read_to_end(&mut std::io::Read::take(&mut f, len), &mut v)
            .io_ctx(|| format!("reading {name}"))?;
        Ok(v)
    };
    let manifest = read("manifest.json")?;
    let entries: Vec<Entry> =
        serde_json::from_slice(&manifest).map_err(|e| bad(format!("manifest.json: {e}")))?;
    let mut out = vec![];
    let mut f = File::open(path).io_ctx(|| format!("opening {}", path.display()))?;
    for e in entries {
        let config = read(&e.config)?;
        let config_digest = blobs.put(&config)?;
        let mut layers = vec![];
        let mut bytes = config.len() as u64;
        for l in &e.layers {
            let (at, len) = *files
                .get(l)
                .ok_or_else(|| bad(format!("no layer {l} in it")))?;
            f.seek(SeekFrom::Start(at))
                .io_ctx(|| format!("reading {l}"))?;
            let (digest, n) = blobs.copy(&mut f, len)?;
            bytes += n;
            layers.push(json!({"mediaType": LAYER, "size": n, "digest": digest}));
        }
        let m = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": config.len(),
                "digest": config_digest,
            },
            "layers": layers,
        });
        let body = serde_json::to_vec(&m).map_err(|e| bad(e.to_string()))?;
        out.push(Saved {
            tags: e.repo_tags.unwrap_or_default(),
            manifest: blobs.put(&body)?,
            bytes,
        });
    }
    if out.is_empty() {
        return Err(bad("it holds no image"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }

    #[test]
    fn stores_layers_and_a_manifest_per_image() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(vec![]);
        append(&mut b, "aaa/layer.tar", b"layer-one");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_cksum();
        b.append_link(&mut h, "bbb/layer.tar", "../aaa/layer.tar")
            .unwrap();
        append(&mut b, "cfg.json", br#"{"rootfs":{}}"#);
        append(
            &mut b,
            "manifest.json",
            br#"[{"Config":"cfg.json","RepoTags":["shop:x"],"Layers":["aaa/layer.tar","bbb/layer.tar"]}]"#,
        );
        let tar = dir.path().join("img.tar");
        std::fs::write(&tar, b.into_inner().unwrap()).unwrap();
        let blobs = Blobs::new(dir.path());
        let saved = import(&tar, &blobs).unwrap();
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].tags, vec!["shop:x".to_string()]);
        assert_eq!(saved[0].bytes, 9 + 9 + 13);
        let m: serde_json::Value =
            serde_json::from_slice(&blobs.read(&saved[0].manifest).unwrap()).unwrap();
        let layers = m["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2);
        assert_eq!(layers[0]["digest"], layers[1]["digest"]);
        assert_eq!(
            blobs.read(layers[0]["digest"].as_str().unwrap()).unwrap(),
            b"layer-one"
        );
    }

    #[test]
    fn refuses_what_is_not_a_save() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("x.tar");
        std::fs::write(&tar, b"not a tar at all, not at all").unwrap();
        let e = import(&tar, &Blobs::new(dir.path())).unwrap_err();
        assert!(e.to_string().contains("docker save"), "{e}");
    }
}
