//! Property-based fuzzing of what users send as text: template parse + render and compose
//! import never panic (an error is fine). Inputs are the committed corpus
//! (tests/fuzz-corpus/) mutated with YAML, Jinja and duration fragments.
//! `FUZZ_CASES=N` sets the cases per target (default 500); failures are kept by proptest
//! in `tests/fuzz.regressions` and replayed first.

use std::collections::BTreeMap;

use envd::compose::{ImageMap, ImportFile, Input};
use envd::spec::{Facts, Plan};
use proptest::prelude::*;
use proptest::sample::{Index, select};

const FRAGMENTS: &[&str] = &[
    "{{",
    "}}",
    "{%",
    "%}",
    "{{ n }}",
    "{{ pods.web.port }}",
    "{{ node_ip }}",
    "{% for i in range(1000000) %}{% for j in range(1000000) %}x{% endfor %}{% endfor %}",
    "{{ 'x' * 99999999 }}",
    "{{ range(99999999) | list }}",
    "{% endfor %}",
    "{% if %}",
    "{{ undefined_thing }}",
    "{{ 1 / 0 }}",
    "{{ 9223372036854775807 + 1 }}",
    ":",
    ": ",
    "- ",
    "\n",
    "\n  ",
    "\n    ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\"",
    "'",
    "\t",
    "&a ",
    "*a",
    "<<: *a",
    "!!binary ",
    "!!int ",
    "~",
    "null",
    "true",
    "-1",
    "0",
    "99999999999999999999999",
    "1e309",
    "-9223372036854775808",
    "500000000000y",
    "1ns",
    "18446744073709551615s",
    "🙂",
    "\u{0}",
    "\u{feff}",
    "${X:?boom}",
    "${X:-${Y:-z}}",
    "$$",
    "ports: [70000]",
    "ports: [\"99999:-1\"]",
    "memory: 99999999999g",
    "cpus: -1",
    "deadline: 500000000000y",
    "interval: 500000000000y",
    "retries: 18446744073709551615",
    "depends_on: [web]",
    "depends_on: { x: { condition: service_completed_successfully } }",
    "image: ",
    "dirs: [{ source: /etc, path: /x }]",
    "path: ../../etc",
];

fn corpus(kind: &str) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(kind);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// `seed` with each edit applied: 0 inserts the fragment, 1 replaces a short run with it,
/// 2 deletes a short run, 3 duplicates a line (YAML structure mutates too).
fn mutate(seed: &str, edits: &[(Index, u8, &str)]) -> String {
    let mut s: Vec<char> = seed.chars().collect();
    for (at, op, frag) in edits {
        let i = at.index(s.len() + 1);
        let run = (frag.len() % 7 + 1).min(s.len() - i.min(s.len()));
        match op {
            0 => {
                s.splice(i..i, frag.chars());
            }
            1 => {
                s.splice(i..i + run, frag.chars());
            }
            2 => {
                s.drain(i..i + run);
            }
            _ => {
                let start = s[..i].iter().rposition(|c| *c == '\n').map_or(0, |p| p + 1);
                let end = s[i..]
                    .iter()
                    .position(|c| *c == '\n')
                    .map_or(s.len(), |p| i + p + 1);
                let line: Vec<char> = s[start..end].to_vec();
                s.splice(end..end, line);
            }
        }
    }
    s.into_iter().collect()
}

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

fn edits() -> impl Strategy<Value = Vec<(Index, u8, &'static str)>> {
    prop::collection::vec((any::<Index>(), 0u8..4, select(FRAGMENTS)), 0..10)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn template_parse_and_render_never_panic(
        seed in any::<Index>(),
        edits in edits(),
        answers in prop::collection::btree_map(
            select(&["n", "mode", "redis_password", "x", "answers.n"][..]),
            select(FRAGMENTS),
            0..3,
        ),
    ) {
        let corpus = corpus("template");
        let text = mutate(&corpus[seed.index(corpus.len())], &edits);
        let answers: BTreeMap<String, String> =
            answers.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let facts = Facts {
            env_id: "fuzz".into(),
            env_name: "fuzz".into(),
            node_ip: "10.213.0.9".into(),
        };
        let _ = envd::spec::answers::complete("fuzz", &text, &answers);
        if let Ok(plan) = Plan::render("fuzz", &text, &answers, &facts) {
            let _ = plan.deadline();
        }
    }

    #[test]
    fn compose_import_never_panics(
        seed in any::<Index>(),
        edits in edits(),
        vars in prop::collection::btree_map(
            select(&["A", "X", "Y", "TAG"][..]),
            select(FRAGMENTS),
            0..3,
        ),
    ) {
        let corpus = corpus("compose");
        let compose = mutate(&corpus[seed.index(corpus.len())], &edits);
        let vars: BTreeMap<String, String> =
            vars.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let files: BTreeMap<String, ImportFile> = BTreeMap::new();
        let _ = envd::compose::convert(&Input {
            name: "fuzz",
            version: "1",
            compose: &compose,
            source: "compose.yml",
            files: &files,
            vars: &vars,
            images: &ImageMap::default(),
        });
    }
}
