//! What a pod waits for before it starts (`depends_on`), the extra names it answers to
//! (`aliases`) and where its published ports forward (`targets`): their validation.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::Pod;
use crate::error::{Error, Result};

/// What a dependent pod waits for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// The pod's containers were started.
    Started,
    /// The pod passed its `ready` check (started, when it has none).
    Ready,
    /// Every container of the pod exited 0 (a one-shot job: it is not started again).
    Completed,
}

pub(super) fn validate(src: &str, pods: &[Pod]) -> Result<()> {
    let index: HashMap<&str, usize> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    // Every name a pod answers to, lowercased: DNS on the inner network ignores case.
    let mut names: HashMap<String, &str> = pods
        .iter()
        .map(|p| (p.name.clone(), p.name.as_str()))
        .collect();
    for (i, pod) in pods.iter().enumerate() {
        let at = format!("pods[{i}]");
        for (&published, &target) in &pod.targets {
            if !pod.ports.contains(&published) {
                return Err(Error::invalid(
                    src,
                    format!("{at}.targets.{published}"),
                    format!("port {published} is not in the pod's ports; add it to `ports`"),
                ));
            }
            if target == 0 {
                return Err(Error::invalid(
                    src,
                    format!("{at}.targets.{published}"),
                    "port 0 is not a port; use 1-65535",
                ));
            }
        }
        for (j, alias) in pod.aliases.iter().enumerate() {
            let field = format!("{at}.aliases[{j}]");
            let ok = !alias.is_empty()
                && alias.len() <= 63
                && !alias.starts_with(['-', '.'])
                && alias
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                return Err(Error::invalid(
                    src,
                    field,
                    format!(
                        "`{alias}` is not a host name: use 1-63 letters, digits, `-`, `_`, `.`"
                    ),
                ));
            }
            if alias.eq_ignore_ascii_case(super::STUBS_POD) {
                return Err(Error::invalid(
                    src,
                    field,
                    "`stubs` names envd's sidecar pod; choose another name",
                ));
            }
            if let Some(other) = names.insert(alias.to_ascii_lowercase(), &pod.name)
                && other != pod.name
            {
                return Err(Error::invalid(
                    src,
                    field,
                    format!("`{alias}` already names pod `{other}`; each name belongs to one pod"),
                ));
            }
        }
        for dep in pod.depends_on.keys() {
            let field = format!("{at}.depends_on.{dep}");
            if dep == &pod.name {
                return Err(Error::invalid(src, field, "a pod cannot wait for itself"));
            }
            if !index.contains_key(dep.as_str()) {
                let mut known: Vec<&str> = index.keys().copied().collect();
                known.sort();
                return Err(Error::invalid(
                    src,
                    field,
                    format!("no pod `{dep}`; pods: {}", known.join(", ")),
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(pods, &index) {
        let i = index[cycle[0].as_str()];
        return Err(Error::invalid(
            src,
            format!("pods[{i}].depends_on"),
            format!(
                "pods wait for each other in a circle ({}); remove one of these `depends_on`",
                cycle.join(" -> ")
            ),
        ));
    }
    Ok(())
}

/// A dependency cycle as pod names (first repeated at the end), if any.
fn find_cycle(pods: &[Pod], index: &HashMap<&str, usize>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        i: usize,
        pods: &[Pod],
        index: &HashMap<&str, usize>,
        marks: &mut [Mark],
        path: &mut Vec<usize>,
    ) -> Option<Vec<String>> {
        marks[i] = Mark::Open;
        path.push(i);
        for dep in pods[i].depends_on.keys() {
            let Some(&j) = index.get(dep.as_str()) else {
                continue;
            };
            match marks[j] {
                Mark::Open => {
                    let from = path.iter().position(|&k| k == j).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        path[from..].iter().map(|&k| pods[k].name.clone()).collect();
                    cycle.push(pods[j].name.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(j, pods, index, marks, path) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks[i] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; pods.len()];
    for i in 0..pods.len() {
        if marks[i] == Mark::New
            && let Some(c) = visit(i, pods, index, &mut marks, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

/// Pods that some other pod waits on with `condition`, by name.
pub fn awaited(pods: &[Pod], condition: Condition) -> BTreeMap<&str, Vec<&str>> {
    let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for p in pods {
        for (dep, c) in &p.depends_on {
            if *c == condition {
                out.entry(dep.as_str()).or_default().push(p.name.as_str());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::spec::{Facts, Plan};

    fn err(src: &str) -> String {
        let facts = Facts {
            env_id: "e".into(),
            env_name: "t".into(),
            node_ip: "10.213.0.2".into(),
        };
        Plan::render("t.yaml", src, &Default::default(), &facts)
            .unwrap_err()
            .to_string()
    }

    const HEAD: &str = "name: t\nversion: \"1\"\npods:\n";

    fn pod(name: &str, extra: &str) -> String {
        format!(
            "  - name: {name}\n    containers: [{{name: c, image: envd/redis:latest}}]\n{extra}"
        )
    }

    #[test]
    fn depends_on_names_existing_pods_without_cycles() {
        let src = format!(
            "{HEAD}{}{}",
            pod("a", "    depends_on: {b: ready}\n"),
            pod("b", "")
        );
        let facts = Facts {
            env_id: "e".into(),
            env_name: "t".into(),
            node_ip: "10.213.0.2".into(),
        };
        let plan = Plan::render("t.yaml", &src, &Default::default(), &facts).unwrap();
        assert_eq!(plan.pods[0].depends_on["b"], super::Condition::Ready);

        let e = err(&format!(
            "{HEAD}{}",
            pod("a", "    depends_on: {x: ready}\n")
        ));
        assert!(
            e.contains("pods[0].depends_on.x") && e.contains("no pod `x`"),
            "{e}"
        );
        let e = err(&format!(
            "{HEAD}{}",
            pod("a", "    depends_on: {a: started}\n")
        ));
        assert!(e.contains("cannot wait for itself"), "{e}");
        let e = err(&format!(
            "{HEAD}{}{}{}",
            pod("a", "    depends_on: {b: started}\n"),
            pod("b", "    depends_on: {c: ready}\n"),
            pod("c", "    depends_on: {a: completed}\n")
        ));
        assert!(e.contains("a -> b -> c -> a"), "{e}");
        let e = err(&format!(
            "{HEAD}{}",
            pod("a", "    depends_on: {a: healthy}\n")
        ));
        assert!(e.contains("depends_on") && e.contains("healthy"), "{e}");
    }

    #[test]
    fn aliases_and_targets_are_checked() {
        let e = err(&format!(
            "{HEAD}{}{}",
            pod("a", "    aliases: [my_db]\n"),
            pod("b", "    aliases: [MY_DB]\n")
        ));
        assert!(
            e.contains("pods[1].aliases[0]") && e.contains("pod `a`"),
            "{e}"
        );
        let e = err(&format!("{HEAD}{}", pod("a", "    aliases: [\"a b\"]\n")));
        assert!(e.contains("not a host name"), "{e}");
        let e = err(&format!("{HEAD}{}", pod("a", "    targets: {8080: 80}\n")));
        assert!(e.contains("pods[0].targets.8080"), "{e}");
    }
}
