//! `envd create --init POD=FILE`: init files read here and sent with the request.

use serde_json::{Map, Value, json};

use super::Fail;

/// `{"<pod>": [{"name": "<file name>", "content": "..."}]}` from `POD=FILE` items.
pub(super) fn read(items: &[String]) -> Result<Value, Fail> {
    let mut by_pod: Map<String, Value> = Map::new();
    for item in items {
        let (pod, file) = item
            .split_once('=')
            .ok_or_else(|| Fail::Usage(format!("--init {item}: write --init POD=FILE")))?;
        let path = std::path::Path::new(file);
        let content = std::fs::read_to_string(path).map_err(|e| {
            Fail::Usage(format!(
                "--init {item}: cannot read {file} as text ({e}); init files are text (.sql, .json, .redis)"
            ))
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .ok_or_else(|| Fail::Usage(format!("--init {item}: {file} names no file")))?;
        let files = by_pod
            .entry(pod.to_string())
            .or_insert_with(|| Value::Array(vec![]));
        if let Value::Array(v) = files {
            v.push(json!({ "name": name, "content": content }));
        }
    }
    Ok(Value::Object(by_pod))
}
