//! Node liveness: leader soft state fed by heartbeats (docs/ARCHITECTURE.md).
//! Never replicated: a new leader starts with every node "just seen" (a
//! full grace period), so a leader change never declares healthy nodes down.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::jobs::Capacity;
use crate::raft::NodeId;

/// What the latest heartbeat of a node said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sighting {
    /// When it arrived (this process's monotonic clock).
    pub at: Instant,
    /// The node's labels.
    pub labels: BTreeMap<String, String>,
    /// What it offers.
    pub capacity: Capacity,
}

/// Heartbeats received while this node leads (or follows: harmless).
#[derive(Debug, Default)]
pub struct Liveness {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashMap<NodeId, Sighting>,
    /// Start of the current grace period (leadership start).
    grace_from: Option<Instant>,
}

impl Liveness {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a heartbeat.
    pub fn heartbeat(&self, node: NodeId, labels: BTreeMap<String, String>, capacity: Capacity) {
        let sighting = Sighting {
            at: Instant::now(),
            labels,
            capacity,
        };
        self.inner().seen.insert(node, sighting);
    }

    /// Starts a grace period: called when this node becomes leader, so a
    /// node is judged only on heartbeats it had the chance to send here.
    pub fn start_grace(&self, now: Instant) {
        self.inner().grace_from = Some(now);
    }

    /// The latest heartbeat of `node`.
    pub fn sighting(&self, node: NodeId) -> Option<Sighting> {
        self.inner().seen.get(&node).cloned()
    }

    /// Every node heard from, with its latest heartbeat.
    pub fn sightings(&self) -> Vec<(NodeId, Sighting)> {
        self.inner()
            .seen
            .iter()
            .map(|(id, s)| (*id, s.clone()))
            .collect()
    }

    /// Whether `node` counts as alive at `now`: heard from within `timeout`,
    /// or the grace period that started with this leadership has not run out.
    pub fn is_alive(&self, node: NodeId, now: Instant, timeout: Duration) -> bool {
        let inner = self.inner();
        let last = match (inner.seen.get(&node).map(|s| s.at), inner.grace_from) {
            (Some(seen), Some(grace)) => seen.max(grace),
            (Some(seen), None) => seen,
            (None, Some(grace)) => grace,
            (None, None) => return false,
        };
        now.saturating_duration_since(last) < timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_within_timeout_or_grace() {
        let live = Liveness::default();
        let t = Duration::from_secs(10);
        let now = Instant::now();
        assert!(!live.is_alive(1, now, t));
        live.start_grace(now);
        assert!(live.is_alive(1, now + Duration::from_secs(9), t));
        assert!(!live.is_alive(1, now + Duration::from_secs(11), t));
        live.heartbeat(2, BTreeMap::new(), Capacity::default());
        assert!(live.is_alive(2, Instant::now() + Duration::from_secs(5), t));
    }
}
