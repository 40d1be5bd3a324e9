//! The Raft side of the store: persisting a `Ready`, restoring after a
//! restart, compacting the log.

use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::codec;
use super::layout::{self, index_key, key_index, SnapshotRecord};
use super::{lock, snapshot, Snapshot, Store, StoreError};
use crate::raft::{Entry, HardState, Index, Membership, Ready, Restored, SnapshotMeta};

type TxResult = Result<(), ConflictableTransactionError<StoreError>>;

/// Log entries deleted per hold of the log lock during compaction.
const COMPACTION_CHUNK: usize = 1024;
/// Pause after each chunk, lock released. Without it the compacting thread
/// took the lock straight back (std's mutex is not fair), and a persist
/// waiting for it stalled behind a whole 140,000-entry compaction (about
/// 0.2 s of stalled writes after each large snapshot).
const COMPACTION_PAUSE: Duration = Duration::from_millis(1);

impl Store {
    /// Makes everything `rd` asks to persist durable, with exactly one fsync
    /// (none if `!rd.needs_persist()` or if only the commit index moved). Implements the `Ready` contract of
    /// `crate::raft`: snapshot (if any) -> discard the whole stable log ->
    /// append `rd.entries`, replacing any stable suffix from
    /// `rd.entries[0].index` -> hard state and membership -> one fsync.
    ///
    /// With a snapshot, also replaces the job table and `sm_meta` with the
    /// snapshot's contents, atomically with the rest. Refuses (writing
    /// nothing) a Ready that breaks the contract: entries not contiguous, a
    /// gap after the stable log, a term going backwards, a vote changed
    /// within a term, an overwrite of an applied entry with another term, or
    /// a snapshot older than the applied index or not matching its meta.
    pub fn persist(&self, rd: &Ready) -> Result<(), StoreError> {
        if !rd.needs_persist() {
            return Ok(());
        }
        let _log = lock(&self.log_lock);
        check_contiguous(&rd.entries)?;
        let mut only_commit_moved =
            rd.snapshot.is_none() && rd.entries.is_empty() && rd.membership.is_none();
        // Whether term and vote stay as they are (the steady state of a
        // leader and its followers: only entries and the commit index move).
        let mut term_and_vote_kept = true;
        if let Some(hs) = &rd.hard_state {
            let old = self.check_hard_state(hs)?;
            term_and_vote_kept = old.term == hs.term && old.vote == hs.vote;
            only_commit_moved &= term_and_vote_kept;
        }
        let entries = rd
            .entries
            .iter()
            .map(|e| Ok((index_key(e.index), codec::encode("log entry", e)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let hard_state = rd
            .hard_state
            .as_ref()
            .map(|hs| codec::encode("hard state", hs))
            .transpose()?;
        match &rd.snapshot {
            None => {
                let membership = rd
                    .membership
                    .as_ref()
                    .map(|m| codec::encode("membership", m))
                    .transpose()?;
                self.persist_log(
                    rd,
                    &entries,
                    hard_state.as_deref(),
                    membership.as_deref(),
                    term_and_vote_kept,
                )?;
                // The commit index is a hint (a restarted node relearns it
                // from the leader), so a Ready that only moves it is written
                // without an fsync; the next fsync carries it. Everything a
                // vote or an acknowledgement depends on is always fsynced.
                if only_commit_moved {
                    Ok(())
                } else {
                    self.flush()
                }
            }
            Some((meta, data)) => {
                self.persist_with_snapshot(rd, meta, data, &entries, hard_state.as_deref())
            }
        }
    }

    /// Writes entries, hard state and membership. An append to the end of
    /// the log that keeps term and vote (nearly every Ready) is written as
    /// plain inserts, entries first and the hard state last; anything else
    /// (a truncation, a new term or vote, a membership change) as one
    /// transaction.
    ///
    /// Why the two paths: every sled transaction writes out the current I/O
    /// buffer and then a batch marker in a buffer of its own, each a
    /// `pwrite` plus a waited `sync_file_range` on sled's I/O threads, so two
    /// device writes on top of the flush's. Plain inserts need no marker.
    /// They are safe because sled recovers a prefix of its log: a crash
    /// before the flush (when nothing written here was acknowledged yet)
    /// leaves the old hard state with a prefix of the new entries, which is
    /// a valid log (the entries extend it contiguously, are of the current
    /// term's leader, and the commit index written after them never points
    /// past the log). A truncation or a term/vote change has no such safe
    /// prefix, so it stays atomic.
    fn persist_log(
        &self,
        rd: &Ready,
        entries: &[([u8; 8], Vec<u8>)],
        hard_state: Option<&[u8]>,
        membership: Option<&[u8]>,
        term_and_vote_kept: bool,
    ) -> Result<(), StoreError> {
        let mut append_only = true;
        // Keys of the stable suffix the new entries replace but do not
        // overwrite (those beyond the last new index).
        let mut stale = Vec::new();
        if let (Some(first), Some(last)) = (rd.entries.first(), rd.entries.last()) {
            let stable_last = self.last_index()?;
            if first.index == 0 || first.index > stable_last + 1 {
                return Err(StoreError::Contract(format!(
                    "entries start at {} but the stable log ends at {stable_last}",
                    first.index
                )));
            }
            self.check_not_rewriting_applied(first)?;
            append_only = first.index == stable_last + 1;
            // An append has nothing stored past its first index to replace.
            if !append_only {
                for key in self
                    .raft_log
                    .range((Bound::Excluded(index_key(last.index)), Bound::Unbounded))
                    .keys()
                {
                    stale.push(key.map_err(|e| self.sled_err(e))?);
                }
            }
        }
        if append_only && stale.is_empty() && term_and_vote_kept && membership.is_none() {
            for (key, value) in entries {
                self.raft_log
                    .insert(&key[..], &value[..])
                    .map_err(|e| self.sled_err(e))?;
            }
            if let Some(hs) = hard_state {
                self.raft_state
                    .insert(layout::KEY_HARD_STATE, hs)
                    .map_err(|e| self.sled_err(e))?;
            }
            return Ok(());
        }
        (&self.raft_log, &self.raft_state)
            .transaction(|(log, state)| -> TxResult {
                for key in &stale {
                    log.remove(key)?;
                }
                for (key, value) in entries {
                    log.insert(&key[..], &value[..])?;
                }
                if let Some(hs) = hard_state {
                    state.insert(layout::KEY_HARD_STATE, hs)?;
                }
                if let Some(m) = membership {
                    state.insert(layout::KEY_MEMBERSHIP, m)?;
                }
                Ok(())
            })
            .map_err(|e| self.tx_err(e))
    }

    fn persist_with_snapshot(
        &self,
        rd: &Ready,
        meta: &SnapshotMeta,
        data: &Arc<Vec<u8>>,
        entries: &[([u8; 8], Vec<u8>)],
        hard_state: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let decoded = snapshot::decode_for(meta, data).map_err(StoreError::BadSnapshot)?;
        if decoded.meta != *meta {
            return Err(StoreError::BadSnapshot(format!(
                "data is of index {} term {}, meta says index {} term {} (or memberships differ)",
                decoded.meta.index, decoded.meta.term, meta.index, meta.term
            )));
        }
        if let Some(first) = rd.entries.first() {
            if first.index != meta.index + 1 {
                return Err(StoreError::Contract(format!(
                    "entries after a snapshot at {} start at {}",
                    meta.index, first.index
                )));
            }
        }
        let _sm = lock(&self.sm_lock);
        let _snap = lock(&self.snap_lock);
        let applied = self.applied.load(Ordering::Acquire);
        if meta.index < applied {
            return Err(StoreError::Contract(format!(
                "snapshot at {} would roll back the state machine applied to {applied}",
                meta.index
            )));
        }
        // The membership the core persists with the snapshot; the snapshot's
        // own if the Ready carries none.
        let membership = codec::encode(
            "membership",
            rd.membership.as_ref().unwrap_or(&meta.membership),
        )?;
        let record = SnapshotRecord {
            meta: meta.clone(),
            file: snapshot::file_name(meta),
            len: data.len() as u64,
            crc32: crc32fast::hash(data),
        };
        let record_encoded = codec::encode("snapshot record", &record)?;
        let old_log = self
            .raft_log
            .iter()
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sled_err(e))?;
        let install = self.prepare_install(&decoded)?;

        // 1. The file, durably, before anything refers to it.
        snapshot::write_file(&self.snapshot_dir, &record.file, data).map_err(|source| {
            StoreError::Io {
                path: self.snapshot_dir.join(&record.file),
                source,
            }
        })?;
        // 2. Everything else in one transaction, 3. one flush.
        let sm_writes = install.writes(self)?;
        let raft_trees = [&self.raft_log, &self.raft_state, &self.snapshots];
        let trees: Vec<&sled::Tree> = raft_trees.into_iter().chain(self.sm.all()).collect();
        trees[..]
            .transaction(|view| -> TxResult {
                let (raft, sm) = view.split_at(raft_trees.len());
                let [log, state, snaps] = raft else {
                    let n = view.len();
                    let e = StoreError::Contract(format!("a view of {n} trees"));
                    return Err(ConflictableTransactionError::Abort(e));
                };
                for key in &old_log {
                    log.remove(key)?;
                }
                for (key, value) in entries {
                    log.insert(&key[..], &value[..])?;
                }
                if let Some(hs) = hard_state {
                    state.insert(layout::KEY_HARD_STATE, hs)?;
                }
                state.insert(layout::KEY_MEMBERSHIP, &membership[..])?;
                snaps.insert(layout::KEY_LATEST_SNAPSHOT, &record_encoded[..])?;
                sm_writes.write_in(sm)
            })
            .map_err(|e| self.tx_err(e))?;
        self.capture_replaced();
        self.flush()?;
        self.recount_usage()?;
        self.publish_counts(&install.sm);
        // 4. Only now is the previous snapshot unreferenced on disk.
        snapshot::remove_stale_files(&self.snapshot_dir, Some(&record.file));
        tracing::info!(
            index = meta.index,
            term = meta.term,
            jobs = install.sm.job_count,
            "installed snapshot"
        );
        Ok(())
    }

    /// What the core needs to restart: hard state, membership, the latest
    /// snapshot (checksum verified), the log, the applied index.
    ///
    /// The log returned is the contiguous run of stable entries that ends at
    /// the last one. Entries at or below the snapshot's index that are not
    /// part of that run (or whose term disagrees with the snapshot) are left
    /// out: the snapshot covers them. A hole above the snapshot, or a log
    /// that does not reach back to the snapshot (or to index 1), is
    /// corruption.
    pub fn restored(&self) -> Result<Restored, StoreError> {
        let _log = lock(&self.log_lock);
        let hard_state = self.hard_state()?;
        let membership = self.membership()?;
        let snapshot = self.latest_snapshot()?;
        let snap_index = snapshot.as_ref().map_or(0, |(m, _)| m.index);
        let snap_term = snapshot.as_ref().map_or(0, |(m, _)| m.term);

        let mut entries: Vec<Entry> = Vec::new();
        for kv in self.raft_log.iter() {
            let (key, value) = kv.map_err(|e| self.sled_err(e))?;
            let index = key_index(&key).map_err(|d| self.corrupt(d))?;
            let entry: Entry = self.decode("log entry", &value)?;
            if entry.index != index {
                return Err(self.corrupt(format!(
                    "log entry {} is stored under index {index}",
                    entry.index
                )));
            }
            if entries.last().is_some_and(|prev| prev.index + 1 != index) {
                if index <= snap_index + 1 {
                    // A hole at or below the snapshot: what came before is
                    // covered by the snapshot anyway.
                    entries.clear();
                } else {
                    return Err(self.corrupt(format!(
                        "the log has a hole between {} and {index}",
                        entries.last().map_or(0, |e| e.index)
                    )));
                }
            }
            entries.push(entry);
        }
        if snapshot.is_some() {
            if let Some(at) = entries.iter().find(|e| e.index == snap_index) {
                if at.term != snap_term {
                    tracing::warn!(
                        index = snap_index,
                        "log disagrees with the snapshot below it; dropping the covered entries"
                    );
                    entries.retain(|e| e.index > snap_index);
                }
            }
        }
        let first_expected = snap_index + 1;
        if let Some(first) = entries.first() {
            if first.index > first_expected {
                return Err(self.corrupt(format!(
                    "the log starts at {} but the {} ends at {snap_index}",
                    first.index,
                    if snapshot.is_some() {
                        "snapshot"
                    } else {
                        "empty prefix"
                    }
                )));
            }
            // Entries entirely below the snapshot are of no use to the core.
            if entries.last().is_some_and(|e| e.index < snap_index) {
                entries.clear();
            }
        }
        Ok(Restored {
            hard_state,
            membership,
            snapshot,
            entries,
            applied: self.applied.load(Ordering::Acquire),
        })
    }

    /// Deletes log entries at or below `upto`, which must not exceed the
    /// durable snapshot's index (a log prefix is only disposable once a
    /// snapshot covers it). No fsync: if the deletion is lost in a crash,
    /// the extra entries are harmless and `restored` copes with them.
    pub fn compact_log(&self, upto: Index) -> Result<(), StoreError> {
        // In chunks, the log lock released between them: a compaction after
        // a long interval deletes 100,000+ entries, and holding the lock for
        // all of them stalled every persist (and so every write) for over a
        // second. Deleting from the lowest index up keeps what is left a
        // contiguous log at every step, also after a crash (sled recovers a
        // prefix of its writes), so no step needs to be atomic.
        // Checked once: the durable snapshot only ever moves forward.
        let covered = self.snapshot_record()?.map_or(0, |r| r.meta.index);
        if upto > covered {
            return Err(StoreError::Contract(format!(
                "compaction up to {upto} but the durable snapshot covers only up to {covered}"
            )));
        }
        loop {
            let log = lock(&self.log_lock);
            let keys = self
                .raft_log
                .range(..=index_key(upto))
                .keys()
                .take(COMPACTION_CHUNK)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.sled_err(e))?;
            for key in &keys {
                self.raft_log.remove(key).map_err(|e| self.sled_err(e))?;
            }
            if keys.len() < COMPACTION_CHUNK {
                return Ok(());
            }
            drop(log);
            std::thread::sleep(COMPACTION_PAUSE);
        }
    }

    /// The latest durable snapshot and its bytes (checksum verified), e.g.
    /// to send to a follower.
    pub fn latest_snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        let _snap = lock(&self.snap_lock);
        match self.snapshot_record()? {
            None => Ok(None),
            Some(record) => {
                let data = snapshot::read_file(&self.snapshot_dir, &record)
                    .map_err(|d| self.corrupt(d))?;
                Ok(Some((record.meta, Arc::new(data))))
            }
        }
    }

