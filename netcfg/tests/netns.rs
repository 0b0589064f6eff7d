//! netcfg on real network namespaces, bridges and veths. Needs root: see `common::can_run`.
//!
//! Each test owns bridge `nctest-N` with 10.214.N.0/24 and namespaces `nctest-N-*`, all removed by Drop guards.

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use common::{TestBridge, TestNetns, can_run, fetch};
use netcfg::{Error, IpPool};

fn sock(addr: ipnetwork::IpNetwork, port: u16) -> SocketAddr {
    SocketAddr::new(addr.ip(), port)
}

fn own_netns() -> std::path::PathBuf {
    std::fs::read_link("/proc/thread-self/ns/net").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_gives_a_reachable_fixed_ip_and_default_route() {
    if !can_run("attach_gives_a_reachable_fixed_ip_and_default_route") {
        return;
    }
    let br = TestBridge::new(1).await;
    let ns = TestNetns::new("nctest-1-a");
    let spec = br.spec(0, 10);
    let before = own_netns();
    netcfg::attach(ns.target(), &spec).await.unwrap();
    assert_eq!(
        own_netns(),
        before,
        "the caller's thread must never change namespace"
    );

    let server = ns.serve_once(sock(spec.address, 8080));
    assert_eq!(fetch(sock(spec.address, 8080)), "hello from nctest-1-a");
    server.join().unwrap();

    let route = ns.ip(&["route", "show", "default"]);
    assert!(route.contains("default via 10.214.1.1 dev eth1"), "{route}");
    assert_eq!(ns.addrs("eth1"), ["10.214.1.10/24"]);
    assert_eq!(br.ports(), [netcfg::host_ifname(&spec.id)]);

    let listed = br.listed();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, spec.id);
    assert_eq!(listed[0].host_ifname, netcfg::host_ifname(&spec.id));
    assert_eq!(listed[0].bridge.as_deref(), Some("nctest-1"));
    assert!(listed[0].peer_alive && listed[0].carrier, "{listed:?}");

    // MTU comes from the bridge.
    let mtu = common::run(&["cat", "/sys/class/net/nctest-1/mtu"]);
    assert!(
        ns.ip(&["link", "show", "eth1"])
            .contains(&format!("mtu {}", mtu.trim()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_twice_is_idempotent() {
    if !can_run("attach_twice_is_idempotent") {
        return;
    }
    let br = TestBridge::new(2).await;
    let ns = TestNetns::new("nctest-2-a");
    let spec = br.spec(0, 20).with_mac([0x02, 0x42, 10, 214, 2, 20]);
    netcfg::attach(ns.target(), &spec).await.unwrap();
    // (No `-d` on the host link: it shows running bridge timers.)
    let host_link = || common::run(&["ip", "-o", "link", "show", &netcfg::host_ifname(&spec.id)]);
    let snapshot = || {
        (
            ns.ip(&["-o", "link", "show", "eth1"]),
            ns.ip(&["-o", "-4", "addr", "show"]),
            ns.ip(&["-4", "route", "show", "table", "all"]),
            host_link(),
        )
    };
    let first = snapshot();
    netcfg::attach(ns.target(), &spec).await.unwrap();
    netcfg::blocking::attach(ns.target(), &spec).unwrap();
    assert_eq!(
        snapshot(),
        first,
        "a repeated attach must change nothing (same ifindex, addresses, routes)"
    );
    assert!(first.0.contains("02:42:0a:d6:02:14"), "{}", first.0);
    assert_eq!(br.listed().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_with_a_new_address_corrects_it() {
    if !can_run("attach_with_a_new_address_corrects_it") {
        return;
    }
    let br = TestBridge::new(3).await;
    let ns = TestNetns::new("nctest-3-a");
    netcfg::attach(ns.target(), &br.spec(0, 30)).await.unwrap();
    let index_before = ns.ip(&["-o", "link", "show", "eth1"]);
    let spec = br.spec(0, 31);
    netcfg::attach(ns.target(), &spec).await.unwrap();
    assert_eq!(
        ns.addrs("eth1"),
        ["10.214.3.31/24"],
        "the old address must be gone"
    );
    assert_eq!(
        ns.ip(&["-o", "link", "show", "eth1"]).split(':').next(),
        index_before.split(':').next(),
        "corrected in place, not re-created"
    );
    let route = ns.ip(&["route", "show", "default"]);
    assert!(route.contains("via 10.214.3.1 dev eth1"), "{route}");
    let server = ns.serve_once(sock(spec.address, 8080));
    assert_eq!(fetch(sock(spec.address, 8080)), "hello from nctest-3-a");
    server.join().unwrap();
    assert_eq!(br.ports().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_same_id_to_another_namespace_moves_it() {
    if !can_run("attach_same_id_to_another_namespace_moves_it") {
        return;
    }
    let br = TestBridge::new(8).await;
    let a = TestNetns::new("nctest-8-a");
    let b = TestNetns::new("nctest-8-b");
    let spec = br.spec(0, 80);
    netcfg::attach(a.target(), &spec).await.unwrap();
    netcfg::attach(b.target(), &spec).await.unwrap();
    assert!(!a.links().contains(&"eth1".to_string()), "{:?}", a.links());
    assert_eq!(b.addrs("eth1"), ["10.214.8.80/24"]);
    assert_eq!(br.ports().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_leaves_no_link_on_the_bridge() {
    if !can_run("detach_leaves_no_link_on_the_bridge") {
        return;
    }
    let br = TestBridge::new(4).await;
    let ns = TestNetns::new("nctest-4-a");
    let spec = br.spec(0, 40);
    netcfg::attach(ns.target(), &spec).await.unwrap();
    assert_eq!(br.ports().len(), 1);
    netcfg::detach(&spec.id).await.unwrap();
    assert!(br.ports().is_empty(), "{:?}", br.ports());
    assert_eq!(ns.links(), ["lo"]);
    assert!(br.listed().is_empty());
    // Missing is success.
    netcfg::detach(&spec.id).await.unwrap();
    netcfg::detach("nctest-4-never-attached").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_attach_detach_cycles_leave_nothing() {
    if !can_run("fifty_attach_detach_cycles_leave_nothing") {
        return;
    }
    let br = TestBridge::new(5).await;
    let ns = TestNetns::new("nctest-5-a");
    let links_before = common::run(&["ip", "-o", "link", "show"]).lines().count();
    for i in 0..50 {
        let spec = br.spec(i % 3, 50 + (i % 7) as u8);
        netcfg::attach(ns.target(), &spec).await.unwrap();
        netcfg::detach(&spec.id).await.unwrap();
    }
    assert!(br.ports().is_empty(), "{:?}", br.ports());
    assert_eq!(ns.links(), ["lo"]);
    assert!(br.listed().is_empty());
    assert!(
        ns.ip(&["route", "show", "table", "all"])
            .lines()
            .all(|l| !l.contains("eth1"))
    );
    let links_after = common::run(&["ip", "-o", "link", "show"]).lines().count();
    assert!(
        links_after <= links_before,
        "{links_before} links before, {links_after} after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_attaches_from_one_pool_never_collide() {
    if !can_run("twenty_concurrent_attaches_from_one_pool_never_collide") {
        return;
    }
    let br = TestBridge::new(6).await;
    let pool = Arc::new(IpPool::new(br.cidr(), br.gateway(), vec![]).unwrap());
    // What envd does: the lease set lives with the caller (here a mutex; in envd a UNIQUE column).
    let leases: Arc<Mutex<HashSet<IpAddr>>> = Arc::default();
    let namespaces: Vec<Arc<TestNetns>> = (0..20)
        .map(|k| Arc::new(TestNetns::new(&format!("nctest-6-{k}"))))
        .collect();
    let mut tasks = vec![];
    for (k, ns) in namespaces.iter().enumerate() {
        let (pool, leases, ns) = (pool.clone(), leases.clone(), ns.clone());
        let mut spec = br.spec(k, 0);
        tasks.push(tokio::spawn(async move {
            let ip = {
                let mut l = leases.lock().unwrap();
                let ip = pool.allocate(&l).unwrap();
                l.insert(ip);
                ip
            };
            spec.address = pool.network_of(ip).unwrap();
            netcfg::attach(ns.target(), &spec).await.unwrap();
            spec.address
        }));
    }
    let mut got = vec![];
    for t in tasks {
        got.push(t.await.unwrap());
    }
    let distinct: HashSet<_> = got.iter().map(|a| a.ip()).collect();
    assert_eq!(distinct.len(), 20, "{got:?}");
    for (ns, addr) in namespaces.iter().zip(&got) {
        assert_eq!(ns.addrs("eth1"), [addr.to_string()], "{}", ns.name);
    }
    // Every namespace answers on its own address.
    for (ns, addr) in namespaces.iter().zip(&got) {
        let server = ns.serve_once(sock(*addr, 9000));
        assert_eq!(fetch(sock(*addr, 9000)), format!("hello from {}", ns.name));
        server.join().unwrap();
    }
    assert_eq!(br.ports().len(), 20);
    assert_eq!(br.listed().len(), 20);
    // Concurrent detaches too.
    let detaches: Vec<_> = (0..20)
        .map(|k| tokio::spawn(netcfg_detach(br.id(k))))
        .collect();
    for d in detaches {
        d.await.unwrap();
    }
    assert!(br.ports().is_empty());
}

async fn netcfg_detach(id: String) {
    netcfg::detach(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_and_bad_targets_are_reported_and_nothing_is_touched() {
    if !can_run("conflicts_and_bad_targets_are_reported_and_nothing_is_touched") {
        return;
    }
    let br = TestBridge::new(7).await;
    let ns = TestNetns::new("nctest-7-a");

    // ensure_bridge is idempotent, and refuses a bridge with another address, naming it.
    netcfg::ensure_bridge(&br.name, br.gateway_cidr())
        .await
        .unwrap();
    let e = netcfg::ensure_bridge(&br.name, "10.214.77.1/24".parse().unwrap())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("10.214.7.1/24"), "{e}");

    // An eth1 that netcfg did not make is never touched.
    ns.ip(&[
        "link", "add", "eth1", "type", "veth", "peer", "name", "other0",
    ]);
    let e = netcfg::attach(ns.target(), &br.spec(0, 70))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert!(e.to_string().contains("eth1"), "{e}");
    assert!(
        br.ports().is_empty(),
        "a failed attach must undo its veth: {:?}",
        br.ports()
    );
    assert!(ns.ip(&["link", "show", "eth1"]).contains("eth1@other0"));
    assert!(ns.addrs("eth1").is_empty());

    // Missing bridge, missing namespace.
    let mut spec = br.spec(1, 71);
    spec.bridge = "nctest-none".into();
    let e = netcfg::attach(ns.target(), &spec).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    let e = netcfg::attach(
        netcfg::Target::NetnsPath("/run/netns/nctest-7-none".into()),
        &br.spec(1, 71),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("/run/netns/nctest-7-none"), "{e}");
    let e = netcfg::attach(netcfg::Target::Pid(u32::MAX), &br.spec(1, 71))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Sys { .. }), "{e}");
    assert!(br.ports().is_empty());

    // Invalid input is rejected before anything is touched.
    let mut spec = br.spec(1, 71);
    spec.ifname = "much-too-long-ifname".into();
    assert!(matches!(
        netcfg::attach(ns.target(), &spec).await,
        Err(Error::Invalid { .. })
    ));

    // By PID works like by path: a thread parked inside the namespace stands in for a container process.
    let ns2 = TestNetns::new("nctest-7-b");
    let spec = br.spec(2, 72);
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let path = ns2.path.clone();
    let parked = std::thread::spawn(move || {
        let f = std::fs::File::open(path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
        let _ = done_rx.recv();
    });
    let tid = rx.recv().unwrap();
    netcfg::attach(netcfg::Target::Pid(tid), &spec)
        .await
        .unwrap();
    assert_eq!(ns2.addrs("eth1"), ["10.214.7.72/24"]);
    done_tx.send(()).unwrap();
    parked.join().unwrap();
    netcfg::detach(&spec.id).await.unwrap();
}
