//! Everything that can go wrong in the store, each with a message that says
//! what happened and what to do about it.

use std::path::PathBuf;

/// Why a store operation failed.
///
/// The open-time refusals (`WrongCluster`, `WrongNode`, `NewerSchema`,
/// `Corrupt`) exist so that a node never silently reinitialises or
/// reinterprets a data directory: losing a Raft node's persistent state
/// (its vote, its acknowledged entries) breaks the cluster's safety.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation on the data directory failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The storage engine reported an error (typically I/O, or the database
    /// is locked by another process).
    #[error("storage engine error in {path}: {source} (is another Drover process using this data directory?)")]
    Sled {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },

    /// The data directory belongs to another cluster.
    #[error("the data directory {path} belongs to cluster {found:?}, but this node is configured for cluster {expected:?}: point `data_dir` at this cluster's directory, or fix `cluster_id` in the config")]
    WrongCluster {
        path: PathBuf,
        found: String,
        expected: String,
    },

    /// The data directory belongs to another node of this cluster.
    #[error("the data directory {path} belongs to node {found}, but this node is configured as node {expected}: point `data_dir` at node {expected}'s directory, or fix `node_id` in the config (never reuse another node's data)")]
    WrongNode {
        path: PathBuf,
        found: u64,
        expected: u64,
    },

    /// The store was written by a newer release with a schema this binary
    /// does not understand.
    #[error("the store in {path} has schema version {found}, but this binary knows only up to version {supported}: it was written by a newer Drover: upgrade the binary or restore a backup")]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    /// The store's contents cannot be trusted: an undecodable record, a
    /// snapshot whose checksum does not match, a hole in the log.
    #[error("the store in {path} is corrupt: {detail}. Restore the data directory from a backup, or remove this node from the cluster (`drover operator raft remove-peer`) and re-add it with an empty data directory")]
    Corrupt { path: PathBuf, detail: String },

    /// A schema migration failed; the store is left at the previous version.
    #[error("schema migration {version} ({name}) failed on {path}: {reason}")]
    Migration {
        path: PathBuf,
        version: u32,
        name: &'static str,
        reason: String,
    },

    /// A snapshot received from the leader is malformed or does not match
    /// its metadata. Nothing was written.
    #[error("invalid snapshot received: {0}")]
    BadSnapshot(String),

    /// The caller broke the storage contract (e.g. a gap in the entries to
    /// append or apply, a term going backwards). Nothing was written; this
    /// is a bug in the caller.
    #[error("storage contract violated (a bug; nothing was written): {0}")]
    Contract(String),

    /// An argument is out of range (e.g. node id 0).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A value could not be serialized.
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: bincode::error::EncodeError,
    },
}
