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
use rand::{Rng, SeedableRng};

use super::log::RaftLog;
use super::progress::{Progress, ProgressState};
use super::quorum::{self, VoteResult};
use super::read_only::{ReadOnly, Requester, MAX_PENDING_READS};
use super::types::{Entry, Membership, Payload};
use super::{
    ConfChange, Config, HardState, Index, Message, MessageBody, NodeId, ProposeError, ReadState,
    Ready, Restored, Role, SnapshotMeta, Status, Term,
};

/// A snapshot being received from the leader, chunk by chunk, in memory.
#[derive(Debug)]
struct IncomingSnapshot {
    from: NodeId,
    term: Term,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// One node's consensus state. See the module docs for the driving contract.
pub struct RawNode {
    cfg: Config,
    id: NodeId,

    // Persistent state (mirrored to disk through Ready.hard_state).
    term: Term,
    vote: NodeId,
    log: RaftLog,
    /// Membership as of the commit index (changes take effect on commit).
    membership: Membership,
    /// The membership at each index since a known point, for snapshot
    /// metadata: `[0]` is (index from which it is known, membership then),
    /// each later pair a committed conf change and the membership after
    /// it. Trimmed on compaction; as long as conf changes since the last
    /// snapshot (a handful).
    membership_log: Vec<(Index, Membership)>,

    // Volatile state.
    role: Role,
    leader: Option<NodeId>,
    /// Votes received in the current (pre-)election, this node included.
    votes: BTreeMap<NodeId, bool>,
    /// Ticks since the last election timeout reset (followers: since the
    /// leader was last heard; leader: since the last check-quorum round).
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_timeout: u32,
    /// Logical time, in ticks since creation (deadlines of reads).
    now: u64,
    rng: SmallRng,

    // Leader state.
    prs: BTreeMap<NodeId, Progress>,
    /// Index of the latest conf change in the log (uncommitted while above
    /// the commit index). A new leader sets it to its last index, since any
    /// uncommitted entry it inherits may be a conf change.
    pending_conf_index: Index,
    transfer_to: Option<NodeId>,
    transfer_elapsed: u32,
    read_only: ReadOnly,
    /// Appends are owed to the followers (new proposals, a commit to
    /// spread); sent when the next Ready is taken so proposals batch.
    bcast_pending: bool,

    // Follower state.
    /// The voter the current leader announced it hands leadership to (a
    /// forced vote from anyone else does not override the leader's lease).
    leader_hands_to: Option<NodeId>,
    incoming: Option<IncomingSnapshot>,
    /// Reads forwarded to the leader: (ctx, deadline tick).
    forwarded_reads: VecDeque<(u64, u64)>,

    // What the next Ready hands out and what earlier ones did.
    msgs: Vec<Message>,
    read_states: Vec<ReadState>,
    pending_snapshot: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
    membership_changed: bool,
    hard_state_handed: HardState,
    /// Highest committed index handed out in a Ready.
    applied_handed: Index,
    /// Highest index the caller confirmed applied (through `advance`).
    applied: Index,
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

    // ------------------------------------------------------------------
    // Driving API
    // ------------------------------------------------------------------

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
            debug_assert_eq!(committed[0].index, self.applied_handed + 1);
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
        debug_assert!(self.applied <= self.log.committed);
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

    // ------------------------------------------------------------------
    // Terms and roles
    // ------------------------------------------------------------------

