//! Committing a staged write set all or nothing, in one of two ways:
//!
//! - **Journaled** (an ordinary apply, up to [`JOURNAL_MAX_BYTES`]): the
//!   whole write set is inserted as ONE record, the apply journal in
//!   `sm_meta`, then each write as a plain insert or remove, `sm_meta`'s
//!   `state` (the applied index) last. sled recovers a prefix of its writes
//!   (see the store's crash-safety notes), so after a crash either the
//!   journal record was lost, and with it every write after it (the apply
//!   never happened), or it survived and open replays it
//!   ([`Store::replay_apply_journal`]): the writes are absolute puts and
//!   deletes, so replaying over a partial apply completes it. A journal whose
//!   applied index the stored `state` already reached is complete and
//!   ignored, so the record is simply overwritten by the next apply.
//! - **As one sled transaction** (anything larger: a backup restore, a run of
//!   restore chunks; and a snapshot install, which also spans the Raft
//!   trees): sled's transaction is atomic by itself.
//!
//! Why not a sled transaction every time: each one writes out two extra I/O
//! buffers (a `pwrite` and a waited `sync_file_range` each, handed to sled's
//! I/O threads) and takes sled's global write lock. That was the largest
//! cost of applying a batch, on every node, for every batch.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::layout::{SmTree, KEY_APPLY_JOURNAL};
use super::staged::WriteSet;
use super::{codec, lock, Store, StoreError};
use crate::raft::Index;

/// Largest write set (keys and values) committed through the journal, whose
/// bytes are written twice. Larger ones use a sled transaction, whose fixed
/// cost they amortize. This also keeps the record (the write set plus a few
/// bytes per write) below the size at which sled moves a value out of its
/// log into a blob file (a quarter of its 512 KiB segment).
pub(crate) const JOURNAL_MAX_BYTES: usize = 64 << 10;

/// The journal record: the write set of the last journaled apply and the
/// applied index it brings `state` to. Written borrowing the write set (no
/// copy of its keys and values on the apply path), read back owned.
#[derive(Serialize, Deserialize)]
pub(super) struct ApplyJournal<'a> {
    applied_index: Index,
    writes: Vec<JournalWrite<'a>>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct JournalWrite<'a> {
    tree: u8,
    key: Cow<'a, [u8]>,
    /// `None`: a delete.
    value: Option<Cow<'a, [u8]>>,
}

impl Store {
    /// Commits an apply's writes all or nothing (see the module docs), with
    /// no flush: the next flush makes it durable, and a crash before that
    /// loses it whole (the entries are re-applied from the log).
    /// `applied_index` is the index the writes bring `state` to. Caller
    /// holds `sm_lock`.
    pub(crate) fn commit_staged(
        &self,
        set: WriteSet,
        applied_index: Index,
    ) -> Result<(), StoreError> {
        if let Some(capture) = lock(&self.capture).as_mut() {
            capture.record(&set);
        }
        let committed = self.write_staged(set, applied_index);
        if committed.is_err() {
            // The capture holds writes that may not be in the table: a
            // running export must not use it.
            self.capture_replaced();
        }
        committed
    }

    fn write_staged(&self, set: WriteSet, applied_index: Index) -> Result<(), StoreError> {
        if set.bytes > JOURNAL_MAX_BYTES {
            return self.sm.transaction(&set).map_err(|e| self.tx_err(e));
        }
        let journal = ApplyJournal {
            applied_index,
            writes: set
                .writes
                .iter()
                .map(|(id, key, value)| JournalWrite {
                    tree: *id as u8,
                    key: Cow::Borrowed(key),
                    value: value.as_deref().map(Cow::Borrowed),
                })
                .collect(),
        };
        let record = codec::encode("apply journal", &journal)?;
        self.sm
            .sm_meta
            .insert(KEY_APPLY_JOURNAL, record)
            .map_err(|e| self.sled_err(e))?;
        for (id, key, value) in set.writes {
            let tree = self.sm.tree(id);
            match value {
                Some(value) => tree.insert(key, value),
                None => tree.remove(key),
            }
            .map_err(|e| self.sled_err(e))?;
        }
        Ok(())
    }

