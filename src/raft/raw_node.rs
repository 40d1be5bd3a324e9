//! The Raft state machine: roles, elections, replication, commitment,
//! snapshots, leadership transfer, ReadIndex and membership changes.
//!
//! Everything a peer sends goes through [`RawNode::step`], which first sorts
//! out terms (the only place where the term changes because of a message)
//! and then dispatches on the message kind and this node's role. Anything
//! that does not make sense (unknown sender, absurd index, stale answer) is
//! dropped: a message can never make the core panic.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::log::RaftLog;
use super::message::{is_plausible, is_pre_vote_grant};
use super::progress::{Progress, ProgressState};
use super::read_only::{ReadOnly, Requester, MAX_PENDING_READS};
use super::types::{Membership, Payload};
use super::validate_config;
use super::{
    ConfChange, Config, HardState, Index, Message, MessageBody, NodeId, ProposeError, ReadState,
    Ready, Restored, Role, SnapshotMeta, Status, Term,
};

/// A snapshot being received from the leader, chunk by chunk, in memory.
#[derive(Debug)]
pub(super) struct IncomingSnapshot {
    pub(super) from: NodeId,
    pub(super) term: Term,
    pub(super) meta: SnapshotMeta,
    pub(super) data: Vec<u8>,
}

/// One node's consensus state. See the module docs for the driving contract.
pub struct RawNode {
    pub(super) cfg: Config,
    pub(super) id: NodeId,

    // Persistent state (mirrored to disk through Ready.hard_state).
    pub(super) term: Term,
    pub(super) vote: NodeId,
    pub(super) log: RaftLog,
    /// Membership as of the commit index (changes take effect on commit).
    pub(super) membership: Membership,
    /// The membership at each index since a known point, for snapshot
    /// metadata: `[0]` is (index from which it is known, membership then),
    /// each later pair a committed conf change and the membership after
    /// it. Trimmed on compaction; as long as conf changes since the last
    /// snapshot (a handful).
    pub(super) membership_log: Vec<(Index, Membership)>,

    // Volatile state.
    pub(super) role: Role,
    pub(super) leader: Option<NodeId>,
    /// Votes received in the current (pre-)election, this node included.
    pub(super) votes: BTreeMap<NodeId, bool>,
    /// Ticks since the last election timeout reset (followers: since the
    /// leader was last heard; leader: since the last check-quorum round).
    pub(super) election_elapsed: u32,
    pub(super) heartbeat_elapsed: u32,
    pub(super) randomized_timeout: u32,
    /// Logical time, in ticks since creation (deadlines of reads).
    pub(super) now: u64,
    pub(super) rng: SmallRng,

    // Leader state.
    pub(super) prs: BTreeMap<NodeId, Progress>,
    /// Index of the latest conf change in the log (uncommitted while above
    /// the commit index). A new leader sets it to its last index, since any
    /// uncommitted entry it inherits may be a conf change.
    pub(super) pending_conf_index: Index,
    pub(super) transfer_to: Option<NodeId>,
    pub(super) transfer_elapsed: u32,
    pub(super) read_only: ReadOnly,
    /// Appends are owed to the followers (new proposals, a commit to
    /// spread); sent when the next Ready is taken so proposals batch.
    pub(super) bcast_pending: bool,

    // Follower state.
    /// The voter the current leader announced it hands leadership to (a
    /// forced vote from anyone else does not override the leader's lease).
    pub(super) leader_hands_to: Option<NodeId>,
    pub(super) incoming: Option<IncomingSnapshot>,
    /// Reads forwarded to the leader: (ctx, deadline tick).
    pub(super) forwarded_reads: VecDeque<(u64, u64)>,

