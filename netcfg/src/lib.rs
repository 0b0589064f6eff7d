//! pipework over netlink: give a network namespace (a container, a `docker-in-docker` node, an `ip netns`) a
//! fixed IP on a host bridge, and allocate such IPs from a pool.
//!
//! * [`ensure_bridge`] creates the host bridge with its gateway address.
//! * [`attach`] puts a veth into a namespace with a fixed address, idempotently; [`detach`] removes it.
//! * [`list`] finds every attachment this crate made on the host (for an orphan sweep).
//! * [`IpPool`] picks the lowest free address of a CIDR; it is pure and remembers nothing.
//!
//! ## Threads and tokio
//!
//! Every operation runs on a dedicated OS thread that netcfg spawns for it, with its own current-thread tokio
//! runtime. That thread opens the host's netlink socket, `setns` into the target namespace only to open the
//! namespace's netlink (and packet) sockets, and comes back; it never touches the caller's threads. So the `async`
//! functions are safe to await from any executor, including a multi-threaded tokio runtime, and do not block it.
//! The [`blocking`] module has the same operations for synchronous callers. Dropping a future does not cancel the
//! operation: it completes on its thread, so cancellation never leaves half an attachment.
//!
//! Everything except [`IpPool`] and [`host_ifname`] needs `CAP_NET_ADMIN` on the host, and `CAP_SYS_ADMIN` (for
//! `setns`) plus access to the target's namespace file for [`attach`]: in practice, root.

mod error;
mod garp;
mod netns;
mod nl;
mod pool;

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use ipnetwork::IpNetwork;

pub use error::{Error, Result};
pub use netns::Target;
pub use pool::IpPool;

use nl::{Kind, LinkChange, NewVeth, Rtnl};

/// The bridge envd puts its nodes on.
pub const DEFAULT_BRIDGE: &str = "envd0";
/// The CIDR of envd's default pool. Chosen clear of Docker's default address pools (172.17.0.0/16–172.31.0.0/16,
/// 192.168.0.0/16) and of common home/office ranges (10.0.x, 10.1.x).
pub const DEFAULT_CIDR: &str = "10.213.0.0/16";
/// The gateway (the bridge's own address) of envd's default pool.
pub const DEFAULT_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
/// The prefix length of [`DEFAULT_CIDR`].
pub const DEFAULT_PREFIX: u8 = 16;
/// The interface name given to the namespace's end of the veth unless the caller picks another.
pub const DEFAULT_IFNAME: &str = "eth1";
/// Every host-side interface this crate creates starts with this; [`list`] relies on it.
pub const HOST_IFNAME_PREFIX: &str = "nc-";

const IFNAMSIZ: usize = 15;

/// The bridge's address for envd's default pool: `10.213.0.1/16`, the argument [`ensure_bridge`] wants.
pub fn default_gateway_cidr() -> IpNetwork {
    let gw = IpAddr::V4(DEFAULT_GATEWAY);
    // DEFAULT_PREFIX is a valid IPv4 prefix (a unit test checks), so the fallback is never taken.
    IpNetwork::new(gw, DEFAULT_PREFIX).unwrap_or_else(|_| IpNetwork::from(gw))
}

/// The host-side interface name for an attachment id: [`HOST_IFNAME_PREFIX`] plus 12 hex digits of a stable hash
/// (64-bit FNV-1a) of the id, 15 characters in all (the kernel's limit). The same id always gives the same name,
/// on every host and every version of netcfg. The full id is stored in the link's alias (`ip link` shows it) and
/// checked on every use, so a hash collision is reported, never acted on.
pub fn host_ifname(id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{HOST_IFNAME_PREFIX}{:012x}", h >> 16)
}

/// What to attach: an id, a bridge and an address, like `pipework BR -i IFNAME CONTAINER ADDR/PREFIX@GW MAC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachSpec {
    /// The caller's name for this attachment (e.g. envd's node id). Any non-empty string up to 128 bytes without
    /// control characters. Determines the host interface name ([`host_ifname`]).
    pub id: String,
    /// The host bridge to enslave the host end to; it must exist (see [`ensure_bridge`]).
    pub bridge: String,
    /// The interface name inside the namespace (default [`DEFAULT_IFNAME`]).
    pub ifname: String,
    /// The address with its prefix length, e.g. `10.213.0.5/16`.
    pub address: IpNetwork,
    /// If set, the namespace's default route is replaced by one via this gateway out of `ifname`.
    pub gateway: Option<IpAddr>,
    /// MAC of the namespace's interface; the kernel picks a random one if `None`.
    pub mac: Option<[u8; 6]>,
}