    /// The term rules of §5.1 plus pre-vote and check-quorum. Returns false
    /// if the message must be dropped.
    fn step_term(&mut self, msg: &Message) -> bool {
        use MessageBody::*;
        if msg.term > self.term {
            if let PreVote { .. } | Vote { .. } = msg.body {
                // A forced vote overrides the lease only when the leader
                // itself hands over to this candidate (we lead and chose it,
                // or our leader announced it): a valid peer cannot claim it.
                let forced = matches!(msg.body, Vote { transfer: true, .. })
                    && (self.leader_hands_to == Some(msg.from)
                        || (self.role == Role::Leader && self.transfer_to == Some(msg.from)));
                let in_lease = self.cfg.check_quorum
                    && self.leader.is_some()
                    && self.election_elapsed < self.cfg.election_ticks;
                if in_lease && !forced {
                    // A leader we heard from recently is alive: a node that
                    // wants to replace it is partitioned or confused.
                    return false;
                }
            }
            match msg.body {
                PreVote { .. } => {}
                PreVoteResponse { granted: true } => {}
                Append { .. } | Heartbeat { .. } | InstallSnapshot { .. } => {
                    self.become_follower(msg.term, Some(msg.from))
                }
                _ => self.become_follower(msg.term, None),
            }
            true
        } else if msg.term < self.term {
            match msg.body {
                // Tell a stale leader about the newer term so it steps down
                // (otherwise, with check-quorum, it could linger).
                Append { .. } | Heartbeat { .. } | InstallSnapshot { .. } => {
                    self.send(
                        msg.from,
                        AppendResponse {
                            success: false,
                            index: 0,
                            hint_index: 0,
                            hint_term: 0,
                        },
                    );
                }
                PreVote { .. } => {
                    self.send(msg.from, PreVoteResponse { granted: false });
                }
                // As in the paper: refuse with our term, so a candidate that
                // is behind catches up. Without it, a voter whose stale
                // configuration leads it to campaign elsewhere keeps its
                // term ahead of the one candidate that can win, forever.
                Vote { .. } => {
                    self.send(msg.from, VoteResponse { granted: false });
                }
                _ => {}
            }
            false
        } else {
            true
        }
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        debug_assert!(term >= self.term);
        if term > self.term || self.leader != leader {
            self.leader_hands_to = None;
        }
        if term > self.term {
            self.term = term;
            self.vote = 0;
        }
        if self.role == Role::Leader {
            self.fail_leader_reads();
            self.prs.clear();
            self.transfer_to = None;
            self.bcast_pending = false;
        }
        if self.leader != leader {
            self.incoming = None;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.reset_election_timer();
    }

    fn become_pre_candidate(&mut self) {
        debug_assert_ne!(self.role, Role::Leader);
        self.leader_hands_to = None;
        self.role = Role::PreCandidate;
        self.leader = None;
        self.incoming = None;
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_timer();
    }

    fn become_candidate(&mut self) {
        debug_assert_ne!(self.role, Role::Leader);
        self.leader_hands_to = None;
        self.term += 1;
        self.vote = self.id;
        self.role = Role::Candidate;
        self.leader = None;
        self.incoming = None;
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_timer();
    }

    fn become_leader(&mut self) {
        assert_eq!(self.role, Role::Candidate);
        assert!(self.membership.is_voter(self.id));
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.transfer_to = None;
        let next = self.log.last_index() + 1;
        self.prs.clear();
        for id in self.membership.ids().filter(|&id| id != self.id) {
            let mut pr = Progress::new(next, self.cfg.max_inflight);
            pr.recent_active = true;
            self.prs.insert(id, pr);
        }
        // Any uncommitted entry we inherited may be a conf change.
        self.pending_conf_index = self.log.last_index();
        self.append_entry(Payload::Noop);
        // Send the Noop now rather than at the next Ready: nothing to batch.
        self.bcast_pending = false;
        self.bcast_append();
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let e = self.cfg.election_ticks;
        self.randomized_timeout = self.rng.gen_range(e..2 * e);
    }

    fn tick_election(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        // Only a voter restarts its timer here: a learner's keeps growing so
        // its lease on a silent leader expires (and it grants votes again).
        let promotable = self.membership.is_voter(self.id);
        if promotable && self.election_elapsed >= self.randomized_timeout {
            self.election_elapsed = 0;
            self.hup(false);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_ticks {
            self.election_elapsed = 0;
            if self.cfg.check_quorum {
                let active = quorum::has_quorum(self.membership.voters.keys().copied(), |id| {
                    id == self.id || self.prs.get(&id).is_some_and(|p| p.recent_active)
                });
                if !active {
                    let term = self.term;
                    self.become_follower(term, None);
                    return;
                }
                for pr in self.prs.values_mut() {
                    pr.recent_active = false;
                }
            }
        }
        if self.transfer_to.is_some() {
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.cfg.election_ticks {
                self.transfer_to = None;
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            let read_ctx = self.read_only.last_seq();
            self.bcast_heartbeat(read_ctx);
            self.retry_snapshot_chunks();
        }
    }

    /// Starts an election (after a pre-vote round unless `transfer`).
    fn hup(&mut self, transfer: bool) {
        if self.role == Role::Leader || !self.membership.is_voter(self.id) {
            return;
        }
        if self.cfg.pre_vote && !transfer {
            self.become_pre_candidate();
            if self.tally() == VoteResult::Won {
                self.campaign(false);
                return;
            }
            let term = self.term + 1;
            self.send_vote_requests(term, |last_index, last_term| MessageBody::PreVote {
                last_index,
                last_term,
            });
        } else {
            self.campaign(transfer);
        }
    }

    fn campaign(&mut self, transfer: bool) {
        self.become_candidate();
        if self.tally() == VoteResult::Won {
            self.become_leader();
            return;
        }
        let term = self.term;
        self.send_vote_requests(term, |last_index, last_term| MessageBody::Vote {
            last_index,
            last_term,
            transfer,
        });
    }

    fn send_vote_requests(&mut self, term: Term, body: impl Fn(Index, Term) -> MessageBody) {
        let (li, lt) = (self.log.last_index(), self.log.last_term());
        let voters: Vec<NodeId> = self.membership.voters.keys().copied().collect();
        for to in voters.into_iter().filter(|&v| v != self.id) {
            self.msgs.push(Message {
                from: self.id,
                to,
                term,
                body: body(li, lt),
            });
        }
    }

    fn tally(&self) -> VoteResult {
        quorum::vote_result(self.membership.voters.keys().copied(), &self.votes)
    }

    fn record_vote(&mut self, from: NodeId, granted: bool) {
        self.votes.entry(from).or_insert(granted);
        match (self.tally(), self.role) {
            (VoteResult::Won, Role::PreCandidate) => self.campaign(false),
            (VoteResult::Won, Role::Candidate) => self.become_leader(),
            (VoteResult::Lost, _) => {
                let term = self.term;
                self.become_follower(term, None);
            }
            _ => {}
        }
    }

    fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        last_index: Index,
        last_term: Term,
        pre: bool,
    ) {
        let can_vote = self.vote == from
            || (self.vote == 0 && self.leader.is_none())
            || (pre && term > self.term);
        let log_ok =
            self.log.is_up_to_date(last_index, last_term) || self.removed_and_sole_voter(from);
        let granted = can_vote && log_ok;
        let body = if pre {
            MessageBody::PreVoteResponse { granted }
        } else {
            MessageBody::VoteResponse { granted }
        };
        if granted && !pre {
            self.vote = from;
            self.election_elapsed = 0;
        }
        // A granted pre-vote answers at the proposed term; anything else at
        // ours, so a candidate that is behind learns the newer term.
        let reply_term = if granted && pre { term } else { self.term };
        self.msgs.push(Message {
            from: self.id,
            to: from,
            term: reply_term,
            body,
        });
    }

    /// True if this node knows it was removed and `candidate` is the only
    /// voter left. Such a node may vote for it whatever their logs: the
    /// removal was committed by a quorum of the old configuration {us,
    /// candidate}, and every entry committed since then had the candidate
    /// in its quorum (it is in every later configuration until it is
    /// removed itself, which it would know). So the candidate holds every
    /// committed entry. Without this, a candidate that has not yet learned
    /// the removal committed still counts us as a voter; if our log is
    /// longer (we led and appended after the removal entry) we would refuse
    /// it forever and a two-voter cluster that removed its leader could
    /// never elect anyone.
    fn removed_and_sole_voter(&self, candidate: NodeId) -> bool {
        !self.membership.contains(self.id)
            && self.membership.voters.len() == 1
            && self.membership.voters.contains_key(&candidate)
    }

    /// A leader-only message arrived at our term from `from`: follow it.
    /// Returns false if it must be dropped (we lead this term ourselves).
    fn accept_leader(&mut self, from: NodeId) -> bool {
        match self.role {
            // Two leaders in one term cannot happen among correct peers;
            // a forged or corrupt message is dropped.
            Role::Leader => false,
            Role::Candidate | Role::PreCandidate => {
                let term = self.term;
                self.become_follower(term, Some(from));
                true
            }
            Role::Follower => {
                if self.leader != Some(from) {
                    self.incoming = None;
                    self.leader = Some(from);
                }
                self.election_elapsed = 0;
                true
            }
        }
    }

    // ------------------------------------------------------------------
    // Log replication: follower side
    // ------------------------------------------------------------------

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    ) {
        let Some(last_new) = prev_index.checked_add(entries.len() as u64) else {
            return;
        };
        let well_formed = prev_term <= self.term
            && entries
                .iter()
                .enumerate()
                .all(|(i, e)| e.index == prev_index + 1 + i as u64 && e.term <= self.term)
            && entries
                .iter()
                .try_fold(prev_term, |t, e| (e.term >= t).then_some(e.term))
                .is_some();
        if !well_formed {
            return;
        }
        if prev_index < self.log.committed {
            // Everything up to our commit index matches any leader's log.
            let index = self.log.committed;
            self.send_append_response(from, true, index, 0, 0);
            return;
        }
        if self.log.matches(prev_index, prev_term) {
            match self.log.append_after_match(&entries) {
                // The sender contradicts a committed entry: refuse it.
                Err(_) => return,
                Ok(Some(from)) => self.retract_acks_above(from - 1),
                Ok(None) => {}
            }
            self.commit_to(commit.min(last_new));
            self.send_append_response(from, true, last_new, 0, 0);
        } else {
            let probe = prev_index.min(self.log.last_index());
            let (hint_index, hint_term) = self.log.find_conflict_by_term(probe, prev_term);
            self.send_append_response(from, false, prev_index, hint_index, hint_term);
        }
    }

    /// Entries above `index` were just replaced. Acknowledgements still
    /// queued for them would claim, once sent, that entries are durable
    /// which this node will never persist: drop them.
    fn retract_acks_above(&mut self, index: Index) {
        self.msgs.retain(|m| {
            !matches!(m.body, MessageBody::AppendResponse { success: true, index: i, .. } if i > index)
        });
    }

    fn send_append_response(
        &mut self,
        to: NodeId,
        success: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    ) {
        self.send(
            to,
            MessageBody::AppendResponse {
                success,
                index,
                hint_index,
                hint_term,
            },
        );
    }

    fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    ) {
        let snapshot_index = meta.index;
        if meta.index <= self.log.committed {
            // We already have everything it holds (maybe an earlier copy).
            self.incoming = None;
            self.send_snapshot_response(from, snapshot_index, 0, true, false);
            return;
        }
        let same = self
            .incoming
            .as_ref()
            .is_some_and(|i| i.from == from && i.term == self.term && i.meta == meta);
        if !same {
            if offset != 0 {
                self.incoming = None;
                self.send_snapshot_response(from, snapshot_index, 0, false, true);
                return;
            }
            self.incoming = Some(IncomingSnapshot {
                from,
                term: self.term,
                meta,
                data: Vec::new(),
            });
        }
        let Some(inc) = self.incoming.as_mut() else {
            return;
        };
        let have = inc.data.len() as u64;
        if offset > have {
            // A gap: a chunk was lost and a later one overtook it.
            self.incoming = None;
            self.send_snapshot_response(from, snapshot_index, 0, false, true);
            return;
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > MAX_SNAPSHOT_BYTES {
            // Bigger than we are willing to hold in memory: refuse it.
            self.incoming = None;
            self.send_snapshot_response(from, snapshot_index, 0, false, true);
            return;
        }
        if end > have {
            let skip = (have - offset) as usize;
            inc.data.extend_from_slice(&data[skip..]);
        }
        let have = inc.data.len() as u64;
        if !(done && end == have) {
            self.send_snapshot_response(from, snapshot_index, have, false, false);
            return;
        }
        let Some(inc) = self.incoming.take() else {
            return;
        };
        if let Some(check) = self.cfg.snapshot_check {
            if check(&inc.meta, &inc.data).is_err() {
                self.send_snapshot_response(from, snapshot_index, 0, false, true);
                return;
            }
        }
        self.install_snapshot(inc.meta, Arc::new(inc.data));
        self.send_snapshot_response(from, snapshot_index, have, true, false);
    }

    fn send_snapshot_response(
        &mut self,
        to: NodeId,
        snapshot_index: Index,
        next_offset: u64,
        done: bool,
        reject: bool,
    ) {
        self.send(
            to,
            MessageBody::InstallSnapshotResponse {
                snapshot_index,
                next_offset,
                done,
                reject,
            },
        );
    }

    /// A complete snapshot from the leader: either our log already has its
    /// last entry (then just commit up to it) or it replaces the log.
    fn install_snapshot(&mut self, meta: SnapshotMeta, data: Arc<Vec<u8>>) {
        debug_assert!(meta.index > self.log.committed);
        if self.log.matches(meta.index, meta.term) {
            self.commit_to(meta.index);
            return;
        }
        self.log.restore(&meta, data.clone());
        self.retract_acks_above(meta.index);
        self.membership = meta.membership.clone();
        self.membership_log = vec![(meta.index, meta.membership.clone())];
        self.membership_changed = true;
        // The state machine jumps to the snapshot; entries at or below it
        // are never handed out for applying.
        self.applied_handed = self.applied_handed.max(meta.index);
        self.pending_snapshot = Some((meta, data));
    }

    // ------------------------------------------------------------------
    // Log replication: leader side
    // ------------------------------------------------------------------

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer_to.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        let uncommitted = self.log.last_index() - self.log.committed;
        if uncommitted >= self.cfg.max_uncommitted_entries as u64 {
            return Err(ProposeError::Overloaded);
        }
        Ok(())
    }

