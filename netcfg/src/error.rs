//! The crate's one error type.
//!
//! Every variant that touches the kernel names the operation (`op`, e.g. `"create veth"`) and the interface
//! (`iface`, e.g. `"nc-3fa2b1c0d4e5"` or `"eth1 in /proc/42/ns/net"`), so the `Display` form is a one-line cause that
//! an operator can act on.

use std::io;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in netcfg.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused a netlink request (or the request could not be sent).
    #[error("{op} {iface}: {source}")]
    Netlink {
        op: &'static str,
        iface: String,
        #[source]
        source: io::Error,
    },
    /// A system call around netlink failed (opening a namespace, `setns`, a packet socket, a thread).
    #[error("{op} {iface}: {source}")]
    Sys {
        op: &'static str,
        iface: String,
        #[source]
        source: io::Error,
    },
    /// The caller's input was rejected before anything was touched.
    #[error("{op} {iface}: invalid input: {reason}")]
    Invalid {
        op: &'static str,
        iface: String,
        reason: String,
    },
    /// Something the operation needs does not exist (e.g. the bridge).
    #[error("{op} {iface}: not found: {reason}")]
    NotFound {
        op: &'static str,
        iface: String,
        reason: String,
    },
    /// The host state contradicts the request and netcfg will not overwrite it (e.g. a bridge with another
    /// address, an interface name taken by something netcfg did not create).
    #[error("{op} {iface}: {reason}")]
    Conflict {
        op: &'static str,
        iface: String,
        reason: String,
    },
    /// Every address of the pool is in use, reserved, or special.
    #[error("allocate from ip pool {cidr}: exhausted ({usable} usable addresses, all in use)")]
    PoolExhausted { cidr: String, usable: u128 },
    /// An [`IpPool`](crate::IpPool) could not be built from its parameters.
    #[error("ip pool {cidr}: invalid input: {reason}")]
    PoolInvalid { cidr: String, reason: String },
}

impl Error {
    /// The kernel's errno behind this error, if it came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Netlink { source, .. } | Error::Sys { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    pub(crate) fn netlink(op: &'static str, iface: impl Into<String>, e: rtnetlink::Error) -> Self {
        let source = match e {
            rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
            other => io::Error::other(other.to_string()),
        };
        Error::Netlink {
            op,
            iface: iface.into(),
            source,
        }
    }

    pub(crate) fn sys(op: &'static str, iface: impl Into<String>, source: io::Error) -> Self {
        Error::Sys {
            op,
            iface: iface.into(),
            source,
        }
    }

    pub(crate) fn invalid(
        op: &'static str,
        iface: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            op,
            iface: iface.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn conflict(
        op: &'static str,
        iface: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Conflict {
            op,
            iface: iface.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_with_op_iface_and_cause() {
        let e = Error::sys(
            "enter netns",
            "/proc/1/ns/net",
            io::Error::from_raw_os_error(1),
        );
        let s = e.to_string();
        assert!(s.starts_with("enter netns /proc/1/ns/net: "), "{s}");
        assert!(!s.contains('\n'));
        assert_eq!(e.errno(), Some(1));
    }
}
