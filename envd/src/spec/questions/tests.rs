use std::collections::BTreeMap;

use super::*;
use crate::spec::answers::{self, check_value, resolve};
use crate::spec::{Facts, Plan};

/// The questions of a template made of `yaml` (a `variables:` list) and one pod.
fn questions(yaml: &str) -> Result<Vec<Question>> {
    from_text("t.yaml", &template(yaml))
}

fn template(variables: &str) -> String {
    format!(
        "name: t\nversion: \"1\"\nvariables:\n{variables}\npods:\n  - name: p\n    containers: [{{ name: c, image: i }}]\n"
    )
}

fn answers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The resolved values, or the bad fields as `field: reason` lines.
fn run(
    yaml: &str,
    given: &[(&str, &str)],
) -> std::result::Result<BTreeMap<String, String>, Vec<String>> {
    let qs = questions(yaml).unwrap();
    match resolve("t.yaml", &qs, &answers(given)) {
        Ok(r) => Ok(r.values),
        Err(Error::InvalidFields { fields, .. }) => Err(fields
            .into_iter()
            .map(|f| format!("{}: {}", f.field, f.reason))
            .collect()),
        Err(other) => panic!("unexpected {other}"),
    }
}

fn one_error(yaml: &str, given: &[(&str, &str)]) -> String {
    let errs = run(yaml, given).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    errs[0].clone()
}

fn template_error(yaml: &str) -> String {
    questions(yaml).unwrap_err().to_string()
}

#[test]
fn string_is_one_line_with_lengths_and_a_whole_value_pattern() {
    let q = "  - { variable: user, min_length: 3, max_length: 8, pattern: '[a-z]+' }";
    assert_eq!(run(q, &[("user", "alice")]).unwrap()["user"], "alice");
    assert!(one_error(q, &[("user", "al")]).contains("2 characters; at least 3"));
    assert!(one_error(q, &[("user", "alexander1")]).contains("at most 8"));
    // The pattern must match the whole answer, not a part of it.
    let e = one_error(q, &[("user", "Alice")]);
    assert!(
        e.starts_with("answers.user: `Alice` does not match the pattern `[a-z]+`"),
        "{e}"
    );
    assert!(one_error(q, &[("user", "ab\ncd")]).contains("spans lines"));
}

#[test]
fn multiline_takes_several_lines() {
    let q = "  - { variable: init, type: multiline, max_length: 20 }";
    assert_eq!(run(q, &[("init", "a\nb")]).unwrap()["init"], "a\nb");
    assert!(one_error(q, &[("init", &"x\n".repeat(11))]).contains("at most 20"));
}

#[test]
fn int_is_parsed_bounded_and_normalised() {
    let q = "  - { variable: port, type: int, min: 1, max: 65535, default: 3306 }";
    assert_eq!(run(q, &[]).unwrap()["port"], "3306");
    assert_eq!(run(q, &[("port", " 0080")]).unwrap()["port"], "80");
    assert!(one_error(q, &[("port", "http")]).contains("`http` is not a whole number"));
    assert!(one_error(q, &[("port", "0")]).contains("0 is below the minimum 1"));
    assert!(one_error(q, &[("port", "70000")]).contains("above the maximum 65535"));
}

#[test]
fn bool_is_true_or_false() {
    let q = "  - { variable: debug, type: bool, default: false }";
    assert_eq!(run(q, &[]).unwrap()["debug"], "false");
    assert_eq!(run(q, &[("debug", "true")]).unwrap()["debug"], "true");
    assert!(one_error(q, &[("debug", "yes")]).contains("answer true or false"));
}

#[test]
fn enum_takes_one_of_its_options() {
    let q = "  - { variable: db, type: enum, options: [mysql, postgres], default: mysql }";
    assert_eq!(run(q, &[("db", "postgres")]).unwrap()["db"], "postgres");
    assert!(one_error(q, &[("db", "oracle")]).contains("`oracle` is not one of: mysql, postgres"));
}

#[test]
fn password_reasons_never_repeat_the_password() {
    let q = "  - { variable: pw, type: password, min_length: 12, pattern: '[a-z0-9]+' }";
    for bad in ["hunter2", "Hunter2Hunter2"] {
        let e = one_error(q, &[("pw", bad)]);
        assert!(e.contains("the password") && !e.contains(bad), "{e}");
    }
    let pw = questions(q).unwrap().remove(0);
    assert!(!check_value(&pw, "x\ny").unwrap_err().contains("x\ny"));
}

