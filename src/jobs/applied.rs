//! The outcome of applying one committed entry to the job table: what the
//! node answers the client that proposed it, and what the job event log
//! records. It lives beside [`Command`](super::Command), its input.

use super::{Job, JobId, NodeRecord};
use crate::acl::Token;
use crate::raft::Membership;

/// What applying one entry did, so the node can answer the client waiting
/// on it. One per entry passed to [`Store::apply`], in the same order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A `Submit` created this job.
    Job(Job),
    /// A `Submit` whose id or idempotency key already existed: nothing
    /// changed. Carries the existing job (a retry gets the original answer).
    DuplicateJob(Job),
    /// A lifecycle event (start, finish, cancel) changed the job; the job
    /// after it.
    Updated(Job),
    /// A lifecycle event that changed nothing (cancelling a finished job, a
    /// repeated start report); the job as it is. Kept apart from `Updated`
    /// so the job event log records only real changes.
    Unchanged(Job),
    /// A lifecycle event was refused: a stale report (fencing), an unknown
    /// job, a wrong state. Deterministic, so every replica refuses it.
    Refused {
        /// Why, for the reporter's log.
        reason: String,
    },
    /// An `Assign` batch: how many placements took and how many were stale.
    Assigned {
        /// Jobs now ASSIGNED.
        placed: u32,
        /// Placements refused (job no longer queued, node not ready).
        refused: u32,
        /// The jobs placed, after the change (`placed` of them), for the
        /// job event log.
        jobs: Vec<Job>,
    },
    /// A node command; the record after it.
    Node(NodeRecord),
    /// `NodeDown`/`Evict`: the node and how many active attempts it lost.
    NodeLost {
        /// The node record after the change.
        node: NodeRecord,
        /// Attempts that ended NODE_LOST / NODE_DRAINED.
        attempts: u32,
        /// The jobs whose attempt ended, after the change (`attempts` of
        /// them), for the job event log.
        jobs: Vec<Job>,
    },
    /// A `Gc`: the jobs removed.
    Collected(Vec<JobId>),
    /// `AclBootstrap`/`AclCreateToken`: the token stored.
    Token(Token),
    /// `AclRevokeToken`: the token removed.
    Revoked(Token),
    /// `RestoreFinish`: the job table and tokens were replaced by a backup's.
    Restored {
        /// Jobs restored.
        jobs: u64,
        /// Tokens restored.
        tokens: u64,
    },
    /// A leader's no-op entry.
    Noop,
    /// A membership change; the membership after it.
    ConfChange(Membership),
    /// The entry's command could not be decoded; it was applied as a no-op
    /// (and logged) so that the apply loop never stops on a bad entry.
    Rejected {
        /// Why the command could not be decoded.
        reason: String,
    },
    /// The entry was at or below the applied index (e.g. re-delivered after
    /// a restart): nothing done.
    AlreadyApplied,
}
