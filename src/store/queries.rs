//! Reads of the job table, the node table and the token table, from this
//! node's replica (the API adds read barriers where a read must be current).

use std::ops::Bound;
use std::sync::atomic::Ordering;

use super::layout::SmMeta;
use super::layout::{self, id_suffix};
use super::{Store, StoreError};
use crate::acl::Token;
use crate::jobs::{Job, JobId, JobScan, NodeRecord, Reserved};
use crate::raft::{Index, Membership, NodeId};

/// Upper bound on one read of [`Store::list_jobs`]; larger limits are
/// clamped to it. One more than the API's largest page, so a full page can
/// tell whether another follows.
pub const MAX_LIST_LIMIT: usize = 1001;

impl Store {
    /// The job with this id, if it exists (as of the latest apply).
    pub fn get_job(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        let key = id.to_bytes();
        match self.sm.jobs.get(key).map_err(|e| self.sled_err(e))? {
            Some(value) => self.decode_job(&key, &value).map(Some),
            None => Ok(None),
        }
    }

    /// Up to `limit` jobs (clamped to [`MAX_LIST_LIMIT`]) of `scan`, in id
    /// order (submission order) or its reverse, starting after `after`:
    /// cursor pagination where the cursor is the last id of the previous
    /// page.
    pub fn list_jobs(
        &self,
        scan: &JobScan,
        after: Option<&JobId>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let limit = limit.min(MAX_LIST_LIMIT);
        let bound = |id: Option<JobId>| match id {
            Some(id) => Bound::Included(id.to_bytes()),
            None => Bound::Unbounded,
        };
        let (mut low, mut high) = (bound(scan.first), bound(scan.last));
        if let Some(id) = after {
            let cursor = Bound::Excluded(id.to_bytes());
            // Past the cursor, and never outside the scan's range.
            match scan.newest_first {
                false if scan.first.is_none_or(|first| *id >= first) => low = cursor,
                true if scan.last.is_none_or(|last| *id <= last) => high = cursor,
                _ => {}
            }
        }
        let rows = self.sm.jobs.range((low, high));
        let rows: Box<dyn Iterator<Item = _>> = match scan.newest_first {
            true => Box::new(rows.rev()),
            false => Box::new(rows),
        };
        let mut jobs = Vec::with_capacity(limit.min(64));
        for kv in rows.take(limit) {
            let (key, value) = kv.map_err(|e| self.sled_err(e))?;
            jobs.push(self.decode_job(&key, &value)?);
        }
        Ok(jobs)
    }

