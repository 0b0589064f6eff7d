//! Files beside a catalog template: a container's file may say `source: my.cnf` (a path
//! relative to the template's directory) instead of `content:`. The catalog inlines it
//! when an env is created from the template, so the stored template is whole: the env
//! re-renders the same text (config set, clone) whatever later happens to the directory.

use std::path::Path;

use serde_yaml::Value;

use crate::error::{Error, Result};

const MAX_FILE: u64 = 1 << 20;

/// The template with its `source:` files inlined; built-ins have none.
pub(super) fn inline_source(mut t: super::TemplateSource) -> Result<super::TemplateSource> {
    if t.origin.starts_with("builtin:") {
        return Ok(t);
    }
    let dir = Path::new(&t.origin).parent().unwrap_or(Path::new("."));
    t.text = inline(dir, &t.origin, std::mem::take(&mut t.text))?;
    Ok(t)
}

pub(super) fn inline(dir: &Path, origin: &str, text: String) -> Result<String> {
    if !text.contains("source:") {
        return Ok(text);
    }
    let Ok(mut doc) = serde_yaml::from_str::<Value>(&text) else {
        // Plan::render reports the YAML error with its line.
        return Ok(text);
    };
    let mut changed = false;
    let pods = doc.get_mut("pods").and_then(Value::as_sequence_mut);
    for (i, pod) in pods.into_iter().flatten().enumerate() {
        let containers = pod.get_mut("containers").and_then(Value::as_sequence_mut);
        for (j, c) in containers.into_iter().flatten().enumerate() {
            let files = c.get_mut("files").and_then(Value::as_sequence_mut);
            for (k, f) in files.into_iter().flatten().enumerate() {
                let Some(map) = f.as_mapping_mut() else {
                    continue;
                };
                let Some(source) = map.remove("source") else {
                    continue;
                };
                let field = format!("pods[{i}].containers[{j}].files[{k}].source");
                let content = read(dir, origin, &field, &source)?;
                if map.contains_key("content") {
                    return Err(Error::invalid(
                        origin,
                        field,
                        "give `source` or `content`, not both",
                    ));
                }
                map.insert("content".into(), Value::String(content));
                changed = true;
            }
        }
    }
    if !changed {
        return Ok(text);
    }
    serde_yaml::to_string(&doc).map_err(|e| Error::invalid(origin, "(document)", e.to_string()))
}

fn read(dir: &Path, origin: &str, field: &str, source: &Value) -> Result<String> {
    let bad = |why: String| Error::invalid(origin, field, why);
    let rel = source
        .as_str()
        .ok_or_else(|| bad("`source` is a path relative to the template's directory".into()))?;
    let path = Path::new(rel);
    if path.is_absolute() || path.components().any(|c| c.as_os_str() == "..") {
        return Err(bad(format!(
            "`{rel}` must be a path inside the template's directory, without `..`"
        )));
    }
    let full = dir.join(path);
    let meta = std::fs::metadata(&full)
        .map_err(|e| bad(format!("cannot read {}: {e}", full.display())))?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return Err(bad(format!(
            "{} must be a file of at most 1 MiB",
            full.display()
        )));
    }
    std::fs::read_to_string(&full)
        .map_err(|e| bad(format!("cannot read {} as UTF-8 text: {e}", full.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_inlined_and_escapes_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("my.cnf"),
            "[mysqld]\nmax_connections = {{ n }}\n",
        )
        .unwrap();
        let t = "pods:\n- name: p\n  containers:\n  - name: c\n    image: i\n    files:\n    - path: /etc/my.cnf\n      source: my.cnf\n";
        let out = inline(dir.path(), "t", t.into()).unwrap();
        let doc: Value = serde_yaml::from_str(&out).unwrap();
        let f = &doc["pods"][0]["containers"][0]["files"][0];
        assert_eq!(f["content"], "[mysqld]\nmax_connections = {{ n }}\n");
        assert!(f.get("source").is_none());

        let e = inline(dir.path(), "t", t.replace("my.cnf\n", "../etc/passwd\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("pods[0].containers[0].files[0].source"),
            "{e}"
        );
        let e = inline(
            dir.path(),
            "t",
            t.replace("source: my.cnf", "source: nope.cnf"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("nope.cnf"), "{e}");
        // Without any source, the text is kept as written.
        let plain = "pods: []  # comment\n".to_string();
        assert_eq!(inline(dir.path(), "t", plain.clone()).unwrap(), plain);
    }
}
