//! State-machine writes staged in memory, then committed all or nothing.
//!
//! An apply (and a snapshot install) first stages every write of its run in
//! an [`SmTx`]: reads see the staged writes, nothing reaches sled yet. The
//! staged writes are then committed in one of two ways:
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
use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionalTree,
};
use sled::IVec;

use super::{codec, lock, Store, StoreError};
use crate::raft::Index;

/// Largest write set (keys and values) committed through the journal, whose
/// bytes are written twice. Larger ones use a sled transaction, whose fixed
/// cost they amortize. This also keeps the record (the write set plus a few
/// bytes per write) below the size at which sled moves a value out of its
/// log into a blob file (a quarter of its 512 KiB segment).
pub(crate) const JOURNAL_MAX_BYTES: usize = 64 << 10;

/// Key of the apply journal in the `sm_meta` tree (schema version 4).
pub(crate) const KEY_APPLY_JOURNAL: &[u8] = b"apply_journal";

/// Why staging or committing failed: sled's error (mapped with the store's
/// path by [`Store::staged_err`]) or the store's own.
#[derive(Debug)]
pub(crate) enum TxError {
    Storage(sled::Error),
    Abort(StoreError),
}

impl From<sled::Error> for TxError {
    fn from(e: sled::Error) -> Self {
        TxError::Storage(e)
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError::Abort(e)
    }
}

/// The result of a staged operation.
pub(crate) type Tx<T> = Result<T, TxError>;

/// The state machine's trees. The numbers are part of the on-disk format of
/// the apply journal: never renumber. `SmMeta` is last: its `state` key is
/// what a journaled commit writes last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SmTree {
    Jobs = 0,
    Queue = 1,
    Active = 2,
    Finished = 3,
    Idempotency = 4,
    Nodes = 5,
    Acl = 6,
    Restore = 7,
    SmMeta = 8,
}

impl SmTree {
    /// Every tree, in commit order.
    pub(crate) const ALL: [SmTree; 9] = [
        SmTree::Jobs,
        SmTree::Queue,
        SmTree::Active,
        SmTree::Finished,
        SmTree::Idempotency,
        SmTree::Nodes,
        SmTree::Acl,
        SmTree::Restore,
        SmTree::SmMeta,
    ];

    /// The trees a snapshot replaces whole: all but `sm_meta`.
    pub(crate) const TABLE: [SmTree; 8] = [
        SmTree::Jobs,
        SmTree::Queue,
        SmTree::Active,
        SmTree::Finished,
        SmTree::Idempotency,
        SmTree::Nodes,
        SmTree::Acl,
        SmTree::Restore,
    ];

    /// The trees a backup restore replaces: the table but the node records,
    /// which describe the nodes running now, not those of the backup.
    pub(crate) const RESTORED: [SmTree; 7] = [
        SmTree::Jobs,
        SmTree::Queue,
        SmTree::Active,
        SmTree::Finished,
        SmTree::Idempotency,
        SmTree::Acl,
        SmTree::Restore,
    ];

    fn from_u8(n: u8) -> Option<SmTree> {
        SmTree::ALL.get(usize::from(n)).copied()
    }
}

/// One tree with writes staged over it. Writes go through `&self` (a
/// `RefCell` inside), as with sled's transactional trees, so the apply code
/// can hand the same [`SmTx`] to every helper.
pub(crate) struct StagedTree<'a> {
    base: &'a sled::Tree,
    /// Key -> new value, or `None` for a delete.
    writes: RefCell<BTreeMap<Vec<u8>, Option<IVec>>>,
}

impl<'a> StagedTree<'a> {
    /// Stages over `base`; nothing is written to it until a commit.
    pub(crate) fn new(base: &'a sled::Tree) -> Self {
        StagedTree {
            base,
            writes: RefCell::new(BTreeMap::new()),
        }
    }

    /// The value as the staged writes leave it.
    pub(crate) fn get(&self, key: impl AsRef<[u8]>) -> Tx<Option<IVec>> {
        let key = key.as_ref();
        if let Some(staged) = self.writes.borrow().get(key) {
            return Ok(staged.clone());
        }
        Ok(self.base.get(key)?)
    }

