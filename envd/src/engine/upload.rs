//! The tar a container gets between create and start: its rendered files and the host
//! directories of its `dirs:` (e.g. a service's code).

use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::spec::{Dir, File};

/// A copied directory is packed in memory; past this the code belongs in an image.
const MAX_DIR_BYTES: u64 = 256 << 20;

pub(super) fn container_tar(files: &[File], dirs: &[Dir]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    // Links are copied as links: a checkout's symlinks must not pull in the host's files.
    b.follow_symlinks(false);
    for f in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(f.content.len() as u64);
        h.set_mode(f.mode);
        h.set_mtime(crate::store::now_ms() as u64 / 1000);
        b.append_data(&mut h, f.path.trim_start_matches('/'), f.content.as_bytes())
            .io_ctx(|| format!("packing {}", f.path))?;
    }
    for d in dirs.iter().filter(|d| !d.source.is_empty()) {
        let src = Path::new(&d.source);
        let size = dir_size(src)?;
        if size > MAX_DIR_BYTES {
            return Err(Error::step(
                "pods",
                format!(
                    "{} holds {size} bytes, more than {MAX_DIR_BYTES}; copy less (e.g. without build output) or bake it into an image",
                    d.source
                ),
            ));
        }
        b.append_dir_all(d.path.trim_start_matches('/'), src)
            .io_ctx(|| format!("packing the directory {}", d.source))?;
    }
    b.into_inner().io_ctx(|| "packing files".into())
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry.map_err(|e| {
            Error::step(
                "pods",
                format!("reading {}: {e}; is it readable by envd?", dir.display()),
            )
        })?;
        if entry.file_type().is_file() {
            total += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    Ok(total)
}
