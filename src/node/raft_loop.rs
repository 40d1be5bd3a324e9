//! The Raft loop: one OS thread that owns the consensus core and drives it
//! against the store and the transport.
//!
//! Everything that changes Raft state arrives as an [`Input`] on one bounded
//! channel. Each turn drains every input that is waiting (bounded), then
//! handles the core's Ready: persist with ONE fsync, send, apply, advance.
//! Proposals that arrive while an fsync is running wait on the channel and
//! share the next fsync: that is the group commit.
//!
//! A client is answered only when its entry is applied, which happens only
//! after a quorum (this node included) fsynced it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::events::{self, EventLog};
use super::input::{Input, InputSender, RaftError};
use super::metrics::Metrics;
use super::transport::Outbound;
use crate::jobs::Applied;
use crate::raft::{Index, Membership, Message, MessageBody, NodeId, RawNode, Ready, Role, Term};
use crate::store::{SpaceGuard, SpaceLevel, Store};

/// Inputs waiting in the channel before senders are refused.
pub const INPUT_QUEUE: usize = 16_384;
/// Inputs handled per turn before the Ready is processed, so a flood of
/// messages cannot starve persistence and ticks.
const MAX_INPUTS_PER_TURN: usize = 4096;
/// Waiting reads, waiting proposals: each bounded.
const MAX_PENDING_READS: usize = 10_000;

/// What the rest of the node may know about Raft without asking the loop.
#[derive(Clone, Debug)]
pub struct RaftStatus {
    pub node_id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit: Index,
    pub applied: Index,
    pub snapshot_index: Index,
    pub last_index: Index,
    pub membership: Membership,
    pub progress: BTreeMap<NodeId, Index>,
    /// Snapshots installed from a leader since this process started.
    pub snapshots_installed: u64,
    /// When this node last received a Raft message from each peer: on the
    /// leader, how fresh each follower is; on a follower, the leader's
    /// heartbeat. Soft state, not persisted.
    pub last_contact: BTreeMap<NodeId, Instant>,
    /// Set when the loop stopped because of a storage failure.
    pub failed: Option<String>,
}

/// Settings of the loop beyond the core's own config.
pub struct LoopSettings {
    pub tick: Duration,
    /// The core's election timeout, in ticks.
    pub election_ticks: u32,
    pub snapshot_threshold: u64,
    /// See [`crate::config::RaftConfig::snapshot_interval`].
    pub snapshot_interval: Duration,
    /// Told the applied index whenever it moves: what wakes the scheduler
    /// and the executor (never a timer).
    pub applied: watch::Sender<Index>,
    /// Told the job events of every apply, and of every snapshot install
    /// (which makes earlier events unknowable here).
    pub events: Arc<EventLog>,
    /// Told of leader changes and of every answered proposal.
    pub metrics: Arc<Metrics>,
    /// The data directory's free-space reserve: no snapshot without room,
    /// and a leader below it hands leadership to a peer with room.
    pub space: Arc<SpaceGuard>,
}

/// The loop's state. Created by `node`, then moved onto its thread.
pub struct RaftLoop {
    raw: RawNode,
    store: Arc<Store>,
    outbound: Outbound,
    inputs: Receiver<Input>,
    status: watch::Sender<RaftStatus>,
    settings: LoopSettings,
    /// Proposals by log index: the term they got and who waits.
    proposals: BTreeMap<Index, (Term, oneshot::Sender<Result<Applied, RaftError>>)>,
    /// Reads waiting for the core to confirm a read index, by ctx.
    reads_unconfirmed: BTreeMap<u64, oneshot::Sender<Result<Index, RaftError>>>,
    /// Reads with a confirmed index, waiting for apply to reach it.
    reads_confirmed: VecDeque<(Index, oneshot::Sender<Result<Index, RaftError>>)>,
    next_read_ctx: u64,
    applied: Index,
    snapshot_index: Index,
    snapshots_installed: u64,
    /// See [`RaftStatus::last_contact`].
    last_contact: BTreeMap<NodeId, Instant>,
    /// Where background work reports back.
    self_inputs: InputSender,
    node_id: NodeId,
    /// True while a snapshot is being written off the loop.
    snapshot_running: bool,
    /// After a failed snapshot, no new one before this applied index.
    snapshot_retry_at: Index,
    /// When this node last started a snapshot of its own.
    last_snapshot_at: Option<Instant>,
    /// The leader as of the last publish, to count leader changes.
    known_leader: Option<NodeId>,
    /// When this node, leading with a full disk, last tried to hand over.
    last_space_handover: Option<Instant>,
    /// Said once per stretch of full disk that no peer can take over.
    space_handover_warned: bool,
    /// Size of the last snapshot this node wrote: what the next one needs.
    last_snapshot_bytes: u64,
}