    /// Stages a put (replacing any staged write of the key).
    pub(crate) fn insert(&self, key: impl AsRef<[u8]>, value: impl Into<IVec>) {
        self.writes
            .borrow_mut()
            .insert(key.as_ref().to_vec(), Some(value.into()));
    }

    /// Stages a delete (replacing any staged write of the key).
    pub(crate) fn remove(&self, key: impl AsRef<[u8]>) {
        self.writes.borrow_mut().insert(key.as_ref().to_vec(), None);
    }
}

/// The state machine's trees inside one staged change.
pub(crate) struct SmTx<'a> {
    pub jobs: StagedTree<'a>,
    pub queue: StagedTree<'a>,
    pub active: StagedTree<'a>,
    pub finished: StagedTree<'a>,
    pub idempotency: StagedTree<'a>,
    pub nodes: StagedTree<'a>,
    pub acl: StagedTree<'a>,
    pub restore: StagedTree<'a>,
    /// `sm_meta`: the applied index and counters (`state`).
    pub meta: StagedTree<'a>,
}

impl SmTx<'_> {
    /// The trees of [`SmTree::RESTORED`].
    pub(crate) fn restored(&self) -> [&StagedTree<'_>; 7] {
        SmTree::RESTORED.map(|id| self.tree(id))
    }

    /// The trees of [`SmTree::TABLE`].
    pub(crate) fn table(&self) -> [&StagedTree<'_>; 8] {
        SmTree::TABLE.map(|id| self.tree(id))
    }

    fn tree(&self, id: SmTree) -> &StagedTree<'_> {
        match id {
            SmTree::Jobs => &self.jobs,
            SmTree::Queue => &self.queue,
            SmTree::Active => &self.active,
            SmTree::Finished => &self.finished,
            SmTree::Idempotency => &self.idempotency,
            SmTree::Nodes => &self.nodes,
            SmTree::Acl => &self.acl,
            SmTree::Restore => &self.restore,
            SmTree::SmMeta => &self.meta,
        }
    }

    /// The staged writes, tree by tree in [`SmTree::ALL`] order.
    pub(crate) fn into_writes(self) -> WriteSet {
        let mut writes = Vec::new();
        let mut bytes = 0;
        for id in SmTree::ALL {
            for (key, value) in self.tree(id).writes.take() {
                bytes += key.len() + value.as_ref().map_or(0, |v| v.len());
                writes.push((id, key, value));
            }
        }
        WriteSet { writes, bytes }
    }
}

/// Every write of a staged change, in commit order.
pub(crate) struct WriteSet {
    writes: Vec<(SmTree, Vec<u8>, Option<IVec>)>,
    /// Keys and values, summed.
    bytes: usize,
}

impl WriteSet {
    /// Performs the writes inside a sled transaction whose view holds the
    /// state-machine trees in [`SmTree::ALL`] order.
    pub(crate) fn write_in(
        &self,
        trees: &[TransactionalTree],
    ) -> ConflictableTransactionResult<(), StoreError> {
        for (id, key, value) in &self.writes {
            let Some(tree) = trees.get(*id as usize) else {
                return Err(ConflictableTransactionError::Abort(StoreError::Contract(
                    format!("no tree {id:?} among the {} given", trees.len()),
                )));
            };
            match value {
                Some(value) => tree.insert(&key[..], value.clone())?,
                None => tree.remove(&key[..])?,
            };
        }
        Ok(())
    }

    /// Adds these writes to an export's capture (later writes of a key
    /// replace earlier ones).
    fn record_into(&self, capture: &mut Capture) {
        for (id, key, value) in &self.writes {
            capture.writes.insert((*id, key.clone()), value.clone());
        }
    }
}

/// Every change committed while an export reads the table without the
/// state-machine lock: the latest value (or delete) of each key written.
/// The rows the export read, overlaid with these, are the table at the
/// applied index it reads under the lock at the end: a key not written
/// meanwhile was read as it is, and a key written meanwhile takes its
/// value from here, whatever the reader happened to see.
#[derive(Default)]
pub(crate) struct Capture {
    pub(crate) writes: BTreeMap<(SmTree, Vec<u8>), Option<IVec>>,
    /// A snapshot install replaced the whole table meanwhile (without a
    /// write set): the export must read again.
    pub(crate) replaced: bool,
}

