//! The other pods as facts for rendering: `pods.<name>.host` (the pod's name on the env's
//! inner network), `.port` (its first published port) and `.ports`, read from the
//! template before rendering so any string may point at any pod.

use std::collections::BTreeMap;

use serde_yaml::Value;

#[derive(Debug, PartialEq)]
pub struct PodFact {
    pub host: String,
    pub port: Option<u16>,
    pub ports: Vec<u16>,
}

impl PodFact {
    pub fn to_value(&self) -> minijinja::Value {
        minijinja::Value::from_pairs([
            ("host", minijinja::Value::from(self.host.clone())),
            ("port", minijinja::Value::from(self.port)),
            ("ports", minijinja::Value::from(self.ports.clone())),
        ])
    }
}

/// [`pods`] as a template value.
pub fn pods_value(doc: &Value) -> minijinja::Value {
    let map: BTreeMap<String, minijinja::Value> = pods(doc)
        .iter()
        .map(|(k, f)| (k.clone(), f.to_value()))
        .collect();
    minijinja::Value::from(map)
}

/// Pods whose name is literal text (a templated name is skipped); `-` in a name is also
/// reachable as `_` (`pods.order_db`), since Jinja attribute names cannot hold `-`.
pub fn pods(doc: &Value) -> BTreeMap<String, PodFact> {
    let mut out = BTreeMap::new();
    let Some(Value::Sequence(pods)) = doc.get("pods") else {
        return out;
    };
    for pod in pods {
        let Some(name) = pod.get("name").and_then(Value::as_str) else {
            continue;
        };
        if name.contains("{{") {
            continue;
        }
        let ports: Vec<u16> = match pod.get("ports") {
            Some(Value::Sequence(p)) => p
                .iter()
                .filter_map(|v| v.as_u64().and_then(|n| u16::try_from(n).ok()))
                .collect(),
            _ => vec![],
        };
        let fact = |ports: Vec<u16>| PodFact {
            host: name.to_string(),
            port: ports.first().copied(),
            ports,
        };
        if name.contains('-') {
            out.insert(name.replace('-', "_"), fact(ports.clone()));
        }
        out.insert(name.to_string(), fact(ports));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_pods_become_facts_and_dashes_are_reachable_as_underscores() {
        let doc: Value = serde_yaml::from_str(
            "pods:\n  - name: order-db\n    ports: [3306, 33060]\n  - name: app\n  - name: \"{{ x }}\"\n",
        )
        .unwrap();
        let facts = pods(&doc);
        assert_eq!(facts.len(), 3);
        assert_eq!(facts["order_db"].port, Some(3306));
        assert_eq!(facts["order-db"].ports, vec![3306, 33060]);
        assert_eq!(facts["order_db"].host, "order-db");
        assert_eq!(facts["app"].port, None);
    }
}
