//! The engine's loop on the fake driver: no Docker, no root.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::driver::fake::Readiness;
use super::driver::{ContainerObs, ContainerSeen, NodeDriver};
use super::{Engine, EngineConfig, FakeDriver};
use crate::catalog::Catalog;
use crate::lifecycle::{EventKind, State};
use crate::service::{self, CreateRequest, Limits};
use crate::store::{Created, Env, Store};

pub(crate) struct Fake {
    pub engine: Arc<Engine>,
    pub driver: Arc<FakeDriver>,
    pub catalog: Catalog,
    _dir: tempfile::TempDir,
}

pub(crate) async fn fake() -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("envd.db").display()
    ))
    .await
    .unwrap();
    let cfg = EngineConfig::with_data_dir(dir.path().to_path_buf());
    let driver = Arc::new(FakeDriver::new());
    let engine = Engine::with_driver(store, cfg, driver.clone()).unwrap();
    Fake {
        engine,
        driver,
        catalog: Catalog::new(None),
        _dir: dir,
    }
}

impl Fake {
    async fn create(&self, template: &str, keep_on_failure: bool) -> Env {
        let req = CreateRequest {
            template: template.into(),
            keep_on_failure,
            ..Default::default()
        };
        let created = service::create(&self.engine.store, &self.catalog, &Limits::default(), req)
            .await
            .unwrap();
        let Created::New(env) = created else {
            panic!("not new")
        };
        self.engine.kick(&env.id);
        env
    }

