//! What the front ends read: the job table, the node table and the tokens
//! as this node has applied them. The API reads only through these, never
//! the store, so its answers depend on the node's contract (applied state,
//! read barriers) rather than on the store's layout; a store failure
//! reaches it as [`RaftError::Storage`].

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Node, RaftError};
use crate::acl::Token;
use crate::jobs::{Job, JobId, JobScan, NodeRecord, OutputChunk, Reserved};
use crate::raft::{Index, NodeId};
use crate::store::StoreError;

/// A store failure as the API reports it (an internal error).
fn storage(e: StoreError) -> RaftError {
    RaftError::Storage(e.to_string())
}

impl Node {
    /// The index this node's job table reflects.
    pub fn applied_index(&self) -> Index {
        self.store.applied_index()
    }

    /// A job as applied here (reads after a [`Node::read_barrier`] are
    /// linearizable).
    pub fn job(&self, id: &JobId) -> Result<Option<Job>, RaftError> {
        self.store.get_job(id).map_err(storage)
    }

    /// Up to `limit` jobs of `scan` (an id range, oldest or newest first),
    /// after `after`.
    pub fn jobs_after(
        &self,
        scan: &JobScan,
        after: Option<&JobId>,
        limit: usize,
    ) -> Result<Vec<Job>, RaftError> {
        self.store.list_jobs(scan, after, limit).map_err(storage)
    }

    /// The job `owner` first submitted with an idempotency key, if any
    /// (keys are per owner: another owner's key is neither found nor
    /// revealed).
    pub fn job_by_idempotency_key(
        &self,
        owner: Option<&str>,
        key: &str,
    ) -> Result<Option<Job>, RaftError> {
        self.store
            .job_by_idempotency_key(owner, key)
            .map_err(storage)
    }

    /// Every node that has heartbeated, as the table holds it.
    pub fn node_records(&self) -> Result<Vec<NodeRecord>, RaftError> {
        self.store.nodes().map_err(storage)
    }

    /// One node's record.
    pub fn node_record(&self, id: NodeId) -> Result<Option<NodeRecord>, RaftError> {
        self.store.node(id).map_err(storage)
    }

    /// What the active attempts reserve on each node.
    pub fn reserved_by_node(&self) -> Result<BTreeMap<NodeId, Reserved>, RaftError> {
        self.store.reserved_by_node().map_err(storage)
    }

    /// A token by its accessor.
    pub fn token(&self, accessor: &str) -> Result<Option<Token>, RaftError> {
        self.store.token(accessor).map_err(storage)
    }

    /// The token whose secret hashes to `hash`.
    pub fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<Token>, RaftError> {
        self.store.token_by_hash(hash).map_err(storage)
    }

    /// Every token (never their secrets: only hashes are stored).
    pub fn tokens(&self) -> Result<Vec<Token>, RaftError> {
        self.store.tokens().map_err(storage)
    }

    /// Whether the ACL bootstrap has been applied (it happens once).
    pub fn acl_bootstrapped(&self) -> Result<bool, RaftError> {
        self.store.acl_bootstrapped().map_err(storage)
    }

    /// A page of an attempt's output stored on this node: the chunks after
    /// `(job, attempt, after_seq)`, at most about `max_bytes` (see
    /// `Store::read_output`).
    pub fn output_page(
        &self,
        (job, attempt, after_seq): (&JobId, u32, Option<u64>),
        max_bytes: usize,
    ) -> Result<Vec<OutputChunk>, RaftError> {
        self.store
            .read_output(job, attempt, after_seq, max_bytes)
            .map_err(storage)
    }

    /// How many fsyncs the store has made, and the slowest, for the
    /// status call.
    pub fn fsync_stats(&self) -> (u64, Duration) {
        (self.store.fsync_count(), self.store.max_fsync_duration())
    }
}
