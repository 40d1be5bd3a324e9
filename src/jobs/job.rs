//! A job as the state machine records it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{JobId, JobSpec};
use crate::raft::{Index, NodeId};

/// Where a job is in its lifecycle (docs/ARCHITECTURE.md, one job from submit to result):
/// `QUEUED -> ASSIGNED -> RUNNING -> SUCCEEDED | FAILED | TIMED_OUT | CANCELLED | LOST`.
///
/// Which node and attempt a job is on lives in [`Job::attempts`], not in
/// this tag. Transitions happen only in [`super::lifecycle`].
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
    /// Every state, in lifecycle order: the one list that filters, backup
    /// summaries and error texts are built from.
    pub const ALL: [JobState; 8] = [
        JobState::Queued,
        JobState::Assigned,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::TimedOut,
        JobState::Cancelled,
        JobState::Lost,
    ];

    /// Its position in [`JobState::ALL`] (an index into per-state tables).
    pub fn index(self) -> usize {
        JobState::ALL
            .iter()
            .position(|s| *s == self)
            .unwrap_or_default()
    }

    /// The state named `name` (case-insensitive), as the API spells it.
    pub fn parse(name: &str) -> Option<JobState> {
        JobState::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name))
    }

    /// Every state's name, comma-separated, for error texts.
    pub fn names() -> String {
        JobState::ALL.map(JobState::as_str).join(", ")
    }

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

/// Why an attempt ended: what a user needs to tell "my command failed" from
/// "the platform failed it".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EndReason {
    /// The command exited on its own with this code.
    Exited {
        /// The exit status.
        code: i64,
    },
    /// The command was killed by this signal (not by Drover, not by OOM).
    Signaled {
        /// The signal number.
        signal: i64,
    },
    /// The kernel's OOM killer ended it at its memory limit.
    OomKilled,
    /// It outlived its timeout and was killed.
    TimedOut,
    /// The image is not present and could not be pulled.
    ImageUnavailable,
    /// Its node was declared down while the attempt was assigned or running.
    NodeLost,
    /// Stopped on a client's request.
    Cancelled,
    /// The node could not start it (engine error); the message says why.
    StartFailed,
    /// Its node was drained past the drain deadline.
    Drained,
}

impl EndReason {
    /// The short name used by the API and CLI (`EXIT_CODE`, `OOM_KILLED`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            EndReason::Exited { .. } => "EXIT_CODE",
            EndReason::Signaled { .. } => "SIGNAL",
            EndReason::OomKilled => "OOM_KILLED",
            EndReason::TimedOut => "TIMED_OUT",
            EndReason::ImageUnavailable => "IMAGE_UNAVAILABLE",
            EndReason::NodeLost => "NODE_LOST",
            EndReason::Cancelled => "CANCELLED",
            EndReason::StartFailed => "START_FAILED",
            EndReason::Drained => "NODE_DRAINED",
        }
    }

    /// The state a job ends in when its last attempt ends this way.
    pub fn final_state(&self) -> JobState {
        match self {
            EndReason::Exited { code: 0 } => JobState::Succeeded,
            EndReason::Exited { .. }
            | EndReason::Signaled { .. }
            | EndReason::OomKilled
            | EndReason::ImageUnavailable
            | EndReason::StartFailed => JobState::Failed,
            EndReason::TimedOut => JobState::TimedOut,
            EndReason::NodeLost | EndReason::Drained => JobState::Lost,
            EndReason::Cancelled => JobState::Cancelled,
        }
    }
}

/// One run of a job on one node. Attempts are numbered from 1 and never
/// reused: the number is the fencing token every report carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based; equal to its position in [`Job::attempts`] plus one.
    pub number: u32,
    /// The node it was placed on.
    pub node: NodeId,
    /// When the leader placed it (Unix ms).
    pub assigned_at_ms: i64,
    /// When its container started, if it did.
    pub started_at_ms: Option<i64>,
    /// When it ended, if it did.
    pub finished_at_ms: Option<i64>,
    /// The container's exit code, when it ran to an exit.
    pub exit_code: Option<i64>,
    /// Why it ended; `None` while it is assigned or running.
    pub reason: Option<EndReason>,
    /// A human explanation for platform failures (e.g. the pull error).
    pub message: String,
    /// The last bytes of its output, committed with the result so they
    /// outlive the node that ran it.
    pub output_tail: Vec<u8>,
}

impl Attempt {
    /// True until the attempt has a reason.
    pub fn is_active(&self) -> bool {
        self.reason.is_none()
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
    /// Every attempt so far, oldest first.
    pub attempts: Vec<Attempt>,
    /// A queued job is not placed before this time (retry backoff; Unix ms).
    pub not_before_ms: i64,
    /// When the job reached a terminal state (Unix ms).
    pub finished_at_ms: Option<i64>,
    /// Accessor id of the token that submitted it (None without ACLs).
    /// Taken from the caller's token by the API, never from the request,
    /// so a submitter sees and stops only its own jobs.
    pub owner: Option<String>,
}

impl Job {
    /// A freshly submitted job.
    pub fn new(id: JobId, spec: JobSpec, submitted_at_ms: i64, index: Index) -> Job {
        Job {
            id,
            spec,
            state: JobState::Queued,
            submitted_at_ms,
            index,
            attempts: Vec::new(),
            not_before_ms: 0,
            finished_at_ms: None,
            owner: None,
        }
    }

    /// The latest attempt, if any.
    pub fn current_attempt(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    /// Bytes of output tails this job holds in the table (every attempt's),
    /// what an owner's `quotas.max_output_bytes_per_owner` counts.
    pub fn output_bytes(&self) -> u64 {
        self.attempts
            .iter()
            .map(|a| a.output_tail.len() as u64)
            .sum()
    }

    /// About how many bytes this row takes in every replica's table and in
    /// every snapshot: its strings, maps and tails plus a fixed allowance
    /// for the numbers. Pure and cheap (no encoding), so every replica
    /// counts the same figure on every apply; `quotas.max_state_bytes`
    /// bounds the sum.
    pub fn footprint(&self) -> u64 {
        const PER_ATTEMPT: u64 = 64;
        let attempts: u64 = self
            .attempts
            .iter()
            .map(|a| PER_ATTEMPT + a.message.len() as u64 + a.output_tail.len() as u64)
            .sum();
        Job::footprint_of(&self.spec, self.owner.as_deref()) + attempts
    }

    /// The footprint of a new job of `spec` submitted by `owner`, before
    /// any attempt: what a submit would add to the table.
    pub fn footprint_of(spec: &JobSpec, owner: Option<&str>) -> u64 {
        const FIXED: u64 = 160;
        FIXED + spec.footprint() + owner.map_or(0, str::len) as u64
    }

    /// The node and attempt number a job in ASSIGNED or RUNNING occupies.
    pub fn active_on(&self) -> Option<(NodeId, u32)> {
        match self.state {
            JobState::Assigned | JobState::Running => {
                self.current_attempt().map(|a| (a.node, a.number))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::JobState;

    #[test]
    fn every_state_parses_from_its_name_in_any_case() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
            assert_eq!(JobState::parse(&state.as_str().to_lowercase()), Some(state));
        }
        assert_eq!(JobState::parse("DONE"), None);
        assert_eq!(
            JobState::names(),
            "QUEUED, ASSIGNED, RUNNING, SUCCEEDED, FAILED, TIMED_OUT, CANCELLED, LOST"
        );
    }
}
