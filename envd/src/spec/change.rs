//! `on_change`: what a running pod does when `envd config set` changes its rendered files.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `on_change: restart` (the default) or `on_change: { signal: HUP }`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(try_from = "Raw", into = "Raw")]
pub enum OnChange {
    /// Restart the pod's containers; the pause container keeps the pod's IP and ports.
    #[default]
    Restart,
    /// Send this signal to the containers whose files changed (for servers that reload on
    /// e.g. HUP); no restart.
    Signal(String),
}

/// The YAML forms: a word, or a one-key map (YAML tags would be serde's default for enums).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum Raw {
    Word(String),
    Map(BTreeMap<String, String>),
}

impl TryFrom<Raw> for OnChange {
    type Error = String;
    fn try_from(raw: Raw) -> std::result::Result<Self, String> {
        match raw {
            Raw::Word(w) if w == "restart" => Ok(OnChange::Restart),
            Raw::Map(m) if m.len() == 1 && m.contains_key("signal") => {
                Ok(OnChange::Signal(m["signal"].clone()))
            }
            _ => Err("write `on_change: restart` or `on_change: { signal: HUP }`".into()),
        }
    }
}

impl From<OnChange> for Raw {
    fn from(c: OnChange) -> Raw {
        match c {
            OnChange::Restart => Raw::Word("restart".into()),
            OnChange::Signal(s) => Raw::Map(BTreeMap::from([("signal".to_string(), s)])),
        }
    }
}

/// Signals a server may reasonably reload on; Docker takes them with or without `SIG`.
const SIGNALS: &[&str] = &["HUP", "USR1", "USR2", "INT", "QUIT", "TERM", "WINCH"];

impl OnChange {
    pub fn check(&self, src: &str, field: &str) -> Result<()> {
        if let OnChange::Signal(s) = self
            && !SIGNALS.contains(&s.trim_start_matches("SIG"))
        {
            return Err(Error::invalid(
                src,
                format!("{field}.signal"),
                format!(
                    "`{s}` is not a signal envd sends; use one of {}",
                    SIGNALS.join(", ")
                ),
            ));
        }
        Ok(())
    }
}
