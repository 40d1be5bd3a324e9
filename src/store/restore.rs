//! Restoring a backup through the log (`drover operator snapshot restore`).
//!
//! A backup can be far larger than one log entry, so it travels as
//! `RestoreBegin`, `RestoreChunk`s and `RestoreFinish`, each an ordinary
//! replicated entry. The chunks are staged in the `restore_staging` tree,
//! which is part of the replicated state (snapshots carry it), so a node
//! that catches up by snapshot in the middle of a restore still has every
//! chunk. `RestoreFinish` verifies the staged body and replaces the job
//! table and the tokens in one atomic change, on every node alike; until then
//! nothing visible changes, and a restore that never finishes changes
//! nothing at all.
//!
//! Layout of `restore_staging`: `meta` -> bincode [`StagedMeta`];
//! `c/` ++ seq u32 BE -> chunk bytes.

use serde::{Deserialize, Serialize};

use super::indexes::{self, SmTx, Tx};
use super::layout::{self, CountDelta};
use super::{backup, codec, Store, StoreError};
use crate::acl::Token;
use crate::jobs::{lifecycle, Applied, EndReason, Job};

const KEY_META: &[u8] = b"meta";

/// The restore being staged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StagedMeta {
    /// Names the restore.
    pub id: String,
    /// Chunks expected.
    pub chunks: u32,
    /// SHA-256 of the whole body.
    pub sha256: [u8; 32],
}

