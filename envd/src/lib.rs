//! envd: ephemeral test environments — a dind node with a fixed IP, pods inside, logs kept.

pub mod api;
pub mod auth;
pub mod catalog;
pub mod compose;
pub mod doctor;
pub mod engine;
pub mod error;
pub mod faults;
pub mod hooks;
pub mod hostfs;
pub mod lifecycle;
pub mod pool;
pub mod quota;
pub mod service;
pub mod spec;
pub mod store;
pub mod ui;

pub use error::{Error, Result};

/// Percent-encodes everything but RFC 3986's unreserved characters (URL userinfo, paths).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
