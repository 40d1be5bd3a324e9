//! ReadIndex bookkeeping (thesis §6.4): the queue of reads waiting for
//! confirmation; the core's handling of them is `read_index`'s. A leader answers a read with its
//! commit index once a heartbeat round started after the request has been
//! acknowledged by a majority: at that moment it was still the leader, so no
//! write acknowledged before the read began can be missing below that index.
//!
//! Requests are matched to heartbeat answers by an internal sequence number
//! (`seq`), never by the caller's ctx, so contexts from different requesters
//! cannot collide. Everything here is bounded: at most
//! [`MAX_PENDING_READS`] requests wait at once, and each is failed (answered
//! with index 0) after a deadline so callers never hang.

use std::collections::{BTreeSet, VecDeque};

use super::types::{Index, NodeId};

/// Bound on ReadIndex requests waiting for confirmation (leader) or for the
/// leader's answer (follower). Requests beyond it fail at once.
pub const MAX_PENDING_READS: usize = 4096;

/// Who asked: this node's caller, or a follower that forwarded the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Requester {
    Local,
    Remote(NodeId),
}

/// A read waiting for its heartbeat round to be confirmed by a quorum.
#[derive(Debug)]
pub(crate) struct PendingRead {
    pub seq: u64,
    pub ctx: u64,
    pub from: Requester,
    /// The leader's commit index when the request arrived.
    pub index: Index,
    /// Voters (including the leader) that answered a heartbeat carrying a
    /// `read_ctx >= seq`.
    pub acks: BTreeSet<NodeId>,
    /// Tick at which the request is failed if still unconfirmed.
    pub deadline: u64,
}

/// Leader side: reads in the order they arrived (so `seq` increases).
#[derive(Debug, Default)]
pub(crate) struct ReadOnly {
    next_seq: u64,
    queue: VecDeque<PendingRead>,
}

impl ReadOnly {
    pub fn is_full(&self) -> bool {
        self.queue.len() >= MAX_PENDING_READS
    }

    /// Queues a read; returns the heartbeat `read_ctx` that confirms it.
    pub fn add(
        &mut self,
        ctx: u64,
        from: Requester,
        index: Index,
        leader: NodeId,
        deadline: u64,
    ) -> u64 {
        debug_assert!(!self.is_full());
        self.next_seq += 1;
        let seq = self.next_seq;
        let mut acks = BTreeSet::new();
        acks.insert(leader);
        self.queue.push_back(PendingRead {
            seq,
            ctx,
            from,
            index,
            acks,
            deadline,
        });
        seq
    }

    /// The latest sequence number handed out (0 = none): heartbeats carry it
    /// so that one answer confirms every read queued before it.
    pub fn last_seq(&self) -> u64 {
        if self.queue.is_empty() {
            0
        } else {
            self.next_seq
        }
    }

    /// Records that `from` answered a heartbeat with `read_ctx`, and pops
    /// every read that is now confirmed (`confirmed(acks)` true), in order.
    /// A confirmed read also confirms every earlier one.
    pub fn ack(
        &mut self,
        from: NodeId,
        read_ctx: u64,
        confirmed: impl Fn(&BTreeSet<NodeId>) -> bool,
    ) -> Vec<PendingRead> {
        let mut last_confirmed = None;
        for (i, r) in self.queue.iter_mut().enumerate() {
            if r.seq > read_ctx {
                break;
            }
            r.acks.insert(from);
            if confirmed(&r.acks) {
                last_confirmed = Some(i);
            }
        }
        match last_confirmed {
            Some(i) => self.queue.drain(..=i).collect(),
            None => Vec::new(),
        }
    }

    /// Pops reads whose deadline passed.
    pub fn expire(&mut self, now: u64) -> Vec<PendingRead> {
        let mut out = Vec::new();
        while self.queue.front().is_some_and(|r| r.deadline <= now) {
            out.extend(self.queue.pop_front());
        }
        out
    }

    /// Pops everything (leadership lost).
    pub fn drain(&mut self) -> Vec<PendingRead> {
        self.queue.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_confirmation_confirms_earlier_reads() {
        let mut ro = ReadOnly::default();
        let s1 = ro.add(100, Requester::Local, 5, 1, 50);
        let s2 = ro.add(200, Requester::Remote(3), 6, 1, 50);
        let majority = |acks: &BTreeSet<NodeId>| acks.len() >= 2;
        // An answer to the first round only confirms the first read.
        let done = ro.ack(2, s1, majority);
        assert_eq!(done.iter().map(|r| r.ctx).collect::<Vec<_>>(), vec![100]);
        let done = ro.ack(3, s2, majority);
        assert_eq!(done.iter().map(|r| r.ctx).collect::<Vec<_>>(), vec![200]);
        assert_eq!(ro.last_seq(), 0);
    }

    #[test]
    fn reads_expire_at_their_deadline() {
        let mut ro = ReadOnly::default();
        ro.add(1, Requester::Local, 5, 1, 10);
        ro.add(2, Requester::Local, 5, 1, 20);
        assert!(ro.expire(9).is_empty());
        assert_eq!(ro.expire(10).len(), 1);
        assert_eq!(ro.drain().len(), 1);
    }
}
