//! Formats of older schema versions, frozen. Version 1: how a job and a
//! submit command were encoded before jobs had attempts, resources and
//! retries. Version 2: a job before it had an owner. Read by the command
//! decoder (old log entries), the snapshot decoder (old snapshot files) and
//! the migrations (old job rows). Never change these types; they describe
//! bytes already on disk.

use serde::{Deserialize, Serialize};

use super::{Attempt, Job, JobId, JobSpec, JobState};
use crate::raft::Index;

/// Version 1's spec: only what to run.
#[derive(Deserialize)]
pub struct SpecV1 {
    command: Option<String>,
    args: Vec<String>,
}

/// Version 1's job row.
#[derive(Deserialize)]
pub struct JobV1 {
    id: JobId,
    spec: SpecV1,
    state: JobState,
    submitted_at_ms: i64,
    index: Index,
}

/// Version 1's command enum (it had one variant).
#[derive(Deserialize)]
pub enum CommandV1 {
    /// Create a job.
    Submit {
        /// Job id.
        id: JobId,
        /// What to run.
        spec: SpecV1,
        /// Leader's clock at acceptance.
        submitted_at_ms: i64,
    },
}

impl SpecV1 {
    /// The same request in today's spec, with today's defaults.
    pub fn upgrade(self) -> JobSpec {
        JobSpec {
            command: self.command,
            args: self.args,
            ..JobSpec::default()
        }
    }
}

impl JobV1 {
    /// The same job in today's row format (version 1 jobs never ran).
    pub fn upgrade(self) -> Job {
        let mut job = Job::new(
            self.id,
            self.spec.upgrade(),
            self.submitted_at_ms,
            self.index,
        );
        job.state = self.state;
        job
    }
}

/// Version 2's job row: today's row without `owner` (schema 2, before
/// access control). Serialize is derived so tests can write version-2 rows.
#[derive(Serialize, Deserialize)]
pub struct JobV2 {
    /// Job id.
    pub id: JobId,
    /// What to run.
    pub spec: JobSpec,
    /// Lifecycle state.
    pub state: JobState,
    /// Leader's clock at acceptance.
    pub submitted_at_ms: i64,
    /// Log index of the creating entry.
    pub index: Index,
    /// Attempts, oldest first.
    pub attempts: Vec<Attempt>,
    /// Backoff deadline.
    pub not_before_ms: i64,
    /// When it ended.
    pub finished_at_ms: Option<i64>,
}

impl JobV2 {
    /// A version-1 job after its upgrade, as migration m0002 writes it
    /// (version-1 jobs have no owner to lose).
    pub fn downgrade(job: Job) -> JobV2 {
        JobV2 {
            id: job.id,
            spec: job.spec,
            state: job.state,
            submitted_at_ms: job.submitted_at_ms,
            index: job.index,
            attempts: job.attempts,
            not_before_ms: job.not_before_ms,
            finished_at_ms: job.finished_at_ms,
        }
    }

    /// The same job in today's row format: jobs of version 2 have no owner
    /// (they were submitted before tokens existed).
    pub fn upgrade(self) -> Job {
        Job {
            id: self.id,
            spec: self.spec,
            state: self.state,
            submitted_at_ms: self.submitted_at_ms,
            index: self.index,
            attempts: self.attempts,
            not_before_ms: self.not_before_ms,
            finished_at_ms: self.finished_at_ms,
            owner: None,
        }
    }
}
