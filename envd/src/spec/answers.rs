//! Answers against a template's questions: checked on the server before anything is stored,
//! every bad field reported at once; and passwords kept out of what envd shows.

use std::collections::BTreeMap;

use rand::Rng;

use super::questions::{Kind, MASK, Question};
use crate::error::{Error, FieldError, Result};

/// Length of a generated password, unless the question's lengths say otherwise.
const GENERATED_LEN: usize = 24;

/// The value of every question, and the passwords generated for this call.
#[derive(Debug, Default)]
pub struct Resolved {
    pub values: BTreeMap<String, String>,
    pub generated: BTreeMap<String, String>,
}

/// Checks the answers: every problem becomes one entry of an [`Error::InvalidFields`].
/// A question hidden by `show_if` takes its default (or ""), and may not be answered.
pub fn resolve(
    src: &str,
    questions: &[Question],
    answers: &BTreeMap<String, String>,
) -> Result<Resolved> {
    let mut bad: Vec<FieldError> = vec![];
    let mut flag = |variable: &str, reason: String| {
        bad.push(FieldError {
            field: format!("answers.{variable}"),
            reason,
        })
    };
    for key in answers.keys() {
        if !questions.iter().any(|q| &q.variable == key) {
            let known: Vec<&str> = questions.iter().map(|q| q.variable.as_str()).collect();
            flag(
                key,
                format!(
                    "the template asks no `{key}`; it asks: {}",
                    if known.is_empty() {
                        "nothing".into()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
    }
    let mut out = Resolved::default();
    for q in questions {
        let name = q.variable.as_str();
        let shown = q
            .conditions()
            .iter()
            .all(|(k, v)| out.values.get(*k).map(String::as_str) == Some(*v));
        if !shown {
            if answers.contains_key(name) {
                flag(
                    name,
                    format!(
                        "only asked when {}; leave it out",
                        q.show_if.as_deref().unwrap_or_default()
                    ),
                );
            }
            out.values
                .insert(name.into(), q.default.clone().unwrap_or_default());
            continue;
        }
        // An answer, even an empty one, wins over the default; empty counts as not given
        // for `required` and `generate`.
        let value = match answers.get(name) {
            Some(a) => a.clone(),
            None => q.default.clone().unwrap_or_default(),
        };
        let value = if !value.is_empty() {
            match check_value(q, &value) {
                Ok(v) => v,
                Err(reason) => {
                    flag(name, reason);
                    value
                }
            }
        } else if q.generate {
            match generate(q) {
                Ok(pw) => {
                    out.generated.insert(name.into(), pw.clone());
                    pw
                }
                Err(reason) => {
                    flag(name, reason);
                    value
                }
            }
        } else {
            if q.required {
                flag(
                    name,
                    format!("{} is required: give it with --set {name}=VALUE", title(q)),
                );
            }
            value
        };
        out.values.insert(name.into(), value);
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(Error::InvalidFields {
            source_name: src.into(),
            fields: bad,
        })
    }
}

fn title(q: &Question) -> String {
    if q.label.is_empty() {
        format!("`{}`", q.variable)
    } else {
        format!("`{}` ({})", q.variable, q.label)
    }
}

/// The answers to store for a new env: as given, plus a password generated for each
/// empty `generate: true` question, so every later render of the env sees the same one.
pub fn complete(
    src: &str,
    text: &str,
    answers: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    let questions = super::questions::from_text(src, text)?;
    let mut out = answers.clone();
    let (plain, _) = super::images::split(answers);
    out.extend(resolve(src, &questions, &plain)?.generated);
    Ok(out)
}

/// One non-empty value against the question's type and constraints: the value as
/// templates see it (ints and bools normalised), or why not. Never repeats a password.
pub fn check_value(q: &Question, v: &str) -> std::result::Result<String, String> {
    let shown = |v: &str| {
        if q.kind == Kind::Password {
            "the password".to_string()
        } else {
            format!("`{v}`")
        }
    };
    match q.kind {
        Kind::Int => {
            let n: i64 = v
                .trim()
                .parse()
                .map_err(|_| format!("`{v}` is not a whole number"))?;
            if let Some(lo) = q.min
                && n < lo
            {
                return Err(format!("{n} is below the minimum {lo}"));
            }
            if let Some(hi) = q.max
                && n > hi
            {
                return Err(format!("{n} is above the maximum {hi}"));
            }
            return Ok(n.to_string());
        }
        Kind::Bool => {
            return match v {
                "true" | "false" => Ok(v.to_string()),
                _ => Err(format!("`{v}` is not a bool: answer true or false")),
            };
        }
        Kind::Enum => {
            return if q.options.iter().any(|o| o == v) {
                Ok(v.to_string())
            } else {
                Err(format!("`{v}` is not one of: {}", q.options.join(", ")))
            };
        }
        Kind::String | Kind::Password if v.contains('\n') => {
            return Err(format!(
                "{} spans lines; only a multiline question takes several",
                shown(v)
            ));
        }
        _ => {}
    }
    let len = v.chars().count();
    if let Some(lo) = q.min_length
        && len < lo
    {
        return Err(format!(
            "{} is {len} characters; at least {lo} needed",
            shown(v)
        ));
    }
    if let Some(hi) = q.max_length
        && len > hi
    {
        return Err(format!(
            "{} is {len} characters; at most {hi} allowed",
            shown(v)
        ));
    }
    if let Some(p) = &q.pattern {
        // Whole-value match, as a form's pattern attribute does; checked to compile at load.
        let whole = regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| e.to_string())?;
        if !whole.is_match(v) {
            return Err(format!("{} does not match the pattern `{p}`", shown(v)));
        }
    }
    Ok(v.to_string())
}

/// A random alphanumeric password within the question's lengths.
fn generate(q: &Question) -> std::result::Result<String, String> {
    let len = GENERATED_LEN
        .max(q.min_length.unwrap_or(0))
        .min(q.max_length.unwrap_or(usize::MAX));
    let pw: String = rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    check_value(q, &pw).map_err(|reason| {
        format!("a generated password is not a valid answer ({reason}); answer it yourself")
    })
}

/// [`secrets`] of a stored env. Should its template no longer parse, every answer counts.
pub fn secrets_of(src: &str, text: &str, answers: &BTreeMap<String, String>) -> Vec<String> {
    let questions = super::questions::from_text(src, text)
        .unwrap_or_else(|_| answers.keys().map(|k| Question::password(k)).collect());
    secrets(&questions, answers)
}

/// [`shown`] of a stored env. Should its template no longer parse, every answer is masked.
pub fn shown_of(
    src: &str,
    text: &str,
    answers: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    match super::questions::from_text(src, text) {
        Ok(questions) => shown(&questions, answers),
        Err(_) => answers.keys().map(|k| (k.clone(), MASK.into())).collect(),
    }
}

/// The values to hide of an env: its password answers and defaults, plus their URL-encoded
/// forms (drivers put those in the URIs their errors quote).
pub fn secrets(questions: &[Question], answers: &BTreeMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = questions
        .iter()
        .filter(|q| q.kind == Kind::Password)
        .filter_map(|q| answers.get(&q.variable).or(q.default.as_ref()))
        .filter(|v| !v.is_empty())
        .flat_map(|v| [v.clone(), crate::urlencode(v)])
        .collect();
    // Longest first, so a password containing another is hidden whole.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// `text` with every secret replaced by the mask.
pub fn mask(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), MASK))
}

/// The answers as envd shows them: password answers masked.
pub fn shown(
    questions: &[Question],
    answers: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    answers
        .iter()
        .map(|(k, v)| {
            let password = questions
                .iter()
                .any(|q| &q.variable == k && q.kind == Kind::Password);
            let v = if password {
                MASK.to_string()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}
