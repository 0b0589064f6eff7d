//! Per-env image overrides (`envd create --image web=REF`, a deploy's new image): kept
//! among the env's answers under `image@<pod>[/<container>]` keys (no variable can be
//! named so), so they are recorded with the env, survive a restart of envd, and a deploy
//! is a config generation like any answer change (applied, waited ready, rolled back).

use std::collections::BTreeMap;

use super::Plan;
use crate::engine::registry::ImageRef;
use crate::error::{Error, FieldError, Result};

pub const PREFIX: &str = "image@";

/// The answer key of an override of `target` (`pod` or `pod/container`).
pub fn key(target: &str) -> String {
    format!("{PREFIX}{target}")
}

/// The answers without overrides, and the overrides by target.
pub fn split(
    answers: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut plain = BTreeMap::new();
    let mut images = BTreeMap::new();
    for (k, v) in answers {
        match k.strip_prefix(PREFIX) {
            Some(t) => images.insert(t.to_string(), v.clone()),
            None => plain.insert(k.clone(), v.clone()),
        };
    }
    (plain, images)
}

/// Sets each override's image in the plan; every bad one is named (`images.<target>`).
pub fn apply(plan: &mut Plan, source_name: &str, images: &BTreeMap<String, String>) -> Result<()> {
    let mut bad = vec![];
    for (target, image) in images {
        let field = format!("images.{target}");
        if ImageRef::parse(image).is_none() {
            bad.push(FieldError {
                field,
                reason: format!(
                    "`{image}` is not an image reference (e.g. registry.lab/shop:feature-x)"
                ),
            });
            continue;
        }
        let (pod_name, container) = match target.split_once('/') {
            Some((p, c)) => (p, Some(c)),
            None => (target.as_str(), None),
        };
        let pods: Vec<String> = plan.pods.iter().map(|p| p.name.clone()).collect();
        let Some(pod) = plan.pods.iter_mut().find(|p| p.name == pod_name) else {
            bad.push(FieldError {
                field,
                reason: format!(
                    "the template has no pod `{pod_name}`; its pods: {}",
                    pods.join(", ")
                ),
            });
            continue;
        };
        let names: Vec<String> = pod.containers.iter().map(|c| c.name.clone()).collect();
        let found = match container {
            Some(c) => pod.containers.iter_mut().find(|x| x.name == c),
            None if pod.containers.len() == 1 => pod.containers.first_mut(),
            None => {
                bad.push(FieldError {
                    field,
                    reason: format!(
                        "pod `{pod_name}` has several containers ({}); name one as {pod_name}/<container>",
                        names.join(", ")
                    ),
                });
                continue;
            }
        };
        match found {
            Some(c) => c.image = image.clone(),
            None => bad.push(FieldError {
                field,
                reason: format!(
                    "pod `{pod_name}` has no container `{}`; its containers: {}",
                    container.unwrap_or_default(),
                    names.join(", ")
                ),
            }),
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidFields {
            source_name: source_name.to_string(),
            fields: bad,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Facts;

    const TPL: &str = r#"name: shop
version: "1"
pods:
  - name: web
    containers:
      - name: app
        image: envd/app:latest
  - name: db
    containers:
      - name: main
        image: envd/redis:latest
      - name: side
        image: envd/redis:latest
"#;

    fn render(images: &[(&str, &str)]) -> Result<Plan> {
        let answers = images
            .iter()
            .map(|(t, r)| (key(t), r.to_string()))
            .collect();
        let facts = Facts {
            env_id: "e".into(),
            env_name: "n".into(),
            node_ip: "10.0.0.2".into(),
        };
        Plan::render("shop", TPL, &answers, &facts)
    }

    #[test]
    fn overrides_the_named_container() {
        let p = render(&[("web", "registry.lab/shop:feature-x"), ("db/side", "own:2")]).unwrap();
        assert_eq!(p.pods[0].containers[0].image, "registry.lab/shop:feature-x");
        assert_eq!(p.pods[1].containers[0].image, "envd/redis:latest");
        assert_eq!(p.pods[1].containers[1].image, "own:2");
    }

    #[test]
    fn names_every_bad_override() {
        let e = render(&[
            ("nope", "x:1"),
            ("db", "x:1"),
            ("web/zz", "x:1"),
            ("web", "Bad Ref"),
        ])
        .unwrap_err();
        let Error::InvalidFields { fields, .. } = e else {
            panic!("{e}")
        };
        let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            names,
            ["images.db", "images.nope", "images.web", "images.web/zz"]
        );
        assert!(
            fields[1].reason.contains("no pod `nope`"),
            "{}",
            fields[1].reason
        );
        assert!(
            fields[0].reason.contains("several containers"),
            "{}",
            fields[0].reason
        );
    }
}
