//! The state-machine side of the store: applying committed entries to the
//! job table, reading it, and taking snapshots of it.

use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sled::IVec;

use super::codec::{self, SmMeta, SnapshotRecord};
use super::indexes::{self, id_suffix, CountDelta, SmTx, StagedTree, Tx};
use super::restore::PreparedRestore;
use super::staged::{overlay, Capture, SmTree};
use super::{lock, snapshot, Snapshot, Store, StoreError};
use crate::acl::Token;
use crate::jobs::{lifecycle, Command, EndReason, Job, JobId, NodeRecord, NodeStatus, Reserved};
use crate::raft::{ConfChange, Entry, Index, Membership, NodeId, Payload, SnapshotMeta};

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
    /// A `Submit` whose id or idempotency key already existed: nothing
    /// changed. Carries the existing job (a retry gets the original answer).
    DuplicateJob(Job),
    /// A lifecycle event (start, finish, cancel) changed the job; the job
    /// after it.
    Updated(Job),
    /// A lifecycle event that changed nothing (cancelling a finished job, a
    /// repeated start report); the job as it is. Kept apart from `Updated`
    /// so the job event log records only real changes.
    Unchanged(Job),
    /// A lifecycle event was refused: a stale report (fencing), an unknown
    /// job, a wrong state. Deterministic, so every replica refuses it.
    Refused {
        /// Why, for the reporter's log.
        reason: String,
    },
    /// An `Assign` batch: how many placements took and how many were stale.
    Assigned {
        /// Jobs now ASSIGNED.
        placed: u32,
        /// Placements refused (job no longer queued, node not ready).
        refused: u32,
        /// The jobs placed, after the change (`placed` of them), for the
        /// job event log.
        jobs: Vec<Job>,
    },
    /// A node command; the record after it.
    Node(NodeRecord),
    /// `NodeDown`/`Evict`: the node and how many active attempts it lost.
    NodeLost {
        /// The node record after the change.
        node: NodeRecord,
        /// Attempts that ended NODE_LOST / NODE_DRAINED.
        attempts: u32,
        /// The jobs whose attempt ended, after the change (`attempts` of
        /// them), for the job event log.
        jobs: Vec<Job>,
    },
    /// A `Gc`: the jobs removed.
    Collected(Vec<JobId>),
    /// `AclBootstrap`/`AclCreateToken`: the token stored.
    Token(Token),
    /// `AclRevokeToken`: the token removed.
    Revoked(Token),
    /// `RestoreFinish`: the job table and tokens were replaced by a backup's.
    Restored {
        /// Jobs restored.
        jobs: u64,
        /// Tokens restored.
        tokens: u64,
    },
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

/// A command decoded ahead of its staged change (decoding is pure).
enum Decoded {
    Noop,
    /// Boxed: a command is far larger than the other variants.
    Command(Box<Command>),
    Bad(String),
    ConfChange(ConfChange),
}

/// What a command needs read before its staged change: a range scan, which
/// staging cannot do (it overlays point reads only).
enum PreScan {
    /// The active attempts on a node (NodeDown, Evict).
    Node(NodeId),
    /// The staged restore, verified and decoded, and every key it replaces
    /// (RestoreFinish).
    Restore { id: String, at_ms: i64 },
}

impl Decoded {
    /// Commands that need a [`PreScan`] start a new change, and the
    /// scan runs just before it (under `sm_lock`, so it sees exactly the
    /// state the change starts from).
    fn pre_scan(&self) -> Option<PreScan> {
        let Decoded::Command(command) = self else {
            return None;
        };
        match &**command {
            Command::NodeDown { node, .. } | Command::Evict { node, .. } => {
                Some(PreScan::Node(*node))
            }
            Command::RestoreFinish { id, at_ms } => Some(PreScan::Restore {
                id: id.clone(),
                at_ms: *at_ms,
            }),
            _ => None,
        }
    }
}