impl Capture {
    /// The captured writes of one tree, in key order.
    pub(crate) fn of(&self, id: SmTree) -> impl Iterator<Item = (&[u8], &Option<IVec>)> {
        self.writes
            .range((id, Vec::new())..)
            .take_while(move |((tree, _), _)| *tree == id)
            .map(|((_, key), value)| (key.as_slice(), value))
    }
}

/// Ends an export's capture when dropped (see [`Store::start_capture`]).
pub(crate) struct CaptureGuard<'a>(&'a Store);

impl CaptureGuard<'_> {
    /// Ends the capture and hands it over. Caller holds `sm_lock`.
    pub(crate) fn take(&self) -> Option<Capture> {
        lock(&self.0.capture).take()
    }
}

impl Drop for CaptureGuard<'_> {
    fn drop(&mut self) {
        lock(&self.0.capture).take();
    }
}

/// `rows` (in key order) with `writes` (in key order) laid over them.
pub(crate) fn overlay<'w>(
    rows: Vec<(IVec, IVec)>,
    writes: impl Iterator<Item = (&'w [u8], &'w Option<IVec>)>,
) -> Vec<(IVec, IVec)> {
    let mut out = Vec::with_capacity(rows.len());
    let mut rows = rows.into_iter().peekable();
    for (key, value) in writes {
        while let Some(row) = rows.next_if(|(k, _)| k.as_ref() < key) {
            out.push(row);
        }
        // The row read for this key, if any, is replaced.
        rows.next_if(|(k, _)| k.as_ref() == key);
        if let Some(value) = value {
            out.push((IVec::from(key), value.clone()));
        }
    }
    out.extend(rows);
    out
}

/// The journal record: the write set of the last journaled apply and the
/// applied index it brings `state` to. Written borrowing the write set (no
/// copy of its keys and values on the apply path), read back owned.
#[derive(Serialize, Deserialize)]
struct ApplyJournal<'a> {
    applied_index: Index,
    writes: Vec<JournalWrite<'a>>,
}

#[derive(Serialize, Deserialize)]
struct JournalWrite<'a> {
    tree: u8,
    key: Cow<'a, [u8]>,
    /// `None`: a delete.
    value: Option<Cow<'a, [u8]>>,
}

impl Store {
    /// Staging over the state machine's trees. Caller holds `sm_lock` until
    /// the staged change is committed or dropped.
    pub(crate) fn stage(&self) -> SmTx<'_> {
        let t = &self.sm;
        SmTx {
            jobs: StagedTree::new(&t.jobs),
            queue: StagedTree::new(&t.queue),
            active: StagedTree::new(&t.active),
            finished: StagedTree::new(&t.finished),
            idempotency: StagedTree::new(&t.idempotency),
            nodes: StagedTree::new(&t.nodes),
            acl: StagedTree::new(&t.acl),
            restore: StagedTree::new(&t.restore),
            meta: StagedTree::new(&t.sm_meta),
        }
    }

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
            set.record_into(capture);
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

    /// Starts capturing for an export; the capture ends when the returned
    /// guard is dropped (also if the export fails or panics half-way, so
    /// commits never go on recording into an abandoned capture). Caller
    /// holds `sm_lock`.
    pub(crate) fn start_capture(&self) -> CaptureGuard<'_> {
        *lock(&self.capture) = Some(Capture::default());
        CaptureGuard(self)
    }

    /// Tells a running export that the table was replaced wholesale (or
    /// that a commit failed part-way).
    pub(crate) fn capture_replaced(&self) {
        if let Some(capture) = lock(&self.capture).as_mut() {
            capture.replaced = true;
        }
    }

    /// Maps a staging error to the store's error.
    pub(crate) fn staged_err(&self, e: TxError) -> StoreError {
        match e {
            TxError::Storage(e) => self.sled_err(e),
            TxError::Abort(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
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
            Some((SmTree::SmMeta as u8, codec::KEY_SM_META)),
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
