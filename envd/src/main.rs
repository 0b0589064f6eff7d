//! `envd`: the daemon (`envd serve`) and its client verbs, in one binary.

mod cli;
mod serve;

use clap::{Parser, Subcommand};

/// Ephemeral test environments: a dind node with a fixed IP, your pods inside, logs kept.
#[derive(Parser)]
#[command(name = "envd", version, propagate_version = true)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon: API, engine and scheduled jobs.
    Serve(serve::ServeArgs),
    /// Check what envd needs on this host, one line each.
    Doctor(serve::ServeArgs),
    #[command(flatten)]
    Client(cli::ClientCmd),
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("envd: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    rt.block_on(async {
        match args.cmd {
            Cmd::Serve(a) => match serve::serve(a).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("envd serve: {e:#}");
                    std::process::ExitCode::from(1)
                }
            },
            Cmd::Doctor(a) => serve::doctor(a).await,
            Cmd::Client(c) => cli::run(c).await,
        }
    })
}
