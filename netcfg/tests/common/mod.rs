//! Scaffolding for the netns integration tests: root check, a host-wide test lock, network namespaces and bridges
//! that are always removed (Drop guards, so also when a test panics), a TCP server inside a namespace, and `ip` for
//! checking results. The crate under test itself never runs `ip`.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// Whether this test may run. Not root or no usable netlink: under `CI=true` that is a failure (a skip there would
/// hide a broken machine); otherwise the test prints why and skips.
pub fn can_run(test: &str) -> bool {
    let reason = if !nix::unistd::geteuid().is_root() {
        Some("needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces, bridges and veths".to_string())
    } else {
        netcfg::blocking::list()
            .err()
            .map(|e| format!("netlink is not usable: {e}"))
    };
    match reason {
        None => {
            host_lock();
            true
        }
        Some(r) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: {r}. CI=true, so this is a failure, not a skip: run the tests as root.")
        }
        Some(r) => {
            // Straight to fd 2, past the test harness's output capture: a skip must never be silent.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {r} (set CI=true to make this a failure)"
            );
            false
        }
    }
}

/// Serialise test processes host-wide: the tests use fixed names (nctest-N bridges, 10.214.N.0/24), so two
/// concurrent `cargo test` runs on one host must not overlap. Held until the process exits.
fn host_lock() {
    static LOCK: OnceLock<Flock<File>> = OnceLock::new();
    LOCK.get_or_init(|| {
        let f = File::create("/run/netcfg-tests.lock").expect("create /run/netcfg-tests.lock");
        Flock::lock(f, FlockArg::LockExclusive).expect("lock /run/netcfg-tests.lock")
    });
}

/// Run a command (test scaffolding / checks only), panicking on failure; returns stdout.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command, ignoring the outcome (cleanup).
pub fn run_quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

/// A network namespace at /run/netns/NAME, made with unshare(2) on a short-lived thread and kept alive by a bind
/// mount. Dropping it unmounts and removes the file, which destroys the namespace and every veth peer in it.
pub struct TestNetns {
    pub name: String,
    pub path: PathBuf,
}

impl TestNetns {
    pub fn new(name: &str) -> Self {
        std::fs::create_dir_all("/run/netns").expect("mkdir /run/netns");
        let path = PathBuf::from(format!("/run/netns/{name}"));
        remove_netns_file(&path); // left over by a killed run
        File::create(&path).expect("create netns file");
        let p = path.clone();
        std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            mount(
                Some("/proc/thread-self/ns/net"),
                &p,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .expect("bind-mount netns");
        })
        .join()
        .expect("netns thread");
        TestNetns {
            name: name.to_string(),
            path,
        }
    }

    pub fn target(&self) -> netcfg::Target {
        netcfg::Target::NetnsPath(self.path.clone())
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Names of the links in the namespace.
    pub fn links(&self) -> Vec<String> {
        self.ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// The global addresses of IFNAME, as "a.b.c.d/p".
    pub fn addrs(&self, ifname: &str) -> Vec<String> {
        self.ip(&["-o", "addr", "show", "dev", ifname, "scope", "global"])
            .lines()
            .filter_map(|l| {
                l.split_whitespace()
                    .skip_while(|w| *w != "inet" && *w != "inet6")
                    .nth(1)
            })
            .map(str::to_string)
            .collect()
    }

    /// Accept one TCP connection on ADDR inside the namespace and answer "hello from NAME". Returns once listening.
    pub fn serve_once(&self, addr: SocketAddr) -> std::thread::JoinHandle<()> {
        let path = self.path.clone();
        let name = self.name.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            let ns = File::open(&path).expect("open netns");
            setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
            let l = TcpListener::bind(addr).expect("bind in netns");
            tx.send(()).expect("ready");
            let (mut s, _) = l.accept().expect("accept");
            s.write_all(format!("hello from {name}").as_bytes())
                .expect("write");
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("server ready");
        h
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        remove_netns_file(&self.path);
    }
}

fn remove_netns_file(path: &Path) {
    let _ = umount2(path, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

/// Connect from the host to ADDR and read what the server says.
pub fn fetch(addr: SocketAddr) -> String {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(3)).expect("connect from host");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

/// A test bridge `nctest-N` with gateway 10.214.N.1/24. Dropping it detaches every attachment whose id starts with
/// `nctest-N-` and deletes the bridge.
pub struct TestBridge {
    pub n: u8,
    pub name: String,
}

impl TestBridge {
    pub async fn new(n: u8) -> Self {
        let b = TestBridge {
            n,
            name: format!("nctest-{n}"),
        };
        b.cleanup(); // left over by a killed run
        netcfg::ensure_bridge(&b.name, b.gateway_cidr())
            .await
            .expect("ensure_bridge");
        b
    }

    pub fn gateway_cidr(&self) -> ipnetwork::IpNetwork {
        format!("10.214.{}.1/24", self.n).parse().unwrap()
    }

    pub fn gateway(&self) -> std::net::IpAddr {
        self.gateway_cidr().ip()
    }

    pub fn cidr(&self) -> ipnetwork::IpNetwork {
        format!("10.214.{}.0/24", self.n).parse().unwrap()
    }

    /// 10.214.N.HOST/24
    pub fn addr(&self, host: u8) -> ipnetwork::IpNetwork {
        format!("10.214.{}.{host}/24", self.n).parse().unwrap()
    }

    pub fn id(&self, k: usize) -> String {
        format!("nctest-{}-{k}", self.n)
    }

    pub fn spec(&self, k: usize, host: u8) -> netcfg::AttachSpec {
        netcfg::AttachSpec::new(self.id(k), &self.name, self.addr(host))
            .with_gateway(self.gateway())
    }

    /// Names of the links enslaved to the bridge.
    pub fn ports(&self) -> Vec<String> {
        run(&["ip", "-o", "link", "show", "master", &self.name])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// Attachments listed by netcfg for this bridge's ids.
    pub fn listed(&self) -> Vec<netcfg::Attachment> {
        let prefix = format!("nctest-{}-", self.n);
        netcfg::blocking::list()
            .expect("list")
            .into_iter()
            .filter(|a| a.id.starts_with(&prefix))
            .collect()
    }

    fn cleanup(&self) {
        for a in self.listed() {
            let _ = netcfg::blocking::detach(&a.id);
        }
        run_quiet(&["ip", "link", "del", &self.name]);
    }
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        self.cleanup();
    }
}
