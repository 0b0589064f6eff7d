//! Content-addressed files: every blob (layer, config, manifest) of uploads and of the
//! pull-through cache, once, under `<root>/blobs/sha256/<hex>`; written to a temporary
//! file, checked against its digest, then renamed into place.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use crate::error::{Error, IoContext, Result};

#[derive(Debug, Clone)]
pub struct Blobs {
    root: PathBuf,
}

/// `sha256:<64 hex>`, checked: a digest names a file, so nothing else may reach a path.
pub fn hex_of(digest: &str) -> Option<&str> {
    digest.strip_prefix("sha256:").filter(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

impl Blobs {
    pub fn new(root: &Path) -> Blobs {
        Blobs {
            root: root.join("blobs"),
        }
    }

    pub fn path(&self, digest: &str) -> Option<PathBuf> {
        hex_of(digest).map(|h| self.root.join("sha256").join(h))
    }

    pub fn has(&self, digest: &str) -> bool {
        self.path(digest).is_some_and(|p| p.is_file())
    }

    /// A new temporary file beside the blobs (same filesystem, so the rename is atomic).
    /// It is removed when dropped uncommitted: a fetch cut short (an env deleted mid-pull,
    /// a client gone mid-upload) leaves nothing behind.
    pub fn temp(&self) -> Result<NamedTempFile> {
        let dir = self.root.join("tmp");
        std::fs::create_dir_all(&dir).io_ctx(|| format!("creating {}", dir.display()))?;
        tempfile::Builder::new()
            .tempfile_in(&dir)
            .io_ctx(|| format!("creating a file in {}", dir.display()))
    }

    /// Moves a temporary file holding `digest`'s bytes into place.
    pub fn commit(&self, tmp: NamedTempFile, digest: &str) -> Result<PathBuf> {
        let dest = self
            .path(digest)
            .ok_or_else(|| Error::step("images", format!("`{digest}` is not a sha256 digest")))?;
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).io_ctx(|| format!("creating {}", dir.display()))?;
        }
        tmp.persist(&dest)
            .map_err(|e| e.error)
            .io_ctx(|| format!("storing blob {digest}"))?;
        Ok(dest)
    }

    /// Stores bytes, returning their digest.
    pub fn put(&self, bytes: &[u8]) -> Result<String> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        if !self.has(&digest) {
            let mut tmp = self.temp()?;
            tmp.write_all(bytes)
                .io_ctx(|| format!("writing {}", tmp.path().display()))?;
            self.commit(tmp, &digest)?;
        }
        Ok(digest)
    }

    /// Copies `len` bytes of `from` into the store, hashing them; returns (digest, bytes).
    pub fn copy(&self, from: &mut impl Read, len: u64) -> Result<(String, u64)> {
        let mut tmp = self.temp()?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut left = len;
        let mut from = from.take(len);
        while left > 0 {
            let n = from.read(&mut buf).io_ctx(|| "reading a layer".into())?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .io_ctx(|| format!("writing {}", tmp.path().display()))?;
            left -= n as u64;
        }
        if left > 0 {
            return Err(Error::step(
                "images",
                "the image archive ends inside a layer",
            ));
        }
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        if !self.has(&digest) {
            self.commit(tmp, &digest)?;
        }
        Ok((digest, len))
    }

    pub fn read(&self, digest: &str) -> Result<Vec<u8>> {
        let p = self
            .path(digest)
            .ok_or_else(|| Error::NotFound(format!("blob {digest}")))?;
        std::fs::read(&p).io_ctx(|| format!("reading {}", p.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_by_digest_once() {
        let dir = tempfile::tempdir().unwrap();
        let b = Blobs::new(dir.path());
        let d = b.put(b"hello").unwrap();
        assert_eq!(
            d,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let (d2, n) = b.copy(&mut &b"hello"[..], 5).unwrap();
        assert_eq!((d2.as_str(), n), (d.as_str(), 5));
        assert_eq!(b.read(&d).unwrap(), b"hello");
        assert!(b.path("sha256:../../etc/passwd").is_none());
        assert!(b.copy(&mut &b"hel"[..], 5).is_err());
    }
}
