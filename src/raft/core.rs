//! The Raft state machine: roles, elections, replication, commitment,
//! snapshots, leadership transfer, ReadIndex and membership changes.

use std::sync::Arc;

use super::{
    ConfChange, Config, Index, Message, NodeId, ProposeError, Ready, Restored, SnapshotMeta,
    Status, Term,
};

/// One node's consensus state. See the module docs for the driving contract.
pub struct RawNode {
    // implementation-defined
}

impl RawNode {
    /// Builds a core from what is on stable storage. Fails (never panics) if
    /// `restored` is inconsistent, e.g. entries not contiguous, or the config
    /// is invalid (id 0, heartbeat_ticks >= election_ticks).
    pub fn new(config: Config, restored: Restored) -> Result<RawNode, String> {
        todo!()
    }

    /// Advances logical time by one tick: election timeouts, heartbeats,
    /// check-quorum, transfer timeouts.
    pub fn tick(&mut self) {
        todo!()
    }

    /// Feeds a message received from a peer. Stale, duplicate, reordered or
    /// nonsensical messages (unknown sender, wrong `to`) are ignored; this
    /// never panics on any input.
    pub fn step(&mut self, msg: Message) {
        todo!()
    }

    /// Appends an application command (leader only). Returns the index and
    /// term the entry got; the caller learns its fate when an entry at that
    /// index is applied: same term = this proposal, other term = lost.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(Index, Term), ProposeError> {
        todo!()
    }

    /// Proposes a one-at-a-time membership change (leader only).
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
    ) -> Result<(Index, Term), ProposeError> {
        todo!()
    }

    /// Starts handing leadership to voter `to`: stop accepting proposals,
    /// bring `to` up to date, then send it TimeoutNow. Abandoned after an
    /// election timeout. Leader only.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        todo!()
    }

    /// Asks for a linearizable read point. On a leader: once a quorum has
    /// confirmed leadership (heartbeat round with `ctx`), and the leader has
    /// committed an entry of its term, a ReadState{ctx, commit} appears in a
    /// Ready. On a follower: forwarded to the leader; the answer comes back
    /// as a ReadState. If no leader is known, or the leader cannot serve it,
    /// a ReadState with `index == 0` is returned so the caller can fail fast.
    pub fn read_index(&mut self, ctx: u64) {
        todo!()
    }

    /// The state machine has been snapshotted at `meta.index` (which must be
    /// <= applied) and `data` is durable. The core keeps `data` to send to
    /// followers that fall behind the log, and discards log entries up to
    /// `meta.index - trailing_entries`. Returns the highest index the caller
    /// may now delete from the stable log (0 if none).
    pub fn compact(&mut self, meta: SnapshotMeta, data: Arc<Vec<u8>>) -> Index {
        todo!()
    }

    /// A message to `id` could not be delivered: fall back to probing so the
    /// next attempt does not waste the in-flight window.
    pub fn report_unreachable(&mut self, id: NodeId) {
        todo!()
    }

    /// True if [`RawNode::ready`] has anything to hand out.
    pub fn has_ready(&self) -> bool {
        todo!()
    }

    /// Takes everything pending. Call [`RawNode::advance`] with it once the
    /// caller has done all it requires; no second Ready before that.
    pub fn ready(&mut self) -> Ready {
        todo!()
    }

    /// Confirms that `rd` was persisted (fsynced), its messages sent and its
    /// committed entries applied.
    pub fn advance(&mut self, rd: &Ready) {
        todo!()
    }

    /// A read-only view for status displays and metrics.
    pub fn status(&self) -> Status {
        todo!()
    }

    /// The leader this node currently follows or is, if known.
    pub fn leader(&self) -> Option<NodeId> {
        todo!()
    }
}
