//! Applying committed entries to the job table: each run of entries is
//! staged in memory and written as one journal record, then in place (see
//! `staged`); a restore or a large write set takes one sled transaction.

use super::codec;
use super::indexes::{SmTx, StagedTree, Tx};
use super::layout::{self, id_suffix, CountDelta, SmMeta};
use super::restore::PreparedRestore;
use super::{lock, Store, StoreError};
use crate::acl::Token;
use crate::jobs::{lifecycle, Applied, Command, EndReason, Job, JobId, NodeRecord, NodeStatus};
use crate::raft::{ConfChange, Entry, Index, NodeId, Payload};

/// A command decoded ahead of its staged change (decoding is pure).
pub(super) enum Decoded {
    Noop,
    /// Boxed: a command is far larger than the other variants.
    Command(Box<Command>),
    Bad(String),
    ConfChange(ConfChange),
}

/// What a command needs read before its staged change: a range scan, which
/// staging cannot do (it overlays point reads only).
pub(super) enum PreScan {
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
    pub(super) fn apply_run(
        &self,
        entries: &[Entry],
        decoded: &[Decoded],
        scanned: &[(JobId, u32)],
        restore: Option<&Result<PreparedRestore, String>>,
    ) -> Result<Vec<Applied>, StoreError> {
        let tx = self.stage();
        let (results, sm, recount) = self
            .apply_staged(&tx, entries, decoded, scanned, restore)
            .map_err(|e| self.staged_err(e))?;
        let usage = tx.usage.take();
        self.commit_staged(tx.into_writes(), sm.applied_index)?;
        // Publish only after the change committed (see `applied`).
        self.publish_usage(usage, recount)?;
        self.publish_counts(&sm);
        Ok(results)
    }

    /// Stages the changes of a run of entries and the `sm_meta` that
    /// follows them; returns each entry's outcome, that `sm_meta`, and
    /// whether the run replaced the table (a restore: count it again).
    pub(super) fn apply_staged(
        &self,
        tx: &SmTx<'_>,
        entries: &[Entry],
        decoded: &[Decoded],
        scanned: &[(JobId, u32)],
        restore: Option<&Result<PreparedRestore, String>>,
    ) -> Tx<(Vec<Applied>, SmMeta, bool)> {
        let mut sm: SmMeta = match tx.sm_meta.get(layout::KEY_SM_META)? {
            Some(bytes) => self.decode("sm_meta", &bytes)?,
            None => SmMeta::default(),
        };
        let mut recount = false;
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
                            recount = true;
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
        tx.sm_meta
            .insert(layout::KEY_SM_META, codec::encode("sm_meta", &sm)?);
        Ok((results, sm, recount))
    }

    pub(super) fn load_job(&self, jobs: &StagedTree<'_>, id: &JobId) -> Tx<Option<Job>> {
        let key = id.to_bytes();
        match jobs.get(key)? {
            Some(bytes) => Ok(Some(self.decode_job(&key, &bytes)?)),
            None => Ok(None),
        }
    }

    pub(super) fn load_node(&self, nodes: &StagedTree<'_>, id: NodeId) -> Tx<Option<NodeRecord>> {
        match nodes.get(id.to_be_bytes())? {
            Some(bytes) => Ok(Some(self.decode("node", &bytes)?)),
            None => Ok(None),
        }
    }

    /// Applies one lifecycle event to a stored job.
    pub(super) fn job_event(
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

    pub(super) fn apply_command(
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
                if tx.acl.get(layout::ACL_BOOTSTRAP_KEY)?.is_some() {
                    return Ok(Applied::Refused {
                        reason: "the ACL system is already bootstrapped".into(),
                    });
                }
                tx.acl
                    .insert(layout::ACL_BOOTSTRAP_KEY, token.accessor.as_bytes());
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
                match tx.acl.get(layout::acl_token_key(accessor))? {
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

    /// A new job, unless its id, or its idempotency key among its owner's,
    /// exists already.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn submit(
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
            let scoped = layout::idempotency_key(owner.as_deref(), key);
            if let Some(bytes) = tx.idempotency.get(scoped)? {
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
    pub(super) fn create_token(&self, tx: &SmTx<'_>, token: &Token) -> Tx<Applied> {
        if tx
            .acl
            .get(layout::acl_token_key(&token.accessor))?
            .is_some()
            || tx
                .acl
                .get(layout::acl_hash_key(&token.secret_hash))?
                .is_some()
        {
            return Ok(Applied::Refused {
                reason: format!("token {} exists already", token.accessor),
            });
        }
        tx.put_token(token)?;
        Ok(Applied::Token(token.clone()))
    }
}
