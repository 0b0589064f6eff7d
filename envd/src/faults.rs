//! Fault injection for crash-safety tests: `ENVD_ABORT_AT=<step>` makes envd abort (as a
//! SIGKILL would) when the engine is about to act on that step, and
//! `ENVD_ABORT_AT=<step>+` once the step has acted but before it is recorded as done —
//! the two windows a crash can hit.

use crate::lifecycle::Step;

pub fn maybe_abort(step: Step) {
    abort_if(step, false);
}

pub fn maybe_abort_after(step: Step) {
    abort_if(step, true);
}

fn abort_if(step: Step, after: bool) {
    if let Ok(at) = std::env::var("ENVD_ABORT_AT") {
        let (name, plus) = match at.strip_suffix('+') {
            Some(n) => (n, true),
            None => (at.as_str(), false),
        };
        if name == step.as_str() && plus == after {
            eprintln!("envd: ENVD_ABORT_AT={at}: aborting");
            std::process::abort();
        }
    }
}

/// Every point `ENVD_ABORT_AT` accepts, in the order an env passes them: each acting
/// step, before (`node`) and after (`node+`), then a config change's (`config`).
pub fn abort_points() -> Vec<String> {
    Step::ACTING
        .iter()
        .chain(&[Step::Config])
        .flat_map(|s| [s.as_str().to_string(), format!("{s}+")])
        .collect()
}

/// When a point is hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Create,
    /// Applying a config change of a ready env.
    Config,
    Teardown,
}

pub fn phase_of(point: &str) -> Phase {
    match point.trim_end_matches('+').parse::<Step>() {
        Ok(Step::Config) => Phase::Config,
        Ok(s) if s.is_teardown() => Phase::Teardown,
        _ => Phase::Create,
    }
}

#[cfg(test)]
mod tests {
    use super::{Phase, abort_points, phase_of};

    #[test]
    fn points_come_from_the_steps_create_first() {
        let points = abort_points();
        assert_eq!(points[0], "node");
        assert_eq!(points[1], "node+");
        assert!(points.contains(&"upload".to_string()));
        let phases: Vec<Phase> = points.iter().map(|p| phase_of(p)).collect();
        let first_teardown = phases.iter().position(|p| *p == Phase::Teardown).unwrap();
        assert!(phases[..first_teardown].iter().all(|p| *p == Phase::Create));
        assert_eq!(points[first_teardown], "collecting");
        assert_eq!(phases.last(), Some(&Phase::Config));
    }
}
