//! Every phase × observation of `decide`, crash windows included, as table rows.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::engine::driver::{ContainerObs, ContainerSeen, NodeObs, Observed, PAUSE, files_stamp};
use crate::lifecycle::{Desired, State, Step};
use crate::spec::order::Condition;
use crate::spec::{Container, File, Pod};
use crate::store::Env;

fn env(state: State) -> Env {
    Env {
        id: "0190-0000-7000-8000-00000000abcd".into(),
        name: "t".into(),
        key: None,
        owner: "me".into(),
        template: "t:1".into(),
        template_src: String::new(),
        answers: BTreeMap::new(),
        labels: BTreeMap::new(),
        state,
        desired: Desired::Running,
        step: Step::Requested,
        error: None,
        node_ip: Some("10.213.0.2".into()),
        keep_on_failure: false,
        created_at: 0,
        updated_at: 0,
        ready_at: None,
        expires_at: 0,
        init: Default::default(),
        clone_of: None,
        with_data: false,
        pool: None,
        host_name: None,
    }
}

fn container(name: &str, files: bool) -> Container {
    Container {
        name: name.into(),
        image: "envd/redis:latest".into(),
        command: vec![],
        env: BTreeMap::new(),
        files: if files {
            vec![File {
                path: "/etc/x.conf".into(),
                content: "x".into(),
                mode: 0o644,
            }]
        } else {
            vec![]
        },
        dirs: vec![],
        cpus: None,
        memory: None,
    }
}

fn pod(name: &str, containers: Vec<Container>) -> Pod {
    Pod {
        name: name.into(),
        containers,
        ..Default::default()
    }
}

fn stamp(c: &Container) -> Option<String> {
    files_stamp(&c.files, &c.dirs)
}

fn seen(state: ContainerObs, files: Option<String>) -> ContainerSeen {
    ContainerSeen { state, files }
}

/// A running node with its engine and IP, and `pods` as given.
fn node_up(pods: &[(&str, Vec<(&str, ContainerSeen)>)]) -> Observed {
    Observed {
        node: NodeObs::Running,
        inner: true,
        ip: true,
        pods: pods
            .iter()
            .map(|(p, cs)| {
                (
                    p.to_string(),
                    cs.iter().map(|(c, s)| (c.to_string(), s.clone())).collect(),
                )
            })
            .collect(),
    }
}