    /// Polls the store until `done` holds (a generous bound: these settle in milliseconds).
    async fn until(&self, id: &str, done: impl Fn(&Env) -> bool) -> Env {
        let t = Instant::now();
        loop {
            let env = self.engine.store.get(id).await.unwrap();
            if done(&env) {
                return env;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "env still {} at {}: {:?}\n{:#?}",
                env.state,
                env.step,
                env.error,
                self.driver.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn settled(&self, id: &str) -> Env {
        self.until(id, |e| e.state.is_settled()).await
    }

    async fn delete(&self, id: &str) -> Env {
        self.engine.store.request_teardown(id).await.unwrap();
        self.engine.kick(id);
        self.until(id, |e| e.state.is_final()).await
    }

    async fn kinds(&self, id: &str) -> Vec<String> {
        self.engine
            .store
            .events(id, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.step)
            .collect()
    }

    async fn loops_end(&self) {
        let t = Instant::now();
        while self.engine.running_loops() > 0 {
            assert!(t.elapsed() < Duration::from_secs(20), "a loop never ended");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn create_then_teardown_records_every_step_and_frees_everything() {
    let f = fake().await;
    let env = f.create("full", false).await;
    let ready = f.settled(&env.id).await;
    assert_eq!(ready.state, State::Ready, "{:?}", ready.error);
    let kinds = f.kinds(&env.id).await;
    for k in [
        "requested",
        "node",
        "inner-engine",
        "network",
        "started:mysql",
        "started:stubs",
        "pods",
        "ready",
    ] {
        assert!(kinds.iter().any(|s| s == k), "no {k} in {kinds:?}");
    }
    assert_eq!(f.driver.count(&env, "create-node"), 1);
    let log = f.driver.log();
    assert!(
        !log.iter().any(|l| l.contains("WITHOUT ITS FILES")),
        "{log:#?}"
    );
    // Every container with files got them before it started.
    let upload = log.iter().position(|l| l.ends_with("upload stubs/stubs"));
    let start = log.iter().position(|l| l.ends_with("start stubs/stubs"));
    assert!(upload.is_some() && upload < start, "{log:#?}");

    let gone = f.delete(&env.id).await;
    assert_eq!(gone.state, State::Gone);
    assert!(f.driver.owned(&gone).await.unwrap().is_empty());
    assert_eq!(f.engine.store.lease_of(&env.id).await.unwrap(), None);
    assert_eq!(f.driver.count(&env, "collect"), 1);
    // The loop and its lock are forgotten once the env settled.
    f.loops_end().await;
    assert!(f.engine.locks.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_pod_that_never_answers_fails_the_create_and_is_freed() {
    let f = fake().await;
    f.driver
        .set_readiness("redis", Readiness::Never("connection refused".into()));
    let env = f.create("minimal", false).await;
    let end = f.until(&env.id, |e| e.state.is_final()).await;
    assert_eq!(end.state, State::Failed);
    let error = end.error.clone().unwrap();
    assert!(
        error.contains("pod redis") && error.contains("connection refused"),
        "{error}"
    );
    assert!(f.driver.owned(&end).await.unwrap().is_empty());
    assert_eq!(f.driver.count(&env, "collect"), 1);
}

#[tokio::test]
async fn a_failed_env_kept_for_debugging_is_freed_when_removed() {
    let f = fake().await;
    f.driver
        .set_readiness("redis", Readiness::Never("refused".into()));
    let env = f.create("minimal", true).await;
    let kept = f.settled(&env.id).await;
    assert_eq!(kept.state, State::Failed);
    assert!(!f.driver.owned(&kept).await.unwrap().is_empty());
    let end = f.delete(&env.id).await;
    assert_eq!(end.state, State::Failed);
    assert!(f.driver.owned(&end).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_delete_stops_a_create_at_its_next_action_not_its_deadline() {
    let f = fake().await;
    // The create waits on a check that never answers (its deadline is minutes away).
    f.driver.set_readiness("redis", Readiness::Hang);
    let env = f.create("minimal", false).await;
    f.until(&env.id, |e| e.step == crate::lifecycle::Step::Pods)
        .await;
    let t = Instant::now();
    let end = f.delete(&env.id).await;
    assert_eq!(end.state, State::Gone);
    assert!(f.driver.owned(&end).await.unwrap().is_empty());
    println!("deleted during create: gone in {:?}", t.elapsed());
    f.loops_end().await;
}

#[tokio::test]
async fn a_container_created_but_never_given_its_files_gets_them_before_it_starts() {
    let f = fake().await;
    let env = f.create("minimal", false).await;
    let ready = f.settled(&env.id).await;
    assert_eq!(ready.state, State::Ready);
    // The crash window: the container was (re)created, envd died before the upload.
    let bare = ContainerSeen {
        state: ContainerObs::Created,
        files: None,
    };
    f.driver.set_container(&env.id, "stubs", "stubs", bare);
    f.engine.reconcile(&env.id).await.unwrap();
    let log = f.driver.log();
    let tail: Vec<&String> = log.iter().rev().take(2).collect();
    assert!(tail[1].ends_with("upload stubs/stubs"), "{log:#?}");
    assert!(tail[0].ends_with("start stubs/stubs"), "{log:#?}");
}

#[tokio::test]
async fn a_restarted_node_gets_its_ip_and_pods_back_and_stays_ready() {
    let f = fake().await;
    let env = f.create("minimal", false).await;
    assert_eq!(f.settled(&env.id).await.state, State::Ready);
    f.driver.stop_node(&env.id);
    f.engine.kick(&env.id);
    f.loops_end().await;
    let env = f.engine.store.get(&env.id).await.unwrap();
    assert_eq!(env.state, State::Ready);
    assert_eq!(f.driver.count(&env, "create-node"), 1);
    assert_eq!(f.driver.count(&env, "start-node"), 1);
    assert_eq!(f.driver.count(&env, "attach-ip"), 2);
    let seen = f.driver.observe(&env, &[]).await.unwrap();
    assert!(
        seen.pods
            .values()
            .flat_map(|p| p.values())
            .all(|c| c.state == ContainerObs::Running)
    );
    // Only the IP lost (a veth removed by hand): attached again, nothing else redone.
    f.driver.drop_ip(&env.id);
    f.engine.reconcile(&env.id).await.unwrap();
    assert_eq!(f.driver.count(&env, "attach-ip"), 3);
    assert_eq!(f.driver.count(&env, "start-node"), 1);
}

#[tokio::test]
async fn a_job_that_fails_fails_the_pods_waiting_for_it() {
    let f = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let tpl = dir.path().join("jobbed/1");
    std::fs::create_dir_all(&tpl).unwrap();
    std::fs::write(
        tpl.join("template.yaml"),
        r#"name: jobbed
version: "1"
pods:
  - name: migrate
    containers: [{ name: migrate, image: envd/app:latest }]
  - name: app
    depends_on: { migrate: completed }
    containers: [{ name: app, image: envd/app:latest }]
"#,
    )
    .unwrap();
    let f = Fake {
        catalog: Catalog::new(Some(dir.path().to_path_buf())),
        ..f
    };
    f.driver.set_exit("migrate", "migrate", 4);
    let env = f.create("jobbed", false).await;
    let end = f.until(&env.id, |e| e.state.is_final()).await;
    assert_eq!(end.state, State::Failed);
    assert!(
        end.error.as_deref().unwrap_or("").contains("exited 4"),
        "{:?}",
        end.error
    );
    assert_eq!(f.driver.count(&env, "create-pod app"), 0);
    let events = f.engine.store.events(&env.id, 0).await.unwrap();
    assert!(events.iter().any(|e| e.kind == EventKind::Failed));
}

#[tokio::test]
async fn config_set_is_applied_by_the_loop_or_rolled_back_with_why() {
    use crate::lifecycle::ChangeStatus;
    use std::collections::BTreeMap;
    let f = fake().await;
    let env = f.create("minimal", false).await;
    assert_eq!(f.settled(&env.id).await.state, State::Ready);
    let answers = |v: &str| BTreeMap::from([("redis_password".to_string(), v.to_string())]);
    let closed = |generation: i64| {
        let (store, id) = (f.engine.store.clone(), env.id.clone());
        async move {
            let t = Instant::now();
            loop {
                let c = store.change(&id, generation).await.unwrap();
                if !c.status.is_open() {
                    return c;
                }
                assert!(t.elapsed() < Duration::from_secs(20), "{c:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };

    let change = f
        .engine
        .request_config(&env.id, "redis", &answers("other"))
        .await
        .unwrap();
    // Recorded as generation 1; the loop it wakes may already be applying it.
    assert_eq!(change.generation, 1);
    let done = closed(1).await;
    assert_eq!(done.status, ChangeStatus::Applied);
    assert_eq!(done.outcome.as_deref(), Some("restarted"));
    assert_eq!(done.changed, ["redis_password"]);
    assert!(f.kinds(&env.id).await.iter().any(|k| k == "config:redis"));

    // A value the pod refuses: the previous answers come back, with why.
    f.driver
        .set_readiness("redis", Readiness::FailsWith("bad-pw".into()));
    let change = f
        .engine
        .request_config(&env.id, "redis", &answers("bad-pw"))
        .await
        .unwrap();
    let done = closed(change.generation).await;
    assert_eq!(done.status, ChangeStatus::RolledBack);
    let why = done.outcome.unwrap();
    assert!(
        why.contains("refused bad-pw") && why.contains("previous answers are back"),
        "{why}"
    );
    let env = f.engine.store.get(&env.id).await.unwrap();
    assert_eq!(env.answers["redis_password"], "other");
    assert_eq!(env.state, State::Ready);
    assert!(env.error.is_none());

    // A change to a pod the answers do not touch, or while one is open, is refused.
    let stubs = f
        .engine
        .request_config(&env.id, "stubs", &answers("x"))
        .await;
    assert!(stubs.is_err());
}

#[tokio::test]
async fn a_config_change_open_when_the_env_is_removed_is_closed() {
    use crate::lifecycle::ChangeStatus;
    use std::collections::BTreeMap;
    let f = fake().await;
    let env = f.create("minimal", false).await;
    assert_eq!(f.settled(&env.id).await.state, State::Ready);
    // The pod never answers with the new answers: the change stays open until removed.
    f.driver.set_readiness("redis", Readiness::Hang);
    let answers = BTreeMap::from([("redis_password".to_string(), "x".to_string())]);
    let change = f
        .engine
        .request_config(&env.id, "redis", &answers)
        .await
        .unwrap();
    let gone = f.delete(&env.id).await;
    assert_eq!(gone.state, State::Gone);
    let closed = f
        .engine
        .store
        .change(&env.id, change.generation)
        .await
        .unwrap();
    assert_eq!(closed.status, ChangeStatus::RolledBack);
    assert!(closed.outcome.unwrap().contains("removed"));
}
mod policy;
mod pool;
mod restart;
mod seam;