    /// The durable hard state (default if none was ever written).
    pub(crate) fn hard_state(&self) -> Result<HardState, StoreError> {
        match self
            .raft_state
            .get(layout::KEY_HARD_STATE)
            .map_err(|e| self.sled_err(e))?
        {
            Some(bytes) => self.decode("hard state", &bytes),
            None => Ok(HardState::default()),
        }
    }

    /// The durable membership (empty if none was ever written).
    pub(crate) fn membership(&self) -> Result<Membership, StoreError> {
        match self
            .raft_state
            .get(layout::KEY_MEMBERSHIP)
            .map_err(|e| self.sled_err(e))?
        {
            Some(bytes) => self.decode("membership", &bytes),
            None => Ok(Membership::default()),
        }
    }

    /// Index of the last stable entry: the log's last, else the snapshot's.
    fn last_index(&self) -> Result<Index, StoreError> {
        match self.raft_log.last().map_err(|e| self.sled_err(e))? {
            Some((key, _)) => key_index(&key).map_err(|d| self.corrupt(d)),
            None => Ok(self.snapshot_record()?.map_or(0, |r| r.meta.index)),
        }
    }

    /// Returns the hard state currently stored.
    fn check_hard_state(&self, new: &HardState) -> Result<HardState, StoreError> {
        let old = self.hard_state()?;
        if new.term < old.term {
            return Err(StoreError::Contract(format!(
                "hard state term going back from {} to {}",
                old.term, new.term
            )));
        }
        if new.term == old.term && old.vote != 0 && new.vote != old.vote {
            return Err(StoreError::Contract(format!(
                "vote changed from {} to {} within term {}",
                old.vote, new.vote, new.term
            )));
        }
        Ok(old)
    }

    /// An applied entry is committed: the core may re-send it, never
    /// replace it with an entry of another term.
    fn check_not_rewriting_applied(&self, first: &Entry) -> Result<(), StoreError> {
        if first.index > self.applied.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(bytes) = self
            .raft_log
            .get(index_key(first.index))
            .map_err(|e| self.sled_err(e))?
        {
            let stored: Entry = self.decode("log entry", &bytes)?;
            if stored.term != first.term {
                return Err(StoreError::Contract(format!(
                    "entry {} (applied, term {}) would be replaced by one of term {}",
                    first.index, stored.term, first.term
                )));
            }
        }
        Ok(())
    }
}

fn check_contiguous(entries: &[Entry]) -> Result<(), StoreError> {
    for pair in entries.windows(2) {
        if pair[1].index != pair[0].index + 1 {
            return Err(StoreError::Contract(format!(
                "entries to append are not contiguous: {} then {}",
                pair[0].index, pair[1].index
            )));
        }
        if pair[1].term < pair[0].term {
            return Err(StoreError::Contract(format!(
                "entry terms go backwards at {}: {} then {}",
                pair[1].index, pair[0].term, pair[1].term
            )));
        }
    }
    Ok(())
}