    // What the next Ready hands out and what earlier ones did.
    pub(super) msgs: Vec<Message>,
    pub(super) read_states: Vec<ReadState>,
    pub(super) pending_snapshot: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
    pub(super) membership_changed: bool,
    pub(super) hard_state_handed: HardState,
    /// Highest committed index handed out in a Ready.
    pub(super) applied_handed: Index,
    /// Highest index the caller confirmed applied (through `advance`).
    pub(super) applied: Index,
}

impl RawNode {
    /// Builds a core from what is on stable storage. Fails (never panics) if
    /// `restored` is inconsistent, e.g. entries not contiguous, or the config
    /// is invalid (id 0, heartbeat_ticks >= election_ticks).
    pub fn new(config: Config, restored: Restored) -> Result<RawNode, String> {
        validate_config(&config)?;
        let Restored {
            mut hard_state,
            membership,
            mut snapshot,
            entries,
            mut applied,
        } = restored;
        // Bootstrapping a new cluster: start from the genesis snapshot so
        // that no log ever starts at index 1 (see `genesis_snapshot`).
        let genesis = snapshot.is_none()
            && entries.is_empty()
            && hard_state == HardState::default()
            && applied == 0
            && !membership.voters.is_empty();
        if genesis {
            snapshot = Some(genesis_snapshot(&membership));
            hard_state.term = GENESIS.1;
            applied = GENESIS.0;
        }
        for w in entries.windows(2) {
            if w[1].index != w[0].index + 1 {
                return Err(format!(
                    "restored entries not contiguous at index {}",
                    w[0].index
                ));
            }
            if w[1].term < w[0].term {
                return Err(format!(
                    "restored entry terms decrease at index {}",
                    w[1].index
                ));
            }
        }
        if let Some(last) = entries.last() {
            if last.term > hard_state.term {
                return Err(format!(
                    "entry {} has term {} above the hard state's term {}",
                    last.index, last.term, hard_state.term
                ));
            }
        }
        // Find the compaction point: the snapshot, or the first restored
        // entry when trailing entries precede the snapshot index.
        let (offset, offset_term, entries) = match (&snapshot, entries.first()) {
            (None, None) => (0, 0, entries),
            (None, Some(first)) => {
                if first.index != 1 {
                    return Err(format!(
                        "log starts at index {} but there is no snapshot",
                        first.index
                    ));
                }
                (0, 0, entries)
            }
            (Some((meta, _)), None) => (meta.index, meta.term, entries),
            (Some((meta, _)), Some(first)) => {
                if first.index > meta.index + 1 {
                    return Err(format!(
                        "gap between snapshot index {} and first entry {}",
                        meta.index, first.index
                    ));
                }
                if first.index == meta.index + 1 {
                    if first.term < meta.term {
                        return Err("first entry's term is below the snapshot's".into());
                    }
                    (meta.index, meta.term, entries)
                } else {
                    let last = entries.last().map_or(0, |e| e.index);
                    let at = (meta.index - first.index) as usize;
                    if last < meta.index || entries[at].term != meta.term {
                        return Err(format!(
                            "restored entries disagree with the snapshot at index {}",
                            meta.index
                        ));
                    }
                    let (ot, rest) = (first.term, entries[1..].to_vec());
                    (first.index, ot, rest)
                }
            }
        };
        let last_index = offset + entries.len() as u64;
        let snap_index = snapshot.as_ref().map_or(0, |(m, _)| m.index);
        let committed = hard_state.commit.max(snap_index).max(applied);
        if committed > last_index {
            return Err(format!(
                "commit index {committed} is beyond the last log index {last_index}"
            ));
        }
        if applied < offset {
            return Err(format!(
                "applied index {applied} is below the log's compaction point {offset}; \
                 restore the state machine from the snapshot first"
            ));
        }
        let log = RaftLog::new(offset, offset_term, entries, committed, snapshot);
        let id = config.id;
        let rng = SmallRng::seed_from_u64(config.seed);
        let hard_state_handed = HardState {
            term: hard_state.term,
            vote: hard_state.vote,
            commit: committed,
        };
        let mut node = RawNode {
            id,
            term: hard_state.term,
            vote: hard_state.vote,
            log,
            membership_log: vec![(committed, membership.clone())],
            membership,
            role: Role::Follower,
            leader: None,
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout: config.election_ticks,
            now: 0,
            rng,
            prs: BTreeMap::new(),
            pending_conf_index: 0,
            transfer_to: None,
            transfer_elapsed: 0,
            leader_hands_to: None,
            read_only: ReadOnly::default(),
            bcast_pending: false,
            incoming: None,
            forwarded_reads: VecDeque::new(),
            msgs: Vec::new(),
            read_states: Vec::new(),
            pending_snapshot: None,
            membership_changed: false,
            hard_state_handed,
            applied_handed: applied,
            applied,
            cfg: config,
        };
        if genesis {
            // Hand the genesis snapshot out once so the store persists it.
            node.pending_snapshot = node.log.snapshot.clone();
            node.membership_changed = true;
            node.hard_state_handed = HardState::default();
            node.applied_handed = GENESIS.0;
        }
        node.reset_election_timer();
        Ok(node)
    }

