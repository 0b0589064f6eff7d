//! Compose's `${VAR}` interpolation, done at import (values from the `.env` the client sent,
//! else the defaults written in the file), and escaping for envd's minijinja rendering.

use std::collections::BTreeMap;

use serde_yaml::Value;

/// Replaces `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`,
/// `${VAR?err}`, `${VAR:+alt}`, `${VAR+alt}` and `$$` in `s`. Unset variables without a
/// default become empty and are added to `unset`; `?` forms fail with their message.
pub fn interpolate(
    s: &str,
    vars: &BTreeMap<String, String>,
    unset: &mut Vec<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| format!("`${{` without a closing `}}` in `{s}`"))?;
            out.push_str(&expand(&r[..end], vars, unset)?);
            rest = &r[end + 1..];
        } else {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if len == 0 {
                out.push('$');
            } else {
                out.push_str(&expand(&rest[..len], vars, unset)?);
                rest = &rest[len..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn expand(
    expr: &str,
    vars: &BTreeMap<String, String>,
    unset: &mut Vec<String>,
) -> Result<String, String> {
    let split = expr
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(expr.len());
    let (name, op) = expr.split_at(split);
    let value = vars.get(name);
    let (colon, op) = match op.strip_prefix(':') {
        Some(o) => (true, o),
        None => (false, op),
    };
    // With `:` an empty value counts as unset, as in compose.
    let set = value.filter(|v| !(colon && v.is_empty()));
    let arg = op.get(1..).unwrap_or("");
    match op.chars().next() {
        None => Ok(value.cloned().unwrap_or_else(|| {
            unset.push(name.to_string());
            String::new()
        })),
        Some('-') => Ok(set.cloned().unwrap_or_else(|| arg.to_string())),
        Some('?') => set
            .cloned()
            .ok_or_else(|| format!("variable {name} is required: {arg}")),
        Some('+') => Ok(if set.is_some() {
            arg.to_string()
        } else {
            String::new()
        }),
        Some(_) => Err(format!("`${{{expr}}}` is not a compose interpolation")),
    }
}

/// Interpolates every string value of a parsed compose file.
pub fn interpolate_value(
    v: &mut Value,
    vars: &BTreeMap<String, String>,
    unset: &mut Vec<String>,
) -> Result<(), String> {
    match v {
        Value::String(s) => *s = interpolate(s, vars, unset)?,
        Value::Sequence(items) => {
            for item in items {
                interpolate_value(item, vars, unset)?;
            }
        }
        Value::Mapping(map) => {
            for (_, item) in map.iter_mut() {
                interpolate_value(item, vars, unset)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// `s` as literal text for envd's template rendering: `{{`, `{%` and `{#` stay as written.
pub fn lit(s: &str) -> String {
    if !(s.contains("{{") || s.contains("{%") || s.contains("{#")) {
        return s.to_string();
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = ["{{", "{%", "{#"].iter().filter_map(|m| rest.find(m)).min() {
        out.push_str(&rest[..i]);
        out.push_str(&format!("{{{{ \"{}\" }}}}", &rest[i..i + 2]));
        rest = &rest[i + 2..];
    }
    out.push_str(rest);
    out
}

/// Lines `KEY=VALUE` of a `.env` / `env_file` (comments, blanks and `export ` skipped;
/// one level of surrounding quotes removed).
pub fn dotenv(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = ['"', '\'']
                .iter()
                .find_map(|q| v.strip_prefix(*q).and_then(|x| x.strip_suffix(*q)))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_interpolation_forms() {
        let vars: BTreeMap<String, String> = [("A".into(), "1".into()), ("E".into(), "".into())]
            .into_iter()
            .collect();
        let mut unset = vec![];
        let mut f = |s: &str| interpolate(s, &vars, &mut unset);
        assert_eq!(f("$A-${A}-$$A").unwrap(), "1-1-$A");
        assert_eq!(f("${B:-x y}|${E:-d}|${E-d}").unwrap(), "x y|d|");
        assert_eq!(f("${A:+on}|${B:+on}").unwrap(), "on|");
        assert!(f("${B:?set B}").unwrap_err().contains("set B"));
        assert_eq!(f("${B}").unwrap(), "");
        assert_eq!(f("cost $ 5").unwrap(), "cost $ 5");
        assert_eq!(unset, vec!["B".to_string()]);
    }

    #[test]
    fn literal_braces_survive_rendering() {
        let env = minijinja::Environment::new();
        let s = "{{.State}} {% x %} {# c #}";
        let out = env.render_str(&lit(s), ()).unwrap();
        assert_eq!(out, s);
        assert_eq!(lit("plain"), "plain");
    }

    #[test]
    fn dotenv_lines() {
        let m = dotenv("# c\nA=1\nexport B=\"two words\"\n\nC='x'\n");
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "two words");
        assert_eq!(m["C"], "x");
    }
}
