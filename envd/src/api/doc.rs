//! The OpenAPI document as served: utoipa's, made to tell the whole truth about what each
//! operation answers — errors as `application/problem+json`, the 400 and 422 that request
//! extractors give, the 404 of every path with an id — and with links from `POST /v1/envs`
//! to the per-env operations, so a client (or a stateful fuzzer) can follow real ids.

use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use super::ApiDoc;

const PROBLEM: &str = "application/problem+json";

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": { PROBLEM: { "schema": { "$ref": "#/components/schemas/Problem" } } }
    })
}

/// What the handlers check beyond the types, as schema constraints.
fn constrain(doc: &mut Value) {
    let command = json!({
        "type": "array", "minItems": 1,
        "items": { "type": "string", "minLength": 1 },
    });
    if let Some(params) = doc
        .pointer_mut("/paths/~1v1~1envs~1{id}~1pods~1{pod}~1exec/get/parameters")
        .and_then(Value::as_array_mut)
    {
        for p in params.iter_mut().filter(|p| p["name"] == "cmd") {
            p["schema"] = command.clone();
        }
    }
    if let Some(cmd) = doc.pointer_mut("/components/schemas/ExecBody/properties/cmd") {
        *cmd = command;
    }
    if let Some(ttl) = doc.pointer_mut("/components/schemas/ExtendRequest/properties/ttl") {
        ttl["minLength"] = json!(1);
        ttl["pattern"] = json!("^ *[0-9]+ *[a-z]+( *[0-9]+ *[a-z]+)* *$");
    }
}

pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    constrain(&mut doc);
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in item.iter_mut() {
                if let Some(op) = op.as_object_mut() {
                    complete(path, method, op);
                }
            }
        }
    }
    doc
}

fn complete(path: &str, method: &str, op: &mut Map<String, Value>) {
    let params: Vec<(String, String)> = op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p.get("in")?.as_str()?.to_string(),
                p.get("name")?.as_str()?.to_string(),
            ))
        })
        .collect();
    let has_body = op.contains_key("requestBody");
    let has_query = params.iter().any(|(at, _)| at == "query");
    let has_path = params.iter().any(|(at, _)| at == "path");
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    // Every error body is a problem.
    for (code, resp) in responses.iter_mut() {
        if !(code.starts_with('4') || code.starts_with('5')) {
            continue;
        }
        if let Some(content) = resp.get_mut("content").and_then(Value::as_object_mut)
            && let Some(schema) = content.remove("application/json")
        {
            content.insert(PROBLEM.into(), schema);
        }
    }
    let mut add = |code: &str, what: &str| {
        responses
            .entry(code.to_string())
            .or_insert_with(|| problem(what));
    };
    if has_query || has_body {
        add("400", "a malformed request (query string or body)");
        add("422", "a request field has a bad value; `field` names it");
    }
    if has_body {
        add("413", "the request body is too large");
    }
    if has_path && path.starts_with("/v1/") {
        add("404", "no such environment, pod or job");
    }
    if path == "/v1/envs" && method == "post" {
        add(
            "503",
            "the host Docker Engine does not answer, or the IP pool is exhausted",
        );
        for code in ["200", "201"] {
            if let Some(r) = responses.get_mut(code).and_then(Value::as_object_mut) {
                r.insert("links".into(), env_links());
            }
        }
    }
}

/// From a created env to what can be done with it, by its `id`.
fn env_links() -> Value {
    let by_id = |op: &str, what: &str| {
        json!({
            "operationId": op,
            "parameters": { "id": "$response.body#/id" },
            "description": what,
        })
    };
    json!({
        "GetEnv": by_id("get_env", "the env"),
        "Events": by_id("events", "its recorded steps"),
        "Logs": by_id("logs", "its log archive, after teardown"),
        "Extend": by_id("extend", "push its expiry"),
        "Clone": by_id("clone_env", "a new env like it"),
        "Delete": by_id("delete", "tear it down"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_problems_and_create_links_to_the_env() {
        let doc = document();
        let create = &doc["paths"]["/v1/envs"]["post"]["responses"];
        assert!(create["404"].is_null() || create["404"]["content"][PROBLEM].is_object());
        assert!(create["422"]["content"][PROBLEM].is_object());
        assert!(create["422"]["content"]["application/json"].is_null());
        assert_eq!(
            create["201"]["links"]["GetEnv"]["parameters"]["id"],
            "$response.body#/id"
        );
        let get = &doc["paths"]["/v1/envs/{id}"]["get"]["responses"];
        assert!(get["404"]["content"][PROBLEM].is_object());
        let list = &doc["paths"]["/v1/envs"]["get"]["responses"];
        assert!(list["400"]["content"][PROBLEM].is_object());
    }
}
