//! The consensus core: a pure, deterministic Raft state machine.
//!
//! No I/O, no clocks, no threads, no tokio. Time advances only through
//! [`RawNode::tick`], randomness comes from a seeded generator in [`Config`],
//! and everything the outside world must do is handed out as a [`Ready`].
//! The same code therefore runs under the real node loop (src/node) and under
//! the seeded simulator (tests/sim), which replays any failure exactly.
//!
//! Layout, one concept per file (after raft-rs / etcd-raft):
//! - `types`: entries, hard state, membership, snapshot metadata
//! - `message`: the RPCs as one-way messages
//! - `log`: the in-memory log above the last snapshot, stable vs unstable
//! - `progress`: per-follower replication state and the in-flight window
//! - `quorum`: majority counting for commit and elections
//! - `read_only`: ReadIndex bookkeeping
//! - `raw_node`: the state machine's driving API (step, tick, propose,
//!   ready/advance); `election`, `replication`, `snapshot` and `read_only`
//!   hold its parts
//! - `test_net` (tests only): a small in-memory network of cores
//! - `tests`: scenario tests in Rust on that network
//! - `scenarios` (tests only): runs the scripts in `testdata/*.txt` on it
//!
//! # Driving contract
//! ```text
//! loop {
//!     feed: node.tick() / node.step(msg) / node.propose(data) / ...
//!     if node.has_ready() {
//!         let rd = node.ready();
//!         1. persist rd.snapshot (if any), then rd.entries (truncating any
//!            stable suffix at or after rd.entries[0].index), then
//!            rd.hard_state (if any) -- and fsync ONCE for all of it;
//!         2. only then send rd.messages (exception: a leader's Append,
//!            Heartbeat, InstallSnapshot and TimeoutNow may be sent before
//!            step 1, as etcd does: they acknowledge nothing, and the leader
//!            counts its own log toward commit only once `advance` says so);
//!         3. apply rd.committed in order (they are already durable);
//!         4. node.advance(rd) -- tells the core the above is durable.
//!     }
//! }
//! ```
//! The core never emits a vote, an append acknowledgement or a commit that
//! depends on state the caller has not yet persisted: a leader counts its own
//! log for commitment only up to what `advance` reported durable, and
//! `rd.committed` only holds entries that an earlier Ready persisted. Step 1
//! also persists `rd.membership` (if any) in the same fsync. `step`, `tick`
//! and friends may be called between `ready()` and `advance()`; a second
//! `ready()` may not.
//!
//! # Snapshots and compaction
//! When the applied state machine is large enough, the caller snapshots it
//! at its applied index `i`: `let meta = node.snapshot_meta(i)?`, writes
//! `(meta, data)` durably, then calls `node.compact(meta, data)` and
//! deletes stable entries up to the index it returns. A new cluster starts
//! from a genesis snapshot with EMPTY data (see [`Restored`]).
//!
//! # Membership
//! One change at a time, effective on every node when COMMITTED (not when
//! appended). [`RawNode::membership`] is the membership as of the commit
//! index; [`RawNode::snapshot_meta`] the one at an applied index.

mod election;
mod log;
mod message;
mod progress;
mod quorum;
mod raw_node;
mod read_index;
mod read_only;
mod replication;
#[cfg(test)]
mod scenarios;
mod snapshot;
#[cfg(test)]
mod test_net;
#[cfg(test)]
mod tests;
mod types;

pub use self::message::{Message, MessageBody};
pub use self::raw_node::RawNode;
pub use self::read_only::MAX_PENDING_READS;
pub use self::snapshot::MAX_SNAPSHOT_BYTES;
pub use self::types::{
    ConfChange, Entry, HardState, Index, Membership, NodeId, Payload, PeerInfo, SnapshotMeta, Term,
};

use std::sync::Arc;

/// Tunables of one core. Tick counts are in units of [`RawNode::tick`] calls;
/// the node loop decides how long a tick is.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// A follower that hears no leader for a random number of ticks in
    /// `[election_ticks, 2 * election_ticks)` starts a (pre-)election.
    pub election_ticks: u32,
    /// A leader sends heartbeats every `heartbeat_ticks` ticks. Must be less
    /// than `election_ticks`.
    pub heartbeat_ticks: u32,
    /// Run a pre-vote round before incrementing the term (thesis §9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout
    /// steps down (so clients stop waiting on a partitioned leader).
    pub check_quorum: bool,
    /// Bound on Append messages in flight to one follower (pipelining window).
    pub max_inflight: usize,
    /// Bound on the encoded size of entries in one Append message.
    pub max_append_bytes: usize,
    /// Bound on entries proposed but not yet committed; proposals beyond it
    /// are refused with [`ProposeError::Overloaded`].
    pub max_uncommitted_entries: usize,
    /// Size of one InstallSnapshot chunk.
    pub snapshot_chunk_bytes: usize,
    /// Entries kept in the log below a snapshot's index when compacting, so a
    /// follower that lags a little catches up from the log, not a snapshot.
    pub trailing_entries: u64,
    /// Seed of the election-timeout randomness. Different per node.
    pub seed: u64,
    /// Checks a snapshot received from the leader before it replaces the
    /// log: one that fails is refused (the leader is asked to start over)
    /// and changes nothing, so no peer can stop this node with garbage.
    /// Supplied by the embedder (the store's decoder); must be pure.
    pub snapshot_check: Option<SnapshotCheck>,
}

