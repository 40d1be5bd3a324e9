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
    #[error("I/O error on {path}: {}", explain_io(source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The storage engine reported an error: I/O (named by its cause, with
    /// what to do), or the database locked by another process.
    #[error("storage engine error in {path}: {}", explain_sled(source))]
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

/// ENOSPC, EDQUOT, EIO and EROFS on Linux (the same numbers on every Linux
/// architecture Drover builds for).
const ENOSPC: i32 = 28;
const EDQUOT: i32 = 122;
const EIO: i32 = 5;
const EROFS: i32 = 30;

/// What sled's lock failure says (sled 0.34 `Config::try_lock`): the one
/// case in which another process really holds the data directory.
const SLED_LOCKED: &str = "could not acquire lock";

/// Whether sled failed to open because the directory's lock is held.
pub(super) fn is_locked(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(io) if io.to_string().contains(SLED_LOCKED))
}

/// An I/O error named by its cause, with what the operator should do.
pub fn explain_io(error: &std::io::Error) -> String {
    let Some(code) = os_code(error) else {
        return error.to_string();
    };
    let advice = match code {
        ENOSPC => {
            "the disk is full: free space on the data directory's filesystem, then restart the \
             node (it comes back with every acknowledged job; keep `storage.min_free_bytes` free \
             so it refuses writes before this happens)"
        }
        EDQUOT => {
            "the disk quota of this user is used up: raise the quota or free space, then restart \
             the node"
        }
        EIO => {
            "the device reported an I/O error: check the disk (dmesg, smartctl); if it is \
             failing, stop this node, replace the disk and re-add the node with an empty data \
             directory (`drover operator raft remove-peer`, then `add-peer`) or restore a backup"
        }
        EROFS => {
            "the filesystem is read-only (the kernel remounts it so after an error): check dmesg, \
             repair it and remount it read-write, then restart the node"
        }
        _ => return error.to_string(),
    };
    format!("{}: {advice}", std::io::Error::from_raw_os_error(code))
}

/// The OS error number behind an I/O error, also where sled re-wrapped it
/// as text (`Custom { kind: StorageFull, error: "Os { code: 28, .. }" }`).
fn os_code(error: &std::io::Error) -> Option<i32> {
    if let Some(code) = error.raw_os_error() {
        return Some(code);
    }
    let text = format!("{error:?}");
    if let Some(code) = text
        .split("code: ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
    {
        return Some(code);
    }
    match error.kind() {
        std::io::ErrorKind::StorageFull => Some(ENOSPC),
        std::io::ErrorKind::QuotaExceeded => Some(EDQUOT),
        std::io::ErrorKind::ReadOnlyFilesystem => Some(EROFS),
        _ => None,
    }
}

/// A sled error named by its cause; only a lock failure blames another
/// process.
pub fn explain_sled(error: &sled::Error) -> String {
    match error {
        sled::Error::Io(io) if io.to_string().contains(SLED_LOCKED) => format!(
            "{io}: another process (another Drover node?) has this data directory open: stop it, \
             or point `data_dir` at this node's own directory"
        ),
        sled::Error::Io(io) => explain_io(io),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sled_io(code: i32) -> String {
        StoreError::Sled {
            path: "/data/db".into(),
            source: sled::Error::Io(std::io::Error::from_raw_os_error(code)),
        }
        .to_string()
    }

    #[test]
    fn each_storage_failure_is_named_by_its_cause_with_what_to_do() {
        let full = sled_io(ENOSPC);
        assert!(
            full.contains("the disk is full") && full.contains("free space"),
            "{full}"
        );
        let eio = sled_io(EIO);
        assert!(
            eio.contains("I/O error") && eio.contains("check the disk"),
            "{eio}"
        );
        let rofs = sled_io(EROFS);
        assert!(
            rofs.contains("read-only") && rofs.contains("remount"),
            "{rofs}"
        );
        for message in [&full, &eio, &rofs] {
            assert!(!message.contains("another process"), "{message}");
        }
        let io = StoreError::Io {
            path: "/data/snapshots/x".into(),
            source: std::io::Error::from_raw_os_error(ENOSPC),
        }
        .to_string();
        assert!(io.contains("the disk is full"), "{io}");
    }

    #[test]
    fn an_error_sled_rewrapped_as_text_is_still_named() {
        // What sled 0.34 hands back after a failed flush on a full disk.
        let inner = format!("{:?}", std::io::Error::from_raw_os_error(ENOSPC));
        let wrapped = std::io::Error::new(std::io::ErrorKind::StorageFull, inner);
        let message = StoreError::Sled {
            path: "/data/db".into(),
            source: sled::Error::Io(wrapped),
        }
        .to_string();
        assert!(
            message.contains("No space left on device") && message.contains("the disk is full"),
            "{message}"
        );
    }

    #[test]
    fn only_a_held_lock_blames_another_process() {
        let locked = StoreError::Sled {
            path: "/data/db".into(),
            source: sled::Error::Io(std::io::Error::other(
                "could not acquire lock on \"/data/db/db\": Os { code: 11 }",
            )),
        }
        .to_string();
        assert!(locked.contains("another process"), "{locked}");
    }
}
