//! The job model and the commands of the replicated state machine.
//!
//! Everything here is plain data with no I/O: `store/` persists it (sled),
//! `api/` validates and builds it, `node/` proposes [`Command`]s through Raft.
//! Field and variant order of every serialized type is part of the on-disk
//! and on-the-wire format: append new variants at the end, and change a
//! struct only together with a schema migration (see `migrations/`).

mod applied;
mod clock;
mod command;
mod id;
mod job;
pub mod legacy;
pub mod lifecycle;
mod node;
mod output;
pub mod policy;
mod spec;

pub use self::applied::Applied;
pub use self::clock::{now_ms, unix_ms};
pub use self::command::{Assignment, Command, CommandError, MAX_COMMAND_ENCODED_BYTES};
pub use self::id::{JobId, JobIdGenerator, JobScan, ParseJobIdError};
pub use self::job::{Attempt, EndReason, Job, JobState};
pub use self::node::{Capacity, Drain, NodeRecord, NodeStatus, Reserved};
pub use self::output::{OutputChunk, OutputStream};
pub use self::spec::{
    check_map, limits, user_ids, JobSpec, Resources, RetryPolicy, SpecError, MAX_ARGS_BYTES,
    MAX_COMMAND_BYTES,
};
