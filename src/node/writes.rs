//! Typed writes: each kind of proposal the front ends make, answered with
//! an outcome of its own type. The API never matches an [`Applied`]: the
//! mapping from apply result to answer is written once, here, so a client
//! can never be handed an apply result meant for another command.

use super::{Node, RaftError};
use crate::acl::Token;
use crate::jobs::{Applied, Command, Job, JobId, NodeRecord};
use crate::raft::{ConfChange, Membership};

/// A change the state machine may refuse (the same way on every replica):
/// an unknown job, node or token, a stale restore. The refusal's reason is
/// for the caller's message.
#[derive(Debug)]
pub enum Change<T> {
    /// Applied; the record after it.
    Done(T),
    /// Refused, with why; nothing changed.
    Refused(String),
}

/// A restore's last step as the state machine answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoredCounts {
    /// Jobs now in the table.
    pub jobs: u64,
    /// Tokens now stored.
    pub tokens: u64,
}

impl Node {
    /// Proposes a `Submit`/`SubmitAs`: the job created, or the existing one
    /// when the id or idempotency key was seen before (a retry gets the
    /// original answer).
    pub async fn submit_job(&self, command: Command) -> Result<Job, RaftError> {
        match self.propose_command(&command).await? {
            Applied::Job(job) | Applied::DuplicateJob(job) => Ok(job),
            other => Err(unexpected(other)),
        }
    }

    /// Proposes cancelling `job`: the job after it (unchanged when it had
    /// already ended), or refused when the table has no such job.
    pub async fn cancel_job(&self, job: JobId, at_ms: i64) -> Result<Change<Job>, RaftError> {
        match self
            .propose_command(&Command::Cancel { job, at_ms })
            .await?
        {
            Applied::Updated(job) | Applied::Unchanged(job) => Ok(Change::Done(job)),
            Applied::Refused { reason } => Ok(Change::Refused(reason)),
            other => Err(unexpected(other)),
        }
    }

    /// Proposes a node command (drain, undrain): the node record after it,
    /// or refused when the node has never heartbeated.
    pub async fn change_node(&self, command: Command) -> Result<Change<NodeRecord>, RaftError> {
        match self.propose_command(&command).await? {
            Applied::Node(record) => Ok(Change::Done(record)),
            Applied::Refused { reason } => Ok(Change::Refused(reason)),
            other => Err(unexpected(other)),
        }
    }

    /// Proposes a token command (bootstrap, create, revoke): the token
    /// stored or removed, or refused (already bootstrapped, unknown
    /// accessor).
    pub async fn change_token(&self, command: Command) -> Result<Change<Token>, RaftError> {
        match self.propose_command(&command).await? {
            Applied::Token(token) | Applied::Revoked(token) => Ok(Change::Done(token)),
            Applied::Refused { reason } => Ok(Change::Refused(reason)),
            other => Err(unexpected(other)),
        }
    }

    /// Proposes one step of a staged restore (`RestoreBegin`,
    /// `RestoreChunk`): refused when another restore replaced this one.
    pub async fn stage_restore(&self, command: Command) -> Result<Change<()>, RaftError> {
        match self.propose_command(&command).await? {
            Applied::Refused { reason } => Ok(Change::Refused(reason)),
            Applied::Noop => Ok(Change::Done(())),
            other => Err(unexpected(other)),
        }
    }

    /// Proposes `RestoreFinish`: the table and tokens now in force, or
    /// refused (the staged file is incomplete or was replaced).
    pub async fn finish_restore(
        &self,
        command: Command,
    ) -> Result<Change<RestoredCounts>, RaftError> {
        match self.propose_command(&command).await? {
            Applied::Restored { jobs, tokens } => Ok(Change::Done(RestoredCounts { jobs, tokens })),
            Applied::Refused { reason } => Ok(Change::Refused(reason)),
            other => Err(unexpected(other)),
        }
    }

    /// Proposes a membership change and waits until it is applied: the
    /// membership after it (`None` when the change was a no-op).
    pub async fn change_members(
        &self,
        change: ConfChange,
    ) -> Result<Option<Membership>, RaftError> {
        match self.change_membership(change).await? {
            Applied::ConfChange(membership) => Ok(Some(membership)),
            _ => Ok(None),
        }
    }
}

/// An apply result that does not belong to the command proposed: a bug in
/// the state machine, never a client's fault.
fn unexpected(applied: Applied) -> RaftError {
    RaftError::Storage(format!(
        "unexpected apply result {applied:?} (a bug: please report it)"
    ))
}