impl Store {
    /// Applies committed entries, in order, to the job table. The changes
    /// and the new applied index/term commit all or nothing across the
    /// state machine's trees (one change per run of entries: see
    /// `Decoded::pre_scan` and `store::staged`); no fsync (see the module
    /// docs: the entries are durable in the log and re-applied after a
    /// crash).
    ///
    /// Entries at or below the applied index are skipped
    /// ([`Applied::AlreadyApplied`]), so re-applying after a restart is
    /// idempotent. A gap (an entry above applied + 1) is a contract
    /// violation and nothing is applied.
    ///
    /// After a storage error the table may hold part of a change (its
    /// journal completes it at the next open): the caller must stop using
    /// this store and reopen it, as the node does by exiting.
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
                    Ok(c) => Decoded::Command(Box::new(c)),
                    Err(err) => Decoded::Bad(err.to_string()),
                },
            })
            .collect();

        let _sm = lock(&self.sm_lock);
        let mut results = Vec::with_capacity(entries.len());
        let mut start = 0;
        while start < entries.len() {
            let end = (start + 1..entries.len())
                .find(|&i| decoded[i].pre_scan().is_some())
                .unwrap_or(entries.len());
            let (scanned, restore) = match decoded[start].pre_scan() {
                Some(PreScan::Node(node)) => (self.active_on_node(node)?, None),
                Some(PreScan::Restore { id, at_ms }) => {
                    (Vec::new(), Some(self.prepare_restore(&id, at_ms)?))
                }
                None => (Vec::new(), None),
            };
            results.extend(self.apply_run(
                &entries[start..end],
                &decoded[start..end],
                &scanned,
                restore.as_ref(),
            )?);
            start = end;
        }
        for (entry, result) in entries.iter().zip(&results) {
            match result {
                Applied::Rejected { reason } => {
                    tracing::error!(index = entry.index, term = entry.term, %reason, "undecodable command applied as a no-op");
                }
                // Collected jobs are finished: nothing appends to their
                // output any more. Node-local and best effort.
                Applied::Collected(ids) => {
                    for id in ids {
                        if let Err(e) = self.delete_job_output(id) {
                            tracing::warn!(job = %id, "cannot delete the output of a collected job: {e}");
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(results)
    }

    /// One atomic change for a run of entries (staged, then committed: see
    /// `store::staged`). `scanned` is the active index
    /// of the node of the run's first entry, and `restore` the prepared
    /// restore of a RestoreFinish starting it, if it needs either.
    fn apply_run(
        &self,
        entries: &[Entry],
        decoded: &[Decoded],
        scanned: &[(JobId, u32)],
        restore: Option<&Result<PreparedRestore, String>>,
    ) -> Result<Vec<Applied>, StoreError> {
        let tx = self.stage();
        let (results, sm) = self
            .apply_staged(&tx, entries, decoded, scanned, restore)
            .map_err(|e| self.staged_err(e))?;
        self.commit_staged(tx.into_writes(), sm.applied_index)?;
        // Publish only after the change committed (see `applied`).
        self.publish_counts(&sm);
        Ok(results)
    }

    /// Stages the changes of a run of entries and the `sm_meta` that
    /// follows them; returns each entry's outcome and that `sm_meta`.
    fn apply_staged(
        &self,
        tx: &SmTx<'_>,
        entries: &[Entry],
        decoded: &[Decoded],
        scanned: &[(JobId, u32)],
        restore: Option<&Result<PreparedRestore, String>>,
    ) -> Tx<(Vec<Applied>, SmMeta)> {
        let mut sm: SmMeta = match tx.meta.get(codec::KEY_SM_META)? {
            Some(bytes) => self.decode("sm_meta", &bytes)?,
            None => SmMeta::default(),
        };
        let mut results = Vec::with_capacity(entries.len());
        for (entry, decoded) in entries.iter().zip(decoded) {
            if entry.index <= sm.applied_index {
                results.push(Applied::AlreadyApplied);
                continue;
            }
            if entry.index != sm.applied_index + 1 {
                return Err(StoreError::Contract(format!(
                    "apply of entry {} but the applied index is {}",
                    entry.index, sm.applied_index
                ))
                .into());
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
                Decoded::Command(command) if matches!(**command, Command::RestoreFinish { .. }) => {
                    match restore {
                        Some(Ok(prepared)) => {
                            let applied = prepared.write(tx)?;
                            sm.job_count = 0;
                            sm.queued_count = 0;
                            sm.finished_count = 0;
                            sm.count(prepared.counts());
                            applied
                        }
                        Some(Err(reason)) => Applied::Refused {
                            reason: reason.clone(),
                        },
                        None => Applied::Refused {
                            reason: "a restore must start its own run".into(),
                        },
                    }
                }
                Decoded::Command(command) => {
                    let mut delta = CountDelta::default();
                    let applied =
                        self.apply_command(tx, entry.index, command, scanned, &mut delta)?;
                    sm.count(delta);
                    applied
                }
            };
            sm.applied_index = entry.index;
            sm.applied_term = entry.term;
            results.push(applied);
        }
        tx.meta
            .insert(codec::KEY_SM_META, codec::encode("sm_meta", &sm)?);
        Ok((results, sm))
    }

    fn load_job(&self, jobs: &StagedTree<'_>, id: &JobId) -> Tx<Option<Job>> {
        let key = id.to_bytes();
        match jobs.get(key)? {
            Some(bytes) => Ok(Some(self.decode_job(&key, &bytes)?)),
            None => Ok(None),
        }
    }

    fn load_node(&self, nodes: &StagedTree<'_>, id: NodeId) -> Tx<Option<NodeRecord>> {
        match nodes.get(id.to_be_bytes())? {
            Some(bytes) => Ok(Some(self.decode("node", &bytes)?)),
            None => Ok(None),
        }
    }

    /// Applies one lifecycle event to a stored job.
    fn job_event(
        &self,
        tx: &SmTx<'_>,
        id: &JobId,
        event: lifecycle::Event,
        delta: &mut CountDelta,
    ) -> Tx<Applied> {
        let Some(old) = self.load_job(&tx.jobs, id)? else {
            return Ok(Applied::Refused {
                reason: format!("no job {id}"),
            });
        };
        let mut job = old.clone();
        match lifecycle::apply(&mut job, event) {
            Ok(lifecycle::Changed::Yes) => {
                delta.add(tx.put_job(Some(&old), &job)?);
                Ok(Applied::Updated(job))
            }
            Ok(lifecycle::Changed::No) => Ok(Applied::Unchanged(job)),
            Err(refused) => Ok(Applied::Refused {
                reason: format!("job {id}: {refused}"),
            }),
        }
    }

    fn apply_command(
        &self,
        tx: &SmTx<'_>,
        index: Index,
        command: &Command,
        scanned: &[(JobId, u32)],
        delta: &mut CountDelta,
    ) -> Tx<Applied> {
        use lifecycle::Event;
        Ok(match command {
            Command::Submit {
                id,
                spec,
                submitted_at_ms,
            } => self.submit(tx, index, *id, spec, None, *submitted_at_ms, delta)?,
            Command::SubmitAs {
                id,
                spec,
                owner,
                submitted_at_ms,
            } => self.submit(
                tx,
                index,
                *id,
                spec,
                Some(owner.clone()),
                *submitted_at_ms,
                delta,
            )?,
            Command::Assign { at_ms, assignments } => {
                let (mut placed, mut refused) = (0u32, 0u32);
                let mut jobs = Vec::new();
                for a in assignments {
                    let ready = self
                        .load_node(&tx.nodes, a.node)?
                        .is_some_and(|n| n.status == NodeStatus::Ready && n.drain.is_none());
                    let event = Event::Assign {
                        attempt: a.attempt,
                        node: a.node,
                        at_ms: *at_ms,
                    };
                    match ready {
                        true => match self.job_event(tx, &a.job, event, delta)? {
                            Applied::Updated(job) => {
                                placed += 1;
                                jobs.push(job);
                            }
                            _ => refused += 1,
                        },
                        false => refused += 1,
                    }
                }
                Applied::Assigned {
                    placed,
                    refused,
                    jobs,
                }
            }
            Command::Started {
                job,
                attempt,
                node,
                at_ms,
            } => self.job_event(
                tx,
                job,
                Event::Start {
                    attempt: *attempt,
                    node: *node,
                    at_ms: *at_ms,
                },
                delta,
            )?,
            Command::Finished {
                job,
                attempt,
                node,
                at_ms,
                exit_code,
                reason,
                message,
                output_tail,
            } => self.job_event(
                tx,
                job,
                Event::Finish {
                    attempt: *attempt,
                    node: *node,
                    at_ms: *at_ms,
                    exit_code: *exit_code,
                    reason: reason.clone(),
                    message: message.clone(),
                    output_tail: output_tail.clone(),
                },
                delta,
            )?,
            Command::Cancel { job, at_ms } => {
                self.job_event(tx, job, Event::Cancel { at_ms: *at_ms }, delta)?
            }
            Command::NodeUp {
                node,
                labels,
                capacity,
                at_ms,
            } => {
                let drain = self.load_node(&tx.nodes, *node)?.and_then(|n| n.drain);
                let record = NodeRecord {
                    id: *node,
                    status: NodeStatus::Ready,
                    labels: labels.clone(),
                    capacity: *capacity,
                    drain,
                    updated_at_ms: *at_ms,
                };
                tx.put_node(&record)?;
                Applied::Node(record)
            }
            Command::SetDrain { node, drain, at_ms } => {
                let Some(mut record) = self.load_node(&tx.nodes, *node)? else {
                    return Ok(Applied::Refused {
                        reason: format!("no node {node}"),
                    });
                };
                record.drain = *drain;
                record.updated_at_ms = *at_ms;
                tx.put_node(&record)?;
                Applied::Node(record)
            }
            Command::NodeDown { node, at_ms } | Command::Evict { node, at_ms } => {
                let down = matches!(command, Command::NodeDown { .. });
                let Some(mut record) = self.load_node(&tx.nodes, *node)? else {
                    return Ok(Applied::Refused {
                        reason: format!("no node {node}"),
                    });
                };
                let (reason, message) = if down {
                    record.status = NodeStatus::Down;
                    (
                        EndReason::NodeLost,
                        format!("node {node} stopped heartbeating"),
                    )
                } else {
                    (
                        EndReason::Drained,
                        format!("node {node} passed its drain deadline"),
                    )
                };
                record.updated_at_ms = *at_ms;
                tx.put_node(&record)?;
                let mut attempts = 0;
                let mut lost = Vec::new();
                for (job, attempt) in scanned {
                    let event = Event::Finish {
                        attempt: *attempt,
                        node: *node,
                        at_ms: *at_ms,
                        exit_code: None,
                        reason: reason.clone(),
                        message: message.clone(),
                        output_tail: Vec::new(),
                    };
                    if let Applied::Updated(job) = self.job_event(tx, job, event, delta)? {
                        attempts += 1;
                        lost.push(job);
                    }
                }
                Applied::NodeLost {
                    node: record,
                    attempts,
                    jobs: lost,
                }
            }
            Command::Gc { jobs } => {
                let mut removed = Vec::new();
                for id in jobs {
                    if let Some(job) = self.load_job(&tx.jobs, id)? {
                        if job.state.is_terminal() {
                            delta.add(tx.delete_job(&job));
                            removed.push(*id);
                        }
                    }
                }
                Applied::Collected(removed)
            }
            Command::AclBootstrap { token } => {
                if tx.acl.get(indexes::ACL_BOOTSTRAP_KEY)?.is_some() {
                    return Ok(Applied::Refused {
                        reason: "the ACL system is already bootstrapped".into(),
                    });
                }
                tx.acl
                    .insert(indexes::ACL_BOOTSTRAP_KEY, token.accessor.as_bytes());
                self.create_token(tx, token)?
            }
            Command::AclCreateToken { token } => self.create_token(tx, token)?,
            Command::RestoreBegin { id, chunks, sha256 } => {
                self.restore_begin(tx, id, *chunks, *sha256)?
            }
            Command::RestoreChunk { id, seq, data } => self.restore_chunk(tx, id, *seq, data)?,
            // Applied by `apply_run`, which prepared it.
            Command::RestoreFinish { .. } => Applied::Refused {
                reason: "a restore must start its own run".into(),
            },
            Command::AclRevokeToken { accessor } => {
                match tx.acl.get(indexes::acl_token_key(accessor))? {
                    Some(bytes) => {
                        let token: Token = self.decode("token", &bytes)?;
                        tx.delete_token(&token);
                        Applied::Revoked(token)
                    }
                    None => Applied::Refused {
                        reason: format!("no token with accessor {accessor}"),
                    },
                }
            }
        })
    }

    /// A new job, unless its id or idempotency key exists already.
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        tx: &SmTx<'_>,
        index: Index,
        id: JobId,
        spec: &crate::jobs::JobSpec,
        owner: Option<String>,
        submitted_at_ms: i64,
        delta: &mut CountDelta,
    ) -> Tx<Applied> {
        if let Some(existing) = self.load_job(&tx.jobs, &id)? {
            return Ok(Applied::DuplicateJob(existing));
        }
        if let Some(key) = &spec.idempotency_key {
            if let Some(bytes) = tx.idempotency.get(key.as_bytes())? {
                let first = id_suffix(&bytes).map_err(|d| self.corrupt(d))?;
                if let Some(existing) = self.load_job(&tx.jobs, &first)? {
                    return Ok(Applied::DuplicateJob(existing));
                }
            }
        }
        let mut job = Job::new(id, spec.clone(), submitted_at_ms, index);
        job.owner = owner;
        delta.add(tx.put_job(None, &job)?);
        Ok(Applied::Job(job))
    }

    /// Stores a token unless its accessor or secret hash is taken (a
    /// collision of 256 random bits, or a replayed command).
    fn create_token(&self, tx: &SmTx<'_>, token: &Token) -> Tx<Applied> {
        if tx
            .acl
            .get(indexes::acl_token_key(&token.accessor))?
            .is_some()
            || tx
                .acl
                .get(indexes::acl_hash_key(&token.secret_hash))?
                .is_some()
        {
            return Ok(Applied::Refused {
                reason: format!("token {} exists already", token.accessor),
            });
        }
        tx.put_token(token)?;
        Ok(Applied::Token(token.clone()))
    }

    /// The state machine at the applied index as snapshot bytes (the format
    /// of `store::snapshot`), without writing anything: what a snapshot file
    /// holds, and what a backup (`drover operator snapshot save`) carries.
    pub fn export_state(&self) -> Result<(SnapshotMeta, Vec<u8>), StoreError> {
        self.export_state_with(|| {})
    }

    /// [`Store::export_state`], calling `during` while the rows are read
    /// (tests apply entries there).
    ///
    /// The rows are read WITHOUT `sm_lock`, so applies go on meanwhile (a
    /// table of 270,000 jobs takes about 0.2 s to read, which used to hold
    /// every write). Every change committed meanwhile is captured
    /// (`staged::Capture`); at the end, under the lock, the applied index
    /// is read and the capture laid over the rows read, which gives the
    /// table at exactly that index. If a snapshot install replaced the
    /// table meanwhile, the rows are read again under the lock.
    pub(super) fn export_state_with(
        &self,
        during: impl FnOnce(),
    ) -> Result<(SnapshotMeta, Vec<u8>), StoreError> {
        let _export = lock(&self.export_lock);
        let capturing = {
            let _sm = lock(&self.sm_lock);
            self.start_capture()
        };
        let read = self.read_table(during);
        let sm_lock = lock(&self.sm_lock);
        let capture = capturing.take();
        let sm = self.sm_meta()?;
        let table = match capture {
            Some(capture) if !capture.replaced => {
                drop(sm_lock);
                read?.overlaid(&capture)
            }
            // A snapshot install replaced the table meanwhile: read it
            // again, under the lock this time.
            _ => {
                let table = self.read_table(|| {})?;
                drop(sm_lock);
                table
            }
        };
        let Table {
            jobs: rows,
            nodes: node_rows,
            tokens: token_rows,
            bootstrap,
            staged,
        } = table;
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
            for (_, value) in &node_rows {
                let _: NodeRecord = self.decode("node", value)?;
                builder
                    .push_encoded_node(value)
                    .map_err(|d| self.corrupt(d))?;
            }
            for (_, value) in &token_rows {
                let _: Token = self.decode("token", value)?;
                builder
                    .push_encoded_token(value)
                    .map_err(|d| self.corrupt(d))?;
            }
            if let Some(accessor) = bootstrap {
                builder.set_bootstrap(String::from_utf8_lossy(&accessor).into_owned());
            }
            // A restore being staged travels with the state (see
            // `store::restore`): the meta record, then chunks by seq.
            let mut meta = None;
            let mut chunks = Vec::new();
            for (key, value) in staged {
                if key.as_ref() == b"meta" {
                    meta = Some(value.to_vec());
                } else if let Some(seq) = key
                    .strip_prefix(b"c/")
                    .and_then(|s| <[u8; 4]>::try_from(s).ok())
                {
                    chunks.push((u32::from_be_bytes(seq), value.to_vec()));
                }
            }
            if let Some(meta) = meta {
                builder.set_staged(snapshot::StagedRestore { meta, chunks });
            }
            let meta = SnapshotMeta {
                index: sm.applied_index,
                term: sm.applied_term,
                membership: sm.membership,
            };
            let data = builder.finish(&meta)?;
            (meta, data)
        };
        Ok((meta, data))
    }

    /// The rows a snapshot carries, as they are now (no lock: see
    /// [`Store::export_state_with`]). `during` runs after the first job row.
    fn read_table(&self, during: impl FnOnce()) -> Result<Table, StoreError> {
        let collect = |rows: &mut dyn Iterator<Item = sled::Result<(IVec, IVec)>>| {
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.sled_err(e))
        };
        let mut jobs_iter = self.sm.jobs.iter();
        let first = jobs_iter.next().transpose().map_err(|e| self.sled_err(e))?;
        during();
        let mut jobs: Vec<_> = first.into_iter().collect();
        jobs.extend(collect(&mut jobs_iter)?);
        Ok(Table {
            jobs,
            nodes: collect(&mut self.sm.nodes.iter())?,
            tokens: collect(&mut self.sm.acl.scan_prefix(indexes::ACL_TOKEN_PREFIX))?,
            bootstrap: self
                .sm
                .acl
                .get(indexes::ACL_BOOTSTRAP_KEY)
                .map_err(|e| self.sled_err(e))?,
            staged: collect(&mut self.sm.restore.iter())?,
        })
    }

    /// Writes a snapshot of the job table and membership at the applied
    /// index, durably (file, then record, then one flush), and returns it.
    /// The previous snapshot file is deleted afterwards. The caller may
    /// then [`Store::compact_log`] up to the returned index (less the
    /// trailing entries it wants to keep).
    pub fn create_snapshot(&self) -> Result<Snapshot, StoreError> {
        let (meta, data) = self.export_state()?;
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
        match self.sm.jobs.get(key).map_err(|e| self.sled_err(e))? {
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
        for kv in self.sm.jobs.range((start, Bound::Unbounded)).take(limit) {
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
            .get(indexes::acl_hash_key(hash))
            .map_err(|e| self.sled_err(e))?
        else {
            return Ok(None);
        };
        let key = [indexes::ACL_TOKEN_PREFIX, &accessor[..]].concat();
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
            .get(indexes::acl_token_key(accessor))
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
            .scan_prefix(indexes::ACL_TOKEN_PREFIX)
            .values()
            .map(|v| self.decode("token", &v.map_err(|e| self.sled_err(e))?))
            .collect()
    }

    /// Whether `AclBootstrap` has been applied (a second one is refused).
    pub fn acl_bootstrapped(&self) -> Result<bool, StoreError> {
        self.sm
            .acl
            .contains_key(indexes::ACL_BOOTSTRAP_KEY)
            .map_err(|e| self.sled_err(e))
    }

    /// The job first submitted with this idempotency key, if any.
    pub fn job_by_idempotency_key(&self, key: &str) -> Result<Option<Job>, StoreError> {
        match self
            .sm
            .idempotency
            .get(key.as_bytes())
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

/// The rows a snapshot carries: raw, in key order.
struct Table {
    jobs: Vec<(IVec, IVec)>,
    nodes: Vec<(IVec, IVec)>,
    /// The `acl` tree's `t/` rows.
    tokens: Vec<(IVec, IVec)>,
    bootstrap: Option<IVec>,
    /// The `restore_staging` tree.
    staged: Vec<(IVec, IVec)>,
}

impl Table {
    /// The rows with every change of `capture` laid over them.
    fn overlaid(self, capture: &Capture) -> Table {
        let tokens = capture
            .of(SmTree::Acl)
            .filter(|(key, _)| key.starts_with(indexes::ACL_TOKEN_PREFIX));
        let bootstrap = capture
            .of(SmTree::Acl)
            .find(|(key, _)| *key == indexes::ACL_BOOTSTRAP_KEY)
            .map_or(self.bootstrap, |(_, value)| value.clone());
        Table {
            jobs: overlay(self.jobs, capture.of(SmTree::Jobs)),
            nodes: overlay(self.nodes, capture.of(SmTree::Nodes)),
            tokens: overlay(self.tokens, tokens),
            bootstrap,
            staged: overlay(self.staged, capture.of(SmTree::Restore)),
        }
    }
}
