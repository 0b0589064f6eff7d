//! A template's typed questions (`variables:`, or `questions:` as Rancher spells it): how a
//! template author declares them, and the checks a template gets when it is loaded.
//! Answers are checked against them in [`super::answers`].

use std::collections::HashSet;

use serde::{Deserialize, Deserializer, Serialize};
use serde_yaml::Value;

use crate::error::{Error, Result};

/// What shows instead of a password.
pub const MASK: &str = "******";

/// Names the renderer provides itself; a question may not shadow them.
const FACTS: [&str; 3] = ["env_id", "env_name", "node_ip"];

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One line of text.
    #[default]
    String,
    /// Text that may span lines.
    Multiline,
    /// One line, masked wherever envd shows it.
    Password,
    /// A whole number (i64).
    Int,
    /// `true` or `false`.
    Bool,
    /// One of `options`.
    Enum,
}

impl Kind {
    pub fn is_text(self) -> bool {
        matches!(self, Kind::String | Kind::Multiline | Kind::Password)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Question {
    /// The name templates use, `{{ variable }}`, and answers set.
    pub variable: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, rename = "type")]
    pub kind: Kind,
    /// The value may not end up empty (an answer, the default or a generated password).
    #[serde(default)]
    pub required: bool,
    #[serde(
        default,
        deserialize_with = "scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub default: Option<String>,
    /// The allowed values of an `enum`.
    #[serde(
        default,
        deserialize_with = "scalars",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub options: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// A regular expression the whole value must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// `other=value`, or several joined by `&&`: asked only when all hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_if: Option<String>,
    /// A password left empty gets a random one, made once at create.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generate: bool,
    /// The old spelling of `type: password`, still read; shown as `type`.
    #[serde(default, skip_serializing)]
    pub password: bool,
}

impl Question {
    /// A bare password question: what an answer counts as when its template is unreadable.
    pub fn password(variable: &str) -> Question {
        Question {
            variable: variable.into(),
            kind: Kind::Password,
            ..Default::default()
        }
    }

    /// The `show_if` conditions as (variable, value) pairs; empty when always asked.
    pub fn conditions(&self) -> Vec<(&str, &str)> {
        let Some(s) = &self.show_if else {
            return vec![];
        };
        s.split("&&")
            .filter_map(|c| c.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect()
    }

    /// The question with its default masked if it is a password: what listings show.
    pub fn shown(&self) -> Question {
        let mut q = self.clone();
        if q.kind == Kind::Password && q.default.is_some() {
            q.default = Some(MASK.into());
        }
        q
    }
}

/// Accepts `default: 3306` or `default: true` as well as strings: YAML authors write them so.
fn scalar<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    let v = Value::deserialize(d)?;
    to_text(&v)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("expected a string, number or bool"))
}

/// Answers given as JSON numbers or bools (`{"replicas": 3}`) read as their text.
pub fn scalar_map<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<std::collections::BTreeMap<String, String>, D::Error> {
    let items = std::collections::BTreeMap::<String, Value>::deserialize(d)?;
    items
        .into_iter()
        .map(|(k, v)| match to_text(&v) {
            Some(t) => Ok((k, t)),
            None => Err(serde::de::Error::custom(format!(
                "answer `{k}` must be a string, number or bool"
            ))),
        })
        .collect()
}

fn scalars<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    let items = Vec::<Value>::deserialize(d)?;
    items
        .iter()
        .map(|v| to_text(v).ok_or_else(|| serde::de::Error::custom("options are strings")))
        .collect()
}

fn to_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The questions of a template's text, checked.
pub fn from_text(src: &str, text: &str) -> Result<Vec<Question>> {
    parse(src, &super::parse_yaml(src, text)?)
}

/// A template's description and questions, without rendering it: what the catalog lists.
pub fn describe(src: &str, text: &str) -> Result<(String, Vec<Question>)> {
    let doc = super::parse_yaml(src, text)?;
    let description = doc
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Ok((description, parse(src, &doc)?))
}

/// The questions of a parsed template, checked; `[]` when it declares none.
pub fn parse(src: &str, doc: &Value) -> Result<Vec<Question>> {
    let (key, list) = match (doc.get("variables"), doc.get("questions")) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                src,
                "questions",
                "declare the questions once, under `variables:` (or `questions:`), not both",
            ));
        }
        (Some(v), None) => ("variables", v),
        (None, Some(v)) => ("questions", v),
        (None, None) => return Ok(vec![]),
    };
    if list.is_null() {
        return Ok(vec![]);
    }
    let mut questions: Vec<Question> =
        serde_path_to_error::deserialize(list.clone()).map_err(|e| {
            let field = format!("{key}{}", super::path_suffix(&e.path().to_string()));
            Error::invalid(src, field, e.into_inner().to_string())
        })?;
    for i in 0..questions.len() {
        let (before, rest) = questions.split_at_mut(i);
        check(src, &format!("{key}[{i}]"), &mut rest[0], before)?;
    }
    Ok(questions)
}

