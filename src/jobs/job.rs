//! A job as the state machine records it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{JobId, JobSpec};
use crate::raft::Index;

/// Where a job is in its lifecycle (DESIGN.md, Jobs):
/// `QUEUED -> ASSIGNED -> RUNNING -> SUCCEEDED | FAILED | TIMED_OUT | CANCELLED | LOST`.
///
/// All states are defined now so the encoding (variant order) is stable;
/// for now only `Queued` is produced. Which node and attempt a job is
/// assigned to will live on [`Job`], not in this tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Accepted and waiting for placement.
    Queued,
    /// Placed on a node; the node has not reported a start yet.
    Assigned,
    /// The node reported the container started.
    Running,
    /// Exited with status 0.
    Succeeded,
    /// Exited non-zero, or could not be started.
    Failed,
    /// Killed for exceeding its timeout.
    TimedOut,
    /// Stopped on a client's request.
    Cancelled,
    /// Its node was declared down while the job was assigned or running.
    Lost,
}

impl JobState {
    /// True if no further transition can happen (absent a retry re-queue,
    /// which the scheduler decides from the job's retry policy).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded
                | JobState::Failed
                | JobState::TimedOut
                | JobState::Cancelled
                | JobState::Lost
        )
    }

    /// The name used in the API and CLI (`QUEUED`, `TIMED_OUT`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "QUEUED",
            JobState::Assigned => "ASSIGNED",
            JobState::Running => "RUNNING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::TimedOut => "TIMED_OUT",
            JobState::Cancelled => "CANCELLED",
            JobState::Lost => "LOST",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the job table, identical on every replica that applied the
/// same log prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Key of the job table.
    pub id: JobId,
    /// What to run, as submitted.
    pub spec: JobSpec,
    /// Lifecycle state.
    pub state: JobState,
    /// Wall-clock time the leader accepted the submission (Unix ms). Taken
    /// from the command, never from the applying node's clock, so replicas
    /// agree.
    pub submitted_at_ms: i64,
    /// Log index of the entry that created the job: lets a client that
    /// learned the index read its own write on any replica.
    pub index: Index,
}
