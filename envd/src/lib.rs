//! envd: ephemeral test environments — a dind node with a fixed IP, pods inside, logs kept.

pub mod api;
pub mod catalog;
pub mod doctor;
pub mod engine;
pub mod error;
pub mod faults;
pub mod service;
pub mod spec;
pub mod store;

pub use error::{Error, Result};