fn running() -> ContainerSeen {
    seen(ContainerObs::Running, None)
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// A redis pod whose one container has a config file.
fn cache() -> Pod {
    pod("cache", vec![container("redis", true)])
}

fn cache_up() -> Observed {
    let s = stamp(&container("redis", true));
    node_up(&[(
        "cache",
        vec![
            (PAUSE, running()),
            ("redis", seen(ContainerObs::Running, s)),
        ],
    )])
}

fn start(pod: &str, c: &str) -> Action {
    Action::Start {
        pod: pod.into(),
        container: c.into(),
    }
}

#[test]
fn phases_without_a_node() {
    let nothing = Observed::nothing();
    let none = Progress::default();
    let mut gone = env(State::Creating);
    gone.desired = Desired::Gone;
    let mut failed_kept = env(State::Creating);
    failed_kept.error = Some("pods failed".into());
    failed_kept.keep_on_failure = true;
    let mut failed = env(State::Creating);
    failed.error = Some("pods failed".into());
    let mut requested_gone = env(State::Requested);
    requested_gone.desired = Desired::Gone;
    let rows: Vec<(&str, Env, Action)> = vec![
        ("requested", env(State::Requested), Action::Lease),
        (
            "creating, no node",
            env(State::Creating),
            Action::EnsureNode,
        ),
        ("ready, node lost", env(State::Ready), Action::EnsureNode),
        ("desired gone during create", gone, Action::Collect),
        ("deleted before its lease", requested_gone, Action::Collect),
        ("failure recorded, kept", failed_kept, Action::KeepFailed),
        ("failure recorded", failed, Action::Collect),
        ("collecting", env(State::Collecting), Action::Collect),
        ("freeing", env(State::Freeing), Action::Free),
        ("ended: gone", env(State::Gone), Action::Done),
        ("ended: failed", env(State::Failed), Action::Done),
    ];
    for (what, e, want) in rows {
        assert_eq!(
            decide(&e, &[cache()], &nothing, &none, None),
            want,
            "{what}"
        );
    }
}

#[test]
fn node_engine_and_ip_come_first() {
    let none = Progress::default();
    let mut stopped = cache_up();
    stopped.node = NodeObs::Stopped;
    let mut no_inner = cache_up();
    no_inner.inner = false;
    let mut no_ip = cache_up();
    no_ip.ip = false;
    for state in [State::Creating, State::Ready] {
        let e = env(state);
        let rows = [
            ("node stopped", &stopped, Action::EnsureNode),
            ("inner engine not answering", &no_inner, Action::WaitInner),
            ("node running but IP missing", &no_ip, Action::AttachIp),
        ];
        for (what, seen, want) in rows {
            assert_eq!(
                decide(&e, &[cache()], seen, &none, None),
                want,
                "{what} ({state})"
            );
        }
    }
}

#[test]
fn a_pod_is_created_then_its_files_uploaded_then_started() {
    let e = env(State::Creating);
    let c = container("redis", true);
    let none = Progress::default();
    let created = |files| {
        node_up(&[(
            "cache",
            vec![
                (PAUSE, running()),
                ("redis", seen(ContainerObs::Created, files)),
            ],
        )])
    };
    let rows: Vec<(&str, Observed, Action)> = vec![
        (
            "nothing in the node",
            node_up(&[]),
            Action::Launch {
                pod: "cache".into(),
            },
        ),
        (
            "pause there, container missing",
            node_up(&[("cache", vec![(PAUSE, running())])]),
            Action::CreatePod {
                pod: "cache".into(),
            },
        ),
        (
            "pause stopped",
            node_up(&[(
                "cache",
                vec![
                    (PAUSE, seen(ContainerObs::Exited { code: 137 }, None)),
                    ("redis", running()),
                ],
            )]),
            start("cache", PAUSE),
        ),
        (
            // The crash window: created, killed before the upload. It must not start bare.
            "container created, files not uploaded",
            created(None),
            Action::UploadFiles {
                pod: "cache".into(),
                container: "redis".into(),
            },
        ),
        (
            "container created with other files (an older render)",
            created(Some("0000".into())),
            Action::UploadFiles {
                pod: "cache".into(),
                container: "redis".into(),
            },
        ),
        (
            "container created, files uploaded",
            created(stamp(&c)),
            start("cache", "redis"),
        ),
        (
            "container exited after a restart, files still there",
            node_up(&[(
                "cache",
                vec![
                    (PAUSE, running()),
                    ("redis", seen(ContainerObs::Exited { code: 137 }, stamp(&c))),
                ],
            )]),
            start("cache", "redis"),
        ),
        (
            "running",
            cache_up(),
            Action::RecordStarted {
                pods: vec!["cache".into()],
            },
        ),
    ];
    for (what, seen, want) in rows {
        assert_eq!(decide(&e, &[cache()], &seen, &none, None), want, "{what}");
    }
}

#[test]
fn a_container_without_files_starts_right_after_create() {
    let e = env(State::Creating);
    let p = pod("app", vec![container("app", false)]);
    let seen = node_up(&[(
        "app",
        vec![
            (PAUSE, running()),
            ("app", seen(ContainerObs::Created, None)),
        ],
    )]);
    assert_eq!(
        decide(&e, &[p], &seen, &Progress::default(), None),
        start("app", "app")
    );
}

#[test]
fn a_create_records_starts_awaits_readiness_then_is_ready() {
    let mut e = env(State::Creating);
    let pods = [cache()];
    let seen = cache_up();
    let mut done = Progress::default();
    assert_eq!(
        decide(&e, &pods, &seen, &done, None),
        Action::RecordStarted {
            pods: vec!["cache".into()]
        }
    );
    done.started = set(&["cache"]);
    assert_eq!(
        decide(&e, &pods, &seen, &done, None),
        Action::AwaitReady {
            pods: vec!["cache".into()]
        }
    );
    done.ready = set(&["cache"]);
    assert_eq!(decide(&e, &pods, &seen, &done, None), Action::PodsDone);
    done.pods_done = true;
    assert_eq!(decide(&e, &pods, &seen, &done, None), Action::MarkReady);
    // A clone with data copies it before it is ready.
    e.clone_of = Some("source".into());
    e.with_data = true;
    assert_eq!(decide(&e, &pods, &seen, &done, None), Action::CopyData);
    done.copied = true;
    assert_eq!(decide(&e, &pods, &seen, &done, None), Action::MarkReady);
}

#[test]
fn a_ready_env_with_everything_running_needs_nothing() {
    let e = env(State::Ready);
    assert_eq!(
        decide(&e, &[cache()], &cache_up(), &Progress::default(), None),
        Action::Done
    );
}

#[test]
fn a_ready_env_probes_only_what_it_restarted() {
    let e = env(State::Ready);
    let mut done = Progress {
        touched: set(&["cache"]),
        ..Default::default()
    };
    assert_eq!(
        decide(&e, &[cache()], &cache_up(), &done, None),
        Action::RecordStarted {
            pods: vec!["cache".into()]
        }
    );
    done.started = set(&["cache"]);
    assert_eq!(
        decide(&e, &[cache()], &cache_up(), &done, None),
        Action::AwaitReady {
            pods: vec!["cache".into()]
        }
    );
    done.ready = set(&["cache"]);
    assert_eq!(
        decide(&e, &[cache()], &cache_up(), &done, None),
        Action::Done
    );
}

#[test]
fn a_container_that_exits_after_this_run_started_it_is_left_to_the_check() {
    let e = env(State::Creating);
    let c = container("redis", true);
    let seen = node_up(&[(
        "cache",
        vec![
            (PAUSE, running()),
            ("redis", seen(ContainerObs::Exited { code: 3 }, stamp(&c))),
        ],
    )]);
    let done = Progress {
        launched: set(&["cache/redis"]),
        touched: set(&["cache"]),
        ..Default::default()
    };
    assert_eq!(
        decide(&e, &[cache()], &seen, &done, None),
        Action::RecordStarted {
            pods: vec!["cache".into()]
        }
    );
}

fn app_after(condition: Condition) -> Pod {
    let mut app = pod("app", vec![container("app", false)]);
    app.depends_on.insert("db".into(), condition);
    app
}

#[test]
fn dependents_wait_for_what_they_depend_on() {
    let e = env(State::Creating);
    let db = pod("db", vec![container("db", false)]);
    let db_up = ("db", vec![(PAUSE, running()), ("db", running())]);
    let db_done = (
        "db",
        vec![
            (PAUSE, running()),
            ("db", seen(ContainerObs::Exited { code: 0 }, None)),
        ],
    );
    let db_broke = (
        "db",
        vec![
            (PAUSE, running()),
            ("db", seen(ContainerObs::Exited { code: 2 }, None)),
        ],
    );
    let started = Progress {
        started: set(&["db"]),
        ..Default::default()
    };
    let ready = Progress {
        started: set(&["db"]),
        ready: set(&["db"]),
        ..Default::default()
    };
    let rows: Vec<(&str, Condition, Observed, Progress, Action)> = vec![
        (
            "started: db runs",
            Condition::Started,
            node_up(std::slice::from_ref(&db_up)),
            started.clone(),
            Action::Launch { pod: "app".into() },
        ),
        (
            "ready: db not ready yet",
            Condition::Ready,
            node_up(std::slice::from_ref(&db_up)),
            started.clone(),
            Action::AwaitReady {
                pods: vec!["db".into()],
            },
        ),
        (
            "ready: db ready",
            Condition::Ready,
            node_up(std::slice::from_ref(&db_up)),
            ready.clone(),
            Action::Launch { pod: "app".into() },
        ),
        (
            "completed: db still running",
            Condition::Completed,
            node_up(&[db_up]),
            ready.clone(),
            Action::Requeue(POLL),
        ),
        (
            "completed: db exited 0",
            Condition::Completed,
            node_up(&[db_done]),
            ready.clone(),
            Action::Launch { pod: "app".into() },
        ),
    ];
    for (what, condition, seen, done, want) in rows {
        let pods = [db.clone(), app_after(condition)];
        assert_eq!(decide(&e, &pods, &seen, &done, None), want, "{what}");
    }
    let pods = [db.clone(), app_after(Condition::Completed)];
    // A job this run did not start is started again (it may have died with envd); one it
    // started that exited non-zero fails the create.
    assert_eq!(
        decide(
            &e,
            &pods,
            &node_up(std::slice::from_ref(&db_broke)),
            &ready,
            None
        ),
        start("db", "db")
    );
    let launched = Progress {
        launched: set(&["db/db"]),
        ..ready
    };
    match decide(&e, &pods, &node_up(&[db_broke]), &launched, None) {
        Action::Fail { reason } => assert!(reason.contains("exited 2"), "{reason}"),
        other => panic!("a failed job must fail the create, got {other:?}"),
    }
}

#[test]
fn a_config_change_goes_to_a_settled_env_only() {
    let e = env(State::Ready);
    let none = Progress::default();
    assert_eq!(
        decide(&e, &[cache()], &cache_up(), &none, Some(3)),
        Action::ApplyConfig { generation: 3 }
    );
    // A recreated container (answers changed, killed before its files went in): it gets
    // them and starts first, then the change is applied again.
    let bare = node_up(&[(
        "cache",
        vec![
            (PAUSE, running()),
            ("redis", seen(ContainerObs::Created, None)),
        ],
    )]);
    assert_eq!(
        decide(&e, &[cache()], &bare, &none, Some(3)),
        Action::UploadFiles {
            pod: "cache".into(),
            container: "redis".into()
        }
    );
    let mut gone = env(State::Ready);
    gone.desired = Desired::Gone;
    assert_eq!(
        decide(&gone, &[cache()], &cache_up(), &none, Some(3)),
        Action::Collect
    );
}

#[test]
fn a_completed_job_is_not_started_again() {
    let e = env(State::Ready);
    let db = pod("db", vec![container("db", false)]);
    let pods = [db, app_after(Condition::Completed)];
    let seen = node_up(&[
        (
            "db",
            vec![
                (PAUSE, running()),
                ("db", seen(ContainerObs::Exited { code: 0 }, None)),
            ],
        ),
        ("app", vec![(PAUSE, running()), ("app", running())]),
    ]);
    assert_eq!(
        decide(&e, &pods, &seen, &Progress::default(), None),
        Action::Done
    );
}

#[test]
fn a_pooled_env_waits_whole_and_is_discarded_when_not() {
    let e = env(State::Pooled);
    let done = Progress::default();
    assert_eq!(
        decide(&e, &[cache()], &cache_up(), &done, None),
        Action::Done
    );
    // Never repaired in place: a stopped node or a missing pod discards it.
    let mut down = cache_up();
    down.node = NodeObs::Stopped;
    let Action::Discard { reason } = decide(&e, &[cache()], &down, &done, None) else {
        panic!("not discarded")
    };
    assert!(reason.contains("node is not running"), "{reason}");
    let gone = node_up(&[]);
    let Action::Discard { reason } = decide(&e, &[cache()], &gone, &done, None) else {
        panic!("not discarded")
    };
    assert!(reason.contains("pod cache"), "{reason}");
    // A pooled env asked to go (a drain) is torn down like any other.
    let mut drained = env(State::Pooled);
    drained.desired = crate::lifecycle::Desired::Gone;
    assert_eq!(
        decide(&drained, &[cache()], &cache_up(), &done, None),
        Action::Collect
    );
}

#[test]
fn a_taken_env_probes_every_pod_at_once_then_is_ready() {
    let mut e = env(State::Creating);
    e.host_name = Some("pool-cache-1".into());
    let pods = [cache()];
    let mut done = Progress::default();
    assert_eq!(
        decide(&e, &pods, &cache_up(), &done, None),
        Action::Reprobe {
            pods: vec!["cache".into()]
        }
    );
    // A pod that died meanwhile is started again, the usual way (nothing is re-created).
    let mut dead = cache_up();
    if let Some(p) = dead.pods.get_mut("cache") {
        p.insert(
            "redis".into(),
            seen(
                ContainerObs::Exited { code: 137 },
                stamp(&container("redis", true)),
            ),
        );
    }
    assert_eq!(
        decide(&e, &pods, &dead, &done, None),
        start("cache", "redis")
    );
    done.started = set(&["cache"]);
    done.ready = set(&["cache"]);
    done.pods_done = true;
    assert_eq!(
        decide(&e, &pods, &cache_up(), &done, None),
        Action::MarkReady
    );
}

#[test]
fn pods_that_may_start_take_their_steps_side_by_side() {
    let e = env(State::Creating);
    let none = Progress::default();
    let db = pod("db", vec![container("mysql", false)]);
    let pods = [cache(), db.clone()];
    // Nothing there: both pods are created at once, not one after the other.
    assert_eq!(
        decide(&e, &pods, &node_up(&[]), &none, None),
        Action::Pods(vec![
            Action::Launch {
                pod: "cache".into()
            },
            Action::Launch { pod: "db".into() },
        ])
    );
    // Each pod at its own step: the cache's file goes in while the db starts.
    let created = node_up(&[
        (
            "cache",
            vec![
                (PAUSE, running()),
                ("redis", seen(ContainerObs::Created, None)),
            ],
        ),
        (
            "db",
            vec![
                (PAUSE, running()),
                ("mysql", seen(ContainerObs::Created, None)),
            ],
        ),
    ]);
    assert_eq!(
        decide(&e, &pods, &created, &none, None),
        Action::Pods(vec![
            Action::UploadFiles {
                pod: "cache".into(),
                container: "redis".into(),
            },
            start("db", "mysql"),
        ])
    );
    // A pod that waits for another is not among them.
    let mut app = pod("app", vec![container("app", false)]);
    app.depends_on.insert("db".into(), Condition::Ready);
    assert_eq!(
        decide(&e, &[db, app], &node_up(&[]), &none, None),
        Action::Launch { pod: "db".into() }
    );
}

#[test]
fn pods_found_up_are_recorded_in_the_pass_that_takes_the_others_next_steps() {
    let e = env(State::Creating);
    let app = pod("app", vec![container("app", false)]);
    let mut seen = cache_up();
    seen.pods.insert(
        "app".into(),
        [
            (PAUSE.to_string(), running()),
            ("app".to_string(), seen_created()),
        ]
        .into_iter()
        .collect(),
    );
    assert_eq!(
        decide(&e, &[cache(), app], &seen, &Progress::default(), None),
        Action::Pods(vec![
            start("app", "app"),
            Action::RecordStarted {
                pods: vec!["cache".into()]
            },
        ])
    );
}

fn seen_created() -> ContainerSeen {
    seen(ContainerObs::Created, None)
}