impl RaftLoop {
    /// Assembles a loop; `applied` and `snapshot_index` come from the store.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        raw: RawNode,
        store: Arc<Store>,
        outbound: Outbound,
        inputs: (InputSender, Receiver<Input>),
        status: watch::Sender<RaftStatus>,
        settings: LoopSettings,
        applied: Index,
        snapshot_index: Index,
    ) -> Self {
        let node_id = raw.status().id;
        let mut this = RaftLoop {
            raw,
            store,
            outbound,
            inputs: inputs.1,
            self_inputs: inputs.0,
            node_id,
            snapshot_running: false,
            snapshot_retry_at: 0,
            last_snapshot_at: None,
            known_leader: None,
            last_space_handover: None,
            space_handover_warned: false,
            last_snapshot_bytes: 0,
            status,
            settings,
            proposals: BTreeMap::new(),
            reads_unconfirmed: BTreeMap::new(),
            reads_confirmed: VecDeque::new(),
            next_read_ctx: 1,
            applied,
            snapshot_index,
            snapshots_installed: 0,
            last_contact: BTreeMap::new(),
        };
        this.update_peers();
        this
    }

    /// Runs until shutdown or a storage failure. A node that cannot persist
    /// must stop: continuing would acknowledge what is not durable.
    pub fn run(mut self) {
        let mut next_tick = Instant::now() + self.settings.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.inputs.recv_timeout(wait) {
                Ok(Input::Shutdown) => break,
                Ok(Input::Fatal(reason)) => return self.stop_fatally(reason),
                Ok(input) => self.handle(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let mut shutdown = false;
            for _ in 0..MAX_INPUTS_PER_TURN {
                match self.inputs.try_recv() {
                    Ok(Input::Shutdown) => {
                        shutdown = true;
                        break;
                    }
                    Ok(Input::Fatal(reason)) => return self.stop_fatally(reason),
                    Ok(input) => self.handle(input),
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                self.raw.tick();
                self.hand_over_if_disk_low();
                next_tick += self.settings.tick;
                if next_tick < now {
                    // Fell far behind (a long fsync): do not burst ticks.
                    next_tick = now + self.settings.tick;
                }
            }
            if let Err(e) = self.process_ready() {
                tracing::error!("storage failure, stopping the raft loop: {e}");
                return self.stop_fatally(e);
            }
            self.publish(None);
            if shutdown {
                break;
            }
        }
        self.fail_all(RaftError::ShuttingDown);
        self.settings.events.close();
    }

    /// Stops the loop for good and publishes why (the node then exits).
    fn stop_fatally(&mut self, reason: String) {
        tracing::error!("stopping: {reason}");
        self.fail_all(RaftError::Storage(reason.clone()));
        self.settings.events.close();
        self.publish(Some(reason));
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Message(msg, from_addr) => {
                // Only a node that is not (yet) a member answers senders it
                // has no address for: it is joining, and the sender is the
                // leader adding it. Members know every peer's address.
                if !self.raw.membership().contains(self.node_id) {
                    self.outbound.ensure_peer(msg.from, &from_addr);
                }
                self.last_contact.insert(msg.from, Instant::now());
                self.raw.step(msg);
            }
            Input::Unreachable(id) => self.raw.report_unreachable(id),
            Input::Propose { command, reply } => match self.raw.propose(command) {
                Ok((index, term)) => self.track_proposal(index, term, reply),
                Err(e) => {
                    self.settings.metrics.proposal_answered(false);
                    let _ = reply.send(Err(e.into()));
                }
            },
            Input::ConfChange { change, reply } => match self.raw.propose_conf_change(change) {
                Ok((index, term)) => self.track_proposal(index, term, reply),
                Err(e) => {
                    self.settings.metrics.proposal_answered(false);
                    let _ = reply.send(Err(e.into()));
                }
            },
            Input::ReadIndex { reply } => {
                if self.reads_unconfirmed.len() + self.reads_confirmed.len() >= MAX_PENDING_READS {
                    let _ = reply.send(Err(RaftError::Overloaded));
                    return;
                }
                let ctx = self.next_read_ctx;
                self.next_read_ctx += 1;
                self.reads_unconfirmed.insert(ctx, reply);
                self.raw.read_index(ctx);
            }
            Input::TransferLeader { to, reply } => {
                let _ = reply.send(self.raw.transfer_leader(to).map_err(RaftError::from));
            }
            Input::SnapshotDone(outcome) => {
                self.snapshot_running = false;
                match outcome {
                    Ok((meta, data)) => self.install_own_snapshot(meta, data),
                    Err(e) => {
                        // Do not retry at once (a full disk would stall the
                        // loop over and over): wait another threshold.
                        tracing::error!("snapshot failed (retried after more entries): {e}");
                        self.snapshot_retry_at = self.applied + self.settings.snapshot_threshold;
                    }
                }
            }
            Input::Shutdown | Input::Fatal(_) => {}
        }
    }

    /// Answers every proposal waiting at or below `index` with `error`.
    fn fail_proposals_upto(&mut self, index: Index, error: RaftError) {
        let rest = self.proposals.split_off(&index.saturating_add(1));
        for (_, (_, reply)) in std::mem::replace(&mut self.proposals, rest) {
            self.settings.metrics.proposal_answered(false);
            let _ = reply.send(Err(error.clone()));
        }
    }

    /// Remembers who waits for the entry at `index`. An older waiter for the
    /// same index (its entry was truncated by a new leader) has lost.
    fn track_proposal(
        &mut self,
        index: Index,
        term: Term,
        reply: oneshot::Sender<Result<Applied, RaftError>>,
    ) {
        if let Some((_, older)) = self.proposals.insert(index, (term, reply)) {
            self.settings.metrics.proposal_answered(false);
            let _ = older.send(Err(RaftError::Lost));
        }
    }

    /// The background snapshot is durable: let the core compact its log,
    /// then delete the compacted entries from disk, also off the loop.
    fn install_own_snapshot(&mut self, meta: crate::raft::SnapshotMeta, data: Arc<Vec<u8>>) {
        if meta.index <= self.snapshot_index {
            return; // a newer snapshot was installed from the leader meanwhile
        }
        if self.raw.snapshot_meta(meta.index).as_ref() != Some(&meta) {
            // The core would refuse it (membership or term disagree): a bug,
            // never expected. Keep the log; the next threshold retries.
            tracing::error!(
                index = meta.index,
                "snapshot metadata disagrees with the log; not compacting"
            );
            return;
        }
        let index = meta.index;
        let bytes = data.len();
        self.last_snapshot_bytes = bytes as u64;
        let delete_upto = self.raw.compact(meta, data);
        self.snapshot_index = index;
        tracing::info!(index, bytes, compacted_to = delete_upto, "snapshot taken");
        if delete_upto > 0 {
            let store = self.store.clone();
            std::thread::spawn(move || {
                if let Err(e) = store.compact_log(delete_upto) {
                    tracing::warn!("log compaction failed (harmless, retried next snapshot): {e}");
                }
            });
        }
    }

    fn process_ready(&mut self) -> Result<(), String> {
        // Bounded: each Ready is finite and the core only produces a new one
        // from new inputs or from what the previous advance unlocked.
        for _ in 0..64 {
            if !self.raw.has_ready() {
                break;
            }
            let mut rd = self.raw.ready();
            // A leader's replication messages acknowledge nothing, so they go
            // out before its own fsync: leader and followers write in
            // parallel (as etcd does). Commit still counts the leader only up
            // to what it persisted. Everything else waits for the fsync.
            let (early, late): (Vec<Message>, Vec<Message>) = std::mem::take(&mut rd.messages)
                .into_iter()
                .partition(sendable_before_persist);
            if rd.membership.is_some() || rd.snapshot.is_some() {
                // Connect to a member added by this Ready before its first
                // message goes out.
                self.update_peers();
            }
            for msg in early {
                self.outbound.send(msg);
            }
            // The core hands out only committed entries this node already
            // persisted (in an earlier Ready), so applying them does not wait
            // for this Ready's fsync. A leader applies first: the clients
            // waiting on those entries are answered without sitting behind
            // the fsync of the next batch. A follower persists first: its
            // acknowledgements are what the leader's commit waits for.
            let apply_first = self.raw.role() == Role::Leader && rd.snapshot.is_none();
            if apply_first {
                self.apply_committed(&rd)?;
            }
            self.store.persist(&rd).map_err(|e| e.to_string())?;
            self.after_persist(&rd);
            for msg in late {
                self.outbound.send(msg);
            }
            if !apply_first {
                self.apply_committed(&rd)?;
            }
            for read in &rd.read_states {
                if let Some(reply) = self.reads_unconfirmed.remove(&read.ctx) {
                    if read.index == 0 {
                        let _ = reply.send(Err(RaftError::ReadFailed));
                    } else {
                        self.reads_confirmed.push_back((read.index, reply));
                    }
                }
            }
            self.raw.advance(&rd);
            self.answer_reads();
        }
        // Also when idle: a snapshot held back by the interval is taken
        // once it has passed, not at the next write.
        self.maybe_snapshot();
        Ok(())
    }

    /// Applies the Ready's committed entries, tells the watchers, then
    /// answers the proposals waiting on them.
    fn apply_committed(&mut self, rd: &Ready) -> Result<(), String> {
        if rd.committed.is_empty() {
            return Ok(());
        }
        let results = self.store.apply(&rd.committed).map_err(|e| e.to_string())?;
        // Watchers learn of the changes before the clients waiting
        // on them are answered, so a client that watches after its
        // write was acknowledged finds it in the log.
        let mut changes = Vec::new();
        for (entry, applied) in rd.committed.iter().zip(&results) {
            events::events_of(entry.index, applied, &mut changes);
        }
        if let Some(last) = rd.committed.last() {
            self.settings.events.record(last.index, changes);
        }
        // A restore replaced the whole table: a watch cannot be
        // carried across it as a list of changes (list again). The
        // whole batch is dropped, so no change after it is lost.
        let restored = results
            .iter()
            .any(|a| matches!(a, Applied::Restored { .. }));
        if let (true, Some(last)) = (restored, rd.committed.last()) {
            self.settings.events.reset(last.index);
        }
        if let Some(last) = rd.committed.last() {
            self.applied = last.index;
        }
        // A client answered below and then asking for the cluster status
        // finds its write applied (and in the log) there too.
        self.publish(None);
        for (entry, applied) in rd.committed.iter().zip(results) {
            if let Some((term, reply)) = self.proposals.remove(&entry.index) {
                let committed = term == entry.term;
                self.settings.metrics.proposal_answered(committed);
                let outcome = if committed {
                    Ok(applied)
                } else {
                    Err(RaftError::Lost)
                };
                let _ = reply.send(outcome);
            }
        }
        // Entries below the applied index can no longer be ours.
        self.fail_proposals_upto(self.applied, RaftError::Lost);
        Ok(())
    }

    fn after_persist(&mut self, rd: &Ready) {
        if let Some((meta, data)) = &rd.snapshot {
            if data.is_empty() && meta.index == 1 {
                tracing::info!("genesis snapshot persisted: the cluster is founded");
            } else {
                self.snapshots_installed += 1;
                tracing::info!(
                    index = meta.index,
                    term = meta.term,
                    "installed snapshot from the leader"
                );
            }
            self.snapshot_index = meta.index;
            self.applied = self.applied.max(meta.index);
            // The entries the snapshot covers were not applied here one by
            // one: their job events are unknown.
            self.settings.events.reset(meta.index);
            // Whatever we proposed up to here is now folded into a snapshot
            // we cannot look inside cheaply: tell the waiters so.
            self.fail_proposals_upto(meta.index, RaftError::Unknown);
        }
    }

    fn update_peers(&mut self) {
        // The core's membership is the one in effect (as of commit).
        let membership = self.raw.membership();
        let peers: BTreeMap<NodeId, String> = membership
            .ids()
            .filter_map(|id| Some((id, membership.peer(id)?.raft_addr.clone())))
            .collect();
        // Advertise the address the cluster knows this node by (a joiner
        // starts with its listen address until it learns the membership).
        let me = membership.peer(self.node_id).map(|p| p.raft_addr.clone());
        if let Some(addr) = me {
            self.outbound.set_self_addr(&addr);
        }
        self.outbound.set_peers(&peers);
        // A removed node may come back with a new data dir once re-added.
        self.outbound
            .incarnations
            .retain_members(|id| membership.contains(id));
    }

    fn answer_reads(&mut self) {
        let applied = self.applied;
        let mut waiting = VecDeque::new();
        while let Some((index, reply)) = self.reads_confirmed.pop_front() {
            if index <= applied {
                let _ = reply.send(Ok(index));
            } else {
                waiting.push_back((index, reply));
            }
        }
        self.reads_confirmed = waiting;
    }

    /// Starts a snapshot in the background once it is due (see
    /// [`snapshot_due`]). Only the copy of the table holds up applies; the
    /// file write and its fsyncs run off the loop.
    fn maybe_snapshot(&mut self) {
        if self.snapshot_running
            || self.applied < self.snapshot_retry_at
            || !snapshot_due(
                self.applied.saturating_sub(self.snapshot_index),
                self.settings.snapshot_threshold,
                self.last_snapshot_at.map(|at| at.elapsed()),
                self.settings.snapshot_interval,
            )
        {
            return;
        }
        // A snapshot writes a file the size of the table: only with room
        // for it above the reserve (retried after another threshold).
        if let Err(report) = self.settings.space.admit_file(self.last_snapshot_bytes) {
            tracing::warn!("snapshot postponed: {}", report.refusal());
            self.snapshot_retry_at = self.applied + self.settings.snapshot_threshold;
            return;
        }
        self.snapshot_running = true;
        self.last_snapshot_at = Some(Instant::now());
        let store = self.store.clone();
        let report = self.self_inputs.clone();
        let spawned = std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                let started = Instant::now();
                let outcome = store.create_snapshot().map_err(|e| e.to_string());
                tracing::debug!(elapsed = ?started.elapsed(), "snapshot written");
                // The loop may be gone (shutdown); then nothing waits for this.
                let _ = report.send(Input::SnapshotDone(outcome));
            });
        if let Err(e) = spawned {
            self.snapshot_running = false;
            tracing::warn!("cannot start the snapshot thread: {e}");
        }
    }

    /// A leader whose disk is below its reserve can take no new work: it
    /// hands leadership to the most caught-up voter whose disk has room
    /// (as its latest batch said), at most once per election timeout. With
    /// no such peer it stays, refusing new work, and keeps trying.
    fn hand_over_if_disk_low(&mut self) {
        // Measured every tick on every node (at most every 100 ms in fact),
        // so what its batches say of its disk is never stale.
        if self.settings.space.level() == SpaceLevel::Ok {
            self.space_handover_warned = false;
            return;
        }
        if self.raw.role() != Role::Leader
            || self
                .last_space_handover
                .is_some_and(|at| at.elapsed() < self.election_timeout())
        {
            return;
        }
        self.last_space_handover = Some(Instant::now());
        let status = self.raw.status();
        let peer_disks = self.outbound.peer_disks.clone();
        let fresh = self.election_timeout();
        let target = status
            .membership
            .voters
            .keys()
            .copied()
            .filter(|&id| id != self.node_id && !peer_disks.is_low(id))
            .filter(|id| {
                self.last_contact
                    .get(id)
                    .is_some_and(|at| at.elapsed() < fresh)
            })
            .max_by_key(|id| {
                status
                    .progress
                    .iter()
                    .find(|(peer, _)| peer == id)
                    .map_or(0, |(_, matched)| *matched)
            });
        match target {
            Some(to) => match self.raw.transfer_leader(to) {
                Ok(()) => tracing::warn!(
                    to,
                    "this node's disk is below its reserve: handing leadership to node {to}, \
                     which has room"
                ),
                Err(e) => tracing::warn!(to, "cannot hand leadership over (disk low): {e}"),
            },
            None if !self.space_handover_warned && status.membership.voters.len() > 1 => {
                self.space_handover_warned = true;
                tracing::warn!(
                    "this node's disk is below its reserve and no reachable voter has room: \
                     staying leader, refusing new work"
                );
            }
            None => {}
        }
    }

    fn election_timeout(&self) -> Duration {
        self.settings.tick * self.settings.election_ticks
    }

    fn publish(&mut self, failed: Option<String>) {
        let s = self.raw.status();
        // A leader appearing where there was none or another one (a
        // re-election of the same node after a gap counts too, as etcd's
        // leader_changes_seen does).
        if s.leader.is_some() && s.leader != self.known_leader {
            self.settings.metrics.leader_changed();
        }
        self.known_leader = s.leader;
        let status = RaftStatus {
            node_id: s.id,
            role: s.role,
            term: s.term,
            leader: s.leader,
            commit: s.commit,
            applied: self.applied,
            snapshot_index: self.snapshot_index,
            last_index: s.last_index,
            membership: s.membership,
            progress: s.progress.into_iter().collect(),
            snapshots_installed: self.snapshots_installed,
            last_contact: self.last_contact.clone(),
            failed,
        };
        self.status.send_replace(status);
        let applied = self.applied;
        self.settings.applied.send_if_modified(|seen| {
            let moved = *seen != applied;
            *seen = applied;
            moved
        });
    }

    fn fail_all(&mut self, error: RaftError) {
        // Their entries may already be on other nodes and commit there.
        for (_, (_, reply)) in std::mem::take(&mut self.proposals) {
            self.settings.metrics.proposal_answered(false);
            let _ = reply.send(Err(RaftError::Unknown));
        }
        for (_, reply) in std::mem::take(&mut self.reads_unconfirmed) {
            let _ = reply.send(Err(error.clone()));
        }
        for (_, reply) in std::mem::take(&mut self.reads_confirmed) {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

/// Past this many thresholds of entries since the last snapshot, one is
/// taken whatever the interval says: the log (kept in memory and on disk)
/// stays bounded under any write rate.
const SNAPSHOT_LOG_CAP_THRESHOLDS: u64 = 16;

/// Whether a snapshot is due: `pending` entries applied since the last one
/// reached the threshold, and the last one started at least `interval` ago
/// (or never), or the log reached its cap.
fn snapshot_due(
    pending: u64,
    threshold: u64,
    since_last: Option<Duration>,
    interval: Duration,
) -> bool {
    if pending < threshold {
        return false;
    }
    pending >= threshold.saturating_mul(SNAPSHOT_LOG_CAP_THRESHOLDS)
        || since_last.is_none_or(|elapsed| elapsed >= interval)
}

/// Messages that depend on nothing this node has yet to persist: a leader's
/// AppendEntries, heartbeats, snapshot chunks and TimeoutNow carry entries
/// and a commit index the leader computed from durable acknowledgements only.
/// Votes and every response wait for the fsync (persist-before-send).
fn sendable_before_persist(msg: &Message) -> bool {
    matches!(
        msg.body,
        MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }
            | MessageBody::TimeoutNow
            | MessageBody::TransferPending { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_waits_for_the_threshold_then_the_interval_but_not_past_the_cap() {
        let (threshold, interval) = (100, Duration::from_secs(30));
        let soon = Some(Duration::from_secs(1));
        let later = Some(Duration::from_secs(31));
        // Below the threshold: never, however long ago the last one was.
        assert!(!snapshot_due(99, threshold, None, interval));
        assert!(!snapshot_due(99, threshold, later, interval));
        // At the threshold: the first one at once, later ones after the interval.
        assert!(snapshot_due(100, threshold, None, interval));
        assert!(!snapshot_due(100, threshold, soon, interval));
        assert!(snapshot_due(100, threshold, later, interval));
        // A log of 16 thresholds is compacted regardless of the interval.
        assert!(!snapshot_due(1599, threshold, soon, interval));
        assert!(snapshot_due(1600, threshold, soon, interval));
        // An interval of 0 is the threshold alone.
        assert!(snapshot_due(100, threshold, soon, Duration::ZERO));
    }
}
