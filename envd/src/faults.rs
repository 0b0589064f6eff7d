//! Fault injection for crash-safety tests: `ENVD_ABORT_AT=<step>` makes envd abort (as a
//! SIGKILL would) when the engine is about to act on that recorded step.

pub fn maybe_abort(step: &str) {
    if let Ok(at) = std::env::var("ENVD_ABORT_AT")
        && at == step
    {
        eprintln!("envd: ENVD_ABORT_AT={step}: aborting");
        std::process::abort();
    }
}