    /// Advances logical time by one tick: election timeouts, heartbeats,
    /// check-quorum, transfer timeouts.
    pub fn tick(&mut self) {
        self.now += 1;
        self.expire_reads();
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
    }

    /// Feeds a message received from a peer. Stale, duplicate, reordered or
    /// nonsensical messages (unknown sender, wrong `to`) are ignored; this
    /// never panics on any input.
    pub fn step(&mut self, msg: Message) {
        if msg.to != self.id || msg.from == 0 || msg.from == self.id || !is_plausible(&msg) {
            return;
        }
        if !self.step_term(&msg) {
            return;
        }
        debug_assert!(msg.term >= self.term || is_pre_vote_grant(&msg));
        let from = msg.from;
        let term = msg.term;
        match msg.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => self.handle_vote_request(from, term, last_index, last_term, true),
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => self.handle_vote_request(from, term, last_index, last_term, false),
            MessageBody::PreVoteResponse { granted } => {
                let counts = if granted {
                    term == self.term + 1
                } else {
                    term == self.term
                };
                if self.role == Role::PreCandidate && counts {
                    self.record_vote(from, granted);
                }
            }
            MessageBody::VoteResponse { granted } => {
                if self.role == Role::Candidate && term == self.term {
                    self.record_vote(from, granted);
                }
            }
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                if self.accept_leader(from) {
                    self.handle_append(from, prev_index, prev_term, entries, commit);
                }
            }
            MessageBody::Heartbeat { commit, read_ctx } => {
                if self.accept_leader(from) {
                    let commit = commit.min(self.log.last_index());
                    self.commit_to(commit);
                    self.send(from, MessageBody::HeartbeatResponse { read_ctx });
                }
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done,
            } => {
                if self.accept_leader(from) {
                    self.handle_snapshot_chunk(from, meta, offset, data, done);
                }
            }
            MessageBody::AppendResponse {
                success,
                index,
                hint_index,
                hint_term,
            } => self.handle_append_response(from, success, index, hint_index, hint_term),
            MessageBody::HeartbeatResponse { read_ctx } => {
                self.handle_heartbeat_response(from, read_ctx)
            }
            MessageBody::InstallSnapshotResponse {
                snapshot_index,
                next_offset,
                done,
                reject,
            } => self.handle_snapshot_response(from, snapshot_index, next_offset, done, reject),
            MessageBody::TimeoutNow => {
                if self.role == Role::Follower && self.leader == Some(from) {
                    self.hup(true);
                }
            }
            MessageBody::TransferPending { to } => {
                if self.role == Role::Follower && self.leader == Some(from) {
                    self.leader_hands_to = Some(to);
                }
            }
            MessageBody::ReadIndex { ctx } => {
                if self.role == Role::Leader && self.membership.contains(from) {
                    self.handle_read_request(Requester::Remote(from), ctx);
                } else {
                    self.send(from, MessageBody::ReadIndexResponse { ctx, index: 0 });
                }
            }
            MessageBody::ReadIndexResponse { ctx, index } => {
                if let Some(pos) = self.forwarded_reads.iter().position(|&(c, _)| c == ctx) {
                    self.forwarded_reads.remove(pos);
                    self.read_states.push(ReadState { ctx, index });
                }
            }
        }
    }

    /// Appends an application command (leader only). Returns the index and
    /// term the entry got; the caller learns its fate when an entry at that
    /// index is applied: same term = this proposal, other term = lost.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(Index, Term), ProposeError> {
        self.check_can_propose()?;
        Ok(self.append_entry(Payload::Command(data)))
    }

    /// Proposes a one-at-a-time membership change (leader only).
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
    ) -> Result<(Index, Term), ProposeError> {
        self.check_can_propose()?;
        if self.log.term(self.log.committed) != Some(self.term) {
            return Err(ProposeError::LeaderNotReady);
        }
        if self.pending_conf_index > self.log.committed {
            return Err(ProposeError::ConfChangeInProgress);
        }
        let m = &self.membership;
        let invalid = |s: String| Err(ProposeError::InvalidConfChange(s));
        match &change {
            ConfChange::AddLearner { id, .. } => {
                if *id == 0 {
                    return invalid("node id 0 is reserved".into());
                }
                if m.contains(*id) {
                    return invalid(format!("node {id} is already a member"));
                }
            }
            ConfChange::Promote { id } => {
                if !m.learners.contains_key(id) {
                    return invalid(format!("node {id} is not a learner"));
                }
            }
            ConfChange::Remove { id } => {
                if !m.contains(*id) {
                    return invalid(format!("node {id} is not a member"));
                }
                if m.is_voter(*id) && m.voters.len() == 1 {
                    return invalid(format!("node {id} is the last voter"));
                }
            }
        }
        let (index, term) = self.append_entry(Payload::ConfChange(change));
        self.pending_conf_index = index;
        Ok((index, term))
    }

    /// Starts handing leadership to voter `to`: stop accepting proposals,
    /// bring `to` up to date, then send it TimeoutNow. Abandoned after an
    /// election timeout. Leader only. A target that is not a voter is refused
    /// with [`ProposeError::InvalidConfChange`].
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.id {
            return Ok(());
        }
        if !self.membership.is_voter(to) || !self.prs.contains_key(&to) {
            return Err(ProposeError::InvalidConfChange(format!(
                "cannot transfer leadership to {to}: not a voter"
            )));
        }
        if self.transfer_to == Some(to) {
            return Ok(());
        }
        self.transfer_to = Some(to);
        self.transfer_elapsed = 0;
        let caught_up = self
            .prs
            .get(&to)
            .is_some_and(|p| p.matched == self.log.last_index());
        if caught_up {
            self.send_timeout_now(to);
        } else {
            self.maybe_send_append(to, true);
        }
        Ok(())
    }

    /// Asks for a linearizable read point. On a leader: once a quorum has
    /// confirmed leadership (heartbeat round with `ctx`), and the leader has
    /// committed an entry of its term, a ReadState{ctx, commit} appears in a
    /// Ready. On a follower: forwarded to the leader; the answer comes back
    /// as a ReadState. If no leader is known, or the leader cannot serve it,
    /// a ReadState with `index == 0` is returned so the caller can fail fast.
    /// Every request is answered within two election timeouts.
    pub fn read_index(&mut self, ctx: u64) {
        if self.role == Role::Leader {
            self.handle_read_request(Requester::Local, ctx);
            return;
        }
        match self.leader {
            Some(leader) if self.forwarded_reads.len() < MAX_PENDING_READS => {
                let deadline = self.read_deadline();
                self.forwarded_reads.push_back((ctx, deadline));
                self.send(leader, MessageBody::ReadIndex { ctx });
            }
            _ => self.read_states.push(ReadState { ctx, index: 0 }),
        }
    }

    /// The state machine has been snapshotted at `meta.index` (which must be
    /// <= applied) and `data` is durable. The core keeps `data` to send to
    /// followers that fall behind the log, and discards log entries up to
    /// `meta.index - trailing_entries`. Returns the highest index the caller
    /// may now delete from the stable log (0 if none). The entry just above
    /// it is kept on disk: its term becomes the log's starting point after a
    /// restart. Invalid requests (index above applied, wrong term, a
    /// membership other than the one in effect at `meta.index`, older than
    /// the current snapshot) change nothing and return 0: build `meta` with
    /// [`RawNode::snapshot_meta`].
    pub fn compact(&mut self, meta: SnapshotMeta, data: Arc<Vec<u8>>) -> Index {
        if meta.index > self.applied || meta.index > self.log.committed {
            return 0;
        }
        if self.log.term(meta.index) != Some(meta.term) {
            return 0;
        }
        if let Some((cur, _)) = &self.log.snapshot {
            if cur.index >= meta.index {
                return 0;
            }
        }
        if let Some(m) = self.membership_at(meta.index) {
            if *m != meta.membership {
                return 0; // use `snapshot_meta` to get it right
            }
        }
        // Keep the membership history from the snapshot on.
        let keep_from = self
            .membership_log
            .iter()
            .rposition(|(i, _)| *i <= meta.index)
            .unwrap_or(0);
        self.membership_log.drain(..keep_from);
        let target = meta.index.saturating_sub(self.cfg.trailing_entries);
        self.log.snapshot = Some((meta, data));
        if self.log.compact_to(target) {
            target - 1
        } else {
            0
        }
    }

    /// The metadata a snapshot of the state machine at `index` must carry:
    /// the term of that entry and the membership in effect there (which
    /// differs from [`RawNode::membership`] while a committed conf change is
    /// not yet applied). `None` if `index` is above the applied index or no
    /// longer known (below the log start or the last restart's commit).
    pub fn snapshot_meta(&self, index: Index) -> Option<SnapshotMeta> {
        if index > self.applied {
            return None;
        }
        Some(SnapshotMeta {
            index,
            term: self.log.term(index)?,
            membership: self.membership_at(index)?.clone(),
        })
    }

    /// A message to `id` could not be delivered: fall back to probing so the
    /// next attempt does not waste the in-flight window.
    pub fn report_unreachable(&mut self, id: NodeId) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(pr) = self.prs.get_mut(&id) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
        }
    }

    /// True if [`RawNode::ready`] has anything to hand out.
    pub fn has_ready(&self) -> bool {
        !self.msgs.is_empty()
            || self.log.has_unstable()
            || self.pending_snapshot.is_some()
            || self.hard_state() != self.hard_state_handed
            || self.membership_changed
            || !self.read_states.is_empty()
            || self.committed_limit() > self.applied_handed
            || (self.bcast_pending && self.role == Role::Leader)
    }

    /// Takes everything pending. Call [`RawNode::advance`] with it once the
    /// caller has done all it requires; no second Ready before that.
    pub fn ready(&mut self) -> Ready {
        if std::mem::take(&mut self.bcast_pending) && self.role == Role::Leader {
            self.bcast_append();
        }
        let snapshot = self.pending_snapshot.take();
        let entries = self.log.unstable_entries().to_vec();
        self.log.mark_handed_out();
        let hs = self.hard_state();
        let hard_state = (hs != self.hard_state_handed).then(|| {
            self.hard_state_handed = hs;
            hs
        });
        let membership =
            std::mem::take(&mut self.membership_changed).then(|| self.membership.clone());
        let committed = self.log.slice(
            self.applied_handed + 1,
            self.committed_limit(),
            self.cfg.max_append_bytes,
        );
        if let Some(last) = committed.last() {
            // Always on, O(1): entries to apply continue the ones handed
            // out before (no gap, no repeat).
            assert!(
                committed[0].index == self.applied_handed + 1,
                "raft invariant: handing out entry {} to apply after {}",
                committed[0].index,
                self.applied_handed
            );
            self.applied_handed = last.index;
        }
        if let (Some((meta, _)), Some(first)) = (&snapshot, entries.first()) {
            debug_assert!(first.index > meta.index);
        }
        Ready {
            snapshot,
            entries,
            hard_state,
            membership,
            messages: std::mem::take(&mut self.msgs),
            committed,
            read_states: std::mem::take(&mut self.read_states),
        }
    }

    /// Confirms that `rd` was persisted (fsynced), its messages sent and its
    /// committed entries applied.
    pub fn advance(&mut self, rd: &Ready) {
        if let Some((meta, _)) = &rd.snapshot {
            self.log.snapshot_persisted(meta.index);
            self.applied = self.applied.max(meta.index);
        }
        if !rd.entries.is_empty() {
            self.log.stable_to(&rd.entries);
        }
        if let Some(last) = rd.committed.last() {
            self.applied = self.applied.max(last.index);
        }
        assert!(
            self.applied <= self.log.committed,
            "raft invariant: applied {} beyond commit {}",
            self.applied,
            self.log.committed
        );
        if self.role == Role::Leader && self.maybe_commit() {
            self.bcast_pending = true;
        }
        self.log.check();
    }

    /// A read-only view for status displays and metrics.
    pub fn status(&self) -> Status {
        let mut progress = Vec::new();
        if self.role == Role::Leader {
            progress.push((self.id, self.log.persisted()));
            progress.extend(self.prs.iter().map(|(&id, pr)| (id, pr.matched)));
        }
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.log.committed,
            applied: self.applied,
            first_index: self.log.first_index(),
            last_index: self.log.last_index(),
            snapshot_index: self.log.snapshot.as_ref().map_or(0, |(m, _)| m.index),
            membership: self.membership.clone(),
            progress,
            transferring_to: self.transfer_to,
        }
    }

    /// The leader this node currently follows or is, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The role this node plays now (cheaper than [`RawNode::status`]).
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current term (cheaper than [`RawNode::status`]).
    pub fn term(&self) -> Term {
        self.term
    }

    /// The membership in effect (as of the commit index).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The term of the log entry at `index`, if this node still holds it
    /// (the compaction point's term is known). Lets callers and tests check
    /// log matching without copying the log.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }

    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.msgs.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    /// The membership in effect at `index`, if known.
    pub(super) fn membership_at(&self, index: Index) -> Option<&Membership> {
        let (base, _) = self.membership_log.first()?;
        if index < *base {
            return None;
        }
        self.membership_log
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map(|(_, m)| m)
    }

    pub(super) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    /// Committed entries may be handed out only once they are durable here.
    pub(super) fn committed_limit(&self) -> Index {
        self.log.committed.min(self.log.persisted())
    }
}

/// Index and term of the genesis snapshot.
pub(super) const GENESIS: (Index, Term) = (1, 1);

/// The snapshot every node of a newly bootstrapped cluster starts from: the
/// empty state machine (empty data) at index 1, term 1, with the bootstrap
/// membership. All bootstrap nodes build the same one, so it is agreed
/// without a round of messages. Its purpose: the log never starts at index
/// 1, so a node that joins later (empty log, empty membership) always
/// receives a snapshot, and with it the membership, instead of replaying
/// conf changes on top of a membership it does not know.
pub(super) fn genesis_snapshot(membership: &Membership) -> (SnapshotMeta, Arc<Vec<u8>>) {
    let meta = SnapshotMeta {
        index: GENESIS.0,
        term: GENESIS.1,
        membership: membership.clone(),
    };
    (meta, Arc::new(Vec::new()))
}
