//! The on-disk layout of the store: which sled trees exist, what is stored
//! under which key, and the bookkeeping records. All of it is part of the
//! on-disk format (see `migrations/`): renaming a tree or a key, or
//! renumbering a tree, needs a migration. Integers in keys are big-endian so
//! that sled's byte order is numeric order. How values are encoded is
//! `codec`'s.
//!
//! Trees of the job table's secondary indexes:
//! - `job_queue`:  (255 - priority rank: u32) ++ job id -> not_before_ms i64.
//!   Queued jobs in placement order: higher priority first, then older
//!   (ids are ULIDs, so id order is submission order).
//! - `job_active`: node u64 ++ job id -> attempt u32. Assigned and running
//!   jobs by node: what a node must run, what the leader counts as used.
//! - `job_finished`: finished_at_ms u64 ++ job id -> (). Terminal jobs,
//!   oldest first, for garbage collection.
//! - `job_idempotency`: owner ++ 0x00 ++ key -> job id (schema 5; the
//!   owner is the submitting token's accessor, empty without one), so one
//!   owner's keys never meet another's.
//! - `nodes`: node u64 -> bincode `NodeRecord`.
//! - `acl` (schema 3): `t/` ++ accessor -> bincode `acl::Token`;
//!   `h/` ++ sha256(secret) -> accessor (the lookup every call makes);
//!   `bootstrap` -> accessor of the bootstrap token, once bootstrapped.

use serde::{Deserialize, Serialize};

use crate::jobs::{Job, JobId, JobState};
use crate::raft::{Index, Membership, NodeId, SnapshotMeta, Term};

/// Tree names: part of the on-disk format (see `migrations/`).
pub(crate) const TREE_RAFT_LOG: &str = "raft_log";
pub(crate) const TREE_RAFT_STATE: &str = "raft_state";
pub(crate) const TREE_SNAPSHOTS: &str = "snapshots";
pub(crate) const TREE_JOBS: &str = "jobs";
pub(crate) const TREE_SM_META: &str = "sm_meta";
/// Node-local job output (created by migration m0002; sled would create it
/// lazily anyway).
pub(crate) const TREE_OUTPUTS: &str = "outputs";

/// Name of the tree holding `schema_version`, `cluster_id` and `node_id`.
/// Part of the on-disk format of every version.
pub(crate) const META_TREE: &str = "meta";

/// Tree names (part of the on-disk format, schema version 2).
pub(crate) const TREE_QUEUE: &str = "job_queue";
pub(crate) const TREE_ACTIVE: &str = "job_active";
pub(crate) const TREE_FINISHED: &str = "job_finished";
pub(crate) const TREE_IDEMPOTENCY: &str = "job_idempotency";
pub(crate) const TREE_NODES: &str = "nodes";
pub(crate) const TREE_ACL: &str = "acl";
/// A restore being staged (see `store::restore`).
pub(crate) const TREE_RESTORE: &str = "restore_staging";

/// Key prefixes and keys of the `acl` tree.
pub(crate) const ACL_TOKEN_PREFIX: &[u8] = b"t/";
pub(crate) const ACL_HASH_PREFIX: &[u8] = b"h/";
pub(crate) const ACL_BOOTSTRAP_KEY: &[u8] = b"bootstrap";

/// Key of a token record.
pub(crate) fn acl_token_key(accessor: &str) -> Vec<u8> {
    [ACL_TOKEN_PREFIX, accessor.as_bytes()].concat()
}

/// Key of a secret hash.
pub(crate) fn acl_hash_key(hash: &[u8; 32]) -> Vec<u8> {
    [ACL_HASH_PREFIX, &hash[..]].concat()
}

/// Key of a queued job: priority descending, then id ascending.
pub(crate) fn queue_key(priority: i32, id: &JobId) -> [u8; 20] {
    // Map i32 to u32 preserving order, then invert so higher sorts first.
    let rank = !((priority as u32) ^ 0x8000_0000);
    let mut key = [0u8; 20];
    key[..4].copy_from_slice(&rank.to_be_bytes());
    key[4..].copy_from_slice(&id.to_bytes());
    key
}

/// Key of an active job.
pub(crate) fn active_key(node: NodeId, id: &JobId) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&node.to_be_bytes());
    key[8..].copy_from_slice(&id.to_bytes());
    key
}

/// Key of a finished job.
pub(crate) fn finished_key(finished_at_ms: i64, id: &JobId) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&(finished_at_ms.max(0) as u64).to_be_bytes());
    key[8..].copy_from_slice(&id.to_bytes());
    key
}

/// Key of an idempotency key in the scope of its owner (see the module
/// docs). Accessors never hold a NUL, so the split is unambiguous.
pub(crate) fn idempotency_key(owner: Option<&str>, key: &str) -> Vec<u8> {
    let owner = owner.unwrap_or_default();
    let mut out = Vec::with_capacity(owner.len() + 1 + key.len());
    out.extend_from_slice(owner.as_bytes());
    out.push(0);
    out.extend_from_slice(key.as_bytes());
    out
}

/// The job id in the last 16 bytes of an index key.
pub(crate) fn id_suffix(key: &[u8]) -> Result<JobId, String> {
    key.len()
        .checked_sub(16)
        .and_then(|at| <[u8; 16]>::try_from(&key[at..]).ok())
        .map(JobId::from_bytes)
        .ok_or_else(|| format!("index key of {} bytes", key.len()))
}

/// How a row change moves the counters kept in `sm_meta`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CountDelta {
    pub jobs: i64,
    pub queued: i64,
    pub finished: i64,
}

