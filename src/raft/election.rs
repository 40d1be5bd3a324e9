//! Terms and roles: the term rules of every message, pre-vote, votes,
//! becoming follower, candidate or leader, check-quorum, and handing
//! leadership over (TimeoutNow, announced to the voters first).

use rand::Rng;

use super::progress::Progress;
use super::quorum::{self, VoteResult};
use super::types::Payload;
use super::RawNode;
use super::{Index, Message, MessageBody, NodeId, Role, Term};

impl RawNode {
    /// The term rules of §5.1 plus pre-vote and check-quorum. Returns false
    /// if the message must be dropped.
    pub(super) fn step_term(&mut self, msg: &Message) -> bool {
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

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
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

    pub(super) fn become_pre_candidate(&mut self) {
        debug_assert_ne!(self.role, Role::Leader);
        self.leader_hands_to = None;
        self.role = Role::PreCandidate;
        self.leader = None;
        self.incoming = None;
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_timer();
    }

    pub(super) fn become_candidate(&mut self) {
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

    pub(super) fn become_leader(&mut self) {
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

    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let e = self.cfg.election_ticks;
        self.randomized_timeout = self.rng.gen_range(e..2 * e);
    }

    pub(super) fn tick_election(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        // Only a voter restarts its timer here: a learner's keeps growing so
        // its lease on a silent leader expires (and it grants votes again).
        let promotable = self.membership.is_voter(self.id);
        if promotable && self.election_elapsed >= self.randomized_timeout {
            self.election_elapsed = 0;
            self.hup(false);
        }
    }

    pub(super) fn tick_leader(&mut self) {
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
    pub(super) fn hup(&mut self, transfer: bool) {
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

    pub(super) fn campaign(&mut self, transfer: bool) {
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

    pub(super) fn send_vote_requests(
        &mut self,
        term: Term,
        body: impl Fn(Index, Term) -> MessageBody,
    ) {
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

    pub(super) fn tally(&self) -> VoteResult {
        quorum::vote_result(self.membership.voters.keys().copied(), &self.votes)
    }

    pub(super) fn record_vote(&mut self, from: NodeId, granted: bool) {
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

    pub(super) fn handle_vote_request(
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
    pub(super) fn removed_and_sole_voter(&self, candidate: NodeId) -> bool {
        !self.membership.contains(self.id)
            && self.membership.voters.len() == 1
            && self.membership.voters.contains_key(&candidate)
    }

    /// A leader-only message arrived at our term from `from`: follow it.
    /// Returns false if it must be dropped (we lead this term ourselves).
    pub(super) fn accept_leader(&mut self, from: NodeId) -> bool {
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

    /// Our own removal committed: tell the others (so they learn the commit
    /// without waiting for an election timeout), hand leadership to the most
    /// up-to-date voter, and stop leading.
    pub(super) fn step_down_removed(&mut self) {
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

    pub(super) fn maybe_send_timeout_now(&mut self, to: NodeId) {
        let last = self.log.last_index();
        if self.prs.get(&to).is_some_and(|p| p.matched == last) {
            self.send_timeout_now(to);
        }
    }

    /// Announces the transfer to every other voter, then tells `to` to
    /// campaign. The announcement goes first on each peer's ordered stream,
    /// so a voter normally knows of the transfer before the forced vote
    /// arrives; if not, it refuses and `to` wins a normal election later.
    pub(super) fn send_timeout_now(&mut self, to: NodeId) {
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
}
