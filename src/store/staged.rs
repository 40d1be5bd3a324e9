//! State-machine writes staged in memory, then committed all or nothing.
//!
//! An apply (and a snapshot install) first stages every write of its run in
//! an [`SmTx`]: reads see the staged writes, nothing reaches sled yet. The
//! [`WriteSet`] it yields is then committed through the apply journal or as
//! one sled transaction (`journal`); a running export captures it
//! (`capture`).

use std::cell::RefCell;
use std::collections::BTreeMap;

use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionalTree,
};
use sled::IVec;

use super::layout::{sm_tree_of, SmTree};
use super::{Store, StoreError};

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
    pub sm_meta: StagedTree<'a>,
    /// What the staged job rows do to the usage figures (`store::usage`).
    pub usage: std::cell::RefCell<super::usage::UsageDelta>,
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
        sm_tree_of!(self, id)
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
    pub(super) writes: Vec<(SmTree, Vec<u8>, Option<IVec>)>,
    /// Keys and values, summed.
    pub(super) bytes: usize,
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
            sm_meta: StagedTree::new(&t.sm_meta),
            usage: Default::default(),
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
