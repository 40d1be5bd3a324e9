//! Formats of older schema versions, frozen. Version 1: how a job and a
//! submit command were encoded before jobs had attempts, resources and
//! retries. Version 2: a job before it had an owner. Version 5: a job and
//! a spec before a job could choose its `user`. Read by the command
//! decoder (old log entries), the snapshot decoder (old snapshot files) and
//! the migrations (old job rows). Never change these types; they describe
//! bytes already on disk.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Attempt, Job, JobId, JobSpec, JobState, Resources, RetryPolicy};
use crate::raft::Index;

/// The spec of schemas 2 to 5 (command format 2, snapshot formats 2 and
/// 3): today's without `user`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecV5 {
    command: Option<String>,
    args: Vec<String>,
    image: String,
    env: Vec<(String, String)>,
    resources: Resources,
    timeout_ms: u64,
    retry: RetryPolicy,
    priority: i32,
    constraints: BTreeMap<String, String>,
    idempotency_key: Option<String>,
    network: bool,
    labels: BTreeMap<String, String>,
}

impl SpecV5 {
    /// Today's spec in this format, when it has nothing this format lacks
    /// (no `user`): what lets a node keep writing entries that nodes of
    /// the previous release read, during a rolling upgrade.
    pub fn from_spec(spec: JobSpec) -> Option<SpecV5> {
        let JobSpec {
            command,
            args,
            image,
            env,
            resources,
            timeout_ms,
            retry,
            priority,
            constraints,
            idempotency_key,
            network,
            labels,
            user,
        } = spec;
        user.is_none().then_some(SpecV5 {
            command,
            args,
            image,
            env,
            resources,
            timeout_ms,
            retry,
            priority,
            constraints,
            idempotency_key,
            network,
            labels,
        })
    }

    /// The same spec today: the job runs as the node's policy user.
    pub fn upgrade(self) -> JobSpec {
        JobSpec {
            command: self.command,
            args: self.args,
            image: self.image,
            env: self.env,
            resources: self.resources,
            timeout_ms: self.timeout_ms,
            retry: self.retry,
            priority: self.priority,
            constraints: self.constraints,
            idempotency_key: self.idempotency_key,
            network: self.network,
            labels: self.labels,
            user: None,
        }
    }
}

/// The job row of schemas 3 to 5 (snapshot format 3): today's with a
/// [`SpecV5`].
#[derive(Serialize, Deserialize)]
pub struct JobV5 {
    id: JobId,
    spec: SpecV5,
    state: JobState,
    submitted_at_ms: i64,
    index: Index,
    attempts: Vec<Attempt>,
    not_before_ms: i64,
    finished_at_ms: Option<i64>,
    owner: Option<String>,
}

impl JobV5 {
    /// The same job in today's row format.
    pub fn upgrade(self) -> Job {
        Job {
            id: self.id,
            spec: self.spec.upgrade(),
            state: self.state,
            submitted_at_ms: self.submitted_at_ms,
            index: self.index,
            attempts: self.attempts,
            not_before_ms: self.not_before_ms,
            finished_at_ms: self.finished_at_ms,
            owner: self.owner,
        }
    }

    /// Today's job in this format, when its spec has no `user` (for tests
    /// that write what an older release wrote).
    pub fn from_job(job: Job) -> Option<JobV5> {
        Some(JobV5 {
            id: job.id,
            spec: SpecV5::from_spec(job.spec)?,
            state: job.state,
            submitted_at_ms: job.submitted_at_ms,
            index: job.index,
            attempts: job.attempts,
            not_before_ms: job.not_before_ms,
            finished_at_ms: job.finished_at_ms,
            owner: job.owner,
        })
    }

    /// Its job id, state and owner (what migrations index it by).
    pub fn key_fields(&self) -> (JobId, JobState, Option<&str>) {
        (self.id, self.state, self.owner.as_deref())
    }
}

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
    /// The same request in the version-2 spec, with the defaults it had.
    pub fn upgrade(self) -> SpecV5 {
        SpecV5 {
            command: self.command,
            args: self.args,
            image: String::new(),
            env: Vec::new(),
            resources: Resources::default(),
            timeout_ms: 0,
            retry: RetryPolicy::default(),
            priority: 0,
            constraints: BTreeMap::new(),
            idempotency_key: None,
            network: false,
            labels: BTreeMap::new(),
        }
    }
}

impl JobV1 {
    /// The same job in the version-2 row format (version 1 jobs never ran).
    pub fn upgrade(self) -> JobV2 {
        JobV2 {
            id: self.id,
            spec: self.spec.upgrade(),
            state: self.state,
            submitted_at_ms: self.submitted_at_ms,
            index: self.index,
            attempts: Vec::new(),
            not_before_ms: 0,
            finished_at_ms: None,
        }
    }
}

/// Version 2's job row: today's row without `owner` (schema 2, before
/// access control). Serialize is derived so tests can write version-2 rows.
#[derive(Serialize, Deserialize)]
pub struct JobV2 {
    /// Job id.
    pub id: JobId,
    /// What to run.
    pub spec: SpecV5,
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
    /// The same job in the version-5 row format: jobs of version 2 have no
    /// owner (they were submitted before tokens existed).
    pub fn upgrade(self) -> JobV5 {
        JobV5 {
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
