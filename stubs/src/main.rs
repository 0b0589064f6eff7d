//! `stubs`: envd's per-environment sidecar (see the library docs for the HTTP contract).
//!
//! Environment: `STUBS_LISTEN` (default `0.0.0.0:9000`), `STUBS_LOG_DIR` (default
//! `/var/log/envd`), `STUBS_CONFIG` (default `/etc/stubs/stubs.yaml`; missing = no stubs).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use stubs::{AppState, Stubs, router};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stubs: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stubs: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let listen = env_or("STUBS_LISTEN", "0.0.0.0:9000");
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("STUBS_LISTEN={listen:?} is not an address like 0.0.0.0:9000"))?;
    let log_dir = PathBuf::from(env_or("STUBS_LOG_DIR", "/var/log/envd"));
    let config = PathBuf::from(env_or("STUBS_CONFIG", "/etc/stubs/stubs.yaml"));

    let stubs = Stubs::load(&config).context("bad STUBS_CONFIG")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (STUBS_LISTEN)"))?;
    println!(
        "stubs: listening on {}; {} stub(s) from {}; logs from {}",
        listener.local_addr().unwrap_or(addr),
        stubs.stubs.len(),
        config.display(),
        log_dir.display()
    );
    for s in stubs.summaries() {
        println!("stubs:   {} {} -> {}", s.method, s.path, s.status);
    }
    axum::serve(listener, router(AppState::new(stubs, log_dir)))
        .with_graceful_shutdown(shutdown())
        .await
        .context("serving")?;
    Ok(())
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            eprintln!("stubs: cannot watch SIGTERM ({e}); stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    println!("stubs: stopping");
}
