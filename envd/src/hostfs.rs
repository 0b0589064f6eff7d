//! Host paths inside node volumes, reached without ever following a symlink: a node's data
//! root holds directories its containers can write (the pods' log dirs), so any component
//! below the root may have been swapped for a link to the host's `/etc` by the time envd
//! gets there. Every step below the root is an `openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS` relative to the fd of its parent, and modes change through the
//! opened fd, never by path.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

/// Deeper than this, a log tree is an attack or a mistake; its deeper files are left out.
const MAX_DEPTH: usize = 32;

fn resolve() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// One plain name: no separator, not `.` or `..`, not empty.
fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{name}` is not a plain file name"),
        ));
    }
    Ok(())
}

fn open_root(root: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn open_dir_at(parent: impl AsFd, name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat2(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        resolve(),
    )?)
}

/// Creates `root/<names...>` (each a plain name; the ones that exist are kept) and sets the
/// last one's mode, all through fds: a link anywhere below `root` fails the call instead
/// of being followed.
pub fn ensure_dir(root: &Path, names: &[&str], mode: u32) -> io::Result<()> {
    let mut dir = open_root(root)?;
    for name in names {
        check_name(name)?;
        match rustix::fs::mkdirat(&dir, *name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        dir = open_dir_at(&dir, name)?;
    }
    rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode))?;
    Ok(())
}

/// Calls `each(relative path, file)` for every regular file under `root/<names...>`, in
/// name order, never following a link and never opening anything but regular files and
/// directories (a FIFO or device a container made is skipped unopened).
pub fn walk_files(
    root: &Path,
    names: &[&str],
    each: &mut dyn FnMut(&str, File) -> io::Result<()>,
) -> io::Result<()> {
    let mut dir = open_root(root)?;
    for name in names {
        check_name(name)?;
        dir = open_dir_at(&dir, name)?;
    }
    walk(&dir, "", 0, each)
}

fn walk(
    dir: &OwnedFd,
    prefix: &str,
    depth: usize,
    each: &mut dyn FnMut(&str, File) -> io::Result<()>,
) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let mut names = vec![];
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name != "." && name != ".." && entry.file_name().to_str().is_ok() {
            names.push(name);
        }
    }
    names.sort();
    for name in names {
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let Ok(st) = rustix::fs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) else {
            continue; // gone meanwhile
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                if let Ok(sub) = open_dir_at(dir, &name) {
                    walk(&sub, &rel, depth + 1, each)?;
                }
            }
            FileType::RegularFile => {
                // NONBLOCK and a type check on the open fd: swapped for a FIFO since the stat,
                // it neither blocks nor gets read.
                let Ok(fd) = rustix::fs::openat2(
                    dir,
                    name.as_str(),
                    OFlags::RDONLY
                        | OFlags::NOFOLLOW
                        | OFlags::NONBLOCK
                        | OFlags::NOCTTY
                        | OFlags::CLOEXEC,
                    Mode::empty(),
                    resolve(),
                ) else {
                    continue;
                };
                let st = rustix::fs::fstat(&fd)?;
                if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile {
                    each(&rel, File::from(fd))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Why a path is refused beneath a root.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// A `.` or `..` component, or not absolute.
    NotPlain,
    /// Under none of the roots.
    Outside,
    /// A symbolic link on the way (or the path leaves the root through one).
    Link,
    NotADirectory,
    Unreadable(String),
}

/// Opens the directory `path`, which must lie under one of `roots` and be reached from it
/// without a link, `.` or `..`; the fd is what later reads go through, so a link swapped
/// in after the check leads nowhere.
pub fn open_dir_under(path: &Path, roots: &[std::path::PathBuf]) -> Result<OwnedFd, Refused> {
    use std::path::Component;
    if !path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(Refused::NotPlain);
    }
    let (root, rel) = roots
        .iter()
        .find_map(|r| Some((r, path.strip_prefix(r).ok()?)))
        .ok_or(Refused::Outside)?;
    let root_fd = open_root(root).map_err(|e| Refused::Unreadable(e.to_string()))?;
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    // RESOLVE_NO_SYMLINKS covers the last component too, with ELOOP (O_NOFOLLOW would
    // make a final link look like "not a directory").
    rustix::fs::openat2(
        &root_fd,
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        resolve(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::XDEV => Refused::Link,
        rustix::io::Errno::NOTDIR | rustix::io::Errno::NOENT => Refused::NotADirectory,
        e => Refused::Unreadable(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn ensure_dir_creates_and_sets_the_mode() {
        let root = tempfile::tempdir().unwrap();
        ensure_dir(root.path(), &["logs", "app"], 0o777).unwrap();
        let m = std::fs::metadata(root.path().join("logs/app")).unwrap();
        assert!(m.is_dir());
        assert_eq!(m.permissions().mode() & 0o777, 0o777);
        // Again: kept as it is.
        ensure_dir(root.path(), &["logs", "app"], 0o777).unwrap();
    }

    #[test]
    fn ensure_dir_never_follows_a_link() {
        let root = tempfile::tempdir().unwrap();
        let canary = tempfile::tempdir().unwrap();
        std::fs::set_permissions(canary.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::create_dir(root.path().join("logs")).unwrap();
        std::os::unix::fs::symlink(canary.path(), root.path().join("logs/app")).unwrap();
        assert!(ensure_dir(root.path(), &["logs", "app"], 0o777).is_err());
        // A link as a middle component too.
        std::fs::remove_file(root.path().join("logs/app")).unwrap();
        std::fs::remove_dir(root.path().join("logs")).unwrap();
        std::os::unix::fs::symlink(canary.path(), root.path().join("logs")).unwrap();
        assert!(ensure_dir(root.path(), &["logs", "app"], 0o777).is_err());
        let m = std::fs::metadata(canary.path()).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
        assert!(!canary.path().join("app").exists());
    }

    #[test]
    fn names_must_be_plain() {
        let root = tempfile::tempdir().unwrap();
        for bad in ["..", ".", "", "a/b"] {
            assert!(ensure_dir(root.path(), &[bad], 0o755).is_err(), "{bad}");
        }
    }

    #[test]
    fn walk_reads_regular_files_only() {
        let root = tempfile::tempdir().unwrap();
        let secret = tempfile::tempdir().unwrap();
        std::fs::write(secret.path().join("key"), "secret").unwrap();
        let logs = root.path().join("logs");
        std::fs::create_dir_all(logs.join("app/sub")).unwrap();
        std::fs::write(logs.join("app/a.log"), "a").unwrap();
        std::fs::write(logs.join("app/sub/b.log"), "b").unwrap();
        std::os::unix::fs::symlink(secret.path(), logs.join("app/dirlink")).unwrap();
        std::os::unix::fs::symlink(secret.path().join("key"), logs.join("app/filelink")).unwrap();
        nix_mkfifo(&logs.join("app/fifo"));
        let mut seen = vec![];
        walk_files(root.path(), &["logs"], &mut |rel, mut f| {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut f, &mut s)?;
            seen.push(format!("{rel}={s}"));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec!["app/a.log=a", "app/sub/b.log=b"]);
    }

    #[test]
    fn dirs_only_beneath_a_root_without_links() {
        let root = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("code/src")).unwrap();
        std::os::unix::fs::symlink(out.path(), root.path().join("out")).unwrap();
        std::os::unix::fs::symlink(root.path().join("code"), root.path().join("inner")).unwrap();
        let roots = vec![root.path().to_path_buf()];
        let at = |p: &str| open_dir_under(&root.path().join(p), &roots).map(|_| ());
        assert_eq!(at("code"), Ok(()));
        assert_eq!(at("code/src"), Ok(()));
        assert_eq!(at(""), Ok(()));
        assert_eq!(at("out"), Err(Refused::Link));
        assert_eq!(at("inner/src"), Err(Refused::Link));
        assert_eq!(at("code/../code"), Err(Refused::NotPlain));
        assert_eq!(at("missing"), Err(Refused::NotADirectory));
        assert_eq!(
            open_dir_under(out.path(), &roots).err(),
            Some(Refused::Outside)
        );
        assert_eq!(
            open_dir_under(out.path(), &[]).err(),
            Some(Refused::Outside)
        );
    }

    fn nix_mkfifo(p: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p,
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
    }
}
