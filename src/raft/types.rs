//! The vocabulary of the consensus core: log entries, persistent state,
//! membership and snapshot metadata. Everything here is plain data that the
//! store persists with bincode; field order is part of the on-disk format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A node's identity within a cluster. Never 0: 0 means "nobody".
pub type NodeId = u64;
/// A Raft term.
pub type Term = u64;
/// A position in the replicated log. Index 0 is the empty prefix.
pub type Index = u64;

/// One slot in the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub payload: Payload,
}

/// What an entry carries. The core interprets only `ConfChange`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// Appended by every new leader so it can commit entries of its term
    /// (Raft §5.4.2) and learn the commit index without a client write.
    Noop,
    /// Opaque application command: the job table's `Command`, encoded.
    Command(Vec<u8>),
    /// A one-at-a-time membership change. It takes effect on every node when
    /// the entry is committed (not when appended); the leader refuses a second
    /// change while one is uncommitted, and refuses any change before it has
    /// committed an entry of its own term.
    ConfChange(ConfChange),
}

impl Entry {
    /// Approximate encoded size, used to bound message and batch sizes.
    pub fn size_hint(&self) -> usize {
        24 + match &self.payload {
            Payload::Noop => 0,
            Payload::Command(data) => data.len(),
            Payload::ConfChange(_) => 128,
        }
    }
}

/// A single-server membership change (Raft thesis §4.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfChange {
    /// Add a non-voting member that receives the log but is not counted in
    /// quorums or elections. Catch-up happens as a learner; promote after.
    AddLearner { id: NodeId, info: PeerInfo },
    /// Turn an existing learner into a voter.
    Promote { id: NodeId },
    /// Remove a voter or learner. A leader that removes itself steps down once
    /// the change commits.
    Remove { id: NodeId },
}

/// How to reach a member. Opaque to the core; it travels with the membership
/// so that a snapshot restores the address book together with the voter set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// host:port of the peer (Raft) gRPC service.
    pub raft_addr: String,
    /// host:port of the client gRPC API, used to forward client calls.
    pub api_addr: String,
}

/// The voting configuration plus learners, keyed by node id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub voters: BTreeMap<NodeId, PeerInfo>,
    pub learners: BTreeMap<NodeId, PeerInfo>,
}

impl Membership {
    /// True if `id` votes and counts toward quorums.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains_key(&id)
    }

    /// True if `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains_key(&id) || self.learners.contains_key(&id)
    }

    /// The address book entry for `id`, voter or learner.
    pub fn peer(&self, id: NodeId) -> Option<&PeerInfo> {
        self.voters.get(&id).or_else(|| self.learners.get(&id))
    }

    /// Every member id, voters first.
    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.keys().chain(self.learners.keys()).copied()
    }

    /// Applies a committed membership change. The one definition the core,
    /// the store's state machine and the simulator share, so they can never
    /// compute different memberships from the same log. A change that makes
    /// no sense (promote a non-learner, add an existing voter) changes
    /// nothing.
    pub fn apply(&mut self, change: &ConfChange) {
        match change {
            ConfChange::AddLearner { id, info } => {
                if !self.voters.contains_key(id) {
                    self.learners.insert(*id, info.clone());
                }
            }
            ConfChange::Promote { id } => {
                if let Some(info) = self.learners.remove(id) {
                    self.voters.insert(*id, info);
                }
            }
            ConfChange::Remove { id } => {
                self.voters.remove(id);
                self.learners.remove(id);
            }
        }
    }

    /// Votes needed for a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

/// State that must be on stable storage before the node answers any message
/// that depends on it (a vote, an append acknowledgement).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    /// Whom this node voted for in `term` (0 = nobody).
    pub vote: NodeId,
    /// Highest index known committed. Persisting it is an optimisation
    /// (restart can apply up to it without waiting for a leader); it may lag.
    pub commit: Index,
}

/// Describes a snapshot: the log prefix it replaces and the membership as of
/// its last entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
    pub membership: Membership,
}