#[test]
fn required_needs_a_non_empty_value_and_optional_renders_empty() {
    let q = "  - { variable: token, required: true }\n  - { variable: note }";
    let e = one_error(q, &[]);
    assert!(
        e.contains("answers.token: `token` is required: give it with --set token=VALUE"),
        "{e}"
    );
    assert!(one_error(q, &[("token", "")]).contains("required"));
    let v = run(q, &[("token", "t")]).unwrap();
    assert_eq!((v["token"].as_str(), v["note"].as_str()), ("t", ""));
    // A default satisfies `required`.
    let q = "  - { variable: token, required: true, default: abc, label: API token }";
    assert_eq!(run(q, &[]).unwrap()["token"], "abc");
    let q = "  - { variable: token, required: true, label: API token }";
    assert!(one_error(q, &[]).contains("`token` (API token) is required"));
}

#[test]
fn show_if_asks_only_when_every_condition_holds() {
    let q = "  - { variable: db, type: enum, options: [mysql, mongo], default: mysql }
  - { variable: tls, type: bool, default: false }
  - { variable: mysql_version, required: true, default: '8', show_if: db=mysql }
  - { variable: ca, type: multiline, required: true, show_if: 'db=mysql && tls=true' }";
    // Shown and defaulted; `ca` hidden as tls is false, so not required.
    let v = run(q, &[]).unwrap();
    assert_eq!((v["mysql_version"].as_str(), v["ca"].as_str()), ("8", ""));
    // Both conditions hold: `ca` is asked, and required.
    assert!(one_error(q, &[("tls", "true")]).contains("answers.ca: `ca` is required"));
    assert_eq!(
        run(q, &[("tls", "true"), ("ca", "PEM")]).unwrap()["ca"],
        "PEM"
    );
    // Hidden: its default still renders, but answering it is an error saying why.
    let v = run(q, &[("db", "mongo"), ("tls", "true")]).unwrap();
    assert_eq!((v["mysql_version"].as_str(), v["ca"].as_str()), ("8", ""));
    let e = one_error(q, &[("db", "mongo"), ("mysql_version", "5")]);
    assert_eq!(
        e,
        "answers.mysql_version: only asked when db=mysql; leave it out"
    );
}

#[test]
fn every_bad_answer_is_reported_at_once() {
    let q = "  - { variable: port, type: int, max: 100 }
  - { variable: debug, type: bool }
  - { variable: db, type: enum, options: [a, b] }
  - { variable: token, required: true }";
    let errs = run(
        q,
        &[
            ("port", "101"),
            ("debug", "maybe"),
            ("db", "c"),
            ("typo", "x"),
        ],
    )
    .unwrap_err();
    let fields: Vec<&str> = errs.iter().map(|e| e.split(':').next().unwrap()).collect();
    assert_eq!(
        fields,
        [
            "answers.typo",
            "answers.port",
            "answers.debug",
            "answers.db",
            "answers.token"
        ]
    );
    assert!(
        errs[0].contains("it asks: port, debug, db, token"),
        "{errs:?}"
    );
}

#[test]
fn generate_makes_a_password_once_at_create() {
    let t = template(
        "  - { variable: pw, type: password, generate: true, max_length: 16 }\n  - { variable: other, type: password, generate: true }",
    );
    let stored = answers::complete("t.yaml", &t, &answers(&[("other", "mine")])).unwrap();
    let pw = &stored["pw"];
    assert_eq!(pw.len(), 16);
    assert!(pw.chars().all(|c| c.is_ascii_alphanumeric()), "{pw}");
    assert_eq!(stored["other"], "mine", "an answer is never replaced");
    assert_ne!(
        answers::complete("t.yaml", &t, &BTreeMap::new()).unwrap()["pw"],
        *pw,
        "random"
    );
    // Renders of the stored answers see the same password every time.
    let facts = Facts {
        env_id: "e".into(),
        env_name: "n".into(),
        node_ip: "10.213.0.9".into(),
    };
    let t = t.replace("image: i", "image: i, env: { PW: '{{ pw }}' }");
    for _ in 0..2 {
        let plan = Plan::render("t.yaml", &t, &stored, &facts).unwrap();
        assert_eq!(plan.pods[0].containers[0].env["PW"], *pw);
    }
    // Default length, and a pattern it cannot meet is a clear error.
    let v = run("  - { variable: pw, type: password, generate: true }", &[]).unwrap();
    assert_eq!(v["pw"].len(), 24);
    let e = one_error(
        "  - { variable: pw, type: password, generate: true, pattern: '[0-9]+' }",
        &[],
    );
    assert!(
        e.contains("a generated password is not a valid answer"),
        "{e}"
    );
}

