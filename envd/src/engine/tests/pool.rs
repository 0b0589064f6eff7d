//! Warm pools on the fake driver: refill, take, misses, drain, health.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Fake, fake};
use crate::engine::driver::fake::Readiness;
use crate::lifecycle::State;
use crate::pool::{Outcome, PoolSpec, Refill};
use crate::service::{self, CreateRequest, Limits};
use crate::store::{Created, EnvFilter};

fn refill(f: &Fake) -> Refill {
    Refill {
        engine: f.engine.clone(),
        catalog: f.catalog.clone(),
        limits: Limits::default(),
        quotas: Default::default(),
        budget: Default::default(),
        tick: Duration::from_millis(10),
        health_every: Duration::from_secs(3600),
    }
}

async fn set_pool(f: &Fake, template: &str, min: u32, answers: &[(&str, &str)]) {
    let spec = PoolSpec {
        name: Some(template.into()),
        template: template.into(),
        answers: answers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        min,
        max: None,
    };
    crate::pool::set(&f.engine.store, &f.catalog, spec)
        .await
        .unwrap();
}

/// Runs the refill until the pool holds `ready` pooled envs and none being built;
/// checks on the way that it never builds two at once.
async fn refill_to(f: &Fake, ready: usize) -> Vec<String> {
    let r = refill(f);
    let t = Instant::now();
    loop {
        r.once().await.unwrap();
        let members = f.engine.store.pool_members().await.unwrap();
        let building = members.iter().filter(|m| m.state != State::Pooled).count();
        assert!(building <= 1, "{building} pool envs built at once");
        let pooled: Vec<String> = members
            .iter()
            .filter(|m| m.state == State::Pooled)
            .map(|m| m.id.clone())
            .collect();
        if pooled.len() == ready && building == 0 {
            return pooled;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "pool at {} of {ready}",
            pooled.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn create(f: &Fake, answers: &[(&str, &str)]) -> (crate::store::Env, bool) {
    let req = CreateRequest {
        template: "minimal".into(),
        answers: answers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        labels: BTreeMap::from([("team".to_string(), "qa".to_string())]),
        owner: Some("alice".into()),
        ..Default::default()
    };
    let created = service::create(&f.engine.store, &f.catalog, &Limits::default(), req)
        .await
        .unwrap();
    let Created::New(env) = created else {
        panic!("not new")
    };
    f.engine.kick(&env.id);
    let taken = f.kinds(&env.id).await.iter().any(|k| k == "claimed");
    (env, taken)
}

#[tokio::test]
async fn concurrent_creates_take_distinct_pooled_envs_and_nothing_is_rebuilt() {
    let f = fake().await;
    f.driver
        .set_readiness("redis", Readiness::After(Duration::from_millis(1)));
    set_pool(&f, "minimal", 3, &[]).await;
    let pooled = refill_to(&f, 3).await;
    let creates = (0..5).map(|_| create(&f, &[]));
    let got = futures_util::future::join_all(creates).await;
    let taken: Vec<_> = got.iter().filter(|(_, t)| *t).map(|(e, _)| e).collect();
    assert_eq!(taken.len(), 3, "three pooled envs, three takes");
    let mut ids: Vec<&str> = taken.iter().map(|e| e.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "two creates took the same env");
    for e in &taken {
        assert!(pooled.contains(&e.id));
        let env = f.settled(&e.id).await;
        assert_eq!(env.state, State::Ready, "{:?}", env.error);
        assert_eq!(env.owner, "alice");
        assert_eq!(env.labels.get("team").map(String::as_str), Some("qa"));
        assert!(env.pool.is_none());
        // Built once, probed again after the take, nothing created twice.
        assert_eq!(f.driver.count(&env, "create-node"), 1);
        let probes = f
            .driver
            .log()
            .iter()
            .filter(|l| l.contains(env.short_id()) && l.contains("ready redis"))
            .count();
        assert_eq!(probes, 2, "{:#?}", f.driver.log());
        let kinds = f.kinds(&env.id).await;
        let at = kinds.iter().position(|k| k == "claimed").unwrap();
        assert!(kinds[at..].iter().any(|k| k == "ready:redis"), "{kinds:?}");
        assert!(kinds[at..].iter().any(|k| k == "ready"), "{kinds:?}");
    }
    for (e, _) in got.iter().filter(|(_, t)| !*t) {
        let kinds = f.kinds(&e.id).await;
        assert!(kinds.iter().any(|k| k == "cold"), "{kinds:?}");
        assert_eq!(f.settled(&e.id).await.state, State::Ready);
    }
    let views = crate::pool::views(&f.engine.store, &f.catalog)
        .await
        .unwrap();
    assert_eq!((views[0].claims, views[0].misses), (3, 2));
}

#[tokio::test]
async fn other_answers_or_init_data_build_cold_and_say_why() {
    let f = fake().await;
    set_pool(&f, "minimal", 1, &[]).await;
    refill_to(&f, 1).await;
    let (env, taken) = create(&f, &[("redis_password", "other-pw")]).await;
    assert!(!taken);
    let events = f.engine.store.events(&env.id, 0).await.unwrap();
    let cold = events.iter().find(|e| e.step == "cold").unwrap();
    assert!(cold.message.contains("answers"), "{}", cold.message);
    assert_eq!(f.settled(&env.id).await.state, State::Ready);
    // The default answers given explicitly are the same answers: taken.
    let (_, taken) = create(&f, &[("redis_password", "envd-redis")]).await;
    assert!(taken);
    let misses = f.engine.store.pool_misses().await.unwrap();
    assert_eq!(misses, vec![("minimal".into(), "answers".into(), 1)]);
    // No pool for the template: cold, and no pool's miss.
    let req = CreateRequest {
        template: "full".into(),
        ..Default::default()
    };
    let Created::New(e) = service::create(&f.engine.store, &f.catalog, &Limits::default(), req)
        .await
        .unwrap()
    else {
        panic!()
    };
    let kinds = f.kinds(&e.id).await;
    assert!(kinds.iter().any(|k| k == "cold"));
    assert_eq!(f.engine.store.pool_misses().await.unwrap().len(), 1);
}

#[tokio::test]
async fn pooled_envs_are_hidden_from_owners_listings_and_quota() {
    let f = fake().await;
    set_pool(&f, "minimal", 1, &[]).await;
    let pooled = refill_to(&f, 1).await;
    let mine = EnvFilter {
        owner: Some("alice".into()),
        ..Default::default()
    };
    assert!(f.engine.store.list(&mine).await.unwrap().is_empty());
    assert!(f.engine.store.live_of("alice").await.unwrap().is_empty());
    let all = f.engine.store.list(&EnvFilter::default()).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, pooled[0]);
    assert_eq!(all[0].state, State::Pooled);
    assert_eq!(all[0].owner, crate::pool::POOL_OWNER);
}

#[tokio::test]
async fn the_refill_waits_for_cold_creates_and_a_drain_frees_everything() {
    let f = fake().await;
    // A user's cold create in progress: the refill builds nothing meanwhile.
    f.driver.set_readiness("mysql", Readiness::Hang);
    let req = CreateRequest {
        template: "full".into(),
        ..Default::default()
    };
    let Created::New(cold) = service::create(&f.engine.store, &f.catalog, &Limits::default(), req)
        .await
        .unwrap()
    else {
        panic!()
    };
    f.engine.kick(&cold.id);
    set_pool(&f, "minimal", 2, &[]).await;
    let r = refill(&f);
    for _ in 0..5 {
        r.once().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(f.engine.store.pool_members().await.unwrap().is_empty());
    f.delete(&cold.id).await;

    let pooled = refill_to(&f, 2).await;
    set_pool(&f, "minimal", 0, &[]).await;
    r.once().await.unwrap();
    for id in &pooled {
        let env = f.until(id, |e| e.state.is_final()).await;
        assert_eq!(env.state, State::Gone);
    }
    assert_eq!(f.engine.store.lease_count().await.unwrap(), 0);
    r.once().await.unwrap();
    assert!(f.engine.store.pool_members().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_pooled_env_that_breaks_is_torn_down_and_replaced() {
    let f = fake().await;
    set_pool(&f, "minimal", 1, &[]).await;
    let first = refill_to(&f, 1).await.remove(0);
    f.driver.stop_node(&first);
    if f.engine.check_pooled(&first).await.unwrap() {
        // The node's host event woke its loop, which is discarding it already.
        let env = f.engine.store.get(&first).await.unwrap();
        assert!(env.state != State::Pooled || env.error.is_some(), "{env:?}");
    }
    let env = f.until(&first, |e| e.state.is_final()).await;
    assert_eq!(env.state, State::Failed);
    assert!(
        env.error
            .as_deref()
            .unwrap_or_default()
            .contains("node is not running"),
        "{:?}",
        env.error
    );
    // Never restarted in place: the one node create it had.
    assert_eq!(f.driver.count(&env, "create-node"), 1);
    let second = refill_to(&f, 1).await.remove(0);
    assert_ne!(first, second);
    assert!(f.engine.check_pooled(&second).await.unwrap());
}

#[tokio::test]
async fn a_take_is_one_statement_that_two_takes_never_share() {
    let f = fake().await;
    set_pool(&f, "minimal", 1, &[]).await;
    refill_to(&f, 1).await;
    let tpl = f.catalog.get("minimal").unwrap();
    let takes = (0..8).map(|i| {
        let (store, catalog, tpl) = (&f.engine.store, &f.catalog, &tpl);
        async move {
            let req = CreateRequest {
                template: "minimal".into(),
                ..Default::default()
            };
            let name = format!("t{i}");
            crate::pool::take(store, catalog, tpl, &req, &name, "bob", i64::MAX).await
        }
    });
    let got = futures_util::future::join_all(takes).await;
    let taken = got
        .into_iter()
        .filter(|r| matches!(r, Ok(Outcome::Taken(_))))
        .count();
    assert_eq!(taken, 1);
}

/// A pod reloading its file on HUP beside one whose env comes from an answer.
const CONF: &str = r#"
name: conf
version: "1"
variables:
  - variable: greeting
    default: hello
  - variable: tag
    default: a
pods:
  - name: web
    on_change: { signal: HUP }
    containers:
      - name: w
        image: envd/redis:latest
        files: [{ path: /etc/w.conf, content: "{{ greeting }}" }]
    ready: { kind: exec, command: [test, -f, /etc/w.conf] }
  - name: side
    containers:
      - name: s
        image: envd/redis:latest
        env: { TAG: "{{ tag }}" }
"#;

/// The fake engine with template `conf` in its catalog, and a pool of it (min 1) filled.
async fn conf_pool() -> (Fake, tempfile::TempDir) {
    let mut f = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("conf").join("1");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join("template.yaml"), CONF).unwrap();
    f.catalog = crate::catalog::Catalog::new(Some(dir.path().to_path_buf()));
    set_pool(&f, "conf", 1, &[]).await;
    refill_to(&f, 1).await;
    (f, dir)
}

async fn create_conf(f: &Fake, answers: &[(&str, &str)]) -> crate::store::Env {
    let req = CreateRequest {
        template: "conf".into(),
        answers: answers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        owner: Some("alice".into()),
        ..Default::default()
    };
    let Created::New(env) = service::create(&f.engine.store, &f.catalog, &Limits::default(), req)
        .await
        .unwrap()
    else {
        panic!("not new")
    };
    f.engine.kick(&env.id);
    env
}

#[tokio::test]
async fn answers_a_pod_takes_by_on_change_are_applied_to_a_pooled_env_before_the_handover() {
    let (f, _dir) = conf_pool().await;
    let pooled = f.engine.store.pool_members().await.unwrap()[0].id.clone();
    let env = create_conf(&f, &[("greeting", "hi")]).await;
    assert_eq!(env.id, pooled, "taken, not built cold");
    let env = f.settled(&env.id).await;
    assert_eq!(env.state, State::Ready, "{:?}", env.error);
    assert_eq!(env.answers.get("greeting").map(String::as_str), Some("hi"));
    // Claimed, then the change to pod web applied and waited ready, then every pod
    // checked again, then ready: in that order.
    let kinds = f.kinds(&env.id).await;
    // The last of each: the pool's build recorded its own `pods` and `ready:*` before.
    let at = |k: &str| kinds.iter().rposition(|x| x == k).unwrap_or(usize::MAX);
    assert!(at("claimed") < at("config:web"), "{kinds:?}");
    assert!(at("config:web") < at("pods"), "{kinds:?}");
    assert!(at("pods") < at("ready"), "{kinds:?}");
    assert!(!kinds.iter().any(|k| k == "cold"), "{kinds:?}");
    let events = f.engine.store.events(&env.id, 0).await.unwrap();
    let claimed = events.iter().find(|e| e.step == "claimed").unwrap();
    assert!(
        claimed.message.contains("answers greeting applied"),
        "{}",
        claimed.message
    );
    let change = f.engine.store.change(&env.id, 1).await.unwrap();
    assert_eq!(change.status, crate::lifecycle::ChangeStatus::Applied);
    assert_eq!(change.pods, vec!["web".to_string()]);
    // The node and pods built once for the pool; web changed in place, side untouched.
    assert_eq!(f.driver.count(&env, "create-node"), 1);
    let changed: Vec<String> = f
        .driver
        .log()
        .into_iter()
        .filter(|l| l.contains(env.short_id()) && l.contains("change "))
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed[0].contains("change web"), "{changed:?}");
    assert_eq!(
        crate::pool::views(&f.engine.store, &f.catalog)
            .await
            .unwrap()[0]
            .claims,
        1
    );
}

#[tokio::test]
async fn answers_a_container_is_created_with_build_cold_and_say_why() {
    let (f, _dir) = conf_pool().await;
    let pooled = f.engine.store.pool_members().await.unwrap()[0].id.clone();
    let env = create_conf(&f, &[("greeting", "hi"), ("tag", "b")]).await;
    assert_ne!(env.id, pooled);
    let events = f.engine.store.events(&env.id, 0).await.unwrap();
    let cold = events
        .iter()
        .find(|e| e.step == "cold")
        .expect("a cold event");
    assert!(cold.message.contains("answers"), "{}", cold.message);
    assert!(!events.iter().any(|e| e.step == "claimed"));
    assert_eq!(f.settled(&env.id).await.state, State::Ready);
    assert_eq!(
        f.engine.store.pool_misses().await.unwrap(),
        vec![("conf".into(), "answers".into(), 1)]
    );
}

#[tokio::test]
async fn a_pooled_env_whose_pod_refuses_the_answers_fails_the_create() {
    let (f, _dir) = conf_pool().await;
    f.driver
        .set_readiness("web", Readiness::FailsWith("refused-greeting".into()));
    let env = create_conf(&f, &[("greeting", "refused-greeting")]).await;
    let env = f.until(&env.id, |e| e.state.is_final()).await;
    assert_eq!(env.state, State::Failed);
    let error = env.error.unwrap_or_default();
    assert!(
        error.contains("did not take this create's answers"),
        "{error}"
    );
    let change = f.engine.store.change(&env.id, 1).await.unwrap();
    assert_eq!(change.status, crate::lifecycle::ChangeStatus::RolledBack);
}

#[tokio::test]
async fn a_cold_create_takes_a_spare_node_and_builds_its_pods_there() {
    let f = fake().await;
    set_pool(&f, "node", 1, &[]).await;
    let spare = refill_to(&f, 1).await.remove(0);
    let node = f.engine.store.get(&spare).await.unwrap();
    assert_eq!(node.template, "node:1");
    // Nothing runs on a spare node, not even the stubs sidecar.
    assert!(
        !f.driver
            .log()
            .iter()
            .any(|l| l.contains(node.short_id()) && l.contains("create-pod")),
        "{:#?}",
        f.driver.log()
    );

    // A template no warm pool keeps, with answers of its own: built on the spare node.
    let (env, taken) = create(&f, &[("redis_password", "s3cret-own")]).await;
    assert!(!taken, "a spare node is no warm pool: no `claimed`");
    assert_eq!(env.id, spare);
    let env = f.settled(&env.id).await;
    assert_eq!(env.state, State::Ready, "{:?}", env.error);
    assert_eq!(env.template, node_template_of(&f, "minimal"));
    assert_eq!(env.owner, "alice");
    assert_eq!(
        env.answers.get("redis_password").map(String::as_str),
        Some("s3cret-own")
    );
    assert_eq!(
        f.driver.count(&env, "create-node"),
        1,
        "the node was not made again"
    );
    let cold = f.engine.store.events(&env.id, 0).await.unwrap();
    let said = cold
        .iter()
        .find(|e| e.step == "cold")
        .map(|e| e.message.clone())
        .unwrap_or_default();
    assert!(said.contains("spare node of pool node"), "{cold:#?}");
    let endpoints = crate::api::EnvView::of(&env, &f.engine.views).endpoints;
    assert!(endpoints.contains_key("redis"), "{endpoints:?}");

    // The pool builds another; with none waiting a create makes its own node.
    let next = refill_to(&f, 1).await.remove(0);
    assert_ne!(next, spare);
    let (second, _) = create(&f, &[]).await;
    assert_eq!(second.id, next);
    let (third, _) = create(&f, &[]).await;
    assert!(third.id != next && third.id != spare);
    let third = f.settled(&third.id).await;
    assert_eq!(third.state, State::Ready, "{:?}", third.error);
    assert!(third.host_name.is_none(), "a node of its own");
}

fn node_template_of(f: &Fake, name: &str) -> String {
    let t = f.catalog.get(name).unwrap();
    format!("{}:{}", t.name, t.version)
}
