//! pipework over netlink.