impl AttachSpec {
    /// A spec with the default interface name, no gateway and a kernel-chosen MAC.
    pub fn new(id: impl Into<String>, bridge: impl Into<String>, address: IpNetwork) -> Self {
        AttachSpec {
            id: id.into(),
            bridge: bridge.into(),
            ifname: DEFAULT_IFNAME.to_string(),
            address,
            gateway: None,
            mac: None,
        }
    }

    /// Set the gateway (the default route goes via it).
    pub fn with_gateway(mut self, gateway: IpAddr) -> Self {
        self.gateway = Some(gateway);
        self
    }

    /// Set the interface name inside the namespace.
    pub fn with_ifname(mut self, ifname: impl Into<String>) -> Self {
        self.ifname = ifname.into();
        self
    }

    /// Set the MAC of the interface inside the namespace.
    pub fn with_mac(mut self, mac: [u8; 6]) -> Self {
        self.mac = Some(mac);
        self
    }

    /// Check everything that can be checked without the kernel.
    pub fn validate(&self) -> Result<()> {
        let op = "attach";
        let iface = &self.id;
        validate_id(op, &self.id)?;
        validate_ifname(op, &self.bridge)
            .map_err(|r| Error::invalid(op, iface, format!("bridge: {r}")))?;
        validate_ifname(op, &self.ifname)
            .map_err(|r| Error::invalid(op, iface, format!("ifname: {r}")))?;
        let a = self.address;
        let host_bits = if a.is_ipv4() { 32 } else { 128 } - u32::from(a.prefix());
        if host_bits >= 2 && a.ip() == a.network() {
            return Err(Error::invalid(
                op,
                iface,
                format!("{a} is the network address of its subnet"),
            ));
        }
        if let IpNetwork::V4(v4) = a
            && host_bits >= 2
            && v4.ip() == v4.broadcast()
        {
            return Err(Error::invalid(
                op,
                iface,
                format!("{a} is the broadcast address of its subnet"),
            ));
        }
        if a.ip().is_unspecified() || a.ip().is_multicast() || a.ip().is_loopback() {
            return Err(Error::invalid(
                op,
                iface,
                format!("{a} is not a unicast host address"),
            ));
        }
        if let Some(gw) = self.gateway {
            if gw.is_ipv4() != a.is_ipv4() {
                return Err(Error::invalid(
                    op,
                    iface,
                    format!("gateway {gw} and address {a} differ in family"),
                ));
            }
            if !a.contains(gw) {
                return Err(Error::invalid(
                    op,
                    iface,
                    format!("gateway {gw} is outside {a}"),
                ));
            }
            if gw == a.ip() {
                return Err(Error::invalid(
                    op,
                    iface,
                    format!("gateway {gw} is the address itself"),
                ));
            }
        }
        if let Some(mac) = self.mac
            && (mac[0] & 1 == 1 || mac == [0; 6])
        {
            return Err(Error::invalid(
                op,
                iface,
                format!("MAC {} is not a unicast address", fmt_mac(mac)),
            ));
        }
        Ok(())
    }
}

fn validate_id(op: &'static str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
        return Err(Error::invalid(
            op,
            id,
            "id must be 1 to 128 bytes without control characters",
        ));
    }
    Ok(())
}

fn validate_ifname(_op: &'static str, name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > IFNAMSIZ {
        return Err(format!("{name:?} must be 1 to {IFNAMSIZ} bytes"));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    Ok(())
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parse `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let bad = || {
        Error::invalid(
            "parse MAC",
            s,
            "expected six hex bytes like 02:42:0a:d5:00:05",
        )
    };
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(bad());
        }
        m[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(m)
}

/// One attachment found on the host by [`list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The id given to [`attach`], read back from the link's alias. Empty if the alias is missing (netcfg was
    /// killed between creating the link and naming it): remove such a link with [`detach_host_ifname`].
    pub id: String,
    /// The host-side interface name ([`host_ifname`] of the id).
    pub host_ifname: String,
    /// The bridge the host end is enslaved to, if any.
    pub bridge: Option<String>,
    /// Whether the peer end exists in another namespace. (When a namespace dies, the kernel deletes both ends, so
    /// an attachment whose peer is gone normally disappears on its own.)
    pub peer_alive: bool,
    /// The peer's namespace as a namespace id local to the host (`ip netns list-id`), if alive.
    pub peer_netnsid: Option<i32>,
    /// The peer's interface index inside its namespace.
    pub peer_ifindex: Option<u32>,
    /// Whether the host end has carrier (the peer is up).
    pub carrier: bool,
}