/// See [`Config::snapshot_check`].
pub type SnapshotCheck = fn(&SnapshotMeta, &[u8]) -> Result<(), String>;

impl Config {
    /// Defaults suitable for a 100 ms tick: heartbeat every 100 ms, election
    /// timeout 1-2 s (etcd's defaults).
    pub fn new(id: NodeId, seed: u64) -> Self {
        Config {
            id,
            election_ticks: 10,
            heartbeat_ticks: 1,
            pre_vote: true,
            check_quorum: true,
            max_inflight: 64,
            max_append_bytes: 1 << 20,
            max_uncommitted_entries: 100_000,
            snapshot_chunk_bytes: 1 << 20,
            trailing_entries: 1024,
            seed,
            snapshot_check: None,
        }
    }
}

/// What a node has on stable storage when its core is created.
///
/// Three cases:
/// - bootstrapping a new cluster: everything empty/zero except
///   `membership`, which holds the initial voters (the same on every
///   initial node). The core then starts from a genesis snapshot (index 1,
///   term 1, EMPTY data, that membership) and hands it out in the first
///   Ready like any snapshot: the store persists it and the state machine
///   treats empty snapshot data as the empty state.
/// - joining an existing cluster: everything empty, `membership` empty. The
///   node waits until a leader adds it; it then receives a snapshot.
/// - restarting: what the store persisted.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub hard_state: HardState,
    /// Membership in effect as of the highest committed conf change that is
    /// durable (or the snapshot's, or the bootstrap membership).
    pub membership: Membership,
    /// Latest durable snapshot and its bytes, if any: the log starts after it.
    pub snapshot: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
    /// Durable log entries, contiguous and in order. They start at or before
    /// `snapshot.index + 1` (entries kept as trailing entries may precede the
    /// snapshot index) and end anywhere at or after it.
    pub entries: Vec<Entry>,
    /// Highest index already applied to the state machine. Committed entries
    /// at or below it are not handed out again.
    pub applied: Index,
}

/// The role a node currently plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

use serde::{Deserialize, Serialize};

/// Everything the caller must do, in the order given by the module contract.
#[derive(Debug, Default)]
pub struct Ready {
    /// A snapshot received from the leader (or, on a new cluster's first
    /// Ready, the genesis snapshot with empty data): persist it, discard the WHOLE
    /// stable log (the core's log now starts at `meta.index + 1`), persist
    /// `membership`, then replace the state machine with it. `entries` in the
    /// same Ready (if any) start after `meta.index`.
    pub snapshot: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
    /// Entries to append to the stable log. If the first index is at or below
    /// the stable log's last index, the stable suffix from there is replaced.
    pub entries: Vec<Entry>,
    /// New hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// Membership to persist, if a conf change committed (or a snapshot
    /// changed it) since the last Ready.
    pub membership: Option<Membership>,
    /// Messages to send AFTER the above is fsynced.
    pub messages: Vec<Message>,
    /// Committed entries to apply, in order, contiguous. Already durable.
    pub committed: Vec<Entry>,
    /// ReadIndex results whose index is now known: serve the read with `ctx`
    /// once the state machine has applied `index`.
    pub read_states: Vec<ReadState>,
}

impl Ready {
    /// True if there is something to persist (an fsync is needed).
    pub fn needs_persist(&self) -> bool {
        self.snapshot.is_some()
            || !self.entries.is_empty()
            || self.hard_state.is_some()
            || self.membership.is_some()
    }
}

/// A confirmed ReadIndex request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: u64,
    pub index: Index,
}

/// Why a proposal was refused. Nothing was appended in any case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader is {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("a leadership transfer is in progress")]
    TransferInProgress,
    #[error("too many uncommitted entries; retry later")]
    Overloaded,
    #[error("a membership change is already in progress")]
    ConfChangeInProgress,
    #[error("the leader has not yet committed an entry in its term")]
    LeaderNotReady,
    #[error("invalid membership change: {0}")]
    InvalidConfChange(String),
}

/// A snapshot of the core's state for status displays.
#[derive(Clone, Debug)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub vote: NodeId,
    pub leader: Option<NodeId>,
    pub commit: Index,
    pub applied: Index,
    pub first_index: Index,
    pub last_index: Index,
    pub snapshot_index: Index,
    pub membership: Membership,
    /// Leader only: per member, the highest index known to match.
    pub progress: Vec<(NodeId, Index)>,
    /// Leader only: the target of a leadership transfer in progress.
    pub transferring_to: Option<NodeId>,
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
