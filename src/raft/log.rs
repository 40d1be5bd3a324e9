//! The in-memory Raft log: the entries after the compaction point, which of
//! them are durable ("stable") and which are not yet, the commit index, and the
//! latest snapshot (kept to send to followers that fall behind the log).
//!
//! Index layout:
//! ```text
//!   ... compacted ... | offset | offset+1 ............................ last
//!                     (term    |<------------- entries --------------->|
//!                      known)  |<--- stable (durable) --->|<-unstable->|
//! ```
//! The entry at `offset` itself is gone (or is the snapshot's last entry);
//! only its term is remembered so that an Append can use it as `prev`.

use std::sync::Arc;

use super::types::{Entry, Index, SnapshotMeta, Term};

/// The log above the compaction point. Invariants (the O(1) ones checked
/// after every change in every build, the rest by [`RaftLog::check`] in
/// debug builds):
/// - `entries[i].index == offset + 1 + i`, terms non-decreasing, all
///   `>= offset_term`;
/// - `offset <= committed <= last_index()`;
/// - `persisted <= last_index()`, `unstable_from <= last_index() + 1`.
#[derive(Debug)]
pub(crate) struct RaftLog {
    offset: Index,
    offset_term: Term,
    entries: Vec<Entry>,
    /// Highest index whose entry (and everything before it) is durable, as
    /// confirmed by `advance`. Drops back on a conflict truncation.
    persisted: Index,
    /// First index not yet handed out in a Ready for persistence.
    unstable_from: Index,
    /// Highest index known committed.
    pub committed: Index,
    /// Latest snapshot this node has (taken locally or received), kept so a
    /// leader can stream it. `None` only while nothing was ever compacted.
    pub snapshot: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
}

impl RaftLog {
    /// A log whose compaction point is `(offset, offset_term)`, holding the
    /// durable `entries` (which must start at `offset + 1`).
    pub fn new(
        offset: Index,
        offset_term: Term,
        entries: Vec<Entry>,
        committed: Index,
        snapshot: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
    ) -> RaftLog {
        let last = offset + entries.len() as u64;
        let log = RaftLog {
            offset,
            offset_term,
            entries,
            persisted: last,
            unstable_from: last + 1,
            committed,
            snapshot,
        };
        log.check();
        log
    }

    /// The O(1) invariants, checked in every build after each change: the
    /// core maintains them whatever peers send (input that would break
    /// them is refused earlier), so a failure is a bug in the core, and
    /// stopping beats persisting or acknowledging a corrupt log.
    fn check_bounds(&self) {
        let last = self.last_index();
        assert!(
            self.offset <= self.committed,
            "raft log invariant: commit {} below the compaction point {}",
            self.committed,
            self.offset
        );
        assert!(
            self.committed <= last,
            "raft log invariant: commit {} beyond the last index {last}",
            self.committed
        );
        assert!(
            self.persisted <= last,
            "raft log invariant: persisted {} beyond the last index {last}",
            self.persisted
        );
        assert!(
            self.unstable_from <= last + 1,
            "raft log invariant: unstable part starts at {}, after the last index {last} + 1",
            self.unstable_from
        );
    }

    /// Appends one entry, which must continue the log: index `last + 1`,
    /// term at least the last term (checked in every build; O(1)).
    fn push(&mut self, e: Entry) {
        let (last, last_term) = (self.last_index(), self.last_term());
        assert!(
            e.index == last + 1,
            "raft log invariant: appending index {} after last index {last}",
            e.index
        );
        assert!(
            e.term >= last_term,
            "raft log invariant: appending term {} after term {last_term}",
            e.term
        );
        self.entries.push(e);
    }

    /// Check of every structural invariant: the O(1) ones always, the
    /// O(n) walk over the entries in debug builds only.
    pub fn check(&self) {
        self.check_bounds();
        if cfg!(debug_assertions) {
            let mut prev_term = self.offset_term;
            for (i, e) in self.entries.iter().enumerate() {
                assert_eq!(e.index, self.offset + 1 + i as u64, "log not contiguous");
                assert!(e.term >= prev_term, "log terms decrease");
                prev_term = e.term;
            }
        }
    }

    /// First index still held in memory.
    pub fn first_index(&self) -> Index {
        self.offset + 1
    }

