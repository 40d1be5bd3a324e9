//! How values and keys are laid out in sled: bincode 2 (serde) with a size
//! limit, and big-endian integer keys so that sled's byte order is numeric
//! order.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::raft::{Index, Membership, SnapshotMeta, Term};

/// Upper bound on one decoded record. A corrupt length prefix inside a record
/// makes the decoder fail instead of allocating without bound.
pub(crate) const MAX_RECORD_BYTES: usize = 64 << 20;

type Codec = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_RECORD_BYTES>,
>;

fn codec() -> Codec {
    bincode::config::standard().with_limit::<MAX_RECORD_BYTES>()
}

/// Serializes a record.
pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(value, codec())
        .map_err(|source| StoreError::Encode { what, source })
}

/// Deserializes a whole record; trailing bytes are an error. The error is a
/// description for [`StoreError::Corrupt`].
pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, String> {
    match bincode::serde::decode_from_slice::<T, _>(bytes, codec()) {
        Ok((value, used)) if used == bytes.len() => Ok(value),
        Ok((_, used)) => Err(format!(
            "{what}: {} trailing bytes after the record",
            bytes.len() - used
        )),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

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
    pub(crate) fn count(&mut self, delta: super::indexes::CountDelta) {
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
