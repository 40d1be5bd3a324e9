//! The state machine's trees and the secondary indexes kept beside the job
//! table, written in the same transaction as the rows they index.
//!
//! Layout (all integers big-endian so sled's byte order is numeric order):
//! - `job_queue`:  (255 - priority rank: u32) ++ job id -> not_before_ms i64.
//!   Queued jobs in placement order: higher priority first, then older
//!   (ids are ULIDs, so id order is submission order).
//! - `job_active`: node u64 ++ job id -> attempt u32. Assigned and running
//!   jobs by node: what a node must run, what the leader counts as used.
//! - `job_finished`: finished_at_ms u64 ++ job id -> (). Terminal jobs,
//!   oldest first, for garbage collection.
//! - `job_idempotency`: key bytes -> job id.
//! - `nodes`: node u64 -> bincode `NodeRecord`.
//! - `acl` (schema 3): `t/` ++ accessor -> bincode `acl::Token`;
//!   `h/` ++ sha256(secret) -> accessor (the lookup every call makes);
//!   `bootstrap` -> accessor of the bootstrap token, once bootstrapped.

use super::codec;
pub(crate) use super::staged::{SmTx, StagedTree, Tx};
use crate::acl::Token;
use crate::jobs::{Job, JobId, JobState, NodeRecord};
use crate::raft::NodeId;

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

/// Deletes `keys[i]` from `trees[i]`: what replacing a table wholesale
/// removes (the keys are listed before the transaction, which cannot scan).
pub(crate) fn remove_keys(trees: &[&StagedTree<'_>], keys: &[Vec<sled::IVec>]) {
    for (tree, keys) in trees.iter().zip(keys) {
        for key in keys {
            tree.remove(key);
        }
    }
}

impl CountDelta {
    fn of(job: &Job, sign: i64) -> CountDelta {
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

impl SmTx<'_> {
    /// Writes `new` (replacing `old`, if any) and moves its index entries.
    pub(crate) fn put_job(&self, old: Option<&Job>, new: &Job) -> Tx<CountDelta> {
        let mut delta = CountDelta::default();
        if let Some(old) = old {
            self.remove_index_entries(old);
            delta.add(CountDelta::of(old, -1));
        }
        self.jobs
            .insert(new.id.to_bytes(), codec::encode("job", new)?);
        self.insert_index_entries(new);
        delta.add(CountDelta::of(new, 1));
        Ok(delta)
    }

    /// Deletes a job row, its index entries and its idempotency key.
    pub(crate) fn delete_job(&self, job: &Job) -> CountDelta {
        self.jobs.remove(job.id.to_bytes());
        self.remove_index_entries(job);
        if let Some(key) = &job.spec.idempotency_key {
            self.idempotency.remove(key.as_bytes());
        }
        CountDelta::of(job, -1)
    }

    fn insert_index_entries(&self, job: &Job) {
        if job.state == JobState::Queued {
            self.queue.insert(
                queue_key(job.spec.priority, &job.id),
                &job.not_before_ms.to_be_bytes()[..],
            );
        }
        if let Some((node, attempt)) = job.active_on() {
            self.active
                .insert(active_key(node, &job.id), &attempt.to_be_bytes()[..]);
        }
        if let Some(at) = job.finished_at_ms {
            self.finished.insert(finished_key(at, &job.id), &[][..]);
        }
        if let Some(key) = &job.spec.idempotency_key {
            self.idempotency
                .insert(key.as_bytes(), &job.id.to_bytes()[..]);
        }
    }

    fn remove_index_entries(&self, job: &Job) {
        if job.state == JobState::Queued {
            self.queue.remove(queue_key(job.spec.priority, &job.id));
        }
        if let Some((node, _)) = job.active_on() {
            self.active.remove(active_key(node, &job.id));
        }
        if let Some(at) = job.finished_at_ms {
            self.finished.remove(finished_key(at, &job.id));
        }
    }

    /// Writes a node record.
    pub(crate) fn put_node(&self, node: &NodeRecord) -> Tx<()> {
        self.nodes
            .insert(node.id.to_be_bytes(), codec::encode("node", node)?);
        Ok(())
    }

    /// Writes a token and its hash entry.
    pub(crate) fn put_token(&self, token: &Token) -> Tx<()> {
        self.acl.insert(
            acl_token_key(&token.accessor),
            codec::encode("token", token)?,
        );
        self.acl
            .insert(acl_hash_key(&token.secret_hash), token.accessor.as_bytes());
        Ok(())
    }

    /// Writes a whole token table: the tokens and the bootstrap mark.
    pub(crate) fn put_acl_state(&self, tokens: &[Token], bootstrap: Option<&str>) -> Tx<()> {
        for token in tokens {
            self.put_token(token)?;
        }
        if let Some(accessor) = bootstrap {
            self.acl.insert(ACL_BOOTSTRAP_KEY, accessor.as_bytes());
        }
        Ok(())
    }

    /// Deletes a token and its hash entry.
    pub(crate) fn delete_token(&self, token: &Token) {
        self.acl.remove(acl_token_key(&token.accessor));
        self.acl.remove(acl_hash_key(&token.secret_hash));
    }
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