    fn append_entry(&mut self, payload: Payload) -> (Index, Term) {
        debug_assert_eq!(self.role, Role::Leader);
        let entry = Entry {
            term: self.term,
            index: self.log.last_index() + 1,
            payload,
        };
        let at = (entry.index, entry.term);
        self.log.append(std::slice::from_ref(&entry));
        self.bcast_pending = true;
        at
    }

    fn bcast_append(&mut self) {
        let ids: Vec<NodeId> = self.prs.keys().copied().collect();
        for id in ids {
            self.maybe_send_append(id, true);
        }
    }

    fn bcast_heartbeat(&mut self, read_ctx: u64) {
        let commit = self.log.committed;
        let targets: Vec<NodeId> = self.prs.keys().copied().collect();
        for to in targets {
            self.send_heartbeat(to, commit, read_ctx);
        }
    }

    /// A heartbeat never carries a commit index above what the follower is
    /// known to match: its log may still hold a divergent suffix.
    fn send_heartbeat(&mut self, to: NodeId, commit: Index, read_ctx: u64) {
        let Some(pr) = self.prs.get_mut(&to) else {
            return;
        };
        let commit = pr.matched.min(commit);
        pr.sent_commit = pr.sent_commit.max(commit);
        self.send(to, MessageBody::Heartbeat { commit, read_ctx });
    }

