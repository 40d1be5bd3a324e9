//! The state-machine side of the store: applying committed entries to the
//! job table, reading it, and taking snapshots of it.

use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sled::transaction::{abort, ConflictableTransactionError};
use sled::Transactional;

use super::codec::{self, SmMeta, SnapshotRecord};
use super::{lock, snapshot, Snapshot, Store, StoreError};
use crate::jobs::{Command, Job, JobId, JobState};
use crate::raft::{ConfChange, Entry, Index, Membership, Payload, SnapshotMeta};

/// Upper bound on one read of [`Store::list_jobs`]; larger limits are
/// clamped to it. One more than the API's largest page, so a full page can
/// tell whether another follows.
pub const MAX_LIST_LIMIT: usize = 1001;

/// What applying one entry did, so the node can answer the client waiting
/// on it. One per entry passed to [`Store::apply`], in the same order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A `Submit` created this job.
    Job(Job),
    /// A `Submit` whose id already existed: nothing changed. Carries the
    /// existing job (a retried submission gets the original answer).
    DuplicateJob(Job),
    /// A leader's no-op entry.
    Noop,
    /// A membership change; the membership after it.
    ConfChange(Membership),
    /// The entry's command could not be decoded; it was applied as a no-op
    /// (and logged) so that the apply loop never stops on a bad entry.
    Rejected {
        /// Why the command could not be decoded.
        reason: String,
    },
    /// The entry was at or below the applied index (e.g. re-delivered after
    /// a restart): nothing done.
    AlreadyApplied,
}

/// A command decoded ahead of the transaction (decoding is pure).
enum Decoded {
    Noop,
    Command(Command),
    Bad(String),
    ConfChange(ConfChange),
}

type Tx<T> = Result<T, ConflictableTransactionError<StoreError>>;

impl Store {
    /// Applies committed entries, in order, to the job table. The changes
    /// and the new applied index/term commit in ONE transaction across
    /// `jobs` and `sm_meta`; no fsync (see the module docs: the entries are
    /// durable in the log and re-applied after a crash).
    ///
    /// Entries at or below the applied index are skipped
    /// ([`Applied::AlreadyApplied`]), so re-applying after a restart is
    /// idempotent. A gap (an entry above applied + 1) is a contract
    /// violation and nothing is applied.
    pub fn apply(&self, entries: &[Entry]) -> Result<Vec<Applied>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let decoded: Vec<Decoded> = entries
            .iter()
            .map(|e| match &e.payload {
                Payload::Noop => Decoded::Noop,
                Payload::ConfChange(cc) => Decoded::ConfChange(cc.clone()),
                Payload::Command(bytes) => match Command::decode(bytes) {
                    Ok(c) => Decoded::Command(c),
                    Err(err) => Decoded::Bad(err.to_string()),
                },
            })
            .collect();

