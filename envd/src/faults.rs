//! Fault injection for crash-safety tests: `ENVD_ABORT_AT=<step>` makes envd abort (as a
//! SIGKILL would) when the engine is about to act on that recorded step, and
//! `ENVD_ABORT_AT=<step>+` once the step has acted but before it is recorded as done —
//! the two windows a crash can hit.

pub fn maybe_abort(step: &str) {
    abort_if(step, false);
}

pub fn maybe_abort_after(step: &str) {
    abort_if(step, true);
}

fn abort_if(step: &str, after: bool) {
    if let Ok(at) = std::env::var("ENVD_ABORT_AT") {
        let (name, plus) = match at.strip_suffix('+') {
            Some(n) => (n, true),
            None => (at.as_str(), false),
        };
        if name == step && plus == after {
            eprintln!("envd: ENVD_ABORT_AT={at}: aborting");
            std::process::abort();
        }
    }
}

/// Every point `ENVD_ABORT_AT` accepts, in the order an env passes them.
pub const ABORT_POINTS: [&str; 12] = [
    "node",
    "node+",
    "inner-engine",
    "inner-engine+",
    "network",
    "network+",
    "pods",
    "pods+",
    "collecting",
    "collecting+",
    "freeing",
    "freeing+",
];