    /// Sends `to` what it needs next, unless its flow control says wait.
    /// Returns true if a message went out.
    fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let last = self.log.last_index();
        let Some(pr) = self.prs.get_mut(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        debug_assert!(
            pr.matched < pr.next && pr.next <= last + 1,
            "progress of {to} out of range"
        );
        pr.next = pr
            .next
            .clamp(pr.matched + 1, (last + 1).max(pr.matched + 1));
        let prev_index = pr.next - 1;
        let Some(prev_term) = self.log.term(prev_index) else {
            // The entries it needs are compacted: send the snapshot.
            let Some((meta, data)) = self.log.snapshot.clone() else {
                debug_assert!(false, "log compacted without a snapshot");
                return false;
            };
            pr.become_snapshot(meta, data);
            self.send_snapshot_chunk(to);
            return true;
        };
        let entries = self.log.slice(pr.next, last, self.cfg.max_append_bytes);
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let last_sent = entries.last().map_or(prev_index, |e| e.index);
        if !entries.is_empty() || pr.state == ProgressState::Probe {
            pr.sent_entries(last_sent);
        }
        let commit = self.log.committed;
        pr.sent_commit = pr.sent_commit.max(commit.min(last_sent));
        self.send(
            to,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
        true
    }

    fn send_snapshot_chunk(&mut self, to: NodeId) {
        let chunk = self.cfg.snapshot_chunk_bytes as u64;
        let Some(t) = self.prs.get(&to).and_then(|p| p.snapshot.as_ref()) else {
            return;
        };
        let len = t.data.len() as u64;
        let start = t.offset.min(len);
        let end = start.saturating_add(chunk).min(len);
        let body = MessageBody::InstallSnapshot {
            meta: t.meta.clone(),
            offset: start,
            data: t.data[start as usize..end as usize].to_vec(),
            done: end == len,
        };
        self.send(to, body);
    }

    /// Heartbeat tick: resend the outstanding chunk of every snapshot
    /// transfer that made no progress since the last one (lost chunk or
    /// lost answer).
    fn retry_snapshot_chunks(&mut self) {
        let mut stalled = Vec::new();
        for (&id, pr) in self.prs.iter_mut() {
            if let Some(t) = pr.snapshot.as_mut() {
                if !t.progressed {
                    stalled.push(id);
                }
                t.progressed = false;
            }
        }
        for id in stalled {
            self.send_snapshot_chunk(id);
        }
    }

    fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    ) {
        if self.role != Role::Leader || index > self.log.last_index() {
            return;
        }
        let Some(pr) = self.prs.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if !success {
            let match_hint = if hint_term > 0 {
                self.log.find_conflict_by_term(hint_index, hint_term).0
            } else {
                hint_index
            };
            if pr.maybe_decr_to(index, match_hint) {
                self.maybe_send_append(from, true);
            }
            return;
        }
        let updated = pr.maybe_update(index);
        // An answer to a probe at our known match point also ends probing.
        let probe_acked = pr.state == ProgressState::Probe && index == pr.matched;
        if !updated && !probe_acked {
            if pr.state == ProgressState::Replicate {
                pr.inflights.free_to(index);
            }
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot => {
                let snap = pr.snapshot.as_ref().map_or(0, |t| t.meta.index);
                if pr.matched >= snap {
                    pr.become_replicate();
                }
            }
            ProgressState::Replicate => pr.inflights.free_to(index),
        }
        if self.maybe_commit() {
            self.bcast_append();
        }
        if self.role != Role::Leader {
            return; // committed our own removal
        }
        while self.maybe_send_append(from, false) {}
        // Nothing new to send, but the follower may not know the commit.
        let commit = self.log.committed;
        if self
            .prs
            .get(&from)
            .is_some_and(|p| p.sent_commit < p.matched.min(commit))
        {
            self.send_heartbeat(from, commit, 0);
        }
        if self.transfer_to == Some(from) {
            self.maybe_send_timeout_now(from);
        }
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, read_ctx: u64) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let Some(pr) = self.prs.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if pr.matched < last {
            match pr.state {
                ProgressState::Probe => {
                    pr.probe_sent = false;
                    self.maybe_send_append(from, true);
                }
                ProgressState::Replicate => {
                    if !self.maybe_send_append(from, false) {
                        self.send_gap_probe(from);
                    }
                }
                ProgressState::Snapshot => {}
            }
        }
        if read_ctx != 0 && self.membership.is_voter(from) {
            let voters = &self.membership.voters;
            let done = self.read_only.ack(from, read_ctx, |acks| {
                quorum::has_quorum(voters.keys().copied(), |id| acks.contains(&id))
            });
            for r in done {
                self.respond_read(r.from, r.ctx, r.index);
            }
        }
    }