/// Key of chunk `seq`.
pub(crate) fn chunk_key(seq: u32) -> [u8; 6] {
    let mut key = [b'c', b'/', 0, 0, 0, 0];
    key[2..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Everything a `RestoreFinish` writes, computed before its change.
pub(crate) struct PreparedRestore {
    /// Keys to delete: jobs, queue, active, finished, idempotency, acl,
    /// restore_staging (in that order).
    old_keys: Vec<Vec<sled::IVec>>,
    jobs: Vec<Job>,
    tokens: Vec<Token>,
    bootstrap: Option<String>,
}

impl PreparedRestore {
    /// The counters of the restored table (`sm_meta` is set to them).
    pub(crate) fn counts(&self) -> CountDelta {
        layout::counts_of(&self.jobs)
    }

    /// Stages the writes in the apply's change.
    pub(crate) fn write(&self, tx: &SmTx<'_>) -> Tx<Applied> {
        indexes::remove_keys(&tx.restored(), &self.old_keys);
        for job in &self.jobs {
            tx.put_job(None, job)?;
        }
        tx.put_acl_state(&self.tokens, self.bootstrap.as_deref())?;
        Ok(Applied::Restored {
            jobs: self.jobs.len() as u64,
            tokens: self.tokens.len() as u64,
        })
    }
}

/// Jobs as a restore writes them: an attempt that was active when the
/// backup was taken ran on containers of another time, so it ends
/// NODE_LOST (and the job re-runs if it has attempts left), as when its
/// node is lost.
pub(crate) fn settle_active(mut jobs: Vec<Job>, at_ms: i64) -> Vec<Job> {
    for job in &mut jobs {
        if let Some((node, attempt)) = job.active_on() {
            let event = lifecycle::Event::Finish {
                attempt,
                node,
                at_ms,
                exit_code: None,
                reason: EndReason::NodeLost,
                message: "restored from a backup taken while it ran".into(),
                output_tail: Vec::new(),
            };
            // Cannot be refused: it is the active attempt on its node.
            let _ = lifecycle::apply(job, event);
        }
    }
    jobs
}

impl Store {
    fn staged_meta_tx(&self, tx: &SmTx<'_>) -> Tx<Option<StagedMeta>> {
        match tx.restore.get(KEY_META)? {
            Some(bytes) => Ok(Some(self.decode("staged restore", &bytes)?)),
            None => Ok(None),
        }
    }

    /// `RestoreBegin`: discards any earlier staging, starts this one.
    pub(crate) fn restore_begin(
        &self,
        tx: &SmTx<'_>,
        id: &str,
        chunks: u32,
        sha256: [u8; 32],
    ) -> Tx<Applied> {
        if let Some(old) = self.staged_meta_tx(tx)? {
            for seq in 0..old.chunks {
                tx.restore.remove(chunk_key(seq));
            }
        }
        let meta = StagedMeta {
            id: id.to_string(),
            chunks,
            sha256,
        };
        tx.restore
            .insert(KEY_META, codec::encode("staged restore", &meta)?);
        Ok(Applied::Noop)
    }

    /// `RestoreChunk`: stores one chunk of the current staging.
    pub(crate) fn restore_chunk(
        &self,
        tx: &SmTx<'_>,
        id: &str,
        seq: u32,
        data: &[u8],
    ) -> Tx<Applied> {
        match self.staged_meta_tx(tx)? {
            Some(meta) if meta.id == id && seq < meta.chunks => {
                tx.restore.insert(chunk_key(seq), data);
                Ok(Applied::Noop)
            }
            _ => Ok(Applied::Refused {
                reason: format!("no staged restore {id} expects chunk {seq}"),
            }),
        }
    }

    /// Before a `RestoreFinish`'s change (under `sm_lock`, after the
    /// entries before it were applied): reads and verifies the staging and
    /// lists what the restore deletes. `Ok(Err(reason))` is a refusal every
    /// replica reaches alike (incomplete or damaged staging).
    pub(crate) fn prepare_restore(
        &self,
        id: &str,
        at_ms: i64,
    ) -> Result<Result<PreparedRestore, String>, StoreError> {
        let t = &self.sm;
        let meta = match t.restore.get(KEY_META).map_err(|e| self.sled_err(e))? {
            Some(bytes) => self.decode::<StagedMeta>("staged restore", &bytes)?,
            None => return Ok(Err(format!("no staged restore {id}"))),
        };
        if meta.id != id {
            return Ok(Err(format!(
                "restore {id} is not the staged one ({})",
                meta.id
            )));
        }
        let mut body = Vec::new();
        for seq in 0..meta.chunks {
            match t
                .restore
                .get(chunk_key(seq))
                .map_err(|e| self.sled_err(e))?
            {
                Some(chunk) => body.extend_from_slice(&chunk),
                None => return Ok(Err(format!("restore {id} lacks chunk {seq}"))),
            }
        }
        if backup::sha256(&body) != meta.sha256 {
            return Ok(Err(format!(
                "restore {id}: the staged body does not match its checksum"
            )));
        }
        let state = match backup::decode_state(&body) {
            Ok(state) => state,
            Err(reason) => return Ok(Err(format!("restore {id}: {reason}"))),
        };
        let old_keys = self.keys_of(&self.sm.restored())?;
        // A restore never reopens bootstrap: a cluster once bootstrapped
        // stays so, even restored from a backup taken before.
        let current = t
            .acl
            .get(layout::ACL_BOOTSTRAP_KEY)
            .map_err(|e| self.sled_err(e))?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        Ok(Ok(PreparedRestore {
            old_keys,
            jobs: settle_active(state.jobs, at_ms),
            tokens: state.tokens,
            bootstrap: state.bootstrap.or(current),
        }))
    }
}

/// What seeding a data directory from a backup produced.
#[derive(Clone, Debug)]
pub struct Seeded {
    /// The cluster the seeded node belongs to.
    pub cluster_id: String,
    /// The log index the node starts from.
    pub index: crate::raft::Index,
    /// Jobs restored.
    pub jobs: u64,
    /// Tokens restored.
    pub tokens: u64,
}

/// `drover operator snapshot restore FILE --data-dir DIR --node-id N`, the
/// whole offline restore in one call: verifies the file before the data
/// directory is even created, refuses a directory that holds anything,
/// and seeds a new store there whose only member is this node at `peer`.
/// `cluster_id` defaults to the backup's.
pub fn seed_data_dir(
    file: &[u8],
    data_dir: &std::path::Path,
    node_id: crate::raft::NodeId,
    cluster_id: Option<String>,
    peer: crate::raft::PeerInfo,
) -> Result<Seeded, String> {
    let header = backup::read(file).map_err(|e| e.to_string())?.header;
    let non_empty = std::fs::read_dir(data_dir).is_ok_and(|mut d| d.next().is_some());
    if non_empty {
        return Err(format!(
            "{} is not empty: seed a new, empty data directory (this never overwrites a node)",
            data_dir.display()
        ));
    }
    let cluster_id = cluster_id.unwrap_or(header.cluster_id);
    let store = Store::open(data_dir, &cluster_id, node_id).map_err(|e| e.to_string())?;
    let mut membership = crate::raft::Membership::default();
    membership.voters.insert(node_id, peer);
    store.seed_from_backup(file, membership, crate::jobs::now_ms())
}

impl Store {
    /// Disaster recovery: makes this FRESH store a node of a new cluster
    /// whose state is the backup's (`drover operator snapshot restore FILE
    /// --data-dir DIR --node-id N`). The backup's state is installed as this
    /// node's snapshot, with `membership` (normally just this node) instead
    /// of the old cluster's; the node then starts as that cluster's only
    /// member, and new nodes join it with `add-peer`. Jobs active in the
    /// backup end NODE_LOST. Refused on a store that already holds any Raft
    /// state: this never overwrites a node.
    pub fn seed_from_backup(
        &self,
        file: &[u8],
        membership: crate::raft::Membership,
        at_ms: i64,
    ) -> Result<Seeded, String> {
        if !self.is_fresh() {
            return Err(format!(
                "{} already holds a node's data; seed an empty directory",
                self.data_dir().display()
            ));
        }
        let verified = backup::read(file).map_err(|e| e.to_string())?;
        let header = verified.header;
        let state = backup::decode_state(&verified.body)?;
        let jobs = settle_active(state.jobs, at_ms);
        let mut builder = super::snapshot::SnapshotBuilder::new();
        for job in &jobs {
            let record = codec::encode("job", job).map_err(|e| e.to_string())?;
            builder.push_encoded_job(&record)?;
        }
        for token in &state.tokens {
            let record = codec::encode("token", token).map_err(|e| e.to_string())?;
            builder.push_encoded_token(&record)?;
        }
        if let Some(accessor) = state.bootstrap {
            builder.set_bootstrap(accessor);
        }
        let meta = crate::raft::SnapshotMeta {
            index: header.index,
            term: header.term,
            membership: membership.clone(),
        };
        let data = builder.finish(&meta).map_err(|e| e.to_string())?;
        let ready = crate::raft::Ready {
            snapshot: Some((meta, std::sync::Arc::new(data))),
            hard_state: Some(crate::raft::HardState {
                term: header.term,
                vote: 0,
                commit: header.index,
            }),
            membership: Some(membership),
            ..crate::raft::Ready::default()
        };
        self.persist(&ready).map_err(|e| e.to_string())?;
        Ok(Seeded {
            cluster_id: self.cluster_id.clone(),
            index: header.index,
            jobs: jobs.len() as u64,
            tokens: state.tokens.len() as u64,
        })
    }
}
