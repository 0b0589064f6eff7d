//! envd: ephemeral test environments — a dind node with a fixed IP, pods inside, logs kept.

pub mod catalog;
pub mod engine;
pub mod error;
pub mod faults;
pub mod seed;
pub mod spec;
pub mod store;

pub use error::{Error, Result};
