//! Log replication: the follower side (AppendEntries, acknowledgements)
//! and the leader side (proposals, appends and heartbeats to each peer,
//! acknowledgements, commitment, membership changes on commit).

use super::progress::{Progress, ProgressState};
use super::quorum::{self};
use super::types::{Entry, Payload};
use super::RawNode;
use super::{ConfChange, Index, MessageBody, NodeId, ProposeError, Role, Term};

impl RawNode {
    pub(super) fn handle_append(
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
    pub(super) fn retract_acks_above(&mut self, index: Index) {
        self.msgs.retain(|m| {
            !matches!(m.body, MessageBody::AppendResponse { success: true, index: i, .. } if i > index)
        });
    }

    pub(super) fn send_append_response(
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

    pub(super) fn check_can_propose(&self) -> Result<(), ProposeError> {
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

    pub(super) fn append_entry(&mut self, payload: Payload) -> (Index, Term) {
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

    pub(super) fn bcast_append(&mut self) {
        let ids: Vec<NodeId> = self.prs.keys().copied().collect();
        for id in ids {
            self.maybe_send_append(id, true);
        }
    }

    pub(super) fn bcast_heartbeat(&mut self, read_ctx: u64) {
        let commit = self.log.committed;
        let targets: Vec<NodeId> = self.prs.keys().copied().collect();
        for to in targets {
            self.send_heartbeat(to, commit, read_ctx);
        }
    }

    /// A heartbeat never carries a commit index above what the follower is
    /// known to match: its log may still hold a divergent suffix.
    pub(super) fn send_heartbeat(&mut self, to: NodeId, commit: Index, read_ctx: u64) {
        let Some(pr) = self.prs.get_mut(&to) else {
            return;
        };
        let commit = pr.matched.min(commit);
        pr.sent_commit = pr.sent_commit.max(commit);
        self.send(to, MessageBody::Heartbeat { commit, read_ctx });
    }

    /// Sends `to` what it needs next, unless its flow control says wait.
    /// Returns true if a message went out.
    pub(super) fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let last = self.log.last_index();
        let Some(pr) = self.prs.get_mut(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        // Always on, O(1): a follower's progress never passes the leader's
        // log (acknowledgements beyond it are dropped on receipt, and a
        // leader's log never shrinks), so a failure is a bug in the core.
        assert!(
            pr.matched < pr.next && pr.next <= last + 1,
            "raft progress invariant: match {} / next {} of node {to} out of range \
             for the leader's last index {last}",
            pr.matched,
            pr.next
        );
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

    pub(super) fn handle_append_response(
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

    pub(super) fn handle_heartbeat_response(&mut self, from: NodeId, read_ctx: u64) {
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
    pub(super) fn send_gap_probe(&mut self, to: NodeId) {
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

    /// The highest index a majority has durably, committed if it is of our
    /// term (§5.4.2: older entries commit only indirectly). Loops because a
    /// committed conf change can change the quorum. Returns true if the
    /// commit index moved.
    pub(super) fn maybe_commit(&mut self) -> bool {
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
    pub(super) fn commit_to(&mut self, index: Index) {
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

    pub(super) fn apply_conf_change(&mut self, index: Index, cc: ConfChange) {
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
}
