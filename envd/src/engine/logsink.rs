//! The log archive as it is written: a gzip'd tar on disk, filled entry by entry, never
//! held in memory. Every entry is capped (per file and per env); a cut entry ends with a
//! marker line saying how much was cut. Tar and gzip work runs on blocking threads.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::write::GzEncoder;

/// Bounds of one env's log collection.
#[derive(Debug, Clone)]
pub struct LogLimits {
    /// Bytes kept of one container's output or one log file.
    pub per_file: u64,
    /// Bytes kept of all of them.
    pub per_env: u64,
    /// After this the archive is closed as it is, marked partial, and teardown goes on.
    pub time: Duration,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            per_file: 64 << 20,
            per_env: 512 << 20,
            time: Duration::from_secs(300),
        }
    }
}

/// The archive being written and what went into it.
pub struct Sink {
    /// None once finished.
    tar: Option<tar::Builder<GzEncoder<std::fs::File>>>,
    tmp: PathBuf,
    path: PathBuf,
    limits: LogLimits,
    pub kept: u64,
    pub cut: u64,
    pub entries: usize,
    /// Why the archive is incomplete, if it is.
    pub partial: Option<String>,
}

/// How much of an entry was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    None,
    Exactly(u64),
    /// Counting stopped (the time limit): at least this much.
    AtLeast(u64),
}

impl Sink {
    /// Starts `<path>.tmp`; [`Sink::finish`] moves it to `path`.
    pub fn create(path: &Path, limits: LogLimits) -> io::Result<Sink> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        let gz = GzEncoder::new(std::fs::File::create(&tmp)?, flate2::Compression::fast());
        Ok(Sink {
            tar: Some(tar::Builder::new(gz)),
            tmp,
            path: path.to_path_buf(),
            limits,
            kept: 0,
            cut: 0,
            entries: 0,
            partial: None,
        })
    }

    /// A spool file beside the archive (the data dir's disk, not a tmpfs).
    pub fn part_path(&self, name: &str) -> PathBuf {
        self.path.with_extension(format!("{name}.part"))
    }

    /// How many bytes the next entry may keep.
    pub fn room(&self) -> u64 {
        self.limits
            .per_file
            .min(self.limits.per_env.saturating_sub(self.kept))
    }

    /// Appends `kept` bytes read from `data` as `name`, then the marker if something was
    /// cut. The entry has exactly the size its header says whatever the reader gives (a
    /// file a container still writes may shrink or grow meanwhile).
    pub fn put(&mut self, name: &str, data: impl Read, kept: u64, cut: Cut) -> io::Result<()> {
        let marker = match cut {
            Cut::None => String::new(),
            Cut::Exactly(n) => format!(
                "\n[envd: cut here: {n} more bytes not kept (limits: {} per file, {} per env)]\n",
                self.limits.per_file, self.limits.per_env
            ),
            Cut::AtLeast(n) => format!(
                "\n[envd: cut here: at least {n} more bytes not kept (the collection time limit of {} passed while counting)]\n",
                humantime::format_duration(self.limits.time)
            ),
        };
        let mut h = tar::Header::new_gnu();
        h.set_size(kept + marker.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(crate::store::now_ms() as u64 / 1000);
        let body = data
            .take(kept)
            .chain(io::repeat(b'\n'))
            .take(kept)
            .chain(marker.as_bytes());
        self.tar
            .as_mut()
            .ok_or_else(|| io::Error::other("the archive is closed"))?
            .append_data(&mut h, name, body)?;
        self.kept += kept;
        if let Cut::Exactly(n) | Cut::AtLeast(n) = cut {
            self.cut += n;
        }
        self.entries += 1;
        Ok(())
    }

    /// Appends a whole file, capped by [`Sink::room`].
    pub fn put_file(&mut self, name: &str, file: std::fs::File) -> io::Result<()> {
        let size = file.metadata()?.len();
        let kept = size.min(self.room());
        let cut = if kept < size {
            Cut::Exactly(size - kept)
        } else {
            Cut::None
        };
        self.put(name, file, kept, cut)
    }

    /// Closes the archive (with a note inside when it is partial) and moves it in place.
    pub fn finish(mut self) -> io::Result<PathBuf> {
        if let Some(why) = self.partial.clone() {
            let text = format!("envd: this archive is partial: {why}\n");
            self.put(
                "envd-partial.txt",
                text.as_bytes(),
                text.len() as u64,
                Cut::None,
            )?;
        }
        let tar = self
            .tar
            .take()
            .ok_or_else(|| io::Error::other("the archive is closed"))?;
        tar.into_inner()?.finish()?.sync_all()?;
        std::fs::rename(&self.tmp, &self.path)?;
        Ok(self.path.clone())
    }

    /// Runs `f` on a blocking thread with the sink, and hands it back.
    pub async fn blocking<T: Send + 'static>(
        self,
        f: impl FnOnce(&mut Sink) -> io::Result<T> + Send + 'static,
    ) -> (Option<Sink>, io::Result<T>) {
        let mut sink = self;
        match tokio::task::spawn_blocking(move || {
            let r = f(&mut sink);
            (sink, r)
        })
        .await
        {
            Ok((sink, r)) => (Some(sink), r),
            Err(e) => (None, Err(io::Error::other(e))),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // Not finished: no half archive is left beside the real ones.
        if self.tar.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(path: &Path) -> Vec<(String, String)> {
        let f = std::fs::File::open(path).unwrap();
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().display().to_string();
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                (name, s)
            })
            .collect()
    }

    #[test]
    fn caps_per_file_and_per_env_with_a_marker() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar.gz");
        let limits = LogLimits {
            per_file: 10,
            per_env: 15,
            time: Duration::from_secs(1),
        };
        let mut s = Sink::create(&path, limits).unwrap();
        let f = |c: &str| {
            let p = dir.path().join(c);
            std::fs::write(&p, c.repeat(4)).unwrap();
            std::fs::File::open(p).unwrap()
        };
        s.put_file("small", f("abc")).unwrap(); // 12 bytes: 10 kept
        s.put_file("second", f("xy")).unwrap(); // 8 bytes: 5 left in the env
        s.put("short", &b"12"[..], 4, Cut::None).unwrap(); // padded to its header
        s.partial = Some("time".into());
        assert_eq!((s.kept, s.cut, s.entries), (19, 5, 3));
        let out = s.finish().unwrap();
        let e = read_back(&out);
        assert_eq!(e[0].0, "small");
        assert!(
            e[0].1
                .starts_with("abcabcabca\n[envd: cut here: 2 more bytes")
        );
        assert!(e[1].1.starts_with("xyxyx\n[envd: cut here: 3 more bytes"));
        assert_eq!(e[2].1, "12\n\n");
        assert_eq!(e[3].0, "envd-partial.txt");
        assert!(!path.with_extension("tmp").exists());
    }

    #[test]
    fn an_unfinished_sink_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.tar.gz");
        let s = Sink::create(&path, LogLimits::default()).unwrap();
        assert!(path.with_extension("tmp").exists());
        drop(s);
        assert!(!path.with_extension("tmp").exists());
        assert!(!path.exists());
    }
}