    /// Queued jobs in placement order (priority, then age), each with the
    /// time before which it must not be placed (retry backoff). Lazy: the
    /// scheduler stops reading when no node has room.
    pub fn queued_jobs(&self) -> impl Iterator<Item = Result<(JobId, i64), StoreError>> + '_ {
        self.sm.queue.iter().map(move |kv| {
            let (key, value) = kv.map_err(|e| self.sled_err(e))?;
            let id = id_suffix(&key).map_err(|d| self.corrupt(d))?;
            let not_before = <[u8; 8]>::try_from(value.as_ref())
                .map(i64::from_be_bytes)
                .map_err(|_| self.corrupt("job_queue value is not 8 bytes".into()))?;
            Ok((id, not_before))
        })
    }

    /// The jobs assigned to or running on `node`, with their attempt.
    pub fn active_on_node(&self, node: NodeId) -> Result<Vec<(JobId, u32)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.sm.active.scan_prefix(node.to_be_bytes()) {
            let (key, value) = kv.map_err(|e| self.sled_err(e))?;
            let id = id_suffix(&key).map_err(|d| self.corrupt(d))?;
            let attempt = <[u8; 4]>::try_from(value.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| self.corrupt("job_active value is not 4 bytes".into()))?;
            out.push((id, attempt));
        }
        Ok(out)
    }

    /// Every assigned or running job, as (node, job, attempt).
    pub fn active_jobs(&self) -> Result<Vec<(NodeId, JobId, u32)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.sm.active.iter() {
            let (key, value) = kv.map_err(|e| self.sled_err(e))?;
            let node = <[u8; 8]>::try_from(&key[..key.len().min(8)])
                .map(u64::from_be_bytes)
                .map_err(|_| self.corrupt("job_active key is short".into()))?;
            let id = id_suffix(&key).map_err(|d| self.corrupt(d))?;
            let attempt = <[u8; 4]>::try_from(value.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| self.corrupt("job_active value is not 4 bytes".into()))?;
            out.push((node, id, attempt));
        }
        Ok(out)
    }

    /// What the active jobs of each node reserve (nodes without any absent).
    pub fn reserved_by_node(
        &self,
    ) -> Result<std::collections::BTreeMap<NodeId, Reserved>, StoreError> {
        let mut out = std::collections::BTreeMap::<NodeId, Reserved>::new();
        for (node, id, _) in self.active_jobs()? {
            if let Some(job) = self.get_job(&id)? {
                out.entry(node).or_default().add(&job.spec.resources);
            }
        }
        Ok(out)
    }

    /// Up to `limit` finished jobs, oldest finish first: GC candidates.
    pub fn oldest_finished(&self, limit: usize) -> Result<Vec<(i64, JobId)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.sm.finished.iter().keys().take(limit) {
            let key = kv.map_err(|e| self.sled_err(e))?;
            let at = <[u8; 8]>::try_from(&key[..key.len().min(8)])
                .map(|b| u64::from_be_bytes(b) as i64)
                .map_err(|_| self.corrupt("job_finished key is short".into()))?;
            out.push((at, id_suffix(&key).map_err(|d| self.corrupt(d))?));
        }
        Ok(out)
    }

    /// Every node record, by id.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.sm
            .nodes
            .iter()
            .values()
            .map(|v| self.decode("node", &v.map_err(|e| self.sled_err(e))?))
            .collect()
    }

    /// One node record.
    pub fn node(&self, id: NodeId) -> Result<Option<NodeRecord>, StoreError> {
        match self
            .sm
            .nodes
            .get(id.to_be_bytes())
            .map_err(|e| self.sled_err(e))?
        {
            Some(v) => self.decode("node", &v).map(Some),
            None => Ok(None),
        }
    }

    /// The token whose secret hashes to `hash`: the lookup behind every
    /// authenticated call (two point reads).
    pub fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<Token>, StoreError> {
        let acl = &self.sm.acl;
        let Some(accessor) = acl
            .get(layout::acl_hash_key(hash))
            .map_err(|e| self.sled_err(e))?
        else {
            return Ok(None);
        };
        let key = [layout::ACL_TOKEN_PREFIX, &accessor[..]].concat();
        match acl.get(key).map_err(|e| self.sled_err(e))? {
            Some(v) => self.decode("token", &v).map(Some),
            None => Ok(None),
        }
    }

    /// One token by accessor id.
    pub fn token(&self, accessor: &str) -> Result<Option<Token>, StoreError> {
        match self
            .sm
            .acl
            .get(layout::acl_token_key(accessor))
            .map_err(|e| self.sled_err(e))?
        {
            Some(v) => self.decode("token", &v).map(Some),
            None => Ok(None),
        }
    }

    /// Every token, by accessor id (oldest first: accessors are ULIDs).
    pub fn tokens(&self) -> Result<Vec<Token>, StoreError> {
        self.sm
            .acl
            .scan_prefix(layout::ACL_TOKEN_PREFIX)
            .values()
            .map(|v| self.decode("token", &v.map_err(|e| self.sled_err(e))?))
            .collect()
    }

    /// Whether `AclBootstrap` has been applied (a second one is refused).
    pub fn acl_bootstrapped(&self) -> Result<bool, StoreError> {
        self.sm
            .acl
            .contains_key(layout::ACL_BOOTSTRAP_KEY)
            .map_err(|e| self.sled_err(e))
    }

    /// The job `owner` (a token's accessor; None without a token) first
    /// submitted with this idempotency key, if any: keys are per owner.
    pub fn job_by_idempotency_key(
        &self,
        owner: Option<&str>,
        key: &str,
    ) -> Result<Option<Job>, StoreError> {
        match self
            .sm
            .idempotency
            .get(super::layout::idempotency_key(owner, key))
            .map_err(|e| self.sled_err(e))?
        {
            Some(v) => {
                let id = id_suffix(&v).map_err(|d| self.corrupt(d))?;
                self.get_job(&id)
            }
            None => Ok(None),
        }
    }

    /// Rows in the job table (as of the latest apply). O(1).
    pub fn job_count(&self) -> u64 {
        self.counts.jobs.load(Ordering::Acquire)
    }

    /// Jobs waiting in QUEUED (as of the latest apply). O(1).
    pub fn queued_count(&self) -> u64 {
        self.counts.queued.load(Ordering::Acquire)
    }

    /// Jobs in a terminal state (as of the latest apply). O(1).
    pub fn finished_count(&self) -> u64 {
        self.counts.finished.load(Ordering::Acquire)
    }

    /// Highest log index applied to the job table. A reader that sees index
    /// `i` here sees the effects of every entry up to `i` in the job table.
    pub fn applied_index(&self) -> Index {
        self.applied.load(Ordering::Acquire)
    }

    /// The membership as of the applied index (what a snapshot records).
    pub fn applied_membership(&self) -> Result<Membership, StoreError> {
        Ok(self.sm_meta()?.membership)
    }

    /// Publishes the counters of a committed `sm_meta`, then its applied
    /// index (a reader that sees the index sees the counts too).
    pub(super) fn publish_counts(&self, sm: &SmMeta) {
        self.counts.jobs.store(sm.job_count, Ordering::Release);
        self.counts.queued.store(sm.queued_count, Ordering::Release);
        self.counts
            .finished
            .store(sm.finished_count, Ordering::Release);
        self.applied.store(sm.applied_index, Ordering::Release);
    }
}
