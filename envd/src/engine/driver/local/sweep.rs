//! What the sweep asks of the local host: envd's labelled containers and volumes on the
//! host engine, attachments on envd's bridge, containers inside a node; and their removal.

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
};

use crate::engine::driver::{HostObject, ObjectKind};
use crate::engine::node::{LABEL_ENV, labelled_containers, labelled_volumes};
use crate::engine::pods::{LABEL_CONTAINER, LABEL_POD};
use crate::error::{DockerContext, Error, Result};

/// A listed container's name, without Docker's leading `/`.
pub(super) fn container_name(c: &bollard::models::ContainerSummary) -> String {
    c.names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default()
}

pub(super) async fn host_objects(host: &Docker, bridge: &str) -> Result<Vec<HostObject>> {
    let now = chrono::Utc::now().timestamp();
    let mut out = vec![];
    for c in labelled_containers(host, LABEL_ENV)
        .await
        .ctx(|| "listing envd's containers".into())?
    {
        out.push(HostObject {
            kind: ObjectKind::Container,
            name: container_name(&c),
            env_id: label(c.labels.as_ref(), LABEL_ENV),
            created: Some(c.created.unwrap_or(now)),
            labels: None,
        });
    }
    for v in labelled_volumes(host, LABEL_ENV)
        .await
        .ctx(|| "listing envd's volumes".into())?
    {
        let created = v
            .created_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map_or(now, |t| t.timestamp());
        out.push(HostObject {
            kind: ObjectKind::Volume,
            env_id: label(Some(&v.labels), LABEL_ENV),
            name: v.name,
            created: Some(created),
            labels: None,
        });
    }
    // Only veths on envd's bridge: an operator's own netcfg attachments elsewhere stay.
    for a in netcfg::list().await? {
        if a.bridge.as_deref() == Some(bridge) {
            out.push(HostObject {
                kind: ObjectKind::Veth,
                name: a.host_ifname,
                env_id: a.id,
                created: None,
                labels: None,
            });
        }
    }
    Ok(out)
}

pub(super) async fn node_objects(inner: &Docker, env_id: &str) -> Result<Vec<HostObject>> {
    let now = chrono::Utc::now().timestamp();
    let all = inner
        .list_containers(Some(
            ListContainersOptionsBuilder::default().all(true).build(),
        ))
        .await
        .ctx(|| format!("listing the containers of the node of env {env_id}"))?;
    Ok(all
        .iter()
        .map(|c| HostObject {
            kind: ObjectKind::InnerContainer,
            name: container_name(c),
            env_id: env_id.to_string(),
            created: Some(c.created.unwrap_or(now)),
            labels: Some((
                label(c.labels.as_ref(), LABEL_POD),
                label(c.labels.as_ref(), LABEL_CONTAINER),
            )),
        })
        .collect())
}

/// Removes a host object (`inner`: the client of its node's engine, for an inner
/// container).
pub(super) async fn remove(host: &Docker, inner: Option<&Docker>, obj: &HostObject) -> Result<()> {
    let gone = |r: std::result::Result<(), bollard::errors::Error>, what: &str| match r {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(source) => Err(Error::Docker {
            context: format!("removing {what} {}", obj.name),
            source,
        }),
    };
    let force = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match obj.kind {
        ObjectKind::Container => gone(
            host.remove_container(&obj.name, Some(force)).await,
            "container",
        ),
        ObjectKind::Volume => {
            let opts = RemoveVolumeOptionsBuilder::default().force(true).build();
            gone(host.remove_volume(&obj.name, Some(opts)).await, "volume")
        }
        ObjectKind::Veth if obj.env_id.is_empty() => {
            Ok(netcfg::detach_host_ifname(&obj.name).await?)
        }
        ObjectKind::Veth => Ok(netcfg::detach(&obj.env_id).await?),
        ObjectKind::InnerContainer => match inner {
            Some(inner) => gone(
                inner.remove_container(&obj.name, Some(force)).await,
                "container",
            ),
            // The node went (and its containers with it).
            None => Ok(()),
        },
    }
}

fn label(labels: Option<&HashMap<String, String>>, key: &str) -> String {
    labels.and_then(|l| l.get(key)).cloned().unwrap_or_default()
}
