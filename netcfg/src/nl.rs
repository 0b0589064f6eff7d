//! The tiny socket layer: one method per rtnetlink verb, typed inputs and outputs. Nothing above this module
//! builds or reads raw netlink messages.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

use futures_util::TryStreamExt;
use ipnetwork::IpNetwork;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use rtnetlink::{
    AddressMessageBuilder, Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use crate::{Error, Result};

const ENODEV: i32 = libc::ENODEV;
const EADDRNOTAVAIL: i32 = libc::EADDRNOTAVAIL;

/// What kind of link this is, as far as netcfg cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bridge,
    Veth,
    Other,
}

/// A link as netcfg sees it.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Kind,
    pub controller: Option<u32>,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub alias: Option<String>,
    pub up: bool,
    pub lower_up: bool,
    /// IFLA_LINK: for a veth, the peer's ifindex (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// IFLA_LINK_NETNSID: the peer's namespace as an id local to this namespace, if it is another one.
    pub peer_netnsid: Option<i32>,
}

impl Link {
    fn from_msg(m: LinkMessage) -> Self {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            kind: Kind::Other,
            controller: None,
            mtu: None,
            mac: None,
            alias: None,
            up: m.header.flags.contains(LinkFlags::Up),
            lower_up: m.header.flags.contains(LinkFlags::LowerUp),
            peer_index: None,
            peer_netnsid: None,
        };
        for a in m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n,
                LinkAttribute::IfAlias(s) if !s.is_empty() => l.alias = Some(s),
                LinkAttribute::Controller(c) if c != 0 => l.controller = Some(c),
                LinkAttribute::Mtu(v) => l.mtu = Some(v),
                LinkAttribute::Address(a) => l.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                LinkAttribute::Link(i) if i != 0 => l.peer_index = Some(i),
                LinkAttribute::LinkNetNsId(id) if id >= 0 => l.peer_netnsid = Some(id),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            l.kind = match k {
                                InfoKind::Bridge => Kind::Bridge,
                                InfoKind::Veth => Kind::Veth,
                                _ => Kind::Other,
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }
}

/// A veth pair to create: the host end on a bridge, the peer directly inside another namespace.
#[derive(Debug)]
pub(crate) struct NewVeth<'a> {
    pub host_name: &'a str,
    pub controller: u32,
    pub mtu: Option<u32>,
    pub peer_name: &'a str,
    pub peer_netns: RawFd,
    pub peer_mac: Option<[u8; 6]>,
}

/// Changes to an existing link; `None` fields are left alone.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct LinkChange {
    pub up: bool,
    pub controller: Option<u32>,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub alias: Option<String>,
}

impl LinkChange {
    pub fn is_empty(&self) -> bool {
        *self == LinkChange::default()
    }
}

/// A default route as dumped from the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DefaultRoute {
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
}

/// An rtnetlink connection bound to one namespace.
pub(crate) struct Rtnl {
    handle: Handle,
    /// "" for the host, else " in <netns path>": appended to interface names in errors.
    ns: String,
}

