//! One upstream fetch per blob at a time: a node asking for a blob another node's ask is
//! fetching waits for that fetch and is then served from disk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Default)]
pub struct Flights {
    gates: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// Held while fetching one blob; forgets its gate when nobody else waits at it.
pub struct Flight<'a> {
    flights: &'a Flights,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Flights {
    fn gates(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AsyncMutex<()>>>> {
        self.gates.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until no other ask fetches `key`, then holds it.
    pub async fn enter(&self, key: &str) -> Flight<'_> {
        let gate = Arc::clone(self.gates().entry(key.to_string()).or_default());
        let guard = gate.lock_owned().await;
        Flight {
            flights: self,
            key: key.to_string(),
            guard: Some(guard),
        }
    }

    /// How many asks hold or wait for `key`.
    pub fn waiting(&self, key: &str) -> usize {
        self.gates()
            .get(key)
            .map_or(0, |g| Arc::strong_count(g).saturating_sub(1))
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut gates = self.flights.gates();
        // Only the map holds the gate: nobody waits (a new ask clones it under this lock).
        if gates
            .get(&self.key)
            .is_some_and(|g| Arc::strong_count(g) == 1)
        {
            gates.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_ask_waits_for_the_first() {
        let f = Arc::new(Flights::default());
        let first = f.enter("d").await;
        assert_eq!(f.waiting("d"), 1);
        let f2 = Arc::clone(&f);
        let second = tokio::spawn(async move {
            let _g = f2.enter("d").await;
        });
        while f.waiting("d") < 2 {
            tokio::task::yield_now().await;
        }
        assert!(!second.is_finished());
        drop(first);
        second.await.unwrap();
        assert_eq!(f.waiting("d"), 0, "the gate is forgotten");
    }
}
