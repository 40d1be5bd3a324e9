//! What the leader knows about each follower's log, and the flow control
//! that bounds what it sends (after raft-rs `tracker/progress.rs` and
//! `tracker/inflights.rs`).
//!
//! A follower is in one of three states:
//! - `Probe`: we do not know where its log ends; send one Append at a time
//!   and wait for the answer (or a heartbeat response) before the next.
//! - `Replicate`: its log matched at `matched`; stream Appends optimistically
//!   (advancing `next` on send), at most `max_inflight` unacknowledged.
//! - `Snapshot`: its next entry is compacted away; stream the snapshot in
//!   chunks, stop-and-wait, and send nothing else until it is installed.

use std::collections::VecDeque;
use std::sync::Arc;

use super::types::{Index, SnapshotMeta};

/// The last indexes of Append messages sent but not yet acknowledged, oldest
/// first. Bounded by the in-flight window.
#[derive(Debug, Clone)]
pub(crate) struct Inflights {
    cap: usize,
    queue: VecDeque<Index>,
}

impl Inflights {
    pub fn new(cap: usize) -> Inflights {
        debug_assert!(cap > 0);
        Inflights {
            cap,
            queue: VecDeque::with_capacity(cap.min(64)),
        }
    }

    pub fn full(&self) -> bool {
        self.queue.len() >= self.cap
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Records an Append whose last entry is `last`.
    pub fn add(&mut self, last: Index) {
        assert!(
            !self.full(),
            "raft progress invariant: inflight window overflow"
        );
        assert!(
            self.queue.back().is_none_or(|&b| b <= last),
            "raft progress invariant: inflight append ending at {last} sent after a later one"
        );
        self.queue.push_back(last);
    }

    /// Frees every message whose last index is `<= index` (acknowledged).
    pub fn free_to(&mut self, index: Index) {
        while self.queue.front().is_some_and(|&f| f <= index) {
            self.queue.pop_front();
        }
    }

    pub fn reset(&mut self) {
        self.queue.clear();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProgressState {
    Probe,
    Replicate,
    Snapshot,
}

/// An outgoing snapshot transfer: what is being sent and where we are.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotTransfer {
    pub meta: SnapshotMeta,
    pub data: Arc<Vec<u8>>,
    /// Offset of the chunk currently outstanding (the follower acknowledged
    /// everything before it).
    pub offset: u64,
    /// Set when a chunk was acknowledged since the last heartbeat tick; if
    /// not, the outstanding chunk is sent again (it or its answer was lost).
    pub progressed: bool,
}

/// The leader's view of one follower (or learner).
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    /// Highest index known to match the leader's log.
    pub matched: Index,
    /// Next index to send.
    pub next: Index,
    pub state: ProgressState,
    /// Probe only: an Append is outstanding, wait for its answer.
    pub probe_sent: bool,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    pub inflights: Inflights,
    /// Snapshot only: the transfer in progress.
    pub snapshot: Option<SnapshotTransfer>,
    /// Highest commit index sent to it (so a lagging commit is pushed out
    /// without waiting for the next heartbeat).
    pub sent_commit: Index,
}

impl Progress {
    pub fn new(next: Index, max_inflight: usize) -> Progress {
        Progress {
            matched: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            recent_active: false,
            inflights: Inflights::new(max_inflight),
            snapshot: None,
            sent_commit: 0,
        }
    }

    /// True if nothing more may be sent right now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }

    /// The always-on O(1) invariant of a progress: the next index to send
    /// is above the match index. Every change below keeps it whatever the
    /// follower answers (answers beyond the leader's log are dropped
    /// before they get here), so a failure is a bug in the core.
    fn check(&self) {
        assert!(
            self.matched < self.next,
            "raft progress invariant: match {} not below next {}",
            self.matched,
            self.next
        );
    }

    pub fn become_probe(&mut self) {
        // Leaving Snapshot: the follower has at least the snapshot's index.
        let floor = match (&self.state, &self.snapshot) {
            (ProgressState::Snapshot, Some(t)) => t.meta.index,
            _ => 0,
        };
        self.state = ProgressState::Probe;
        self.next = self.matched.max(floor) + 1;
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot = None;
        self.check();
    }

    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next = self.matched + 1;
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot = None;
        self.check();
    }

    pub fn become_snapshot(&mut self, meta: SnapshotMeta, data: Arc<Vec<u8>>) {
        self.state = ProgressState::Snapshot;
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot = Some(SnapshotTransfer {
            meta,
            data,
            offset: 0,
            progressed: false,
        });
    }

    /// The follower acknowledged everything up to `index`. Returns true if
    /// that was news.
    pub fn maybe_update(&mut self, index: Index) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index + 1);
        self.check();
        updated
    }

    /// Records that an Append ending at `last` was sent.
    pub fn sent_entries(&mut self, last: Index) {
        match self.state {
            ProgressState::Replicate => {
                self.next = last + 1;
                self.inflights.add(last);
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => debug_assert!(false, "append sent in snapshot state"),
        }
        self.check();
    }

    /// The follower rejected an Append with `prev_index == rejected`;
    /// `match_hint` is the highest index that may still match (from the fast
    /// back-off hints). Returns false if the rejection is stale.
    pub fn maybe_decr_to(&mut self, rejected: Index, match_hint: Index) -> bool {
        match self.state {
            ProgressState::Replicate => {
                if rejected <= self.matched {
                    return false;
                }
                self.become_probe();
                self.next =
                    (match_hint + 1).clamp(self.matched + 1, rejected.max(self.matched + 1));
                self.check();
                true
            }
            ProgressState::Probe => {
                if self.next.checked_sub(1) != Some(rejected) {
                    return false;
                }
                self.next = (match_hint + 1).min(rejected).max(self.matched + 1);
                self.probe_sent = false;
                self.check();
                true
            }
            ProgressState::Snapshot => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_window_fills_and_frees() {
        let mut w = Inflights::new(3);
        w.add(5);
        w.add(7);
        w.add(9);
        assert!(w.full());
        w.free_to(7);
        assert_eq!(w.len(), 1);
        assert!(!w.full());
        w.free_to(100);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn replicate_rejection_falls_back_to_probe_at_the_hint() {
        let mut p = Progress::new(11, 4);
        p.maybe_update(5);
        p.become_replicate();
        p.sent_entries(8);
        p.sent_entries(10);
        assert!(!p.maybe_decr_to(4, 0), "stale: below match");
        assert!(p.maybe_decr_to(8, 6));
        assert_eq!(p.state, ProgressState::Probe);
        assert_eq!(p.next, 7);
    }

    #[test]
    fn probe_rejection_must_match_next() {
        let mut p = Progress::new(11, 4);
        assert!(!p.maybe_decr_to(7, 0), "not the outstanding probe");
        assert!(p.maybe_decr_to(10, 3));
        assert_eq!(p.next, 4);
        assert!(p.maybe_decr_to(3, 0));
        assert_eq!(p.next, 1);
    }
}
