//! A node that stops while its env's loop runs: what the loop did to the node's previous
//! life counts for nothing.

use std::time::Duration;

use super::fake;
use crate::engine::NodeDriver;
use crate::engine::driver::ContainerObs;
use crate::engine::driver::fake::Readiness;
use crate::lifecycle::State;

#[tokio::test]
async fn a_node_that_stops_during_a_create_gets_its_pods_started_again() {
    let f = fake().await;
    // The create waits for redis's check long enough for its node to stop meanwhile.
    f.driver
        .set_readiness("redis", Readiness::After(Duration::from_millis(300)));
    let env = f.create("minimal", false).await;
    f.until(&env.id, |_| {
        f.driver
            .log()
            .iter()
            .any(|l| l.ends_with("start redis/redis"))
    })
    .await;
    f.driver.stop_node(&env.id);
    let ready = f.settled(&env.id).await;
    assert_eq!(ready.state, State::Ready, "{:?}", ready.error);
    f.loops_end().await;
    assert_eq!(f.driver.count(&env, "start-node"), 1);
    let seen = f.driver.observe(&env, &[]).await.unwrap();
    let stopped: Vec<String> = seen
        .pods
        .iter()
        .flat_map(|(p, cs)| {
            cs.iter()
                .filter(|(_, c)| c.state != ContainerObs::Running)
                .map(move |(c, _)| format!("{p}/{c}"))
        })
        .collect();
    assert!(stopped.is_empty(), "ready with {stopped:?} stopped");
}
