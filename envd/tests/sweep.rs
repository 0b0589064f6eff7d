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
    let host = engine.host();
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

/// A container started by hand inside a ready env's node is not in its plan: the sweep
/// lists it, then removes it, and the env's own pods keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_removes_inner_containers_that_are_not_in_the_plan() {
    let Some(h) = common::harness::harness(214, None).await else {
        return;
    };
    let (env, _guard) = h.ready("minimal", &[]).await;
    let sock = format!("/run/envd/{}/docker.sock", env.id);
    let inner =
        bollard::Docker::connect_with_unix(&sock, 30, bollard::API_DEFAULT_VERSION).unwrap();
    let stray = bollard::models::ContainerCreateBody {
        image: Some("envd/pause:latest".into()),
        ..Default::default()
    };
    let opts = bollard::query_parameters::CreateContainerOptionsBuilder::default()
        .name("stray")
        .build();
    inner.create_container(Some(opts), stray).await.unwrap();
    inner.start_container("stray", None).await.unwrap();

    let stray_of = |found: &[envd::engine::Found]| {
        found
            .iter()
            .filter(|f| f.kind == "inner-container" && f.env_id == env.id)
            .map(|f| (f.name.clone(), f.freed))
            .collect::<Vec<_>>()
    };
    let name = format!("{}/stray", env.name);
    // Only the inner part: the host part would free other tests' envs (another store's).
    let dry = h.engine.sweep_inner(Duration::ZERO, true).await.unwrap();
    assert_eq!(stray_of(&dry), vec![(name.clone(), false)]);
    assert!(inner.inspect_container("stray", None).await.is_ok());
    let run = h.engine.sweep_inner(Duration::ZERO, false).await.unwrap();
    assert_eq!(stray_of(&run), vec![(name, true)]);
    assert!(inner.inspect_container("stray", None).await.is_err());

    let ip = env.node_ip.clone().unwrap();
    let client = redis::Client::open(format!("redis://:envd-redis@{ip}:6379/")).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
    assert_eq!(pong, "PONG");
    let gone = h.teardown(&env.id).await;
    h.assert_nothing_left(&gone).await;
}
