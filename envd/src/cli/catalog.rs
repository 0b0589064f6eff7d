//! `envd templates` (no subcommand): the catalog, one line per template and one per question.

use serde_json::Value;

use super::s;

/// Prints `GET /v1/templates` as a table; password defaults arrive masked.
pub fn print(catalog: &Value) {
    for t in catalog.as_array().into_iter().flatten() {
        let versions: Vec<String> = t["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        println!(
            "{:<16} {:<10} {}",
            s(&t["name"]),
            versions.join(","),
            s(&t["description"])
        );
        if !t["error"].is_null() {
            println!("    unusable: {}", s(&t["error"]));
        }
        for q in t["variables"].as_array().into_iter().flatten() {
            let about = [s(&q["label"]), s(&q["description"])]
                .into_iter()
                .filter(|x| !x.is_empty())
                .collect::<Vec<_>>()
                .join(": ");
            println!(
                "    --set {:<24} {:<9} {:<24} {}",
                format!("{}={}", s(&q["variable"]), s(&q["default"])),
                s(&q["type"]),
                rules(q),
                about
            );
        }
    }
}

/// `required, 1..65535, len 8.., /re/, one of a|b, if x=y, generated`: the constraints in brief.
fn rules(q: &Value) -> String {
    let mut out = vec![];
    if q["required"] == true {
        out.push("required".to_string());
    }
    let range = |lo: &Value, hi: &Value| match (lo.is_null(), hi.is_null()) {
        (true, true) => None,
        _ => Some(format!("{}..{}", s(lo), s(hi))),
    };
    out.extend(range(&q["min"], &q["max"]));
    out.extend(range(&q["min_length"], &q["max_length"]).map(|r| format!("len {r}")));
    if !q["pattern"].is_null() {
        out.push(format!("/{}/", s(&q["pattern"])));
    }
    if let Some(opts) = q["options"].as_array() {
        let opts: Vec<String> = opts.iter().map(s).collect();
        out.push(format!("one of {}", opts.join("|")));
    }
    if !q["show_if"].is_null() {
        out.push(format!("if {}", s(&q["show_if"])));
    }
    if q["generate"] == true {
        out.push("generated if empty".into());
    }
    out.join(", ")
}