    /// At open: completes an apply a crash cut short, from its journal.
    /// Returns true if it replayed one (the caller flushes).
    pub(crate) fn replay_apply_journal(&self, applied_index: Index) -> Result<bool, StoreError> {
        let Some(bytes) = self
            .sm
            .sm_meta
            .get(KEY_APPLY_JOURNAL)
            .map_err(|e| self.sled_err(e))?
        else {
            return Ok(false);
        };
        let journal: ApplyJournal<'static> = self.decode("apply journal", &bytes)?;
        if journal.applied_index <= applied_index {
            return Ok(false); // that apply completed
        }
        tracing::warn!(
            applied = applied_index,
            journal = journal.applied_index,
            writes = journal.writes.len(),
            "the last apply was cut short by a crash; completing it from its journal"
        );
        for write in journal.writes {
            let id = SmTree::from_u8(write.tree)
                .ok_or_else(|| self.corrupt(format!("apply journal names tree {}", write.tree)))?;
            let tree = self.sm.tree(id);
            match write.value {
                Some(value) => tree.insert(write.key, &value[..]),
                None => tree.remove(write.key),
            }
            .map_err(|e| self.sled_err(e))?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use sled::IVec;

    use super::super::layout;
    use super::*;
    use crate::jobs::{Command, JobId, JobSpec};
    use crate::raft::{Entry, Payload};

    const CLUSTER: &str = "journal-test";

    fn entry(index: Index, command: Command) -> Entry {
        Entry {
            term: 1,
            index,
            payload: Payload::Command(command.encode().unwrap()),
        }
    }

    fn submit(index: Index) -> Entry {
        entry(
            index,
            Command::Submit {
                id: JobId::from_parts(1_700_000_000_000 + index, u128::from(index)),
                spec: JobSpec::shell(format!("echo {index}")),
                submitted_at_ms: index as i64,
            },
        )
    }

    /// Submits 1..=4, then (the apply a crash will cut) submits 5..=8 and
    /// cancels job 2: inserts and removes across several trees.
    fn batches() -> (Vec<Entry>, Vec<Entry>) {
        let first = (1..=4).map(submit).collect();
        let mut second: Vec<Entry> = (5..=8).map(submit).collect();
        second.push(entry(
            9,
            Command::Cancel {
                job: JobId::from_parts(1_700_000_000_002, 2),
                at_ms: 9,
            },
        ));
        (first, second)
    }

    /// Every key and value of every state-machine tree but the journal.
    fn contents(store: &Store) -> Vec<(SmTree, Vec<(IVec, IVec)>)> {
        SmTree::ALL
            .into_iter()
            .map(|id| {
                let rows = store
                    .sm
                    .tree(id)
                    .iter()
                    .map(|kv| kv.unwrap())
                    .filter(|(k, _)| !(id == SmTree::SmMeta && k == KEY_APPLY_JOURNAL))
                    .collect();
                (id, rows)
            })
            .collect()
    }

    /// A crash after the journal record and any prefix of the writes that
    /// follow it (what sled recovers) is completed on open into exactly
    /// the table the whole apply makes.
    #[test]
    fn open_completes_an_apply_cut_after_any_prefix_of_its_writes() {
        let (first, second) = batches();
        let whole_dir = tempfile::tempdir().unwrap();
        let whole = Store::open(whole_dir.path(), CLUSTER, 1).unwrap();
        whole.apply(&first).unwrap();
        whole.apply(&second).unwrap();
        let expected = contents(&whole);
        let journal_bytes = whole.sm.sm_meta.get(KEY_APPLY_JOURNAL).unwrap().unwrap();
        let journal: ApplyJournal<'static> =
            codec::decode("apply journal", &journal_bytes).unwrap();
        assert_eq!(journal.applied_index, 9);
        let n = journal.writes.len();
        assert!(n > 10, "the second apply writes {n} keys");
        assert_eq!(
            journal.writes.last().map(|w| (w.tree, &w.key[..])),
            Some((SmTree::SmMeta as u8, layout::KEY_SM_META)),
            "the applied index is written last"
        );

        for cut in 0..=n {
            let dir = tempfile::tempdir().unwrap();
            {
                let store = Store::open(dir.path(), CLUSTER, 1).unwrap();
                store.apply(&first).unwrap();
                // What a crash after the journal and `cut` writes leaves.
                store
                    .sm
                    .sm_meta
                    .insert(KEY_APPLY_JOURNAL, &journal_bytes[..])
                    .unwrap();
                for w in &journal.writes[..cut] {
                    let tree = store.sm.tree(SmTree::from_u8(w.tree).unwrap());
                    match &w.value {
                        Some(v) => tree.insert(&w.key[..], &v[..]).unwrap(),
                        None => tree.remove(&w.key[..]).unwrap(),
                    };
                }
                store.sync().unwrap();
            }
            let store = Store::open(dir.path(), CLUSTER, 1).unwrap();
            assert_eq!(store.applied_index(), 9, "cut after {cut} of {n} writes");
            assert_eq!(store.job_count(), 8, "cut after {cut} of {n} writes");
            assert!(
                contents(&store) == expected,
                "cut after {cut} of {n} writes: the table differs from the whole apply's"
            );
        }
    }

    /// A journal left from an apply that completed is not replayed over
    /// later changes that did not go through it (a snapshot install, a
    /// large apply committed as a transaction).
    #[test]
    fn a_completed_journal_is_not_replayed() {
        let (first, second) = batches();
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), CLUSTER, 1).unwrap();
            store.apply(&first).unwrap();
            store.apply(&second).unwrap();
            // A later change outside the journal: job 5's row goes away.
            let job5 = JobId::from_parts(1_700_000_000_005, 5);
            store.sm.jobs.remove(job5.to_bytes()).unwrap();
            store.sync().unwrap();
        }
        let store = Store::open(dir.path(), CLUSTER, 1).unwrap();
        let job5 = JobId::from_parts(1_700_000_000_005, 5);
        assert!(store.get_job(&job5).unwrap().is_none());
        assert_eq!(store.applied_index(), 9);
    }

    /// A snapshot taken while entries are applied is the table at the
    /// applied index it names: rows changed before the reader got to them,
    /// and rows it had read before they changed or went away, included.
    #[test]
    fn an_export_during_applies_is_the_table_at_its_index() {
        let id = |n: u64| JobId::from_parts(1_700_000_000_000 + n, u128::from(n));
        let cancel = |index, n| {
            entry(
                index,
                Command::Cancel {
                    job: id(n),
                    at_ms: 1,
                },
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CLUSTER, 1).unwrap();
        let mut first: Vec<Entry> = (1..=40).map(submit).collect();
        first.push(cancel(41, 1));
        first.push(cancel(42, 2));
        store.apply(&first).unwrap();
        // Applied while the export reads, after it read job 1's row: job 1
        // is collected (read, then deleted), job 3 cancelled (read after
        // its change), job 40 cancelled, jobs 43.. created.
        let mut during: Vec<Entry> = (43..=50).map(submit).collect();
        during.push(entry(51, Command::Gc { jobs: vec![id(1)] }));
        during.push(cancel(52, 3));
        during.push(cancel(53, 40));
        let (meta, data) = store
            .export_state_with(|| {
                store.apply(&during).unwrap();
            })
            .unwrap();
        assert_eq!(meta.index, 53);
        let (quiet_meta, quiet_data) = store.export_state().unwrap();
        assert_eq!(meta, quiet_meta);
        assert!(
            data == quiet_data,
            "the snapshot differs from the table at index 53"
        );
        assert!(lock(&store.capture).is_none(), "the capture was left on");

        // An export that dies half-way leaves no capture recording commits.
        let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store.export_state_with(|| panic!("export dies")).ok();
        }));
        assert!(died.is_err());
        assert!(lock(&store.capture).is_none(), "a dead export's capture");
    }

    /// The journal names trees by number: each number is its tree's.
    #[test]
    fn tree_numbers_are_their_positions() {
        for (n, id) in SmTree::ALL.into_iter().enumerate() {
            assert_eq!(id as usize, n);
            assert_eq!(SmTree::from_u8(n as u8), Some(id));
        }
        assert_eq!(SmTree::from_u8(SmTree::ALL.len() as u8), None);
    }

    /// A write set over the journal limit commits as a transaction and
    /// leaves the journal as it was.
    #[test]
    fn a_large_apply_commits_without_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CLUSTER, 1).unwrap();
        store.apply(&[submit(1)]).unwrap();
        let before = store.sm.sm_meta.get(KEY_APPLY_JOURNAL).unwrap();
        assert!(before.is_some());
        let big = entry(
            2,
            Command::Submit {
                id: JobId::from_parts(1_700_000_000_002, 2),
                spec: JobSpec::shell("x".repeat(JOURNAL_MAX_BYTES + 1)),
                submitted_at_ms: 2,
            },
        );
        store.apply(&[big]).unwrap();
        assert_eq!(store.applied_index(), 2);
        assert_eq!(store.sm.sm_meta.get(KEY_APPLY_JOURNAL).unwrap(), before);
    }
}
