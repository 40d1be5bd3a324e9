//! Backups through a running node: the file a SaveSnapshot streams, and the
//! staged restore of one (verified first, then proposed in chunks and
//! finished in one entry). The file format is the store's (`store::backup`);
//! the front ends only move bytes.

use std::sync::Arc;

use super::writes::{Change, RestoredCounts};
use super::{now_ms, Node, RaftError};
use crate::jobs::Command;
use crate::store::backup;

/// Bytes per staged log entry (below the 1 MiB command bound).
const STAGE_CHUNK: usize = 512 << 10;

/// Why a restore did not happen. In every case nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The file is not a backup this node can restore (checksum, format,
    /// state that does not decode).
    #[error("{0}")]
    Invalid(String),
    /// The state machine refused a step (another restore started meanwhile,
    /// or the staging is incomplete).
    #[error("{0}")]
    Refused(String),
    /// Proposing failed (no leader, no quorum, no space).
    #[error(transparent)]
    Raft(#[from] RaftError),
}

// ---- Offline: what the CLI does with backup files, without a node ----

/// A verified backup's header and its contents by state.
pub use crate::store::backup::Summary as BackupSummary;
/// Seeds an empty data directory from a backup as the only member of a
/// new cluster (`drover operator snapshot restore --data-dir`): disaster
/// recovery is this one call; [`Seeded`] says what it put there.
pub use crate::store::{seed_data_dir, Seeded};

/// Reads and verifies a backup file's bytes (`drover operator snapshot
/// inspect`): its header and what it holds.
pub fn inspect(file: &[u8]) -> Result<BackupSummary, String> {
    backup::summarize(file).map_err(|e| e.to_string())
}

/// Writes a backup to `path` as the store writes its snapshot files (temp
/// file, fsync, rename, directory fsync): a crash never leaves half a
/// backup under the final name.
pub fn write_backup_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| std::io::Error::other("the backup file needs a UTF-8 file name"))?;
    crate::store::write_file_durably(dir, name, bytes)
}

/// What a restore replaced the table with, and where the backup came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The applied index after the restore.
    pub index: u64,
    /// Jobs and tokens now in force.
    pub counts: RestoredCounts,
    /// The cluster the backup was taken from.
    pub backup_cluster_id: String,
    /// The index the backup was taken at.
    pub backup_index: u64,
}

impl Node {
    /// A backup file of this node's table as applied now. Callers run a
    /// read barrier first so it holds every acknowledged write.
    pub async fn backup_file(self: &Arc<Self>) -> Result<Vec<u8>, RaftError> {
        let node = self.clone();
        tokio::task::spawn_blocking(move || {
            let (meta, state) = node
                .store
                .export_state()
                .map_err(|e| RaftError::Storage(e.to_string()))?;
            backup::write(
                &node.config.cluster_id,
                meta.index,
                meta.term,
                now_ms(),
                &state,
            )
            .map_err(|e| RaftError::Storage(e.to_string()))
        })
        .await
        .map_err(|e| RaftError::Storage(format!("the backup task failed: {e}")))?
    }

    /// Replaces the job table and tokens with a backup's, on the leader.
    /// The whole file is verified (checksums, format, decodable state)
    /// before anything is proposed.
    pub async fn restore_backup(&self, file: Vec<u8>) -> Result<Restored, RestoreError> {
        let verified = backup::read(&file).map_err(|e| RestoreError::Invalid(e.to_string()))?;
        drop(file);
        let header = verified.header;
        let body = Arc::new(verified.body);
        let checked = body.clone();
        tokio::task::spawn_blocking(move || backup::decode_state(&checked).map(|_| ()))
            .await
            .map_err(|e| RaftError::Storage(format!("the verify task failed: {e}")))?
            .map_err(|e| RestoreError::Invalid(format!("the backup does not decode: {e}")))?;

        let id = ulid::Ulid::new().to_string();
        let pieces: Vec<&[u8]> = body.chunks(STAGE_CHUNK).collect();
        let count = |n: usize| {
            u32::try_from(n).map_err(|_| RestoreError::Invalid("the backup is too large".into()))
        };
        let begin = Command::RestoreBegin {
            id: id.clone(),
            chunks: count(pieces.len())?,
            sha256: backup::sha256(&body),
        };
        if let Change::Refused(reason) = self.stage_restore(begin).await? {
            return Err(RestoreError::Refused(reason));
        }
        for (seq, data) in pieces.iter().enumerate() {
            let chunk = Command::RestoreChunk {
                id: id.clone(),
                seq: count(seq)?,
                data: data.to_vec(),
            };
            if let Change::Refused(reason) = self.stage_restore(chunk).await? {
                return Err(RestoreError::Refused(format!(
                    "the restore was interrupted (another restore started?): {reason}"
                )));
            }
        }
        let finish = Command::RestoreFinish {
            id,
            at_ms: now_ms(),
        };
        match self.finish_restore(finish).await? {
            Change::Done(counts) => {
                tracing::warn!(
                    jobs = counts.jobs,
                    tokens = counts.tokens,
                    backup_index = header.index,
                    backup_cluster = %header.cluster_id,
                    "restored a backup: the job table and tokens were replaced"
                );
                Ok(Restored {
                    index: self.applied_index(),
                    counts,
                    backup_cluster_id: header.cluster_id,
                    backup_index: header.index,
                })
            }
            Change::Refused(reason) => Err(RestoreError::Refused(format!(
                "the restore was refused: {reason}"
            ))),
        }
    }
}