impl Rtnl {
    /// Open a connection in the current thread's namespace. Must run inside a tokio runtime (netcfg's own thread).
    pub fn connect(ns_label: &str) -> Result<Self> {
        let ns = if ns_label.is_empty() {
            String::new()
        } else {
            format!(" in {ns_label}")
        };
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| Error::sys("open netlink socket", ns.trim_start(), e))?;
        tokio::spawn(conn);
        Ok(Rtnl { handle, ns })
    }

    fn iface(&self, name: &str) -> String {
        format!("{name}{}", self.ns)
    }

    fn err(&self, op: &'static str, name: &str, e: rtnetlink::Error) -> Error {
        Error::netlink(op, self.iface(name), e)
    }

    pub fn ns_label(&self) -> &str {
        self.ns.trim_start_matches(" in ")
    }

    /// The link named `name`, or `None`.
    pub async fn link(&self, name: &str) -> Result<Option<Link>> {
        let r = self
            .handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await;
        match r {
            Ok(m) => Ok(m.map(Link::from_msg)),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(self.err("get link", name, e)),
        }
    }

    /// Every link of the namespace.
    pub async fn links(&self) -> Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.err("dump links", "*", e))?;
        Ok(msgs.into_iter().map(Link::from_msg).collect())
    }

    pub async fn create_bridge(&self, name: &str) -> Result<()> {
        self.handle
            .link()
            .add(LinkBridge::new(name).build())
            .execute()
            .await
            .map_err(|e| self.err("create bridge", name, e))
    }

    /// Create a veth pair, the host end enslaved and up, the peer created directly in `peer_netns` (and left
    /// down: asking for the peer up in the same request fails with ENOTCONN on some kernels, e.g. 6.18, just as
    /// `ip link add A type veth peer name B netns N up` does; the caller brings it up from inside the namespace).
    pub async fn create_veth(&self, v: &NewVeth<'_>) -> Result<()> {
        let mut peer = LinkUnspec::new_with_name(v.peer_name);
        if let Some(mtu) = v.mtu {
            peer = peer.mtu(mtu);
        }
        if let Some(mac) = v.peer_mac {
            peer = peer.address(mac.to_vec());
        }
        let peer = peer.setns_by_fd(v.peer_netns).build();
        let mut host = LinkVeth::new(v.host_name, v.peer_name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .controller(v.controller)
            .up();
        if let Some(mtu) = v.mtu {
            host = host.mtu(mtu);
        }
        self.handle
            .link()
            .add(host.build())
            .execute()
            .await
            .map_err(|e| self.err("create veth", v.host_name, e))
    }

    pub async fn set_link(&self, index: u32, name: &str, c: &LinkChange) -> Result<()> {
        let mut b = LinkUnspec::new_with_index(index);
        if c.up {
            b = b.up();
        }
        if let Some(ctl) = c.controller {
            b = b.controller(ctl);
        }
        if let Some(mtu) = c.mtu {
            b = b.mtu(mtu);
        }
        if let Some(mac) = c.mac {
            b = b.address(mac.to_vec());
        }
        if let Some(alias) = &c.alias {
            b = b.alias(alias.clone());
        }
        self.handle
            .link()
            .change(b.build())
            .execute()
            .await
            .map_err(|e| self.err("set link", name, e))
    }

    /// Delete a link; one that is already gone is success.
    pub async fn del_link(&self, index: u32, name: &str) -> Result<()> {
        match self.handle.link().del(index).execute().await {
            Err(e) if errno(&e) == Some(ENODEV) => Ok(()),
            r => r.map_err(|e| self.err("delete link", name, e)),
        }
    }

    /// The addresses of link `index` (all families).
    pub async fn addrs(&self, index: u32, name: &str) -> Result<Vec<IpNetwork>> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.err("dump addresses", name, e))?;
        let mut out = vec![];
        for m in msgs {
            let prefix = m.header.prefix_len;
            // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on point-to-point links).
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let addr = local.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = addr
                && let Ok(n) = IpNetwork::new(ip, prefix)
            {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// Add (or replace) an address on link `index`.
    pub async fn add_addr(&self, index: u32, name: &str, addr: IpNetwork) -> Result<()> {
        self.handle
            .address()
            .add(index, addr.ip(), addr.prefix())
            .replace()
            .execute()
            .await
            .map_err(|e| self.err("add address", name, e))
    }

    /// Remove an address from link `index`; one that is already gone is success.
    pub async fn del_addr(&self, index: u32, name: &str, addr: IpNetwork) -> Result<()> {
        let msg = match addr.ip() {
            IpAddr::V4(ip) => AddressMessageBuilder::<Ipv4Addr>::new()
                .index(index)
                .address(ip, addr.prefix())
                .build(),
            IpAddr::V6(ip) => AddressMessageBuilder::<Ipv6Addr>::new()
                .index(index)
                .address(ip, addr.prefix())
                .build(),
        };
        match self.handle.address().del(msg).execute().await {
            Err(e) if errno(&e) == Some(EADDRNOTAVAIL) => Ok(()),
            r => r.map_err(|e| self.err("delete address", name, e)),
        }
    }

    /// The default routes of the main table for the family of `v4`.
    pub async fn default_routes(&self, v4: bool) -> Result<Vec<DefaultRoute>> {
        let query = if v4 {
            RouteMessageBuilder::<Ipv4Addr>::new().build()
        } else {
            RouteMessageBuilder::<Ipv6Addr>::new().build()
        };
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.err("dump routes", "default", e))?;
        let family = if v4 {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        Ok(msgs
            .into_iter()
            .filter(|m| {
                let table = m
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        RouteAttribute::Table(t) => Some(*t),
                        _ => None,
                    })
                    .unwrap_or(u32::from(m.header.table));
                m.header.address_family == family
                    && m.header.destination_prefix_length == 0
                    && m.header.kind == RouteType::Unicast
                    && table == u32::from(RouteHeader::RT_TABLE_MAIN)
            })
            .map(|m| {
                let mut r = DefaultRoute {
                    gateway: None,
                    oif: None,
                };
                for a in m.attributes {
                    match a {
                        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => {
                            r.gateway = Some(IpAddr::V4(ip))
                        }
                        RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => {
                            r.gateway = Some(IpAddr::V6(ip))
                        }
                        RouteAttribute::Oif(i) => r.oif = Some(i),
                        _ => {}
                    }
                }
                r
            })
            .collect())
    }

    /// Replace the main table's default route with one via `gateway` out of link `index`.
    pub async fn replace_default_route(
        &self,
        index: u32,
        name: &str,
        gateway: IpAddr,
    ) -> Result<()> {
        let msg = match gateway {
            IpAddr::V4(gw) => RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gw)
                .output_interface(index)
                .build(),
            IpAddr::V6(gw) => RouteMessageBuilder::<Ipv6Addr>::new()
                .gateway(gw)
                .output_interface(index)
                .build(),
        };
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                self.err(
                    "replace default route via",
                    &format!("{gateway} dev {name}"),
                    e,
                )
            })
    }
}

/// The kernel errno of a netlink error, if it is one.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}
