//! [`IpPool`]: pure address allocation from a CIDR.
//!
//! The pool remembers nothing: the caller keeps the leases (envd keeps them in its store under a UNIQUE constraint)
//! and passes the set in use to [`IpPool::allocate`], which returns the lowest free address. Never handed out: the
//! network address, the IPv4 broadcast address, the gateway, and any reserved range.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use crate::{Error, Result};

/// A pool of addresses inside one CIDR. IPv4 and IPv6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpPool {
    cidr: IpNetwork,
    gateway: IpAddr,
    /// First and last address of the CIDR, as integers.
    lo: u128,
    hi: u128,
    /// Sorted, merged, inclusive intervals that are never allocated (network, broadcast, gateway, reserved).
    excluded: Vec<(u128, u128)>,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(v4: bool, n: u128) -> IpAddr {
    if v4 {
        // The pool only produces values inside an IPv4 CIDR, so this never truncates.
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

/// Sort and merge inclusive intervals.
fn merge(mut v: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    v.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

impl IpPool {
    /// A pool over `cidr` (host bits are ignored: `10.213.0.7/16` means `10.213.0.0/16`) with the given gateway,
    /// which must lie inside the CIDR, and inclusive `reserved` ranges `(first, last)`, which must lie inside it too.
    pub fn new(cidr: IpNetwork, gateway: IpAddr, reserved: Vec<(IpAddr, IpAddr)>) -> Result<Self> {
        let cidr =
            IpNetwork::new(cidr.network(), cidr.prefix()).map_err(|e| Error::PoolInvalid {
                cidr: cidr.to_string(),
                reason: e.to_string(),
            })?;
        let invalid = |reason: String| Error::PoolInvalid {
            cidr: cidr.to_string(),
            reason,
        };
        let v4 = cidr.is_ipv4();
        let bits: u32 = if v4 { 32 } else { 128 };
        let lo = to_u128(cidr.network());
        let host_bits = bits - u32::from(cidr.prefix());
        let hi = if host_bits == 128 {
            u128::MAX
        } else {
            lo | ((1u128 << host_bits) - 1)
        };
        if !cidr.contains(gateway) {
            return Err(invalid(format!("gateway {gateway} is outside the CIDR")));
        }
        let mut excluded = vec![];
        // Network address (IPv6: the subnet-router anycast address) and IPv4 broadcast, except on point-to-point
        // sized networks (/31, /32, /127, /128) where every address is a host (RFC 3021).
        if host_bits >= 2 {
            excluded.push((lo, lo));
            if v4 {
                excluded.push((hi, hi));
            }
        }
        let g = to_u128(gateway);
        excluded.push((g, g));
        for (a, b) in reserved {
            if a.is_ipv4() != v4 || b.is_ipv4() != v4 {
                return Err(invalid(format!(
                    "reserved range {a}-{b} is not of the CIDR's address family"
                )));
            }
            let (ia, ib) = (to_u128(a), to_u128(b));
            if ia > ib {
                return Err(invalid(format!(
                    "reserved range {a}-{b} ends before it starts"
                )));
            }
            if !cidr.contains(a) || !cidr.contains(b) {
                return Err(invalid(format!(
                    "reserved range {a}-{b} is outside the CIDR"
                )));
            }
            excluded.push((ia, ib));
        }
        Ok(IpPool {
            cidr,
            gateway,
            lo,
            hi,
            excluded: merge(excluded),
        })
    }

    /// The CIDR of the pool (normalised to its network address).
    pub fn cidr(&self) -> IpNetwork {
        self.cidr
    }

    /// The gateway of the pool.
    pub fn gateway(&self) -> IpAddr {
        self.gateway
    }

    /// `ip` with the pool's prefix length, e.g. `10.213.0.5/16`: what [`AttachSpec::address`](crate::AttachSpec)
    /// wants.
    pub fn network_of(&self, ip: IpAddr) -> Result<IpNetwork> {
        IpNetwork::new(ip, self.cidr.prefix()).map_err(|e| Error::PoolInvalid {
            cidr: self.cidr.to_string(),
            reason: e.to_string(),
        })
    }

    fn excluded(&self, n: u128) -> bool {
        // Few intervals: a binary search keeps this cheap even with many reserved ranges.
        let i = self.excluded.partition_point(|&(_, b)| b < n);
        self.excluded.get(i).is_some_and(|&(a, _)| a <= n)
    }

    /// Whether the pool may hand out `ip`: inside the CIDR and neither network, broadcast, gateway nor reserved.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.cidr.is_ipv4() && self.cidr.contains(ip) && !self.excluded(to_u128(ip))
    }

    /// How many addresses the pool can hand out in total.
    pub fn capacity(&self) -> u128 {
        // size - excluded, computed as (size - 1) - (excluded - 1) so that a /0 IPv6 pool (2^128 addresses) does
        // not overflow. The gateway is always excluded, so `excluded >= 1`.
        let span = self.hi - self.lo;
        let excluded: u128 = self.excluded.iter().map(|&(a, b)| b - a + 1).sum();
        span - (excluded - 1)
    }

    /// The lowest address of the pool that is not in `in_use`. Addresses in `in_use` outside the pool are ignored.
    /// Exhausted pool: [`Error::PoolExhausted`].
    pub fn allocate(&self, in_use: &HashSet<IpAddr>) -> Result<IpAddr> {
        let v4 = self.cidr.is_ipv4();
        let mut taken = self.excluded.clone();
        taken.extend(
            in_use
                .iter()
                .filter(|ip| ip.is_ipv4() == v4 && self.cidr.contains(**ip))
                .map(|ip| {
                    let n = to_u128(*ip);
                    (n, n)
                }),
        );
        let taken = merge(taken);
        let mut candidate = self.lo;
        for (a, b) in taken {
            if candidate < a {
                break;
            }
            if b >= self.hi {
                return Err(self.exhausted());
            }
            candidate = candidate.max(b + 1);
        }
        if candidate > self.hi {
            return Err(self.exhausted());
        }
        Ok(from_u128(v4, candidate))
    }

    fn exhausted(&self) -> Error {
        Error::PoolExhausted {
            cidr: self.cidr.to_string(),
            usable: self.capacity(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }
    fn set(v: &[&str]) -> HashSet<IpAddr> {
        v.iter().map(|s| ip(s)).collect()
    }

    #[test]
    fn default_pool_first_addresses() {
        let p = IpPool::new(
            net(crate::DEFAULT_CIDR),
            crate::DEFAULT_GATEWAY.into(),
            vec![],
        )
        .unwrap();
        assert_eq!(p.capacity(), 65536 - 3);
        assert_eq!(p.allocate(&set(&[])).unwrap(), ip("10.213.0.2"));
        assert_eq!(p.allocate(&set(&["10.213.0.2"])).unwrap(), ip("10.213.0.3"));
        // Lowest free, not next after the highest.
        assert_eq!(
            p.allocate(&set(&["10.213.0.3", "10.213.0.4"])).unwrap(),
            ip("10.213.0.2")
        );
        assert_eq!(
            p.network_of(ip("10.213.0.2")).unwrap().to_string(),
            "10.213.0.2/16"
        );
    }

    #[test]
    fn never_network_broadcast_or_gateway() {
        let p = IpPool::new(net("10.0.0.0/30"), ip("10.0.0.2"), vec![]).unwrap();
        assert_eq!(p.capacity(), 1);
        assert_eq!(p.allocate(&set(&[])).unwrap(), ip("10.0.0.1"));
        assert!(!p.contains(ip("10.0.0.0")));
        assert!(!p.contains(ip("10.0.0.2")));
        assert!(!p.contains(ip("10.0.0.3")));
        assert!(matches!(
            p.allocate(&set(&["10.0.0.1"])),
            Err(Error::PoolExhausted { usable: 1, .. })
        ));
    }

    #[test]
    fn gateway_high_in_range() {
        let p = IpPool::new(net("10.0.0.0/29"), ip("10.0.0.6"), vec![]).unwrap();
        let mut used = HashSet::new();
        let mut got = vec![];
        while let Ok(a) = p.allocate(&used) {
            used.insert(a);
            got.push(a.to_string());
        }
        assert_eq!(
            got,
            ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]
        );
        assert_eq!(p.capacity(), 5);
    }

    #[test]
    fn reserved_ranges_skipped_and_merged() {
        let p = IpPool::new(
            net("10.1.0.0/24"),
            ip("10.1.0.1"),
            vec![
                (ip("10.1.0.2"), ip("10.1.0.9")),
                (ip("10.1.0.5"), ip("10.1.0.20")),
                (ip("10.1.0.200"), ip("10.1.0.254")),
            ],
        )
        .unwrap();
        assert_eq!(p.allocate(&set(&[])).unwrap(), ip("10.1.0.21"));
        // 256 - network - broadcast - gateway - [2..20] (19) - [200..254] (55)
        assert_eq!(p.capacity(), 256 - 3 - 19 - 55);
        assert!(!p.contains(ip("10.1.0.7")));
        assert!(p.contains(ip("10.1.0.199")));
    }

    #[test]
    fn in_use_outside_pool_ignored() {
        let p = IpPool::new(net("10.2.0.0/24"), ip("10.2.0.1"), vec![]).unwrap();
        assert_eq!(
            p.allocate(&set(&["10.3.0.2", "fd00::2"])).unwrap(),
            ip("10.2.0.2")
        );
    }

    #[test]
    fn host_bits_in_cidr_are_normalised() {
        let p = IpPool::new(net("10.213.7.9/16"), ip("10.213.0.1"), vec![]).unwrap();
        assert_eq!(p.cidr().to_string(), "10.213.0.0/16");
    }

    #[test]
    fn invalid_inputs() {
        let bad = |c: &str, g: &str, r: Vec<(IpAddr, IpAddr)>| {
            matches!(
                IpPool::new(net(c), ip(g), r),
                Err(Error::PoolInvalid { .. })
            )
        };
        assert!(bad("10.0.0.0/24", "10.0.1.1", vec![]));
        assert!(bad("10.0.0.0/24", "fd00::1", vec![]));
        assert!(bad(
            "10.0.0.0/24",
            "10.0.0.1",
            vec![(ip("10.0.0.9"), ip("10.0.0.3"))]
        ));
        assert!(bad(
            "10.0.0.0/24",
            "10.0.0.1",
            vec![(ip("10.0.0.9"), ip("10.0.1.3"))]
        ));
        assert!(bad(
            "10.0.0.0/24",
            "10.0.0.1",
            vec![(ip("fd00::1"), ip("fd00::2"))]
        ));
    }

    #[test]
    fn point_to_point_sizes() {
        let p = IpPool::new(net("10.0.0.0/31"), ip("10.0.0.0"), vec![]).unwrap();
        assert_eq!(p.capacity(), 1);
        assert_eq!(p.allocate(&set(&[])).unwrap(), ip("10.0.0.1"));
        let p = IpPool::new(net("10.0.0.5/32"), ip("10.0.0.5"), vec![]).unwrap();
        assert_eq!(p.capacity(), 0);
        assert!(p.allocate(&set(&[])).is_err());
    }

    #[test]
    fn ipv6_pool() {
        let p = IpPool::new(net("fd00:e5d::/64"), ip("fd00:e5d::1"), vec![]).unwrap();
        assert_eq!(p.allocate(&set(&[])).unwrap(), ip("fd00:e5d::2"));
        assert_eq!(p.capacity(), (1u128 << 64) - 2);
        // The top of an IPv6 range is a normal address (no broadcast).
        let p = IpPool::new(net("fd00::/126"), ip("fd00::1"), vec![]).unwrap();
        assert_eq!(p.capacity(), 2);
        assert!(p.contains(ip("fd00::3")));
        let p = IpPool::new(net("::/0"), ip("::1"), vec![]).unwrap();
        assert_eq!(p.allocate(&set(&["::2"])).unwrap(), ip("::3"));
        assert_eq!(p.capacity(), u128::MAX - 1);
    }

    #[test]
    fn exhaust_a_24_in_order() {
        let p = IpPool::new(net("10.9.9.0/24"), ip("10.9.9.254"), vec![]).unwrap();
        let mut used = HashSet::new();
        for i in 1..=253u8 {
            let a = p.allocate(&used).unwrap();
            assert_eq!(a, IpAddr::V4(Ipv4Addr::new(10, 9, 9, i)));
            used.insert(a);
        }
        assert_eq!(used.len() as u128, p.capacity());
        let e = p.allocate(&used).unwrap_err();
        assert!(e.to_string().contains("exhausted"), "{e}");
    }

    proptest! {
        /// Against a brute-force oracle on small IPv4 pools: the result is usable, free, and the lowest such.
        #[test]
        fn allocate_is_lowest_free(
            prefix in 24u8..=32,
            gw_off in 0u32..256,
            reserved in proptest::collection::vec((0u32..256, 0u32..16), 0..4),
            used in proptest::collection::hash_set(0u32..256, 0..256),
        ) {
            let size = 1u32 << (32 - prefix);
            let base = u32::from(Ipv4Addr::new(10, 77, 1, 0));
            let at = |off: u32| IpAddr::V4(Ipv4Addr::from(base + off % size));
            let reserved: Vec<(IpAddr, IpAddr)> = reserved
                .into_iter()
                .map(|(s, len)| {
                    let s = s % size;
                    (at(s), at((s + len).min(size - 1)))
                })
                .collect();
            let pool = IpPool::new(IpNetwork::new(at(0), prefix).unwrap(), at(gw_off), reserved.clone()).unwrap();
            let in_use: HashSet<IpAddr> = used.iter().map(|&o| at(o)).collect();
            let special = |off: u32| {
                (size >= 4 && (off == 0 || off == size - 1))
                    || at(off) == at(gw_off)
                    || reserved.iter().any(|&(a, b)| at(off) >= a && at(off) <= b)
            };
            let usable: Vec<u32> = (0..size).filter(|&o| !special(o)).collect();
            prop_assert_eq!(pool.capacity(), usable.len() as u128);
            for o in 0..size {
                prop_assert_eq!(pool.contains(at(o)), !special(o));
            }
            let expect = usable.iter().copied().find(|&o| !in_use.contains(&at(o)));
            match (pool.allocate(&in_use), expect) {
                (Ok(got), Some(o)) => prop_assert_eq!(got, at(o)),
                (Err(Error::PoolExhausted { .. }), None) => {}
                (got, want) => prop_assert!(false, "got {:?}, want {:?}", got, want.map(at)),
            }
        }

        /// Allocating repeatedly hands out distinct usable addresses until exactly `capacity` are out.
        #[test]
        fn repeated_allocation_is_distinct(prefix in 26u8..=30, gw in 0u32..64) {
            let size = 1u32 << (32 - prefix);
            let base = u32::from(Ipv4Addr::new(10, 88, 0, 0));
            let gw = IpAddr::V4(Ipv4Addr::from(base + gw % size));
            let pool = IpPool::new(IpNetwork::new(IpAddr::V4(Ipv4Addr::from(base)), prefix).unwrap(), gw, vec![]).unwrap();
            let mut used = HashSet::new();
            while let Ok(a) = pool.allocate(&used) {
                prop_assert!(pool.contains(a));
                prop_assert!(used.insert(a));
            }
            prop_assert_eq!(used.len() as u128, pool.capacity());
        }
    }
}
