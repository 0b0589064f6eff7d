//! The tar a container gets between create and start: its rendered files and the host
//! directories of its `dirs:` (e.g. a service's code).

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::spec::{Dir, File};

/// A copied directory is packed in memory; past this the code belongs in an image.
const MAX_DIR_BYTES: u64 = 256 << 20;

/// Packs the files and, each opened again beneath its root (the check at create is not
/// trusted: a link may have been swapped in since), the directories.
pub(super) fn container_tar(files: &[File], dirs: &[Dir], roots: &[PathBuf]) -> Result<Vec<u8>> {
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
    for d in dirs {
        if let Some(gz) = &d.upload {
            append_upload(&mut b, &d.path, gz)?;
        }
    }
    for (k, d) in dirs
        .iter()
        .enumerate()
        .filter(|(_, d)| !d.source.is_empty() && d.upload.is_none())
    {
        let fd = crate::spec::dirs::open_source(&format!("dirs[{k}].source"), &d.source, roots)?;
        // Read through the opened fd: what the path names now does not matter.
        let src = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let src = src.as_path();
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

/// Re-roots an uploaded directory's entries (checked at create: plain relative paths,
/// files, directories and links, bounded) under `path`.
fn append_upload(b: &mut tar::Builder<Vec<u8>>, path: &str, gz: &[u8]) -> Result<()> {
    let ctx = || format!("unpacking the directory uploaded for {path}");
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let base = Path::new(path.trim_start_matches('/'));
    for entry in a.entries().io_ctx(ctx)? {
        let mut entry = entry.io_ctx(ctx)?;
        let dest = base.join(entry.path().io_ctx(ctx)?.as_ref());
        let mut h = entry.header().clone();
        if h.entry_type().is_symlink() {
            let target = entry
                .link_name()
                .io_ctx(ctx)?
                .unwrap_or_default()
                .into_owned();
            b.append_link(&mut h, &dest, &target).io_ctx(ctx)?;
        } else {
            b.append_data(&mut h, &dest, &mut entry).io_ctx(ctx)?;
        }
    }
    Ok(())
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
