//! The job executor: runs one attempt of a job in a locked-down container.
//!
//! This module owns everything that talks to the container engine (see
//! docs/ARCHITECTURE.md). [`Driver`] is the engine-neutral interface;
//! [`docker::DockerDriver`] implements it with bollard. The node wires a driver
//! to the scheduler; nothing here knows about Raft or the job table.
//!
//! Life of an attempt: [`Driver::start`] creates and starts the container (or
//! reports [`Reason::ImageUnavailable`] without one), [`Driver::wait`] waits
//! for it to end, applying the attempt's timeout, collects the [`Outcome`] and
//! removes the container. [`Driver::stop`] may be called concurrently from
//! another task: SIGTERM, a grace period, SIGKILL; the pending `wait` then
//! reports [`Reason::Cancelled`]. [`Driver::list`] finds containers by their
//! Drover labels so a restarted node can reattach or remove orphans.

pub mod disk;
pub mod docker;
mod logs;
pub mod network;
mod output;

use std::future::Future;
use std::time::{Duration, SystemTime};

pub use output::{OutputChunk, OutputSink, OutputStream};

/// Label carrying the job id on every container Drover creates.
pub const LABEL_JOB: &str = "drover.job";
/// Label carrying the attempt number on every container Drover creates.
pub const LABEL_ATTEMPT: &str = "drover.attempt";
/// Label carrying the cluster id on every container a node creates.
pub const LABEL_CLUSTER: &str = "drover.cluster";
/// Label carrying the node id on every container a node creates.
pub const LABEL_NODE: &str = "drover.node";

/// What to run for one attempt of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// The job id; must be a valid container name part (`[A-Za-z0-9_.-]`).
    pub job_id: String,
    /// The attempt number (1-based by convention).
    pub attempt: u32,
    /// A shell string run as `/bin/sh -c COMMAND`. When set, `args` become the
    /// positional parameters `$1..` of that shell (`$0` is `drover`).
    pub command: Option<String>,
    /// The argv to run when `command` is not set (no shell involved).
    pub args: Vec<String>,
    /// The image, e.g. `drover-job:latest`.
    pub image: String,
    /// Extra environment; `DROVER_JOB_ID` and `DROVER_ATTEMPT` are always set
    /// and cannot be overridden.
    pub env: Vec<(String, String)>,
    /// CPU limit in millicores (1000 = one core); must be > 0.
    pub cpu_millis: u32,
    /// Memory limit in MiB (swap is not allowed on top); must be >= 6 (Docker's minimum).
    pub memory_mib: u32,
    /// Maximum number of processes; must be > 0.
    pub pids: u32,
    /// Wall-clock limit counted from the container start.
    pub timeout: Option<Duration>,
    /// Whether the container gets the node's job network instead of none.
    pub network: bool,
    /// The job's own `UID[:GID]`; None: `executor.policy.user`. Checked
    /// against this node's `executor.policy.allowed_users` at start.
    pub user: Option<String>,
}

/// Why an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The main process exited on its own with this code.
    Exited(i64),
    /// The main process was killed by this signal (exit code 128 + signal),
    /// not by the kernel's OOM killer nor by Drover.
    Signaled(i64),
    /// The container hit its memory limit and the kernel OOM killer fired.
    OomKilled,
    /// The attempt outlived its timeout and was killed.
    TimedOut,
    /// The image is not present and could not be pulled.
    ImageUnavailable(String),
    /// This node's sandbox policy does not let the attempt run as asked
    /// (e.g. a network where `executor.policy.allow_network` is off); the
    /// message says which key.
    Refused(String),
    /// The attempt was stopped through [`Driver::stop`].
    Cancelled,
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The container's exit code, when it ran (`None` e.g. for an unavailable image).
    pub exit_code: Option<i64>,
    /// Why it ended.
    pub reason: Reason,
    /// When the container started (the attempt's start when it never ran).
    pub started_at: SystemTime,
    /// When it ended.
    pub finished_at: SystemTime,
}

impl Outcome {
    /// Whether the attempt succeeded (exited with code 0).
    pub fn succeeded(&self) -> bool {
        self.reason == Reason::Exited(0)
    }
}

/// A started attempt, handed to [`Driver::wait`].
#[derive(Debug)]
pub struct Handle {
    /// The container id.
    pub container_id: String,
    /// The container name, `drover-<job>-<attempt>`.
    pub name: String,
    /// The job id.
    pub job_id: String,
    /// The attempt number.
    pub attempt: u32,
    /// When the attempt must be killed as timed out, if ever.
    pub deadline: Option<tokio::time::Instant>,
    /// The task forwarding output to the sink; awaited (bounded) by `wait`.
    pub(crate) output: Option<tokio::task::JoinHandle<()>>,
    /// Whether `wait` removes the container. A node keeps it until the
    /// result is committed, so a crash in between finds the container (and
    /// its exit) again instead of losing the outcome.
    pub remove_after_wait: bool,
}

impl Handle {
    /// A handle for a container found by [`Driver::list`] (reattach after a
    /// restart). Output is not re-streamed; `deadline` is the attempt's
    /// remaining timeout, if the caller knows it.
    pub fn reattach(info: &ContainerInfo, deadline: Option<tokio::time::Instant>) -> Handle {
        Handle {
            container_id: info.container_id.clone(),
            name: info.name.clone(),
            job_id: info.job_id.clone(),
            attempt: info.attempt.unwrap_or(0),
            deadline,
            output: None,
            remove_after_wait: true,
        }
    }
}

/// What [`Driver::start`] produced.
#[derive(Debug)]
pub enum Started {
    /// The container runs; pass the handle to [`Driver::wait`].
    Running(Handle),
    /// The attempt ended before a container existed (e.g. image unavailable).
    Finished(Outcome),
}

