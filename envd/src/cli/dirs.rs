//! `envd create --dir POD=DIR`: a local directory packed here (a gzip'd tar, links kept as
//! links) and sent with the request, for the pod's `dirs:` paths.

use std::path::Path;

use base64::Engine as _;
use serde_json::{Map, Value};

use super::Fail;
use envd::spec::uploads::{MAX_UNPACKED_BYTES, MAX_UPLOAD_BYTES};

/// `{"<pod>": "<base64 of a gzip'd tar>"}` from `POD=DIR` items.
pub(super) fn read(items: &[String]) -> Result<Value, Fail> {
    let mut by_pod = Map::new();
    let mut total = 0usize;
    for item in items {
        let (pod, dir) = item
            .split_once('=')
            .ok_or_else(|| Fail::Usage(format!("--dir {item}: write --dir POD=DIR")))?;
        let gz = pack(Path::new(dir)).map_err(|e| Fail::Usage(format!("--dir {item}: {e}")))?;
        total += gz.len();
        if total > MAX_UPLOAD_BYTES {
            return Err(Fail::Usage(format!(
                "--dir {item}: the directories hold more than {} MiB compressed; send less (e.g. without build output or .git) or bake them into an image",
                MAX_UPLOAD_BYTES >> 20
            )));
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(gz);
        if by_pod.insert(pod.to_string(), Value::String(b64)).is_some() {
            return Err(Fail::Usage(format!(
                "--dir {item}: pod `{pod}` is given twice"
            )));
        }
    }
    Ok(Value::Object(by_pod))
}

fn pack(dir: &Path) -> std::io::Result<Vec<u8>> {
    if !dir.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let size: u64 = walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    if size > MAX_UNPACKED_BYTES {
        return Err(std::io::Error::other(format!(
            "{} holds {size} bytes, more than {} MiB; send less or bake it into an image",
            dir.display(),
            MAX_UNPACKED_BYTES >> 20
        )));
    }
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    b.follow_symlinks(false);
    b.append_dir_all(".", dir)?;
    b.into_inner()?.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_a_directory_per_pod() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("src")).unwrap();
        std::fs::write(d.path().join("src/app.py"), "print(1)").unwrap();
        let item = format!("app={}", d.path().display());
        let Ok(v) = read(std::slice::from_ref(&item)) else {
            panic!("packed")
        };
        let gz = base64::engine::general_purpose::STANDARD
            .decode(v["app"].as_str().unwrap())
            .unwrap();
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(names.iter().any(|n| n.ends_with("src/app.py")), "{names:?}");
        assert!(matches!(read(&[item.clone(), item]), Err(Fail::Usage(_))));
        assert!(matches!(read(&["app".into()]), Err(Fail::Usage(_))));
    }
}