/// The counters of a whole job table, as `sm_meta` holds them after the
/// table is replaced wholesale (a snapshot install, a restore).
pub(crate) fn counts_of(jobs: &[Job]) -> CountDelta {
    let mut delta = CountDelta::default();
    for job in jobs {
        delta.add(CountDelta::of(job, 1));
    }
    delta
}

impl CountDelta {
    /// What adding (`sign` 1) or removing (-1) `job` does to the counters.
    pub(crate) fn of(job: &Job, sign: i64) -> CountDelta {
        CountDelta {
            jobs: sign,
            queued: sign * i64::from(job.state == JobState::Queued),
            finished: sign * i64::from(job.finished_at_ms.is_some()),
        }
    }

    pub(crate) fn add(&mut self, other: CountDelta) {
        self.jobs += other.jobs;
        self.queued += other.queued;
        self.finished += other.finished;
    }
}

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

/// The field of `$trees` that holds tree `$id`: the one mapping from a
/// tree's number to its field, for the sled trees (`SmTrees`) and their
/// staging (`SmTx`), whose fields are named alike.
macro_rules! sm_tree_of {
    ($trees:expr, $id:expr) => {
        match $id {
            SmTree::Jobs => &$trees.jobs,
            SmTree::Queue => &$trees.queue,
            SmTree::Active => &$trees.active,
            SmTree::Finished => &$trees.finished,
            SmTree::Idempotency => &$trees.idempotency,
            SmTree::Nodes => &$trees.nodes,
            SmTree::Acl => &$trees.acl,
            SmTree::Restore => &$trees.restore,
            SmTree::SmMeta => &$trees.sm_meta,
        }
    };
}
pub(crate) use sm_tree_of;

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

    /// The trees a snapshot replaces whole: all but `sm_meta` (the last).
    pub(crate) const TABLE: [SmTree; 8] = {
        let mut table = [SmTree::Jobs; 8];
        let mut i = 0;
        while i < table.len() {
            table[i] = SmTree::ALL[i];
            i += 1;
        }
        table
    };

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

    /// The tree numbered `n` in a journal record.
    pub(crate) fn from_u8(n: u8) -> Option<SmTree> {
        SmTree::ALL.get(usize::from(n)).copied()
    }
}

/// Key of the apply journal in the `sm_meta` tree (schema version 4).
pub(crate) const KEY_APPLY_JOURNAL: &[u8] = b"apply_journal";

/// Key of a log entry: the index, big-endian.
pub(crate) fn index_key(index: Index) -> [u8; 8] {
    index.to_be_bytes()
}

/// Inverse of [`index_key`].
pub(crate) fn key_index(key: &[u8]) -> Result<Index, String> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| format!("raft_log key of {} bytes, expected 8", key.len()))
}

/// Keys of the `raft_state` tree.
pub(crate) const KEY_HARD_STATE: &[u8] = b"hard_state";
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"membership";
/// Key of the `snapshots` tree: the one snapshot we keep.
pub(crate) const KEY_LATEST_SNAPSHOT: &[u8] = b"latest";
/// Key of the `sm_meta` tree.
pub(crate) const KEY_SM_META: &[u8] = b"state";
/// Keys of the `meta` tree. `schema_version` is a u32 and `node_id` a u64,
/// both big-endian; `cluster_id` is UTF-8.
pub(crate) const KEY_SCHEMA_VERSION: &[u8] = b"schema_version";
pub(crate) const KEY_CLUSTER_ID: &[u8] = b"cluster_id";
pub(crate) const KEY_NODE_ID: &[u8] = b"node_id";
/// Random id of this data directory's life, made when it is first used:
/// tells peers a node that came back with its data from one that lost it.
pub(crate) const KEY_INCARNATION: &[u8] = b"incarnation";

/// The state machine's bookkeeping, written in the same transaction as the
/// job-table changes of the entries it covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SmMeta {
    /// Highest log index applied to the job table.
    pub applied_index: Index,
    /// Term of that entry (a snapshot at `applied_index` needs it).
    pub applied_term: Term,
    /// Membership as of `applied_index`: what a snapshot taken now records.
    pub membership: Membership,
    /// Rows in the job table, kept here because counting a sled tree is O(n).
    pub job_count: u64,
    /// Jobs in QUEUED (schema 2).
    pub queued_count: u64,
    /// Jobs in a terminal state (schema 2).
    pub finished_count: u64,
}

impl SmMeta {
    /// Moves the counters by a committed change's delta.
    pub(crate) fn count(&mut self, delta: CountDelta) {
        let add = |n: u64, d: i64| n.saturating_add_signed(d);
        self.job_count = add(self.job_count, delta.jobs);
        self.queued_count = add(self.queued_count, delta.queued);
        self.finished_count = add(self.finished_count, delta.finished);
    }
}

/// Where the latest snapshot lives and how to verify it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    pub meta: SnapshotMeta,
    /// File name inside `data_dir/snapshots/`.
    pub file: String,
    /// Length of the file in bytes.
    pub len: u64,
    /// CRC-32 of the whole file.
    pub crc32: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_sort_by_priority_then_age() {
        let old = JobId::from_parts(1, 0);
        let new = JobId::from_parts(2, 0);
        let mut keys = [
            queue_key(0, &new),
            queue_key(-5, &old),
            queue_key(7, &new),
            queue_key(0, &old),
            queue_key(i32::MIN, &old),
            queue_key(i32::MAX, &new),
        ];
        keys.sort();
        let order: Vec<_> = keys.iter().map(|k| id_suffix(k).unwrap()).collect();
        assert_eq!(order, [new, new, old, new, old, old]);
        assert_eq!(keys[0], queue_key(i32::MAX, &new));
        assert_eq!(keys[5], queue_key(i32::MIN, &old));
    }
}
