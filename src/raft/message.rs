//! Messages exchanged between Raft cores. The transport encodes each with
//! bincode and moves it; the core tolerates loss, delay, duplication and
//! reordering of any of them.

use serde::{Deserialize, Serialize};

use super::types::{Entry, Index, NodeId, SnapshotMeta, Term};

/// One message from `from` to `to`, stamped with the sender's term.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MessageBody,
}

/// The Raft RPCs, as one-way messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Pre-vote (thesis §9.6): "would you vote for me at `term`?" without
    /// anyone changing term, so a rejoining node cannot disrupt a healthy
    /// leader. `term` on the message is the term the candidate *would* use.
    PreVote {
        last_index: Index,
        last_term: Term,
    },
    PreVoteResponse {
        granted: bool,
    },
    /// RequestVote. `transfer` marks an election started by TimeoutNow, which
    /// voters honour even while they hear from a current leader, but only
    /// when that leader announced the transfer to this candidate
    /// ([`MessageBody::TransferPending`]): a forced vote is the leader's to
    /// give, not any peer's to claim.
    Vote {
        last_index: Index,
        last_term: Term,
        transfer: bool,
    },
    VoteResponse {
        granted: bool,
    },
    /// AppendEntries. `entries` may be empty (a probe).
    Append {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    },
    /// Success: `index` is the highest index now matching the leader.
    /// Rejection: `index` is the rejected `prev_index`, and `hint_index` /
    /// `hint_term` let the leader skip back a whole term at a time.
    AppendResponse {
        success: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    },
    /// Leader liveness plus commit propagation; `read_ctx` confirms leadership
    /// for ReadIndex (0 = none).
    Heartbeat {
        commit: Index,
        read_ctx: u64,
    },
    HeartbeatResponse {
        read_ctx: u64,
    },
    /// One chunk of a snapshot, streamed in order. `offset` is the position of
    /// `data` within the whole snapshot; `done` marks the last chunk.
    InstallSnapshot {
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    },
    /// `next_offset` is the byte the follower expects next; `done` means the
    /// snapshot was installed (it is now durable once the Ready is persisted).
    /// `reject` asks the leader to restart the transfer from offset 0.
    InstallSnapshotResponse {
        snapshot_index: Index,
        next_offset: u64,
        done: bool,
        reject: bool,
    },
    /// Sent by a leader transferring leadership: start an election now.
    TimeoutNow,
    /// A follower forwards a ReadIndex request to its leader.
    ReadIndex {
        ctx: u64,
    },
    /// The leader's answer: once this node has applied `index`, a read with
    /// `ctx` is linearizable. `index == 0` means the leader could not serve it.
    ReadIndexResponse {
        ctx: u64,
        index: Index,
    },
    /// Sent by a leader to every other voter just before its TimeoutNow to
    /// `to`: a forced vote from `to` may override this leader's lease.
    /// (Last variant, so the encoding of the others is unchanged.)
    TransferPending {
        to: NodeId,
    },
}

/// Terms and indexes above this are treated as corrupt input: no real
/// cluster gets near it, and rejecting them keeps every `+ 1` in the core
/// free of overflow.
pub(super) const MAX_PLAUSIBLE: u64 = u64::MAX / 4;

/// Drops messages whose numbers no real peer could send.
pub(super) fn is_plausible(msg: &Message) -> bool {
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

/// A pre-vote or a granted pre-vote answer: the only messages a node
/// takes from a term above its own without moving to that term.
pub(super) fn is_pre_vote_grant(msg: &Message) -> bool {
    matches!(
        msg.body,
        MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { granted: true }
    )
}
