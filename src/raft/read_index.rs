//! The core's side of ReadIndex (thesis §6.4): taking a read request,
//! confirming it with a heartbeat round, answering it (see `read_only` for
//! the queue and why a confirmed read is linearizable).

use super::read_only::Requester;
use super::types::Index;
use super::{MessageBody, RawNode, ReadState, Role};

impl RawNode {
    pub(super) fn read_deadline(&self) -> u64 {
        self.now + 2 * self.cfg.election_ticks as u64
    }

    pub(super) fn handle_read_request(&mut self, from: Requester, ctx: u64) {
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

    pub(super) fn respond_read(&mut self, to: Requester, ctx: u64, index: Index) {
        match to {
            Requester::Local => self.read_states.push(ReadState { ctx, index }),
            Requester::Remote(id) => self.send(id, MessageBody::ReadIndexResponse { ctx, index }),
        }
    }

    pub(super) fn fail_leader_reads(&mut self) {
        for r in self.read_only.drain() {
            self.respond_read(r.from, r.ctx, 0);
        }
    }

    pub(super) fn expire_reads(&mut self) {
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
}
