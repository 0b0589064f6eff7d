//! Creates whose answers differ from a pool's only in what the pods' `on_change` applies
//! to a running env (config files; with them a readiness check or endpoint): such a create
//! takes a pooled env and gets its answers as a config generation before the handover,
//! instead of a cold build. Anything else a pod runs with (images, env, commands, ports,
//! dirs) is set when its containers are created: a cold build.

use std::collections::BTreeMap;

use super::key_values;
use crate::catalog::TemplateSource;
use crate::error::Result;
use crate::spec::{Container, Facts, Plan, Pod};

/// What a take applies to the pooled env it takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The answers the create gave.
    pub given: BTreeMap<String, String>,
    /// The answers the pool gave (the env was built with these and its own generated
    /// passwords).
    pub pool_given: BTreeMap<String, String>,
    /// Answers whose value differs (names only: values may be passwords).
    pub changed: Vec<String>,
    /// Pods whose plan the answers change, in plan order.
    pub pods: Vec<String>,
}

/// A pooled env's answers (`env`: the pool's plus its generated passwords) once a create
/// that gave `given` takes it: the create's, and the env's generated passwords where the
/// create gave none (as a cold create would have generated its own).
pub fn answers_after(
    env: &BTreeMap<String, String>,
    pool_given: &BTreeMap<String, String>,
    given: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = given.clone();
    for (k, v) in env {
        if !pool_given.contains_key(k) && !given.contains_key(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// Whether a create giving `given` may take an env of the pool giving `pool_given` (of
/// the same template version) with the difference applied by the pods' `on_change`.
/// `None`: no difference, or one only a cold build makes.
pub fn applicable(
    tpl: &TemplateSource,
    pool_given: &BTreeMap<String, String>,
    given: &BTreeMap<String, String>,
) -> Result<Option<Applied>> {
    let (was, will) = (key_values(tpl, pool_given)?, key_values(tpl, given)?);
    let changed: Vec<String> = will
        .iter()
        .filter(|(k, v)| was.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    if changed.is_empty() {
        return Ok(None);
    }
    // Both sides with the same generated passwords: only the given answers differ.
    let before = crate::spec::answers::complete(&tpl.origin, &tpl.text, pool_given)?;
    let after = answers_after(&before, pool_given, given);
    let facts = Facts {
        env_id: "pool-take".into(),
        env_name: "pool-take".into(),
        node_ip: "0.0.0.0".into(),
    };
    let old = Plan::render(&tpl.origin, &tpl.text, &before, &facts)?;
    let new = Plan::render(&tpl.origin, &tpl.text, &after, &facts)?;
    if old.stubs != new.stubs || old.pods.len() != new.pods.len() {
        return Ok(None);
    }
    let mut pods = vec![];
    for (o, n) in old.pods.iter().zip(&new.pods) {
        if o == n {
            continue;
        }
        if running_part(o) != running_part(n) {
            return Ok(None);
        }
        pods.push(o.name.clone());
    }
    Ok(Some(Applied {
        given: given.clone(),
        pool_given: pool_given.clone(),
        changed,
        pods,
    }))
}

/// What a pod's containers are created and run with: everything but their files (a
/// config change uploads those and restarts or signals as `on_change` says), the
/// readiness check and the endpoint (read by envd, not by the pod).
fn running_part(p: &Pod) -> Pod {
    Pod {
        containers: p
            .containers
            .iter()
            .map(|c| Container {
                files: vec![],
                ..c.clone()
            })
            .collect(),
        ready: None,
        endpoint: None,
        ..p.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"
name: conf
version: "1"
variables:
  - variable: greeting
    default: hello
  - variable: tag
    default: a
  - { variable: pw, type: password, generate: true }
pods:
  - name: web
    on_change: { signal: HUP }
    containers:
      - name: w
        image: envd/redis:latest
        env: { TAG: "{{ tag }}" }
        files: [{ path: /etc/w.conf, content: "{{ greeting }}" }]
    ready: { kind: exec, command: [test, -f, /etc/w.conf] }
  - name: cache
    containers:
      - name: c
        image: envd/redis:latest
        files: [{ path: /etc/c.conf, content: "pw {{ pw }}" }]
"#;

    fn tpl() -> TemplateSource {
        TemplateSource {
            name: "conf".into(),
            version: "1".into(),
            origin: "test:conf".into(),
            text: TEMPLATE.into(),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn file_only_differences_are_applied_and_others_are_cold() {
        let t = tpl();
        let a = applicable(&t, &map(&[]), &map(&[("greeting", "hi")]))
            .unwrap()
            .expect("a file of a HUP pod");
        assert_eq!(a.changed, vec!["greeting".to_string()]);
        assert_eq!(a.pods, vec!["web".to_string()]);
        // An env value is set when the container is created: cold.
        assert_eq!(
            applicable(&t, &map(&[]), &map(&[("tag", "b")])).unwrap(),
            None
        );
        assert_eq!(
            applicable(&t, &map(&[]), &map(&[("greeting", "hi"), ("tag", "b")])).unwrap(),
            None
        );
        // The same answers (the default given explicitly) are no difference.
        assert_eq!(
            applicable(&t, &map(&[]), &map(&[("greeting", "hello")])).unwrap(),
            None
        );
        // A password given instead of generated: a file of the other pod (restarted).
        let a = applicable(&t, &map(&[]), &map(&[("pw", "s3cret-pw")]))
            .unwrap()
            .unwrap();
        assert_eq!(a.pods, vec!["cache".to_string()]);
    }

    #[test]
    fn a_taken_env_keeps_its_generated_passwords_unless_given() {
        let env = map(&[("greeting", "x"), ("pw", "generated-1")]);
        let pool = map(&[("greeting", "x")]);
        assert_eq!(
            answers_after(&env, &pool, &map(&[("greeting", "y")])),
            map(&[("greeting", "y"), ("pw", "generated-1")])
        );
        assert_eq!(
            answers_after(&env, &pool, &map(&[("pw", "mine")])),
            map(&[("pw", "mine")])
        );
    }
}