    pub fn last_index(&self) -> Index {
        self.offset + self.entries.len() as u64
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.offset_term, |e| e.term)
    }

    /// Highest durable index (what this node may count as its own match).
    pub fn persisted(&self) -> Index {
        self.persisted
    }

    /// The term of the entry at `index`, if known (the compaction point's
    /// term is known; entries below it are not).
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.offset {
            return Some(self.offset_term);
        }
        if index < self.offset || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.offset - 1) as usize].term)
    }

    pub fn entry(&self, index: Index) -> Option<&Entry> {
        if index <= self.offset || index > self.last_index() {
            return None;
        }
        Some(&self.entries[(index - self.offset - 1) as usize])
    }

    /// True if `(index, term)` is in this log (Raft's log matching check).
    pub fn matches(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// True if a candidate whose log ends at `(last_index, last_term)` is at
    /// least as up to date as this log (Raft §5.4.1).
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Entries in `[lo, hi]` (clamped to the log), at most `max_bytes` of them
    /// by [`Entry::size_hint`] but always at least one if any exist.
    pub fn slice(&self, lo: Index, hi: Index, max_bytes: usize) -> Vec<Entry> {
        let lo = lo.max(self.first_index());
        let hi = hi.min(self.last_index());
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut i = lo;
        while i <= hi {
            let Some(e) = self.entry(i) else { break };
            bytes = bytes.saturating_add(e.size_hint());
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
            i += 1;
        }
        out
    }

    /// Appends entries that continue this log exactly (leader path: the
    /// core made them, so a gap is a bug and stops the node).
    pub fn append(&mut self, entries: &[Entry]) {
        for e in entries {
            self.push(e.clone());
        }
        self.check_bounds();
    }

    /// Follower path: `entries` follow `prev` which is known to match. Skips
    /// entries already present, truncates at the first conflict and appends
    /// the rest. Returns `Err(index)` without changing anything if the
    /// conflict is at or below the commit index (a peer contradicting a
    /// committed entry: impossible in a correct cluster, so refuse it).
    /// On success, returns the index from which entries were replaced, if
    /// any existing entry was.
    pub fn append_after_match(&mut self, entries: &[Entry]) -> Result<Option<Index>, Index> {
        let conflict = entries
            .iter()
            .find(|e| !self.matches(e.index, e.term))
            .map(|e| e.index);
        let Some(conflict) = conflict else {
            return Ok(None);
        };
        let replaced = (conflict <= self.last_index()).then_some(conflict);
        if conflict <= self.committed {
            return Err(conflict);
        }
        self.truncate_from(conflict);
        let start = entries
            .iter()
            .position(|e| e.index == conflict)
            .unwrap_or(0);
        for e in &entries[start..] {
            if e.index != self.last_index() + 1 || e.term < self.last_term() {
                // Peer input, validated by the caller (`handle_append`);
                // stop defensively rather than panic on a message.
                debug_assert!(false, "append_after_match given a malformed batch");
                break;
            }
            self.push(e.clone());
        }
        self.check();
        Ok(replaced)
    }

    /// Drops entries at and after `index` (never committed ones).
    fn truncate_from(&mut self, index: Index) {
        assert!(
            index > self.committed,
            "raft log invariant: truncating from {index}, at or below commit {}",
            self.committed
        );
        assert!(
            index > self.offset,
            "raft log invariant: truncating from {index}, at or below the compaction point {}",
            self.offset
        );
        self.entries.truncate((index - self.offset - 1) as usize);
        self.persisted = self.persisted.min(index - 1);
        self.unstable_from = self.unstable_from.min(index);
        self.check_bounds();
    }

    /// Raises the commit index (never lowers it). Returns true if it moved.
    pub fn commit_to(&mut self, index: Index) -> bool {
        if index <= self.committed {
            return false;
        }
        assert!(
            index <= self.last_index(),
            "raft log invariant: commit {index} beyond the last index {}",
            self.last_index()
        );
        self.committed = index;
        true
    }

    /// The largest index `<= index` whose term is `<= term` (or the
    /// compaction point), with its term. Used for fast back-off: everything
    /// above the returned index can be skipped because its term is higher
    /// than the other side's at that position.
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Some(t) if t > term && i > self.offset => i -= 1,
                Some(t) => return (i, t),
                None => return (i, 0),
            }
        }
    }

    /// Entries not yet handed out for persistence.
    pub fn unstable_entries(&self) -> &[Entry] {
        if self.unstable_from > self.last_index() {
            return &[];
        }
        let from = self.unstable_from.max(self.first_index());
        &self.entries[(from - self.offset - 1) as usize..]
    }

    pub fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index()
    }

    /// Everything up to the last index was handed out in a Ready.
    pub fn mark_handed_out(&mut self) {
        self.unstable_from = self.last_index() + 1;
    }

    /// A Ready holding `batch` was persisted. If a conflict replaced a
    /// suffix of the batch after the Ready was taken, only the part that is
    /// still in the log counts (by log matching, if `(i, term)` still
    /// matches, so does everything before it).
    pub fn stable_to(&mut self, batch: &[Entry]) {
        if let Some(e) = batch.iter().rev().find(|e| self.matches(e.index, e.term)) {
            self.persisted = self.persisted.max(e.index);
        }
        self.check_bounds();
    }

    /// A snapshot was persisted: everything up to its index is durable.
    pub fn snapshot_persisted(&mut self, index: Index) {
        if index >= self.offset && index <= self.last_index() {
            self.persisted = self.persisted.max(index);
        }
    }

    /// Replaces the whole log with a snapshot received from the leader: the
    /// log is now empty after `meta.index`.
    pub fn restore(&mut self, meta: &SnapshotMeta, data: Arc<Vec<u8>>) {
        assert!(
            meta.index > self.committed,
            "raft log invariant: restoring snapshot {} would move commit {} back",
            meta.index,
            self.committed
        );
        self.offset = meta.index;
        self.offset_term = meta.term;
        self.entries.clear();
        self.committed = meta.index;
        // Nothing of the new log is durable until the Ready holding the
        // snapshot is persisted.
        self.persisted = self.persisted.min(meta.index.saturating_sub(1));
        self.unstable_from = meta.index + 1;
        self.snapshot = Some((meta.clone(), data));
        self.check();
    }

    /// Discards entries up to `index` (which must be at most `persisted`
    /// and committed), keeping its term as the new compaction point. Returns
    /// false if nothing changed.
    pub fn compact_to(&mut self, index: Index) -> bool {
        if index <= self.offset || index > self.persisted || index > self.committed {
            return false;
        }
        let Some(term) = self.term(index) else {
            return false;
        };
        let drop = (index - self.offset) as usize;
        self.entries.drain(..drop);
        self.offset = index;
        self.offset_term = term;
        self.check();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::Payload;

    fn ents(specs: &[(Index, Term)]) -> Vec<Entry> {
        specs
            .iter()
            .map(|&(index, term)| Entry {
                index,
                term,
                payload: Payload::Noop,
            })
            .collect()
    }

    #[test]
    fn conflict_truncates_the_suffix_and_appends() {
        let mut log = RaftLog::new(0, 0, ents(&[(1, 1), (2, 1), (3, 2), (4, 2)]), 1, None);
        let replaced = log.append_after_match(&ents(&[(2, 1), (3, 3), (4, 3), (5, 3)]));
        assert_eq!(replaced, Ok(Some(3)));
        assert_eq!(log.last_index(), 5);
        assert_eq!(log.term(2), Some(1));
        assert_eq!(log.term(3), Some(3));
        assert_eq!(
            log.persisted(),
            2,
            "the replaced suffix is no longer durable"
        );
        assert_eq!(log.unstable_entries().len(), 3);
    }

    #[test]
    fn conflict_below_commit_is_refused() {
        let mut log = RaftLog::new(0, 0, ents(&[(1, 1), (2, 1)]), 2, None);
        assert_eq!(log.append_after_match(&ents(&[(2, 2)])), Err(2));
        assert_eq!(log.term(2), Some(1));
    }

    #[test]
    fn find_conflict_by_term_skips_whole_terms() {
        let log = RaftLog::new(
            0,
            0,
            ents(&[(1, 1), (2, 1), (3, 4), (4, 4), (5, 4)]),
            0,
            None,
        );
        assert_eq!(log.find_conflict_by_term(5, 2), (2, 1));
        assert_eq!(log.find_conflict_by_term(9, 4), (5, 4));
        assert_eq!(log.find_conflict_by_term(5, 0), (0, 0));
    }
}
