//! The orphan sweep on the real engine: a planted container, volume and veth labelled for
//! an env nobody holds are listed by a dry run (and left), then freed by a real run.
//! Its own test binary: cargo runs test binaries one at a time, so no other test's envs
//! (unknown to this store) are on the host meanwhile.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, VolumeCreateRequest};
use bollard::query_parameters::{CreateContainerOptionsBuilder, InspectContainerOptions};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sweep_lists_then_frees_planted_orphans() {
    if !common::engine_available().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let engine = common::engine(dir.path(), 207).await;
    let host = &envd::engine::host_docker().await.unwrap();
    let orphan = uuid::Uuid::now_v7().to_string();
    let guard = common::Guard::default();
    guard.watch(&orphan);
    let labels = |role: &str| {
        HashMap::from([
            ("envd.env".to_string(), orphan.clone()),
            ("envd.role".to_string(), role.to_string()),
        ])
    };

    let name = format!("envd-orphan-{}", envd::store::short_id(&orphan));
    let body = ContainerCreateBody {
        image: Some("envd/pause:latest".into()),
        labels: Some(labels("node")),
        ..Default::default()
    };
    host.create_container(
        Some(CreateContainerOptionsBuilder::default().name(&name).build()),
        body,
    )
    .await
    .unwrap();
    host.start_container(&name, None).await.unwrap();
    let vol = format!("envd-{}-docker", envd::store::short_id(&orphan));
    host.create_volume(VolumeCreateRequest {
        name: Some(vol.clone()),
        labels: Some(labels("volume")),
        ..Default::default()
    })
    .await
    .unwrap();
    let pid = host
        .inspect_container(&name, None::<InspectContainerOptions>)
        .await
        .unwrap()
        .state
        .unwrap()
        .pid
        .unwrap() as u32;
    let cfg = &engine.cfg;
    netcfg::ensure_bridge(
        &cfg.bridge,
        ipnetwork::IpNetwork::new(cfg.gateway, cfg.cidr.prefix()).unwrap(),
    )
    .await
    .unwrap();
    let spec = netcfg::AttachSpec::new(&orphan, &cfg.bridge, "10.213.207.9/16".parse().unwrap());
    netcfg::attach(netcfg::Target::Pid(pid), &spec)
        .await
        .unwrap();

    let mine = |found: &[envd::engine::Found]| {
        let mut kinds: Vec<&str> = found
            .iter()
            .filter(|o| o.env_id == orphan)
            .map(|o| o.kind)
            .collect();
        kinds.sort();
        kinds
    };
    // Younger than the grace period: left alone.
    let found = engine.sweep(Duration::from_secs(3600), true).await.unwrap();
    assert!(
        mine(&found).iter().all(|k| *k == "veth"),
        "only the veth has no age: {found:?}"
    );

    let found = engine.sweep(Duration::ZERO, true).await.unwrap();
    assert_eq!(mine(&found), ["container", "veth", "volume"], "{found:?}");
    assert!(found.iter().all(|o| !o.freed));
    assert!(
        host.inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .is_ok(),
        "a dry run frees nothing"
    );

    // Freeing the container kills its netns, and the veth dies with it before its turn.
    let found = engine.sweep(Duration::ZERO, false).await.unwrap();
    let kinds = mine(&found);
    assert!(
        kinds.contains(&"container") && kinds.contains(&"volume"),
        "{found:?}"
    );
    assert!(
        found.iter().filter(|o| o.env_id == orphan).all(|o| o.freed),
        "{found:?}"
    );
    assert!(
        host.inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .is_err()
    );
    assert!(host.inspect_volume(&vol).await.is_err());
    assert!(netcfg::list().await.unwrap().iter().all(|a| a.id != orphan));
    assert!(
        mine(&engine.sweep(Duration::ZERO, true).await.unwrap()).is_empty(),
        "nothing left to sweep"
    );
}