    /// Replicate state with everything sent (or the window full) but not
    /// acknowledged: some Append may be lost. An empty Append at `next - 1`
    /// finds out without using the window: success frees it, a rejection
    /// sends the follower back to probing.
    fn send_gap_probe(&mut self, to: NodeId) {
        let Some(pr) = self.prs.get(&to) else {
            return;
        };
        let prev_index = pr.next - 1;
        let Some(prev_term) = self.log.term(prev_index) else {
            // Compacted meanwhile: probe from the match point, which leads
            // to a snapshot if that is compacted too.
            if let Some(pr) = self.prs.get_mut(&to) {
                pr.become_probe();
            }
            self.maybe_send_append(to, true);
            return;
        };
        let commit = self.log.committed;
        self.send(
            to,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries: Vec::new(),
                commit,
            },
        );
    }

    fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        snapshot_index: Index,
        next_offset: u64,
        done: bool,
        reject: bool,
    ) {
        if self.role != Role::Leader || snapshot_index > self.log.last_index() {
            return;
        }
        let Some(pr) = self.prs.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if done {
            pr.maybe_update(snapshot_index);
            if pr.state == ProgressState::Snapshot {
                pr.become_probe();
            }
            self.maybe_send_append(from, true);
            return;
        }
        let Some(t) = pr.snapshot.as_mut() else {
            return;
        };
        if t.meta.index != snapshot_index {
            return;
        }
        let len = t.data.len() as u64;
        if reject {
            t.offset = 0;
        } else if next_offset > t.offset && next_offset <= len {
            t.offset = next_offset;
        } else {
            return; // duplicate or stale answer
        }
        t.progressed = true;
        self.send_snapshot_chunk(from);
    }

    /// The highest index a majority has durably, committed if it is of our
    /// term (§5.4.2: older entries commit only indirectly). Loops because a
    /// committed conf change can change the quorum. Returns true if the
    /// commit index moved.
    fn maybe_commit(&mut self) -> bool {
        let mut moved = false;
        while self.role == Role::Leader {
            let persisted = self.log.persisted();
            let prs = &self.prs;
            let me = self.id;
            let idx = quorum::committed_index(self.membership.voters.keys().copied(), |id| {
                if id == me {
                    persisted
                } else {
                    prs.get(&id).map_or(0, |p| p.matched)
                }
            });
            if idx <= self.log.committed || self.log.term(idx) != Some(self.term) {
                break;
            }
            self.commit_to(idx);
            moved = true;
        }
        moved
    }

    /// Raises the commit index and applies the membership changes committed
    /// on the way (they take effect on commit, on every node).
    fn commit_to(&mut self, index: Index) {
        let old = self.log.committed;
        if !self.log.commit_to(index) {
            return;
        }
        let changes: Vec<(Index, ConfChange)> = (old + 1..=index)
            .filter_map(|i| match self.log.entry(i).map(|e| &e.payload) {
                Some(Payload::ConfChange(cc)) => Some((i, cc.clone())),
                _ => None,
            })
            .collect();
        for (index, cc) in changes {
            self.apply_conf_change(index, cc);
        }
    }

    fn apply_conf_change(&mut self, index: Index, cc: ConfChange) {
        self.membership.apply(&cc);
        self.membership_changed = true;
        self.membership_log.push((index, self.membership.clone()));
        if self.role != Role::Leader {
            return;
        }
        let next = self.log.last_index() + 1;
        for id in self.membership.ids().collect::<Vec<_>>() {
            if id != self.id && !self.prs.contains_key(&id) {
                let mut pr = Progress::new(next, self.cfg.max_inflight);
                pr.recent_active = true;
                self.prs.insert(id, pr);
                self.maybe_send_append(id, true);
            }
        }
        let membership = &self.membership;
        self.prs.retain(|id, _| membership.contains(*id));
        if let Some(t) = self.transfer_to {
            if !self.membership.is_voter(t) {
                self.transfer_to = None;
            }
        }
        if !self.membership.is_voter(self.id) {
            self.step_down_removed();
        }
    }

    /// Our own removal committed: tell the others (so they learn the commit
    /// without waiting for an election timeout), hand leadership to the most
    /// up-to-date voter, and stop leading.
    fn step_down_removed(&mut self) {
        self.bcast_append();
        let last = self.log.last_index();
        let best = self
            .prs
            .iter()
            .filter(|(id, pr)| self.membership.is_voter(**id) && pr.matched == last)
            .map(|(&id, _)| id)
            .next();
        if let Some(to) = best {
            self.send_timeout_now(to);
        }
        let term = self.term;
        self.become_follower(term, None);
    }

    fn maybe_send_timeout_now(&mut self, to: NodeId) {
        let last = self.log.last_index();
        if self.prs.get(&to).is_some_and(|p| p.matched == last) {
            self.send_timeout_now(to);
        }
    }

    /// Announces the transfer to every other voter, then tells `to` to
    /// campaign. The announcement goes first on each peer's ordered stream,
    /// so a voter normally knows of the transfer before the forced vote
    /// arrives; if not, it refuses and `to` wins a normal election later.
    fn send_timeout_now(&mut self, to: NodeId) {
        let voters: Vec<NodeId> = self
            .membership
            .voters
            .keys()
            .copied()
            .filter(|&id| id != self.id && id != to)
            .collect();
        for voter in voters {
            self.send(voter, MessageBody::TransferPending { to });
        }
        self.send(to, MessageBody::TimeoutNow);
    }

    // ------------------------------------------------------------------
    // ReadIndex
    // ------------------------------------------------------------------

    fn read_deadline(&self) -> u64 {
        self.now + 2 * self.cfg.election_ticks as u64
    }

    fn handle_read_request(&mut self, from: Requester, ctx: u64) {
        debug_assert_eq!(self.role, Role::Leader);
        // Until an entry of our term commits, our commit index may be behind
        // the real one (§6.4 step 1): refuse rather than serve a stale read.
        if self.log.term(self.log.committed) != Some(self.term) {
            self.respond_read(from, ctx, 0);
            return;
        }
        let index = self.log.committed;
        if self.membership.voters.len() == 1 {
            self.respond_read(from, ctx, index);
            return;
        }
        if self.read_only.is_full() {
            self.respond_read(from, ctx, 0);
            return;
        }
        let deadline = self.read_deadline();
        let seq = self.read_only.add(ctx, from, index, self.id, deadline);
        self.bcast_heartbeat(seq);
    }

    fn respond_read(&mut self, to: Requester, ctx: u64, index: Index) {
        match to {
            Requester::Local => self.read_states.push(ReadState { ctx, index }),
            Requester::Remote(id) => self.send(id, MessageBody::ReadIndexResponse { ctx, index }),
        }
    }

    fn fail_leader_reads(&mut self) {
        for r in self.read_only.drain() {
            self.respond_read(r.from, r.ctx, 0);
        }
    }

    fn expire_reads(&mut self) {
        let now = self.now;
        for r in self.read_only.expire(now) {
            self.respond_read(r.from, r.ctx, 0);
        }
        while self.forwarded_reads.front().is_some_and(|&(_, d)| d <= now) {
            if let Some((ctx, _)) = self.forwarded_reads.pop_front() {
                self.read_states.push(ReadState { ctx, index: 0 });
            }
        }
    }

    // ------------------------------------------------------------------
    // Helpers
    // ------------------------------------------------------------------

    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.msgs.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    /// The membership in effect at `index`, if known.
    fn membership_at(&self, index: Index) -> Option<&Membership> {
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

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    /// Committed entries may be handed out only once they are durable here.
    fn committed_limit(&self) -> Index {
        self.log.committed.min(self.log.persisted())
    }
}