        let _sm = lock(&self.sm_lock);
        let (results, sm) = (&self.jobs, &self.sm_meta)
            .transaction(|(jobs, sm_tree)| -> Tx<(Vec<Applied>, SmMeta)> {
                let mut sm: SmMeta = match sm_tree.get(codec::KEY_SM_META)? {
                    Some(bytes) => codec::decode("sm_meta", &bytes)
                        .map_err(|d| ConflictableTransactionError::Abort(self.corrupt(d)))?,
                    None => SmMeta::default(),
                };
                let mut results = Vec::with_capacity(entries.len());
                for (entry, decoded) in entries.iter().zip(&decoded) {
                    if entry.index <= sm.applied_index {
                        results.push(Applied::AlreadyApplied);
                        continue;
                    }
                    if entry.index != sm.applied_index + 1 {
                        return abort(StoreError::Contract(format!(
                            "apply of entry {} but the applied index is {}",
                            entry.index, sm.applied_index
                        )));
                    }
                    let applied = match decoded {
                        Decoded::Noop => Applied::Noop,
                        Decoded::Bad(reason) => Applied::Rejected {
                            reason: reason.clone(),
                        },
                        Decoded::ConfChange(cc) => {
                            sm.membership.apply(cc);
                            Applied::ConfChange(sm.membership.clone())
                        }
                        Decoded::Command(Command::Submit {
                            id,
                            spec,
                            submitted_at_ms,
                        }) => {
                            let key = id.to_bytes();
                            match jobs.get(key)? {
                                Some(existing) => {
                                    let job = self
                                        .decode_job(&key, &existing)
                                        .map_err(ConflictableTransactionError::Abort)?;
                                    Applied::DuplicateJob(job)
                                }
                                None => {
                                    let job = Job {
                                        id: *id,
                                        spec: spec.clone(),
                                        state: JobState::Queued,
                                        submitted_at_ms: *submitted_at_ms,
                                        index: entry.index,
                                    };
                                    let value = codec::encode("job", &job)
                                        .map_err(ConflictableTransactionError::Abort)?;
                                    jobs.insert(&key[..], value)?;
                                    sm.job_count += 1;
                                    Applied::Job(job)
                                }
                            }
                        }
                    };
                    sm.applied_index = entry.index;
                    sm.applied_term = entry.term;
                    results.push(applied);
                }
                let value =
                    codec::encode("sm_meta", &sm).map_err(ConflictableTransactionError::Abort)?;
                sm_tree.insert(codec::KEY_SM_META, value)?;
                Ok((results, sm))
            })
            .map_err(|e| self.tx_err(e))?;
        // Publish only after the transaction committed (see `applied`).
        self.job_count.store(sm.job_count, Ordering::Release);
        self.applied.store(sm.applied_index, Ordering::Release);
        for (entry, result) in entries.iter().zip(&results) {
            if let Applied::Rejected { reason } = result {
                tracing::error!(index = entry.index, term = entry.term, %reason, "undecodable command applied as a no-op");
            }
        }
        Ok(results)
    }

    /// Writes a snapshot of the job table and membership at the applied
    /// index, durably (file, then record, then one flush), and returns it.
    /// The previous snapshot file is deleted afterwards. The caller may
    /// then [`Store::compact_log`] up to the returned index (less the
    /// trailing entries it wants to keep).
    pub fn create_snapshot(&self) -> Result<Snapshot, StoreError> {
        // A consistent view: no apply runs while we copy the table.
        // A consistent view: no apply runs while the rows are collected. Only
        // cheap reference-counted copies are taken under the lock, so the
        // Raft loop (which applies) waits as little as possible; decoding
        // and encoding happen after it is released.
        let (sm, rows) = {
            let _sm = lock(&self.sm_lock);
            let sm = self.sm_meta()?;
            let rows = self
                .jobs
                .iter()
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.sled_err(e))?;
            (sm, rows)
        };
        let (meta, data) = {
            let mut builder = snapshot::SnapshotBuilder::new();
            for (key, value) in &rows {
                // Decode to refuse to propagate a corrupt row to followers.
                self.decode_job(key, value)?;
                builder
                    .push_encoded_job(value)
                    .map_err(|d| self.corrupt(d))?;
            }
            drop(rows);
            let meta = SnapshotMeta {
                index: sm.applied_index,
                term: sm.applied_term,
                membership: sm.membership,
            };
            let data = builder.finish(&meta)?;
            (meta, data)
        };

        let _snap = lock(&self.snap_lock);
        if let Some(current) = self.snapshot_record()? {
            if current.meta.index > meta.index {
                // A newer snapshot was installed meanwhile; it wins.
                let data = snapshot::read_file(&self.snapshot_dir, &current)
                    .map_err(|d| self.corrupt(d))?;
                return Ok((current.meta, Arc::new(data)));
            }
        }
        let record = SnapshotRecord {
            meta: meta.clone(),
            file: snapshot::file_name(&meta),
            len: data.len() as u64,
            crc32: crc32fast::hash(&data),
        };
        snapshot::write_file(&self.snapshot_dir, &record.file, &data).map_err(|source| {
            StoreError::Io {
                path: self.snapshot_dir.join(&record.file),
                source,
            }
        })?;
        let encoded = codec::encode("snapshot record", &record)?;
        self.snapshots
            .insert(codec::KEY_LATEST_SNAPSHOT, encoded)
            .map_err(|e| self.sled_err(e))?;
        self.flush()?;
        snapshot::remove_stale_files(&self.snapshot_dir, Some(&record.file));
        tracing::info!(
            index = meta.index,
            term = meta.term,
            bytes = data.len(),
            "created snapshot"
        );
        Ok((meta, Arc::new(data)))
    }

    /// The job with this id, if it exists (as of the latest apply).
    pub fn get_job(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        let key = id.to_bytes();
        match self.jobs.get(key).map_err(|e| self.sled_err(e))? {
            Some(value) => self.decode_job(&key, &value).map(Some),
            None => Ok(None),
        }
    }

    /// Up to `limit` jobs (clamped to [`MAX_LIST_LIMIT`]) in id order, i.e.
    /// submission order, starting after `after`: cursor pagination where
    /// the cursor is the last id of the previous page.
    pub fn list_jobs(&self, after: Option<&JobId>, limit: usize) -> Result<Vec<Job>, StoreError> {
        let limit = limit.min(MAX_LIST_LIMIT);
        let start = match after {
            Some(id) => Bound::Excluded(id.to_bytes()),
            None => Bound::Unbounded,
        };
        let mut jobs = Vec::with_capacity(limit.min(64));
        for kv in self.jobs.range((start, Bound::Unbounded)).take(limit) {
            let (key, value) = kv.map_err(|e| self.sled_err(e))?;
            jobs.push(self.decode_job(&key, &value)?);
        }
        Ok(jobs)
    }

    /// Rows in the job table (as of the latest apply). O(1).
    pub fn job_count(&self) -> u64 {
        self.job_count.load(Ordering::Acquire)
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
}
