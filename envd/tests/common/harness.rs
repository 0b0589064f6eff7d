//! The test harness on the real engine: create an env from a template, wait until it is
//! ready, tear it down, and check nothing of it is left on the host.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::query_parameters::{ListContainersOptionsBuilder, ListVolumesOptionsBuilder};
use envd::catalog::Catalog;
use envd::engine::Engine;
use envd::service::{self, CreateRequest, Limits};
use envd::store::{Created, Env, State};

use super::Guard;

pub struct Harness {
    pub engine: Arc<Engine>,
    pub catalog: Catalog,
    /// The store and archives; removed with the harness.
    pub _dir: tempfile::TempDir,
}

/// A create request of a template with answers.
pub fn request(template: &str, answers: &[(&str, &str)]) -> CreateRequest {
    CreateRequest {
        template: template.into(),
        answers: answers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..Default::default()
    }
}

/// Each test leases from its own /24 of the pool so tests in parallel never share an IP.
pub async fn harness(slice: u8, templates: Option<std::path::PathBuf>) -> Option<Harness> {
    harness_with(slice, templates, |_| {}).await
}

/// [`harness`] with a changed engine configuration.
pub async fn harness_with(
    slice: u8,
    templates: Option<std::path::PathBuf>,
    change: impl FnOnce(&mut envd::engine::EngineConfig),
) -> Option<Harness> {
    if !super::engine_available().await {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let engine = super::engine_with(dir.path(), slice, change).await;
    Some(Harness {
        engine,
        catalog: Catalog::new(templates),
        _dir: dir,
    })
}

impl Harness {
    pub async fn create(&self, template: &str, answers: &[(&str, &str)]) -> Env {
        self.create_with(request(template, answers)).await
    }

    pub async fn create_with(&self, req: CreateRequest) -> Env {
        let Created::New(env) =
            service::create(&self.engine.store, &self.catalog, &self.limits(), req)
                .await
                .unwrap()
        else {
            panic!("new env")
        };
        self.engine.kick(&env.id);
        env
    }

    /// The service's limits, with the engine's directory roots.
    pub fn limits(&self) -> Limits {
        Limits {
            dirs_roots: self.engine.cfg.dirs_roots.clone(),
            ..Limits::default()
        }
    }

    /// Creates an env and waits until it is ready (failing the test with its error
    /// otherwise); the guard frees it if the test panics later.
    pub async fn ready(&self, template: &str, answers: &[(&str, &str)]) -> (Env, Guard) {
        self.ready_with(request(template, answers)).await
    }

    pub async fn ready_with(&self, req: CreateRequest) -> (Env, Guard) {
        let env = self.create_with(req).await;
        let guard = Guard::default();
        guard.watch(&env.id);
        (self.until_ready(&env).await, guard)
    }

    /// Waits for `env` to end `ready`, failing the test with its error otherwise.
    pub async fn until_ready(&self, env: &Env) -> Env {
        let env = self
            .wait(
                &env.id,
                &[State::Ready, State::Failed],
                Duration::from_secs(240),
            )
            .await;
        assert_eq!(
            env.state,
            State::Ready,
            "{} failed: {:?}",
            env.name,
            env.error
        );
        env
    }

    pub async fn wait(&self, id: &str, want: &[State], limit: Duration) -> Env {
        let t = Instant::now();
        loop {
            let env = self.engine.store.get(id).await.unwrap();
            if want.contains(&env.state) {
                return env;
            }
            assert!(
                t.elapsed() < limit,
                "env {} still {:?} at step {} after {limit:?}: {:?}",
                env.name,
                env.state,
                env.step,
                env.error
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn teardown(&self, id: &str) -> Env {
        self.engine.store.request_teardown(id).await.unwrap();
        self.engine.kick(id);
        self.wait(id, &[State::Gone, State::Failed], Duration::from_secs(120))
            .await
    }

    /// Nothing of the env on the host: containers, volumes, veth, lease.
    pub async fn assert_nothing_left(&self, env: &Env) {
        assert_nothing_left(&self.engine, &env.id).await;
    }
}

/// Nothing of the env on the host: containers, volumes, veth, lease.
pub async fn assert_nothing_left(engine: &Engine, env_id: &str) {
    let host = &envd::engine::host_docker().await.unwrap();
    let filter = HashMap::from([("label".to_string(), vec![format!("envd.env={env_id}")])]);
    let cs = host
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filter)
                .build(),
        ))
        .await
        .unwrap();
    assert!(
        cs.is_empty(),
        "containers left: {:?}",
        cs.iter().map(|c| &c.names).collect::<Vec<_>>()
    );
    let vs = host
        .list_volumes(Some(
            ListVolumesOptionsBuilder::default()
                .filters(&filter)
                .build(),
        ))
        .await
        .unwrap();
    assert!(vs.volumes.unwrap_or_default().is_empty(), "volumes left");
    let links = netcfg::list().await.unwrap();
    assert!(
        links.iter().all(|a| a.id != env_id),
        "veth left for {env_id}"
    );
    assert_eq!(
        engine.store.lease_of(env_id).await.unwrap(),
        None,
        "lease left"
    );
}

/// A templates directory holding one template, `<name>/1/template.yaml`.
pub fn template_dir(name: &str, yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join(name).join("1");
    std::fs::create_dir_all(&tdir).unwrap();
    std::fs::write(tdir.join("template.yaml"), yaml).unwrap();
    dir
}