/// Bound on a snapshot assembled in memory from InstallSnapshot chunks.
/// Chunks beyond it are refused (the transfer restarts and fails again, so
/// the state machine must stay well below it).
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

/// Index and term of the genesis snapshot.
const GENESIS: (Index, Term) = (1, 1);

/// The snapshot every node of a newly bootstrapped cluster starts from: the
/// empty state machine (empty data) at index 1, term 1, with the bootstrap
/// membership. All bootstrap nodes build the same one, so it is agreed
/// without a round of messages. Its purpose: the log never starts at index
/// 1, so a node that joins later (empty log, empty membership) always
/// receives a snapshot, and with it the membership, instead of replaying
/// conf changes on top of a membership it does not know.
fn genesis_snapshot(membership: &Membership) -> (SnapshotMeta, Arc<Vec<u8>>) {
    let meta = SnapshotMeta {
        index: GENESIS.0,
        term: GENESIS.1,
        membership: membership.clone(),
    };
    (meta, Arc::new(Vec::new()))
}

/// Terms and indexes above this are treated as corrupt input: no real
/// cluster gets near it, and rejecting them keeps every `+ 1` in the core
/// free of overflow.
const MAX_PLAUSIBLE: u64 = u64::MAX / 4;

/// Drops messages whose numbers no real peer could send.
fn is_plausible(msg: &Message) -> bool {
    use MessageBody::*;
    let ok = |x: u64| x <= MAX_PLAUSIBLE;
    ok(msg.term)
        && match &msg.body {
            PreVote {
                last_index,
                last_term,
            }
            | Vote {
                last_index,
                last_term,
                ..
            } => ok(*last_index) && ok(*last_term),
            Append {
                prev_index,
                prev_term,
                entries,
                ..
            } => {
                ok(*prev_index)
                    && ok(*prev_term)
                    && prev_index.saturating_add(entries.len() as u64) <= MAX_PLAUSIBLE
            }
            InstallSnapshot { meta, .. } => {
                ok(meta.index) && ok(meta.term) && meta.term <= msg.term
            }
            AppendResponse { index, .. } => ok(*index),
            InstallSnapshotResponse { snapshot_index, .. } => ok(*snapshot_index),
            _ => true,
        }
}

fn is_pre_vote_grant(msg: &Message) -> bool {
    matches!(
        msg.body,
        MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { granted: true }
    )
}

fn validate_config(c: &Config) -> Result<(), String> {
    if c.id == 0 {
        return Err("node id must not be 0".into());
    }
    if c.heartbeat_ticks == 0 || c.heartbeat_ticks >= c.election_ticks {
        return Err(format!(
            "heartbeat_ticks ({}) must be at least 1 and below election_ticks ({})",
            c.heartbeat_ticks, c.election_ticks
        ));
    }
    if c.election_ticks > u32::MAX / 2 {
        return Err("election_ticks is too large".into());
    }
    let positive = [
        ("max_inflight", c.max_inflight),
        ("max_append_bytes", c.max_append_bytes),
        ("max_uncommitted_entries", c.max_uncommitted_entries),
        ("snapshot_chunk_bytes", c.snapshot_chunk_bytes),
    ];
    for (name, v) in positive {
        if v == 0 {
            return Err(format!("{name} must be at least 1"));
        }
    }
    Ok(())
}
