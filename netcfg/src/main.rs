//! `netcfg`: pipework over netlink, for operators. See netcfg/README.md.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use ipnetwork::IpNetwork;
use netcfg::{AttachSpec, Target, blocking};

#[derive(Parser)]
#[command(
    name = "netcfg",
    version,
    about = "Fixed IPs for network namespaces on a host bridge, over netlink"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the bridge if missing, give it the gateway address, bring it up (idempotent).
    Bridge {
        /// Bridge name.
        #[arg(long, default_value = netcfg::DEFAULT_BRIDGE)]
        name: String,
        /// The bridge's own address with prefix, e.g. 10.213.0.1/16.
        #[arg(long)]
        gw: IpNetwork,
    },
    /// Put a veth with a fixed address into a network namespace (idempotent; corrects a changed address).
    Attach(AttachArgs),
    /// Remove an attachment (missing is success).
    Detach {
        /// The id given to attach.
        #[arg(long, required_unless_present = "host_ifname")]
        id: Option<String>,
        /// Remove by host interface name instead (for `ls` entries without an id).
        #[arg(long, conflicts_with = "id")]
        host_ifname: Option<String>,
    },
    /// List the attachments made by netcfg on this host.
    Ls,
    /// Time attach+detach cycles in-process; prints "attach_us detach_us" per cycle (used by scripts/bench).
    #[command(hide = true)]
    Bench {
        #[arg(long)]
        netns: PathBuf,
        #[arg(long)]
        bridge: String,
        /// Address to attach, with prefix.
        #[arg(long)]
        ip: IpNetwork,
        #[arg(long)]
        gw: Option<IpAddr>,
        #[arg(long, default_value_t = 50)]
        cycles: usize,
    },
}

#[derive(Args)]
struct AttachArgs {
    /// PID of a process in the target namespace (e.g. from `docker inspect -f '{{.State.Pid}}'`).
    #[arg(long, conflicts_with = "netns", required_unless_present = "netns")]
    pid: Option<u32>,
    /// Path of the target namespace (/run/netns/NAME, /proc/PID/ns/net).
    #[arg(long)]
    netns: Option<PathBuf>,
    /// Host bridge to attach to.
    #[arg(long)]
    bridge: String,
    /// Address with prefix, e.g. 10.213.0.5/16.
    #[arg(long)]
    ip: IpNetwork,
    /// Gateway: the namespace's default route is replaced by one via it.
    #[arg(long)]
    gw: Option<IpAddr>,
    /// MAC of the interface in the namespace (aa:bb:cc:dd:ee:ff).
    #[arg(long, value_parser = parse_mac)]
    mac: Option<[u8; 6]>,
    /// Interface name inside the namespace.
    #[arg(long, default_value = netcfg::DEFAULT_IFNAME)]
    ifname: String,
    /// Attachment id; determines the host interface name.
    #[arg(long)]
    id: String,
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    netcfg::parse_mac(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netcfg: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> netcfg::Result<()> {
    match cmd {
        Cmd::Bridge { name, gw } => blocking::ensure_bridge(&name, gw),
        Cmd::Attach(a) => {
            let target = match (a.pid, a.netns) {
                (Some(pid), _) => Target::Pid(pid),
                (None, Some(p)) => Target::NetnsPath(p),
                // clap requires one of them.
                (None, None) => Target::Pid(0),
            };
            let spec = AttachSpec {
                id: a.id,
                bridge: a.bridge,
                ifname: a.ifname,
                address: a.ip,
                gateway: a.gw,
                mac: a.mac,
            };
            blocking::attach(target, &spec)
        }
        Cmd::Detach { id, host_ifname } => match (id, host_ifname) {
            (Some(id), _) => blocking::detach(&id),
            (None, Some(name)) => blocking::detach_host_ifname(&name),
            (None, None) => Ok(()),
        },
        Cmd::Ls => {
            let list = blocking::list()?;
            println!("{:<36} {:<15} {:<15} PEER", "ID", "HOST_IFNAME", "BRIDGE");
            for a in list {
                let peer = match (a.peer_alive, a.peer_netnsid, a.peer_ifindex) {
                    (true, Some(ns), Some(ix)) => format!("netnsid {ns} ifindex {ix}"),
                    _ => "-".to_string(),
                };
                let id = if a.id.is_empty() {
                    "(no id)".to_string()
                } else {
                    a.id
                };
                println!(
                    "{id:<36} {:<15} {:<15} {peer}",
                    a.host_ifname,
                    a.bridge.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
        Cmd::Bench {
            netns,
            bridge,
            ip,
            gw,
            cycles,
        } => {
            // The async API from a tokio runtime: exactly how envd calls it.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| netcfg::Error::Sys {
                    op: "bench",
                    iface: "tokio runtime".into(),
                    source: e,
                })?;
            rt.block_on(async {
                let mut spec = AttachSpec::new("netcfg-bench", bridge, ip);
                spec.gateway = gw;
                for _ in 0..cycles {
                    let t0 = Instant::now();
                    netcfg::attach(Target::NetnsPath(netns.clone()), &spec).await?;
                    let t1 = Instant::now();
                    netcfg::detach(&spec.id).await?;
                    let t2 = Instant::now();
                    println!("{} {}", (t1 - t0).as_micros(), (t2 - t1).as_micros());
                }
                Ok(())
            })
        }
    }
}
