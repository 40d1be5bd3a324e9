//! Formats of schema version 1, frozen: how a job and a submit command
//! were encoded before jobs had attempts, resources and retries. Read by
//! the command decoder (old log entries), the snapshot decoder (old
//! snapshot files) and migration m0002 (old job rows). Never change these
//! types; they describe bytes already on disk.

use serde::Deserialize;

use super::{Job, JobId, JobSpec, JobState};
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
