//! envd's per-environment sidecar.
//!
//! It serves, over HTTP:
//! - `GET /_envd/healthz`: `ok`;
//! - `GET /_envd/logs.tar.gz`: a gzip tar of the log directory (every pod's log files);
//! - `GET /_envd/requests`: the requests the stubs received (`DELETE` clears them);
//! - everything else: the canned responses ("stubs") of [`config`], or a 404 listing them.

pub mod archive;
pub mod config;
pub mod server;
pub mod time;

pub use config::{ConfigError, Stub, Stubs};
pub use server::{AppState, router};