/// A template author's mistakes in one question; `earlier` are the ones declared before it.
fn check(src: &str, at: &str, q: &mut Question, earlier: &[Question]) -> Result<()> {
    let bad = |key: &str, reason: String| Err(Error::invalid(src, format!("{at}.{key}"), reason));
    let name_ok = q
        .variable
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && q.variable
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !name_ok {
        return bad(
            "variable",
            format!(
                "`{}` is not a variable name: use letters, digits and `_`, not starting with a digit",
                q.variable
            ),
        );
    }
    if FACTS.contains(&q.variable.as_str()) {
        return bad(
            "variable",
            format!(
                "`{}` is a fact envd provides; name the question otherwise",
                q.variable
            ),
        );
    }
    if earlier.iter().any(|e| e.variable == q.variable) {
        return bad(
            "variable",
            format!(
                "`{}` is declared twice; variables must be unique",
                q.variable
            ),
        );
    }
    if q.password {
        if !matches!(q.kind, Kind::String | Kind::Password) {
            return bad(
                "password",
                "`password: true` is the old spelling of `type: password`; drop it".into(),
            );
        }
        q.kind = Kind::Password;
    }
    let kind = format!("{:?}", q.kind).to_lowercase();
    if q.kind == Kind::Enum && q.options.is_empty() {
        return bad(
            "options",
            "an enum needs its `options`, e.g. [mysql, postgres]".into(),
        );
    }
    if q.kind != Kind::Enum && !q.options.is_empty() {
        return bad(
            "options",
            format!("only an enum has options; this is a {kind} (write `type: enum`)"),
        );
    }
    let mut seen = HashSet::new();
    if let Some(dup) = q.options.iter().find(|o| !seen.insert(o.as_str())) {
        return bad("options", format!("`{dup}` is listed twice"));
    }
    if q.kind != Kind::Int && (q.min.is_some() || q.max.is_some()) {
        return bad(
            if q.min.is_some() { "min" } else { "max" },
            format!(
                "min and max bound an int; this is a {kind} (for text use min_length/max_length)"
            ),
        );
    }
    if let (Some(lo), Some(hi)) = (q.min, q.max)
        && lo > hi
    {
        return bad("min", format!("min {lo} is above max {hi}"));
    }
    let text_rule = [
        ("min_length", q.min_length.is_some()),
        ("max_length", q.max_length.is_some()),
        ("pattern", q.pattern.is_some()),
    ]
    .into_iter()
    .find(|(_, set)| *set);
    if let Some((key, _)) = text_rule
        && !q.kind.is_text()
    {
        return bad(
            key,
            format!("{key} applies to string, multiline and password; this is a {kind}"),
        );
    }
    if let (Some(lo), Some(hi)) = (q.min_length, q.max_length)
        && lo > hi
    {
        return bad(
            "min_length",
            format!("min_length {lo} is above max_length {hi}"),
        );
    }
    if let Some(p) = &q.pattern {
        regex::Regex::new(p).map_err(|e| {
            Error::invalid(
                src,
                format!("{at}.pattern"),
                format!("not a regular expression: {e}"),
            )
        })?;
    }
    if q.generate && q.kind != Kind::Password {
        return bad(
            "generate",
            format!("only a password can be generated; this is a {kind}"),
        );
    }
    if let Some(s) = &q.show_if {
        let conds = q.conditions();
        if conds.len() != s.split("&&").count() || conds.iter().any(|(k, _)| k.is_empty()) {
            return bad(
                "show_if",
                format!("`{s}` is not a condition: write `other=value`, several joined by `&&`"),
            );
        }
        for (k, _) in conds {
            if !earlier.iter().any(|e| e.variable == k) {
                return bad(
                    "show_if",
                    format!(
                        "`{k}` is not a question declared before this one; show_if refers to earlier questions"
                    ),
                );
            }
        }
    }
    if let Some(d) = &q.default
        && let Err(reason) = super::answers::check_value(q, d)
    {
        return bad(
            "default",
            format!("the default is not a valid answer: {reason}"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
