//! The log directory as a gzip tar, written while it is sent.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::sync::mpsc;

/// Chunks of the archive as they are produced; an error ends the stream.
pub type Chunk = Result<Vec<u8>, io::Error>;

/// Writes a gzip tar of `dir` into `out`, paths relative to `dir` (`mysql/error.log`).
/// Regular files, directories and symlinks (as links) are archived; sockets and
/// other special files are skipped. A missing `dir` is an empty archive. Files
/// still growing are cut at the size they had when reached.
pub fn write_archive<W: Write>(dir: &Path, out: W) -> io::Result<W> {
    let mut tar = tar::Builder::new(GzEncoder::new(out, Compression::fast()));
    tar.mode(tar::HeaderMode::Complete);
    tar.follow_symlinks(false);
    if dir.is_dir() {
        append_tree(&mut tar, dir, PathBuf::new())?;
    }
    tar.into_inner()?.finish()
}

fn append_tree<W: Write>(tar: &mut tar::Builder<W>, root: &Path, rel: PathBuf) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(&rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = rel.join(entry.file_name());
        let path = entry.path();
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
            Err(e) => return Err(e),
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            tar.append_dir(&name, &path)?;
            append_tree(tar, root, name)?;
        } else if ft.is_file() {
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            let len = meta.len();
            header.set_size(len);
            // Exactly `len` bytes, whether the file grew or shrank since.
            let data = file.take(len).chain(io::repeat(0)).take(len);
            tar.append_data(&mut header, &name, data)?;
        } else if ft.is_symlink() {
            tar.append_path_with_name(&path, &name)?;
        }
    }
    Ok(())
}

/// A `Write` that sends what it gets as chunks over a channel (from a blocking thread).
pub struct ChannelWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

const CHUNK: usize = 64 * 1024;

impl ChannelWriter {
    pub fn new(tx: mpsc::Sender<Chunk>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Starts writing the archive of `dir` on a blocking thread; returns its chunks.
pub fn stream_archive(dir: PathBuf) -> mpsc::Receiver<Chunk> {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let err_tx = tx.clone();
        let result = write_archive(&dir, ChannelWriter::new(tx)).and_then(|mut w| w.flush());
        if let Err(e) = result {
            eprintln!("stubs: archive of {}: {e}", dir.display());
            let _ = err_tx.blocking_send(Err(e));
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;

    fn entries(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut t = tar::Archive::new(GzDecoder::new(archive));
        let mut out = Vec::new();
        for e in t.entries().expect("entries") {
            let mut e = e.expect("entry");
            let name = e.path().expect("path").display().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("data");
            out.push((name, data));
        }
        out
    }

    #[test]
    fn archives_relative_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("mysql")).expect("mkdir");
        std::fs::write(dir.path().join("mysql/error.log"), b"boom\n").expect("write");
        std::fs::write(dir.path().join("top.log"), b"x").expect("write");
        let bytes = write_archive(dir.path(), Vec::new()).expect("archive");
        let got = entries(&bytes);
        let names: Vec<_> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["mysql", "mysql/error.log", "top.log"]);
        assert_eq!(got[1].1, b"boom\n");
    }

    #[test]
    fn missing_dir_is_an_empty_archive() {
        let bytes = write_archive(Path::new("/nonexistent/logs"), Vec::new()).expect("archive");
        assert!(entries(&bytes).is_empty());
    }
}
