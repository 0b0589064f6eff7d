//! The lifecycle's values, typed: what is wanted of an env ([`Desired`]), where it is
//! ([`State`]), the step it is on ([`Step`]) and what its events record ([`EventKind`]).
//! Their text forms live here only: the store, events, fault points, `/metrics` and the
//! CLI all go through `as_str`/`FromStr`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// Implements `as_str`, `FromStr`, `Display`, serde and `ALL` for a plain enum from one
/// table of (variant, text).
macro_rules! text_enum {
    ($ty:ident, $what:literal, { $($v:ident => $s:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$v),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($ty::$v => $s),+
                }
            }
        }

        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($s => Ok($ty::$v),)+
                    other => Err(Error::invalid(
                        "query",
                        $what,
                        format!(
                            "`{other}` is not a {}; use {}",
                            $what,
                            [$($s),+].join(", ")
                        ),
                    )),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($s),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $ty {}
    };
}

/// What is wanted of an env: kept running, or torn down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Desired {
    Running,
    Gone,
}

// `ready` is what the store has always held for a wanted env.
text_enum!(Desired, "desired state", { Running => "ready", Gone => "gone" });

/// Where an env is: `requested -> creating -> ready -> collecting -> freeing -> gone`, and
/// `failed` from any active state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Requested,
    Creating,
    Ready,
    Collecting,
    Freeing,
    Gone,
    Failed,
    /// Built and ready for a warm pool, owned by nobody yet: a create takes it.
    Pooled,
}

text_enum!(State, "state", {
    Requested => "requested",
    Creating => "creating",
    Ready => "ready",
    Collecting => "collecting",
    Freeing => "freeing",
    Gone => "gone",
    Failed => "failed",
    Pooled => "pooled",
});

impl State {
    /// Gone and failed envs hold nothing on the host (unless kept on failure).
    pub fn is_final(self) -> bool {
        matches!(self, State::Gone | State::Failed)
    }

    /// Where a waiting client stops: the env is usable, or it ended.
    pub fn is_settled(self) -> bool {
        matches!(self, State::Ready | State::Gone | State::Failed)
    }
}

/// The step an env is on (recorded before it acts, so a crash shows where it stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    Requested,
    Lease,
    Node,
    InnerEngine,
    Network,
    Pods,
    /// Config files into a created container (a fault point; recorded as `pods`).
    Upload,
    /// A created container started (a fault point; recorded as `pods`).
    Start,
    CopyData,
    Ready,
    Deadline,
    Config,
    Collecting,
    Freeing,
    Gone,
    Failed,
}

text_enum!(Step, "step", {
    Requested => "requested",
    Lease => "lease",
    Node => "node",
    InnerEngine => "inner-engine",
    Network => "network",
    Pods => "pods",
    Upload => "upload",
    Start => "start",
    CopyData => "copy-data",
    Ready => "ready",
    Deadline => "deadline",
    Config => "config",
    Collecting => "collecting",
    Freeing => "freeing",
    Gone => "gone",
    Failed => "failed",
});

impl Step {
    /// The steps that act on the host, in the order an env passes them: each is a fault
    /// point before it acts and (`+`) after it acted but before it is recorded.
    pub const ACTING: [Step; 8] = [
        Step::Node,
        Step::InnerEngine,
        Step::Network,
        Step::Pods,
        Step::Upload,
        Step::Start,
        Step::Collecting,
        Step::Freeing,
    ];

    /// The step an env shows while this one acts: a pod's uploads and starts are `pods`.
    pub fn shown(self) -> Step {
        match self {
            Step::Upload | Step::Start => Step::Pods,
            s => s,
        }
    }

    /// Teardown steps come after every create step.
    pub fn is_teardown(self) -> bool {
        matches!(self, Step::Collecting | Step::Freeing | Step::Gone)
    }
}

/// Where a config change (one generation of an env's answers) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeStatus {
    /// Recorded; the env's loop applies it.
    Pending,
    Applied,
    /// A pod did not take it: the answers before are recorded again and being applied.
    RollingBack,
    RolledBack,
}

text_enum!(ChangeStatus, "change status", {
    Pending => "pending",
    Applied => "applied",
    RollingBack => "rolling-back",
    RolledBack => "rolled-back",
});