/// A Drover container found on the engine (for reattach and orphan removal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The container id.
    pub container_id: String,
    /// The container name without the leading `/`.
    pub name: String,
    /// The `drover.job` label.
    pub job_id: String,
    /// The `drover.attempt` label; `None` if missing or not a number.
    pub attempt: Option<u32>,
    /// Whether it is still running.
    pub running: bool,
}

/// Errors of the executor. Outcomes of the job itself (non-zero exits, OOM,
/// timeouts, missing images) are not errors: they are [`Outcome`]s.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The engine cannot be reached or refused the connection.
    #[error("container engine unreachable: {0}")]
    Unreachable(String),
    /// The spec cannot be run as given.
    #[error("invalid run spec: {0}")]
    InvalidSpec(String),
    /// A container of that name already exists (a duplicate attempt).
    #[error("container {0} already exists")]
    AlreadyExists(String),
    /// The container does not exist (anymore).
    #[error("container {0} not found")]
    NotFound(String),
    /// Any other engine error, with the operation that failed.
    #[error("container engine error during {op}: {message}")]
    Engine {
        /// The operation, e.g. `create`.
        op: &'static str,
        /// The engine's message.
        message: String,
    },
}

/// A container runtime able to run job attempts.
///
/// Methods return `Send` futures so callers can spawn them; the trait is
/// meant to be used generically (it is not object safe).
pub trait Driver: Send + Sync {
    /// Creates and starts the container of an attempt. Output goes to `sink`
    /// (if any) as it is produced; a slow sink loses chunks, never blocks the job.
    fn start(
        &self,
        spec: &RunSpec,
        sink: Option<OutputSink>,
    ) -> impl Future<Output = Result<Started, ExecError>> + Send;

    /// Waits for the attempt to end (killing it at its deadline), returns its
    /// outcome and removes the container.
    fn wait(&self, handle: Handle) -> impl Future<Output = Result<Outcome, ExecError>> + Send;

    /// Stops an attempt: SIGTERM, `grace`, then SIGKILL. Idempotent; a
    /// concurrent `wait` reports [`Reason::Cancelled`]. Stopping a container
    /// that does not exist is not an error.
    fn stop(
        &self,
        job_id: &str,
        attempt: u32,
        grace: Duration,
    ) -> impl Future<Output = Result<(), ExecError>> + Send;

    /// Lists all containers carrying Drover labels, running or not.
    fn list(&self) -> impl Future<Output = Result<Vec<ContainerInfo>, ExecError>> + Send;

    /// Force-removes a container (by id or name); a missing one is not an error.
    fn remove(&self, container: &str) -> impl Future<Output = Result<(), ExecError>> + Send;
}

/// The container name of an attempt: `drover-<job>-<attempt>`.
pub fn container_name(job_id: &str, attempt: u32) -> String {
    format!("drover-{job_id}-{attempt}")
}

impl RunSpec {
    /// Checks the spec and returns the argv to run.
    pub fn argv(&self) -> Result<Vec<String>, ExecError> {
        if self.job_id.is_empty()
            || !self
                .job_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(ExecError::InvalidSpec(format!(
                "job id {:?} must be non-empty [A-Za-z0-9_.-]",
                self.job_id
            )));
        }
        if self.image.is_empty() {
            return Err(ExecError::InvalidSpec("image is empty".into()));
        }
        if self.cpu_millis == 0 || self.pids == 0 || self.memory_mib < 6 {
            return Err(ExecError::InvalidSpec(
                "cpu_millis and pids must be > 0, memory_mib >= 6".into(),
            ));
        }
        if let Some((k, _)) = self
            .env
            .iter()
            .find(|(k, _)| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            return Err(ExecError::InvalidSpec(format!(
                "bad environment variable name {k:?}"
            )));
        }
        match &self.command {
            Some(command) => {
                let mut argv = vec![
                    "/bin/sh".to_string(),
                    "-c".to_string(),
                    command.clone(),
                    "drover".to_string(),
                ];
                argv.extend(self.args.iter().cloned());
                Ok(argv)
            }
            None if !self.args.is_empty() => Ok(self.args.clone()),
            None => Err(ExecError::InvalidSpec(
                "neither command nor args given".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RunSpec {
        RunSpec {
            job_id: "01J0ABC".into(),
            attempt: 2,
            command: Some("echo $1".into()),
            args: vec!["x".into()],
            image: "drover-job:latest".into(),
            env: vec![],
            cpu_millis: 500,
            memory_mib: 64,
            pids: 64,
            timeout: None,
            network: false,
            user: None,
        }
    }

    #[test]
    fn argv_shell_and_plain() {
        assert_eq!(
            spec().argv().ok(),
            Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo $1".into(),
                "drover".into(),
                "x".into()
            ])
        );
        let plain = RunSpec {
            command: None,
            ..spec()
        };
        assert_eq!(plain.argv().ok(), Some(vec!["x".to_string()]));
        let none = RunSpec {
            args: vec![],
            ..plain
        };
        assert!(matches!(none.argv(), Err(ExecError::InvalidSpec(_))));
    }

    #[test]
    fn argv_rejects_bad_specs() {
        for bad in [
            RunSpec {
                job_id: "a/b".into(),
                ..spec()
            },
            RunSpec {
                memory_mib: 0,
                ..spec()
            },
            RunSpec {
                env: vec![("A=B".into(), "c".into())],
                ..spec()
            },
        ] {
            assert!(matches!(bad.argv(), Err(ExecError::InvalidSpec(_))));
        }
        assert_eq!(container_name("j", 3), "drover-j-3");
    }
}
