//! Spare nodes: a pool of the built-in template `node` keeps nodes started (the node
//! container up, its engine answering, its IP attached) with no pod at all. A create that
//! no warm pool serves (another template, other answers, images, init data, ...) takes one
//! if one waits, and its pods are built there from scratch: the node and its engine, ~1 s
//! of every cold create, are paid for ahead. Its events say so (`cold`, "on a spare node").

use crate::catalog::{Catalog, TemplateSource};
use crate::error::Result;
use crate::spec::Plan;
use crate::store::{Created, NewEnv, Store};

/// The template name that means spare nodes in a pool's settings.
pub const NODE: &str = "node";
const VERSION: &str = "1";

/// The built-in template of spare nodes: no questions, no pods (and so no stubs sidecar).
pub fn template() -> TemplateSource {
    TemplateSource {
        name: NODE.into(),
        version: VERSION.into(),
        origin: format!("builtin:{NODE}/{VERSION}"),
        text: format!(
            "name: {NODE}\nversion: \"{VERSION}\"\ndescription: a spare node (its engine up and its IP attached, no pods) that a cold create of any template builds its pods on\npods: []\n"
        ),
    }
}

/// Whether `template` (an env's `name:version`) is a spare node's.
pub fn is_node(template: &str) -> bool {
    template.split_once(':') == Some((NODE, VERSION))
}

/// A spare node's plan: nothing to run (a template needs a pod; this one is envd's own).
pub fn plan() -> Plan {
    Plan {
        name: NODE.into(),
        version: VERSION.into(),
        description: String::new(),
        deadline: None,
        variables: vec![],
        pods: vec![],
        stubs: vec![],
    }
}

/// Whether a pool's template (`node` or `node:1`) means spare nodes.
fn names_spare_nodes(spec: &str) -> bool {
    spec == NODE || is_node(spec)
}

/// A pool's template: spare nodes for `node` (or `node:1`), else the catalog's.
pub fn template_of(catalog: &Catalog, spec: &str) -> Result<TemplateSource> {
    if names_spare_nodes(spec) {
        return Ok(template());
    }
    catalog.get(spec)
}

/// Makes the create `new` on a spare node, when a pool of them has one waiting; `why` no
/// warm pool served it goes in its `cold` event.
pub async fn take(store: &Store, new: &NewEnv, why: &str) -> Result<Option<Created>> {
    let node = template();
    for pool in store.pools().await? {
        if !names_spare_nodes(&pool.template) {
            continue;
        }
        let key = super::key_of(&node, &pool.answers)?.key;
        if let Some(created) = store.take_spare_node(&pool.name, &key, new, why).await? {
            return Ok(Some(created));
        }
    }
    Ok(None)
}