impl ChangeStatus {
    /// The loop still has work for it.
    pub fn is_open(self) -> bool {
        matches!(self, ChangeStatus::Pending | ChangeStatus::RollingBack)
    }
}

/// What an event records; pod events carry the pod beside the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Requested,
    Clone,
    Lease,
    Node,
    InnerEngine,
    Network,
    Pods,
    /// A pod's containers started.
    Started,
    /// The env (no pod) or one pod answers.
    Ready,
    CopyData,
    Config,
    Extend,
    Expiring,
    Expired,
    Failed,
    Collecting,
    Freeing,
    /// Built for a warm pool (the duration is the refill's).
    Pooled,
    /// Taken from a warm pool by a create.
    Claimed,
    /// Built for its create: no warm pool had one (the message says why).
    Cold,
}

text_enum!(EventKind, "event kind", {
    Requested => "requested",
    Clone => "clone",
    Lease => "lease",
    Node => "node",
    InnerEngine => "inner-engine",
    Network => "network",
    Pods => "pods",
    Started => "started",
    Ready => "ready",
    CopyData => "copy-data",
    Config => "config",
    Extend => "extend",
    Expiring => "expiring",
    Expired => "expired",
    Failed => "failed",
    Collecting => "collecting",
    Freeing => "freeing",
    Pooled => "pooled",
    Claimed => "claimed",
    Cold => "cold",
});

impl From<Step> for EventKind {
    fn from(s: Step) -> Self {
        match s {
            Step::Requested => EventKind::Requested,
            Step::Lease => EventKind::Lease,
            Step::Node => EventKind::Node,
            Step::InnerEngine => EventKind::InnerEngine,
            Step::Network => EventKind::Network,
            Step::Pods | Step::Upload | Step::Start => EventKind::Pods,
            Step::CopyData => EventKind::CopyData,
            Step::Ready => EventKind::Ready,
            Step::Config => EventKind::Config,
            Step::Collecting => EventKind::Collecting,
            Step::Freeing => EventKind::Freeing,
            Step::Deadline | Step::Gone | Step::Failed => EventKind::Failed,
        }
    }
}

/// An event's kind and pod, stored as one text: `ready`, `ready:mysql`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStep {
    pub kind: EventKind,
    pub pod: Option<String>,
}

impl EventStep {
    pub fn env(kind: EventKind) -> Self {
        EventStep { kind, pod: None }
    }

    pub fn pod(kind: EventKind, pod: &str) -> Self {
        EventStep {
            kind,
            pod: Some(pod.to_string()),
        }
    }
}

impl From<EventKind> for EventStep {
    fn from(kind: EventKind) -> Self {
        EventStep::env(kind)
    }
}

impl From<Step> for EventStep {
    fn from(s: Step) -> Self {
        EventStep::env(s.into())
    }
}

impl fmt::Display for EventStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pod {
            Some(p) => write!(f, "{}:{p}", self.kind),
            None => f.write_str(self.kind.as_str()),
        }
    }
}

impl FromStr for EventStep {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (kind, pod) = match s.split_once(':') {
            Some((k, p)) => (k, Some(p.to_string())),
            None => (s, None),
        };
        Ok(EventStep {
            kind: kind.parse()?,
            pod,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_through_its_text() {
        for s in State::ALL {
            assert_eq!(s.as_str().parse::<State>().unwrap(), *s);
        }
        for s in Step::ALL {
            assert_eq!(s.as_str().parse::<Step>().unwrap(), *s);
        }
        for d in Desired::ALL {
            assert_eq!(d.as_str().parse::<Desired>().unwrap(), *d);
        }
        for c in ChangeStatus::ALL {
            assert_eq!(c.as_str().parse::<ChangeStatus>().unwrap(), *c);
        }
        for k in EventKind::ALL {
            let e = EventStep::pod(*k, "mysql");
            assert_eq!(e.to_string().parse::<EventStep>().unwrap(), e);
        }
        assert_eq!(
            "ready:redis".parse::<EventStep>().unwrap(),
            EventStep::pod(EventKind::Ready, "redis")
        );
    }

    #[test]
    fn unknown_text_names_the_choices() {
        let e = "sleeping".parse::<State>().unwrap_err().to_string();
        assert!(e.contains("requested, creating"), "{e}");
    }
}
