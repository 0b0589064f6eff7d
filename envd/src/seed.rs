//! Seeding a node's data root from the prepared seed (scripts/build-seed): a hard-link
//! copy of the inner dockerd's tree, so every image is there in a fraction of a second,
//! with the files dockerd rewrites in place given real copies of their own.

use std::path::Path;
use std::process::Command;

use crate::error::{Error, IoContext, Result};

/// Files that dockerd or containerd modify in place (bolt databases and the like): a
/// shared inode would let one node corrupt the others.
fn must_copy(rel: &Path) -> bool {
    let s = rel.to_string_lossy();
    s.ends_with(".db") || s.starts_with("containerd/") || s.starts_with("buildkit/")
}

/// Copies `seed` into `dst` (which exists, possibly empty): directories recreated with
/// their owners, modes and xattrs (overlay2's opaque markers), files hard-linked except
/// those that must be private.
pub fn link_tree(seed: &Path, dst: &Path) -> Result<()> {
    // cp -a --link keeps ownership, modes, xattrs and whiteout devices exactly; a
    // hand-written walk would have to redo all of that.
    let status = Command::new("cp")
        .arg("-a")
        .arg("--link")
        .arg(format!("{}/.", seed.display()))
        .arg(dst)
        .status()
        .io_ctx(|| "running cp to seed the data root".into())?;
    if !status.success() {
        return Err(Error::step(
            "node",
            format!(
                "cp -a --link {} {} failed ({status})",
                seed.display(),
                dst.display()
            ),
        ));
    }
    for entry in walkdir::WalkDir::new(dst).into_iter().flatten() {
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(dst) else {
            continue;
        };
        if must_copy(rel) {
            let tmp = entry.path().with_extension("envd-copy");
            std::fs::copy(entry.path(), &tmp)
                .io_ctx(|| format!("copying {}", entry.path().display()))?;
            std::fs::rename(&tmp, entry.path())
                .io_ctx(|| format!("replacing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn layers_are_linked_and_databases_copied() {
        let seed = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(seed.path().join("overlay2/abc/diff/etc")).unwrap();
        std::fs::write(seed.path().join("overlay2/abc/diff/etc/x"), "layer").unwrap();
        std::fs::create_dir_all(seed.path().join("volumes")).unwrap();
        std::fs::write(seed.path().join("volumes/metadata.db"), "bolt").unwrap();
        link_tree(seed.path(), dst.path()).unwrap();
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(
            ino(&seed.path().join("overlay2/abc/diff/etc/x")),
            ino(&dst.path().join("overlay2/abc/diff/etc/x"))
        );
        assert_ne!(
            ino(&seed.path().join("volumes/metadata.db")),
            ino(&dst.path().join("volumes/metadata.db"))
        );
        assert_eq!(
            std::fs::read_to_string(dst.path().join("volumes/metadata.db")).unwrap(),
            "bolt"
        );
    }
}
