//! What the rest of the node asks of the Raft loop: every request arrives as
//! an [`Input`] on one bounded channel, and what can go wrong with a write or
//! a linearizable read is a [`RaftError`].

use std::sync::mpsc::SyncSender;

use tokio::sync::oneshot;

use crate::jobs::Applied;
use crate::raft::{ConfChange, Index, Message, NodeId, ProposeError};

/// The sending half of the Raft loop's input channel.
pub type InputSender = SyncSender<Input>;

/// A request to the Raft loop.
pub enum Input {
    /// A message from a peer, with the address the peer says it listens on
    /// (so a joining node can answer a leader it has no membership for yet).
    Message(Message, String),
    /// The transport could not reach this peer.
    Unreachable(NodeId),
    /// Append an application command; answered when applied.
    Propose {
        command: Vec<u8>,
        reply: oneshot::Sender<Result<Applied, RaftError>>,
    },
    /// Change the membership; answered when applied.
    ConfChange {
        change: ConfChange,
        reply: oneshot::Sender<Result<Applied, RaftError>>,
    },
    /// Linearizable read point; answered with an index this node has applied.
    ReadIndex {
        reply: oneshot::Sender<Result<Index, RaftError>>,
    },
    /// Hand leadership to another voter.
    TransferLeader {
        to: NodeId,
        reply: oneshot::Sender<Result<(), RaftError>>,
    },
    /// A background snapshot finished (or failed).
    SnapshotDone(Result<crate::store::Snapshot, String>),
    /// Stop the loop.
    Shutdown,
    /// Stop the node for good: it must not take part (it lost its data).
    Fatal(String),
}

/// Why a write or a linearizable read did not go through.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RaftError {
    #[error("this node is not the leader")]
    NotLeader { leader: Option<NodeId> },
    #[error("the cluster is overloaded; retry later")]
    Overloaded,
    #[error("leadership changed before the entry committed; it was not applied")]
    Lost,
    #[error("the outcome is unknown (leadership or this node changed while the entry was in flight); check before retrying")]
    Unknown,
    #[error("{0}")]
    Rejected(String),
    #[error("{0}; retry shortly")]
    Busy(String),
    #[error("not committed in time (no quorum reachable?); the outcome is unknown")]
    Timeout,
    #[error("no leader could confirm the read; retry")]
    ReadFailed,
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("storage failure: {0}")]
    Storage(String),
    /// The data directory's disk is below its reserve (`store::space`).
    #[error("{0}")]
    NoSpace(String),
}

impl From<ProposeError> for RaftError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::NotLeader { leader } => RaftError::NotLeader { leader },
            ProposeError::Overloaded => RaftError::Overloaded,
            ProposeError::LeaderNotReady | ProposeError::TransferInProgress => {
                RaftError::Busy(e.to_string())
            }
            other => RaftError::Rejected(other.to_string()),
        }
    }
}