#[test]
fn old_password_flag_and_questions_key_still_read() {
    let qs = questions("  - { variable: pw, password: true, default: s }").unwrap();
    assert_eq!(qs[0].kind, Kind::Password);
    let t = "name: t\nversion: '1'\nquestions:\n  - { variable: a, default: x }\npods:\n  - name: p\n    containers: [{ name: c, image: i }]\n";
    assert_eq!(from_text("t.yaml", t).unwrap()[0].variable, "a");
    let facts = Facts {
        env_id: "e".into(),
        env_name: "n".into(),
        node_ip: "10.213.0.9".into(),
    };
    assert_eq!(
        Plan::render("t.yaml", t, &BTreeMap::new(), &facts)
            .unwrap()
            .variables[0]
            .variable,
        "a"
    );
    let both = format!("{}questions: []\n", template("  - { variable: a }"));
    let e = from_text("t.yaml", &both).unwrap_err().to_string();
    assert!(e.contains("not both"), "{e}");
}

#[test]
fn template_mistakes_name_the_question_and_the_key() {
    for (yaml, want) in [
        (
            "  - { variable: db, type: enum }",
            "variables[0].options: an enum needs",
        ),
        (
            "  - { variable: a, options: [x] }",
            "only an enum has options",
        ),
        (
            "  - { variable: a, min: 1 }",
            "variables[0].min: min and max bound an int",
        ),
        (
            "  - { variable: a, type: int, min: 5, max: 1 }",
            "min 5 is above max 1",
        ),
        (
            "  - { variable: a, type: bool, pattern: x }",
            "pattern applies to string",
        ),
        (
            "  - { variable: a, min_length: 5, max_length: 1 }",
            "min_length 5 is above",
        ),
        (
            "  - { variable: a, pattern: '(' }",
            "variables[0].pattern: not a regular expression",
        ),
        (
            "  - { variable: a, generate: true }",
            "only a password can be generated",
        ),
        (
            "  - { variable: a, type: int, password: true }",
            "old spelling of `type: password`",
        ),
        (
            "  - { variable: a, show_if: b=1 }\n  - { variable: b }",
            "`b` is not a question declared before",
        ),
        (
            "  - { variable: a }\n  - { variable: b, show_if: a }",
            "is not a condition",
        ),
        (
            "  - { variable: a, type: int, max: 3, default: 4 }",
            "variables[0].default: the default is not a valid answer",
        ),
        (
            "  - { variable: a }\n  - { variable: a }",
            "variables[1].variable: `a` is declared twice",
        ),
        ("  - { variable: node_ip }", "is a fact envd provides"),
        ("  - { variable: my-var }", "is not a variable name"),
        ("  - { variable: a, typ: int }", "unknown field `typ`"),
        (
            "  - { variable: a, type: float }",
            "unknown variant `float`",
        ),
    ] {
        let e = template_error(yaml);
        assert!(e.contains(want), "{yaml}: {e}");
    }
}

#[test]
fn passwords_are_masked_in_listings_answers_and_messages() {
    let qs = questions(
        "  - { variable: pw, type: password, default: d3fault }\n  - { variable: user, default: root }",
    )
    .unwrap();
    assert_eq!(qs[0].shown().default.as_deref(), Some(MASK));
    assert_eq!(qs[1].shown().default.as_deref(), Some("root"));
    let given = answers(&[("pw", "p@ss word"), ("user", "bob")]);
    let shown = answers::shown(&qs, &given);
    assert_eq!(
        (shown["pw"].as_str(), shown["user"].as_str()),
        (MASK, "bob")
    );
    // Raw and URL-encoded forms are both hidden (drivers quote URIs in their errors).
    let secrets = answers::secrets(&qs, &given);
    let msg = "auth failed for p@ss word at mongodb://bob:p%40ss%20word@10.0.0.1";
    let masked = answers::mask(msg, &secrets);
    assert_eq!(
        masked,
        format!("auth failed for {MASK} at mongodb://bob:{MASK}@10.0.0.1")
    );
    // Without an answer the default is the password in use.
    let secrets = answers::secrets(&qs, &BTreeMap::new());
    assert_eq!(answers::mask("x d3fault", &secrets), format!("x {MASK}"));
    // An unreadable template hides every answer rather than showing any.
    let shown = answers::shown_of("t", "not: [valid", &given);
    assert!(shown.values().all(|v| v == MASK));
    assert_eq!(
        answers::mask("bob", &answers::secrets_of("t", "{", &given)),
        MASK
    );
}

#[test]
fn api_answers_may_be_numbers_and_bools() {
    let req: crate::service::CreateRequest = serde_json::from_str(
        r#"{"template": "t", "answers": {"replicas": 3, "debug": true, "name": "x"}}"#,
    )
    .unwrap();
    assert_eq!(
        req.answers,
        answers(&[("replicas", "3"), ("debug", "true"), ("name", "x")])
    );
    let e = serde_json::from_str::<crate::service::CreateRequest>(
        r#"{"template": "t", "answers": {"list": [1]}}"#,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("answer `list` must be a string, number or bool"),
        "{e}"
    );
}