/// Create the bridge `name` if missing, give it the address `gateway` (e.g. `10.213.0.1/16`) and bring it up.
///
/// Idempotent. A bridge that already has another address of the same family is an error naming that address; a
/// link of that name that is not a bridge is an error too.
pub async fn ensure_bridge(name: &str, gateway: IpNetwork) -> Result<()> {
    let name = name.to_string();
    netns::run("ensure bridge", move || async move {
        ensure_bridge_inner(&name, gateway).await
    })
    .await
}

/// Put a veth into `target`'s namespace as `spec.ifname` with `spec.address`, its host end on `spec.bridge`.
///
/// Steps: create the veth pair with the host end named [`host_ifname`]`(spec.id)` already enslaved to the bridge,
/// with the bridge's MTU and up, and the peer created directly inside the namespace under its final name (no
/// rename, no window where it is visible on the host); record the id in the host end's alias; set the address;
/// replace the default route if `spec.gateway` is set; send one gratuitous ARP (IPv4).
///
/// Idempotency contract: calling it again with the same arguments succeeds and changes nothing (the gratuitous
/// ARP is sent again). Calling it with a different address, gateway, MAC or MTU for the same id corrects the
/// existing attachment in place (other addresses of the same family on the interface are removed; IPv6 link-local
/// addresses are kept). If the id's veth exists but its peer is not `spec.ifname` in this namespace (another
/// namespace, another name), it is deleted and made again. An interface `spec.ifname` in the namespace that is not
/// this id's peer is a conflict, never touched. A failure after the veth was created in this call deletes it.
pub async fn attach(target: Target, spec: &AttachSpec) -> Result<()> {
    spec.validate()?;
    let spec = spec.clone();
    netns::run("attach", move || async move {
        attach_inner(&target, &spec).await
    })
    .await
}

/// Remove the attachment `id`: delete its host-side veth (the peer goes with it). A missing one is success. A
/// link of that name whose alias names another id (a hash collision) is left alone and reported.
pub async fn detach(id: &str) -> Result<()> {
    validate_id("detach", id)?;
    let id = id.to_string();
    netns::run("detach", move || async move { detach_inner(&id).await }).await
}

/// Delete a host interface made by this crate, by name (for entries of [`list`] without an id). Missing is success.
pub async fn detach_host_ifname(host_ifname: &str) -> Result<()> {
    let name = host_ifname.to_string();
    netns::run(
        "detach",
        move || async move { detach_ifname_inner(&name).await },
    )
    .await
}

/// Every attachment on the host made by this crate (host links named [`HOST_IFNAME_PREFIX`]`*` that are veths).
pub async fn list() -> Result<Vec<Attachment>> {
    netns::run("list", list_inner).await
}

/// The same operations for synchronous callers. Each runs on its own thread (never the caller's) and blocks until
/// done; from async code, prefer the `async` functions of the crate root.
pub mod blocking {
    use super::*;

    /// See [`crate::ensure_bridge`].
    pub fn ensure_bridge(name: &str, gateway: IpNetwork) -> Result<()> {
        let name = name.to_string();
        netns::run_blocking("ensure bridge", move || async move {
            ensure_bridge_inner(&name, gateway).await
        })
    }

    /// See [`crate::attach`].
    pub fn attach(target: Target, spec: &AttachSpec) -> Result<()> {
        spec.validate()?;
        let spec = spec.clone();
        netns::run_blocking("attach", move || async move {
            attach_inner(&target, &spec).await
        })
    }

    /// See [`crate::detach`].
    pub fn detach(id: &str) -> Result<()> {
        validate_id("detach", id)?;
        let id = id.to_string();
        netns::run_blocking("detach", move || async move { detach_inner(&id).await })
    }

    /// See [`crate::detach_host_ifname`].
    pub fn detach_host_ifname(host_ifname: &str) -> Result<()> {
        let name = host_ifname.to_string();
        netns::run_blocking(
            "detach",
            move || async move { detach_ifname_inner(&name).await },
        )
    }

    /// See [`crate::list`].
    pub fn list() -> Result<Vec<Attachment>> {
        netns::run_blocking("list", list_inner)
    }
}

