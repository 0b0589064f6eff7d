//! Live pull progress: what a node's engine says of each layer while it pulls, summed per
//! image (bytes downloaded of the bytes the node lacks) and pushed to watchers at most
//! once a second per image. Pushed, not recorded: a pull writes one event when it starts
//! and one when it ends, never a row per update (see `Store::push_pull`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::store::{PullProgress, Store};

/// What a node's engine says of one layer of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerUpdate {
    pub layer: String,
    pub phase: LayerPhase,
    /// Bytes of this phase done and in all (0 when the engine does not say).
    pub current: u64,
    pub total: u64,
}

/// Where a layer is; phases only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LayerPhase {
    /// Listed, not started.
    #[default]
    Waiting,
    Downloading,
    /// Downloaded and checked.
    Downloaded,
    Extracting,
    /// In the node's layer store.
    Done,
    /// The node held it already: nothing travels.
    Present,
}

impl LayerPhase {
    /// The phase a Docker pull's `status` names (the words of its progress protocol);
    /// none for an image-level status (`Pulling from …`, `Digest: …`).
    pub fn from_docker(status: &str) -> Option<LayerPhase> {
        Some(match status {
            "Pulling fs layer" | "Waiting" => LayerPhase::Waiting,
            "Downloading" => LayerPhase::Downloading,
            "Verifying Checksum" | "Download complete" => LayerPhase::Downloaded,
            "Extracting" => LayerPhase::Extracting,
            "Pull complete" => LayerPhase::Done,
            "Already exists" => LayerPhase::Present,
            _ => return None,
        })
    }
}

#[derive(Debug, Default)]
struct Layer {
    phase: LayerPhase,
    size: u64,
    downloaded: u64,
}

/// One image's layers, summed.
#[derive(Debug, Default)]
pub struct PullTally {
    layers: BTreeMap<String, Layer>,
}

/// A tally's sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sums {
    /// Bytes downloaded of `total` (the layers the node lacks, as far as known).
    pub done: u64,
    pub total: u64,
    /// Layers in the node, of all the image's layers seen.
    pub layers_done: u32,
    pub layers: u32,
    /// Layers the node did not hold already (the ones that travel).
    pub fetched: u32,
}

impl PullTally {
    pub fn update(&mut self, u: &LayerUpdate) {
        let l = self.layers.entry(u.layer.clone()).or_default();
        if u.phase < l.phase {
            return; // a late line of an earlier phase
        }
        l.phase = u.phase;
        match u.phase {
            LayerPhase::Downloading => {
                l.size = l.size.max(u.total);
                l.downloaded = u.current.min(l.size.max(u.current));
            }
            // Extracting's numbers count the unpacked bytes, not the download.
            LayerPhase::Downloaded | LayerPhase::Extracting | LayerPhase::Done => {
                l.downloaded = l.size;
            }
            LayerPhase::Waiting | LayerPhase::Present => {}
        }
    }

    pub fn sums(&self) -> Sums {
        let mut s = Sums {
            done: 0,
            total: 0,
            layers_done: 0,
            layers: 0,
            fetched: 0,
        };
        for l in self.layers.values() {
            s.layers += 1;
            if matches!(l.phase, LayerPhase::Done | LayerPhase::Present) {
                s.layers_done += 1;
            }
            if l.phase != LayerPhase::Present {
                s.fetched += 1;
                s.done += l.downloaded;
                s.total += l.size;
            }
        }
        s
    }
}

/// At most one update per `every`; the first always passes.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Throttle { every, last: None }
    }

    pub fn due(&mut self, now: Instant) -> bool {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

/// Where pulls are reported: the store's push to watchers (this instance's and, on
/// PostgreSQL, every instance's).
#[derive(Clone)]
pub struct PullFeed {
    store: Store,
}

impl PullFeed {
    pub fn new(store: Store) -> Self {
        PullFeed { store }
    }

    /// A report of one image's pull into `pod` of env `env_id`.
    pub fn reporter(&self, env_id: &str, pod: &str, image: &str) -> PullReporter {
        PullReporter {
            feed: self.clone(),
            tally: PullTally::default(),
            throttle: Throttle::new(Duration::from_secs(1)),
            env_id: env_id.to_string(),
            pod: pod.to_string(),
            image: image.to_string(),
        }
    }
}

/// One image's pull as it goes: layer lines in, a push at most once a second out.
pub struct PullReporter {
    feed: PullFeed,
    tally: PullTally,
    throttle: Throttle,
    env_id: String,
    pod: String,
    image: String,
}

impl PullReporter {
    pub async fn layer(&mut self, u: &LayerUpdate) {
        self.tally.update(u);
        if self.throttle.due(Instant::now()) {
            self.push(false).await;
        }
    }

    /// The last push: the pull ended (done or failed); returns the sums.
    pub async fn finish(&mut self) -> Sums {
        self.push(true).await;
        self.tally.sums()
    }

    async fn push(&self, finished: bool) {
        let s = self.tally.sums();
        let p = PullProgress {
            env_id: self.env_id.clone(),
            pod: self.pod.clone(),
            image: self.image.clone(),
            done: s.done,
            total: s.total,
            layers_done: s.layers_done,
            layers: s.layers,
            finished,
        };
        self.feed.store.push_pull(&p).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(layer: &str, phase: LayerPhase, current: u64, total: u64) -> LayerUpdate {
        LayerUpdate {
            layer: layer.into(),
            phase,
            current,
            total,
        }
    }

    #[test]
    fn sums_bytes_of_the_layers_that_travel() {
        use LayerPhase::*;
        let mut t = PullTally::default();
        t.update(&up("base", Present, 0, 0));
        t.update(&up("a", Waiting, 0, 0));
        t.update(&up("b", Waiting, 0, 0));
        t.update(&up("a", Downloading, 100, 300));
        t.update(&up("b", Downloading, 50, 91));
        let s = t.sums();
        assert_eq!((s.done, s.total, s.layers_done, s.layers), (150, 391, 1, 3));
        t.update(&up("a", Downloaded, 0, 0));
        // Extracting's numbers are unpacked bytes: the download stays whole.
        t.update(&up("a", Extracting, 7, 9000));
        // A late Downloading line of a layer already further on changes nothing.
        t.update(&up("a", Downloading, 10, 300));
        assert_eq!(t.sums().done, 350);
        t.update(&up("a", Done, 0, 0));
        t.update(&up("b", Done, 0, 0));
        let s = t.sums();
        assert_eq!((s.done, s.total, s.layers_done, s.layers), (391, 391, 3, 3));
        assert_eq!(s.fetched, 2);
    }

    #[test]
    fn reads_dockers_status_words() {
        assert_eq!(
            LayerPhase::from_docker("Downloading"),
            Some(LayerPhase::Downloading)
        );
        assert_eq!(
            LayerPhase::from_docker("Already exists"),
            Some(LayerPhase::Present)
        );
        assert_eq!(LayerPhase::from_docker("Digest: sha256:abc"), None);
    }

    #[test]
    fn passes_one_update_a_second() {
        let mut th = Throttle::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert!(th.due(t0));
        assert!(!th.due(t0 + Duration::from_millis(400)));
        assert!(!th.due(t0 + Duration::from_millis(999)));
        assert!(th.due(t0 + Duration::from_millis(1000)));
        assert!(!th.due(t0 + Duration::from_millis(1500)));
        assert!(th.due(t0 + Duration::from_millis(2100)));
    }
}