async fn ensure_bridge_inner(name: &str, gateway: IpNetwork) -> Result<()> {
    let op = "ensure bridge";
    validate_ifname(op, name).map_err(|r| Error::invalid(op, name, r))?;
    if gateway.ip() == gateway.network()
        && gateway.prefix() < if gateway.is_ipv4() { 31 } else { 127 }
    {
        return Err(Error::invalid(
            op,
            name,
            format!("{gateway} is a network address, not a gateway address (e.g. 10.213.0.1/16)"),
        ));
    }
    let host = Rtnl::connect("")?;
    let link = match host.link(name).await? {
        Some(l) => l,
        None => {
            match host.create_bridge(name).await {
                Ok(()) => {}
                // Someone else made it meanwhile: fine, it is checked below.
                Err(e) if e.errno() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
            host.link(name)
                .await?
                .ok_or_else(|| Error::conflict(op, name, "bridge vanished right after creation"))?
        }
    };
    if link.kind != Kind::Bridge {
        return Err(Error::conflict(
            op,
            name,
            "a link of that name exists and is not a bridge",
        ));
    }
    let addrs = host.addrs(link.index, name).await?;
    if !addrs.contains(&gateway) {
        let others: Vec<String> = addrs
            .iter()
            .filter(|a| a.is_ipv4() == gateway.is_ipv4() && !is_link_local(a.ip()))
            .map(|a| a.to_string())
            .collect();
        if !others.is_empty() {
            return Err(Error::conflict(
                op,
                name,
                format!(
                    "bridge has address {}, expected {gateway}",
                    others.join(", ")
                ),
            ));
        }
        host.add_addr(link.index, name, gateway).await?;
    }
    if !link.up {
        host.set_link(
            link.index,
            name,
            &LinkChange {
                up: true,
                ..Default::default()
            },
        )
        .await?;
    }
    Ok(())
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

async fn attach_inner(target: &Target, spec: &AttachSpec) -> Result<()> {
    let op = "attach";
    let hname = host_ifname(&spec.id);
    let ns_file = target.open()?;
    let ns_label = target.to_string();
    let host = Rtnl::connect("")?;
    let (ctr, pkt) = netns::with_netns(&ns_file, &ns_label, || {
        let ctr = Rtnl::connect(&ns_label)?;
        let pkt = garp::PacketSocket::open().map_err(|e| {
            Error::sys(
                "open packet socket",
                format!("{} in {ns_label}", spec.ifname),
                e,
            )
        })?;
        Ok((ctr, pkt))
    })?;

    let bridge = host
        .link(&spec.bridge)
        .await?
        .ok_or_else(|| Error::NotFound {
            op,
            iface: spec.bridge.clone(),
            reason: "no such bridge on the host (create it with ensure_bridge / `netcfg bridge`)"
                .into(),
        })?;
    if bridge.kind != Kind::Bridge {
        return Err(Error::conflict(op, &spec.bridge, "is not a bridge"));
    }

    let mut existing = host.link(&hname).await?;
    if let Some(h) = &existing {
        check_owner(op, h, &spec.id)?;
        let peer = ctr.link(&spec.ifname).await?;
        let paired = peer.is_some_and(|c| {
            c.kind == Kind::Veth && c.peer_index == Some(h.index) && h.peer_index == Some(c.index)
        });
        if !paired {
            // The id's veth leads elsewhere (another namespace or interface name): make it again here.
            host.del_link(h.index, &hname).await?;
            existing = None;
        }
    }
    let created = existing.is_none();
    if created {
        if ctr.link(&spec.ifname).await?.is_some() {
            return Err(Error::conflict(
                op,
                format!("{} in {ns_label}", spec.ifname),
                format!(
                    "interface exists and is not the peer of {hname} (id {:?})",
                    spec.id
                ),
            ));
        }
        host.create_veth(&NewVeth {
            host_name: &hname,
            controller: bridge.index,
            mtu: bridge.mtu,
            peer_name: &spec.ifname,
            peer_netns: ns_file.as_raw_fd(),
            peer_mac: spec.mac,
        })
        .await?;
    }
    let r = configure(&host, &ctr, &pkt, &bridge, &hname, spec).await;
    if r.is_err() && created {
        // Undo what this call made; the original error is the one worth reporting.
        if let Ok(Some(h)) = host.link(&hname).await {
            let _ = host.del_link(h.index, &hname).await;
        }
    }
    r
}

fn check_owner(op: &'static str, h: &nl::Link, id: &str) -> Result<()> {
    if h.kind != Kind::Veth {
        return Err(Error::conflict(
            op,
            &h.name,
            "exists and is not a veth made by netcfg",
        ));
    }
    match &h.alias {
        Some(a) if a != id => Err(Error::conflict(
            op,
            &h.name,
            format!("belongs to attachment id {a:?}, not {id:?} (host interface name collision)"),
        )),
        _ => Ok(()),
    }
}

/// Bring an existing pair to the spec; touches only what differs.
async fn configure(
    host: &Rtnl,
    ctr: &Rtnl,
    pkt: &garp::PacketSocket,
    bridge: &nl::Link,
    hname: &str,
    spec: &AttachSpec,
) -> Result<()> {
    let op = "attach";
    let h = host
        .link(hname)
        .await?
        .ok_or_else(|| Error::conflict(op, hname, "veth vanished during attach"))?;
    let mut hc = LinkChange::default();
    if h.alias.as_deref() != Some(spec.id.as_str()) {
        hc.alias = Some(spec.id.clone());
    }
    if h.controller != Some(bridge.index) {
        hc.controller = Some(bridge.index);
    }
    if bridge.mtu.is_some() && h.mtu != bridge.mtu {
        hc.mtu = bridge.mtu;
    }
    if !h.up {
        hc.up = true;
    }
    if !hc.is_empty() {
        host.set_link(h.index, hname, &hc).await?;
    }

    let c = ctr.link(&spec.ifname).await?.ok_or_else(|| {
        Error::conflict(
            op,
            format!("{} in {}", spec.ifname, ctr.ns_label()),
            "peer vanished during attach",
        )
    })?;
    let mut cc = LinkChange::default();
    if bridge.mtu.is_some() && c.mtu != bridge.mtu {
        cc.mtu = bridge.mtu;
    }
    if let Some(mac) = spec.mac
        && c.mac != Some(mac)
    {
        cc.mac = Some(mac);
    }
    if !c.up {
        cc.up = true;
    }
    if !cc.is_empty() {
        ctr.set_link(c.index, &spec.ifname, &cc).await?;
    }

    let v4 = spec.address.is_ipv4();
    let addrs = ctr.addrs(c.index, &spec.ifname).await?;
    for a in &addrs {
        let keep_link_local = !v4 && is_link_local(a.ip());
        if a.is_ipv4() == v4 && *a != spec.address && !keep_link_local {
            ctr.del_addr(c.index, &spec.ifname, *a).await?;
        }
    }
    if !addrs.contains(&spec.address) {
        ctr.add_addr(c.index, &spec.ifname, spec.address).await?;
    }

    if let Some(gw) = spec.gateway {
        let routes = ctr.default_routes(v4).await?;
        let want = nl::DefaultRoute {
            gateway: Some(gw),
            oif: Some(c.index),
        };
        if routes != [want] {
            ctr.replace_default_route(c.index, &spec.ifname, gw).await?;
        }
    }

    if let (IpAddr::V4(ip), Some(mac)) = (spec.address.ip(), spec.mac.or(c.mac)) {
        pkt.send_garp(c.index, mac, ip).map_err(|e| {
            Error::sys(
                "send gratuitous ARP",
                format!("{} in {}", spec.ifname, ctr.ns_label()),
                e,
            )
        })?;
    }
    Ok(())
}

async fn detach_inner(id: &str) -> Result<()> {
    let hname = host_ifname(id);
    let host = Rtnl::connect("")?;
    let Some(h) = host.link(&hname).await? else {
        return Ok(());
    };
    check_owner("detach", &h, id)?;
    host.del_link(h.index, &hname).await
}

async fn detach_ifname_inner(name: &str) -> Result<()> {
    if !name.starts_with(HOST_IFNAME_PREFIX) {
        return Err(Error::invalid(
            "detach",
            name,
            format!("not an interface made by netcfg (no {HOST_IFNAME_PREFIX} prefix)"),
        ));
    }
    let host = Rtnl::connect("")?;
    let Some(h) = host.link(name).await? else {
        return Ok(());
    };
    if h.kind != Kind::Veth {
        return Err(Error::conflict(
            "detach",
            name,
            "is not a veth made by netcfg",
        ));
    }
    host.del_link(h.index, name).await
}

async fn list_inner() -> Result<Vec<Attachment>> {
    let host = Rtnl::connect("")?;
    let links = host.links().await?;
    let name_of = |idx: u32| {
        links
            .iter()
            .find(|l| l.index == idx)
            .map(|l| l.name.clone())
    };
    let mut out: Vec<Attachment> = links
        .iter()
        .filter(|l| l.kind == Kind::Veth && l.name.starts_with(HOST_IFNAME_PREFIX))
        .map(|l| Attachment {
            id: l.alias.clone().unwrap_or_default(),
            host_ifname: l.name.clone(),
            bridge: l.controller.and_then(name_of),
            peer_alive: l.peer_netnsid.is_some() && l.peer_index.is_some(),
            peer_netnsid: l.peer_netnsid,
            peer_ifindex: l.peer_index,
            carrier: l.lower_up,
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id).then(a.host_ifname.cmp(&b.host_ifname)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn host_ifname_is_stable_short_and_prefixed() {
        let n = host_ifname("env-0192d1c4-7a8e-7c1e-9c1f-5b8a2e0f9d11");
        assert_eq!(n.len(), 15);
        assert!(n.starts_with(HOST_IFNAME_PREFIX));
        assert_eq!(n, host_ifname("env-0192d1c4-7a8e-7c1e-9c1f-5b8a2e0f9d11"));
        assert_ne!(n, host_ifname("env-0192d1c4-7a8e-7c1e-9c1f-5b8a2e0f9d12"));
        // Pinned: the name must not change between versions, or envd would lose track of its veths.
        assert_eq!(host_ifname("node-1"), "nc-e696ecc22078");
        assert_eq!(host_ifname("").len(), 15);
    }

    #[test]
    fn spec_validation() {
        let ok = AttachSpec::new("n1", "envd0", net("10.213.0.5/16"))
            .with_gateway("10.213.0.1".parse().unwrap());
        ok.validate().unwrap();
        let bad =
            |s: AttachSpec| assert!(matches!(s.validate(), Err(Error::Invalid { .. })), "{s:?}");
        bad(AttachSpec {
            id: String::new(),
            ..ok.clone()
        });
        bad(AttachSpec {
            id: "a\nb".into(),
            ..ok.clone()
        });
        bad(ok.clone().with_ifname("a-name-that-is-too-long"));
        bad(ok.clone().with_ifname("eth/1"));
        bad(AttachSpec {
            bridge: "".into(),
            ..ok.clone()
        });
        bad(AttachSpec {
            address: net("10.213.0.0/16"),
            ..ok.clone()
        });
        bad(AttachSpec {
            address: net("10.213.255.255/16"),
            ..ok.clone()
        });
        bad(AttachSpec {
            address: net("127.0.0.2/8"),
            gateway: None,
            ..ok.clone()
        });
        bad(ok.clone().with_gateway("10.214.0.1".parse().unwrap()));
        bad(ok.clone().with_gateway("fd00::1".parse().unwrap()));
        bad(ok.clone().with_gateway("10.213.0.5".parse().unwrap()));
        bad(ok.clone().with_mac([1, 0, 0, 0, 0, 1]));
        bad(ok.clone().with_mac([0; 6]));
        ok.clone()
            .with_mac([2, 0x42, 10, 213, 0, 5])
            .validate()
            .unwrap();
        AttachSpec::new("n1", "envd0", net("10.0.0.1/31"))
            .validate()
            .unwrap();
    }

    #[test]
    fn mac_round_trip() {
        let m = parse_mac("02:42:0A:d5:00:05").unwrap();
        assert_eq!(m, [2, 0x42, 10, 0xd5, 0, 5]);
        assert_eq!(fmt_mac(m), "02:42:0a:d5:00:05");
        assert!(parse_mac("02:42:0a:d5:00").is_err());
        assert!(parse_mac("02:42:0a:d5:00:zz").is_err());
        assert!(parse_mac("002:42:0a:d5:00:05").is_err());
    }

    #[test]
    fn default_pool_constants_agree() {
        assert_eq!(default_gateway_cidr().to_string(), "10.213.0.1/16");
        let cidr: IpNetwork = DEFAULT_CIDR.parse().unwrap();
        assert_eq!(cidr.prefix(), DEFAULT_PREFIX);
        assert!(cidr.contains(DEFAULT_GATEWAY.into()));
        IpPool::new(cidr, DEFAULT_GATEWAY.into(), vec![]).unwrap();
    }
}
