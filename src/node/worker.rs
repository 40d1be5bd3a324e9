//! The executor side of a node: runs the attempts the committed table
//! assigns to this node, in containers through the executor's driver, and
//! reports how they end. Woken by applies.
//!
//! Crash safety: a container is removed only after its result is committed,
//! so a node killed at any point finds its containers again on restart
//! (by label), reattaches to those still running, reports those that ended
//! while it was down, and removes containers of attempts it no longer owns.
//! An attempt the table says RUNNING here but whose container is gone is
//! reported NODE_LOST (re-run if attempts remain), never silently re-run
//! under the same attempt number.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::Instrument;

use super::metrics::ExecutorOp;
use super::reports::ReportOutcome;
use super::{now_ms, unix_ms, Node};
use crate::executor::docker::{DockerConfig, DockerDriver};
use crate::executor::{
    ContainerInfo, Driver, ExecError, Handle, OutputSink, Reason, RunSpec, Started, LABEL_CLUSTER,
    LABEL_NODE,
};
use crate::jobs::{Command, EndReason, Job, JobId, JobState};

/// Output chunks buffered between the container and the store.
const OUTPUT_QUEUE: usize = 256;
/// Largest store write the output pump makes from coalesced chunks.
const COALESCE_BYTES: usize = 1 << 20;
/// Backoff bounds when reaching the engine or the leader fails.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Attempts this node is running, by job.
type Running = Arc<Mutex<HashMap<JobId, u32>>>;

/// The span every log line about one attempt is written in: its fields
/// (`job`, `attempt`) are on each line, in text and JSON logs alike.
fn attempt_span(job: JobId, attempt: u32) -> tracing::Span {
    tracing::info_span!("attempt", job = %job, attempt)
}

/// Connects to the engine (retrying until it answers), reconciles the
/// containers left from before a restart, starts heartbeats, then follows
/// the table. Returns only if the executor is disabled or the node stops.
pub async fn run(node: Arc<Node>) {
    if !node.config.executor.enabled {
        tracing::info!("executor disabled: this node runs no jobs");
        return;
    }
    let config = DockerConfig {
        timeout_grace: node.config.executor.stop_grace,
        docker_host: node.config.executor.docker_host.clone(),
        owner_labels: vec![
            (LABEL_CLUSTER.to_string(), node.config.cluster_id.clone()),
            (LABEL_NODE.to_string(), node.config.node_id.to_string()),
        ],
        log_max_bytes: node
            .config
            .executor
            .output_cap_bytes
            .saturating_add(16 << 20),
        policy: node.config.executor.policy.clone(),
        scratch_dir: node.config.executor.scratch_dir.clone(),
        ..DockerConfig::default()
    };
    let mut backoff = BACKOFF_MIN;
    let driver = loop {
        match DockerDriver::connect(config.clone()).await {
            Ok(driver) => break Arc::new(driver),
            Err(e) => {
                node.metrics.executor_error(ExecutorOp::Connect);
                if backoff == BACKOFF_MIN {
                    tracing::error!(
                        "cannot reach Docker, this node runs no jobs until it can: {e}"
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    let running: Running = Arc::default();
    let worker = Worker {
        node: node.clone(),
        driver,
        running,
    };
    worker.catch_up().await;
    worker.reconcile().await;
    tokio::spawn(node.clone().heartbeat_loop());
    tracing::info!("executor ready");
    let mut applied = node.applied_watch();
    loop {
        if let Err(e) = worker.sync().await {
            tracing::warn!("executor sync failed: {e}");
        }
        if applied.changed().await.is_err() {
            return;
        }
    }
}

#[derive(Clone)]
struct Worker {
    node: Arc<Node>,
    driver: Arc<DockerDriver>,
    running: Running,
}

impl Worker {
    fn me(&self) -> u64 {
        self.node.config.node_id
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, u32>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts supervising an attempt; returns the attempt of the same job
    /// it replaces, if any. Keeps the running-containers gauge in step.
    fn track(&self, job: JobId, attempt: u32) -> Option<u32> {
        let mut running = self.running();
        let previous = running.insert(job, attempt);
        self.node.metrics.set_running_containers(running.len());
        previous
    }

    /// Waits until the local table reflects everything committed before
    /// now, so reconciliation never mistakes a fresh assignment it has not
    /// applied yet for an orphan.
    async fn catch_up(&self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.node.read_barrier().await {
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!("executor waiting for the cluster: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Containers from before a restart: reattach to ours, remove the rest.
    async fn reconcile(&self) {
        let containers = match self.driver.list().await {
            Ok(c) => c,
            Err(e) => {
                self.node.metrics.executor_error(ExecutorOp::List);
                tracing::warn!("cannot list containers to reattach: {e}");
                return;
            }
        };
        for info in containers {
            let supervised = info.job_id.parse::<JobId>().ok().is_some_and(|id| {
                info.attempt.is_some() && self.running().get(&id) == info.attempt.as_ref()
            });
            if supervised {
                continue;
            }
            let owned = info
                .job_id
                .parse::<JobId>()
                .ok()
                .zip(info.attempt)
                .and_then(|(id, attempt)| {
                    let job = self.node.store.get_job(&id).ok().flatten()?;
                    (job.active_on() == Some((self.me(), attempt))).then_some(job)
                });
            match owned {
                Some(job) => {
                    let attempt = info.attempt.unwrap_or(0);
                    let span = attempt_span(job.id, attempt);
                    span.in_scope(|| {
                        tracing::info!(
                            running = info.running,
                            "reattaching to a container from before the restart"
                        )
                    });
                    self.track(job.id, attempt);
                    let worker = self.clone();
                    tokio::spawn(
                        async move { worker.supervise_existing(job, attempt, info).await }
                            .instrument(span),
                    );
                }
                None => {
                    tracing::info!(container = %info.name, "removing a container of an attempt this node does not own");
                    if let Err(e) = self.driver.remove(&info.container_id).await {
                        self.node.metrics.executor_error(ExecutorOp::Remove);
                        tracing::warn!(container = %info.name, "cannot remove orphan: {e}");
                    }
                }
            }
        }
    }

    /// Starts what the table assigns here and stops what it no longer does.
    async fn sync(&self) -> Result<(), String> {
        let active = self
            .node
            .store
            .active_on_node(self.me())
            .map_err(|e| e.to_string())?;
        let wanted: HashMap<JobId, u32> = active.into_iter().collect();
        let (to_start, to_stop) = {
            let running = self.running();
            let to_start: Vec<(JobId, u32)> = wanted
                .iter()
                .filter(|(id, attempt)| running.get(id) != Some(attempt))
                .map(|(id, a)| (*id, *a))
                .collect();
            let to_stop: Vec<(JobId, u32)> = running
                .iter()
                .filter(|(id, attempt)| wanted.get(id) != Some(attempt))
                .map(|(id, a)| (*id, *a))
                .collect();
            (to_start, to_stop)
        };
        for (id, attempt) in to_stop {
            // Cancelled, lost, or reassigned: kill it. Its own task sees the
            // end and its report is refused as stale.
            let driver = self.driver.clone();
            let metrics = self.node.metrics.clone();
            let grace = self.node.config.executor.stop_grace;
            tokio::spawn(
                async move {
                    tracing::debug!("stopping the container: the attempt is no longer this node's");
                    if let Err(e) = driver.stop(&id.to_string(), attempt, grace).await {
                        metrics.executor_error(ExecutorOp::Stop);
                        tracing::warn!("cannot stop container: {e}");
                    }
                }
                .instrument(attempt_span(id, attempt)),
            );
        }
        for (id, attempt) in to_start {
            let Some(job) = self.node.store.get_job(&id).map_err(|e| e.to_string())? else {
                continue;
            };
            let span = attempt_span(id, attempt);
            if let Some(previous) = self.track(id, attempt) {
                span.in_scope(|| {
                    tracing::debug!(previous, "newer attempt replaces an older one here")
                });
            }
            let worker = self.clone();
            if job.state == JobState::Running {
                // Started before, but no container of ours exists (reconcile
                // would have found it): the attempt's fate is unknown.
                tokio::spawn(
                    async move {
                        let end = End::platform(
                            EndReason::NodeLost,
                            "the container disappeared while its node was down".into(),
                        );
                        worker.finish(&job, attempt, end).await;
                    }
                    .instrument(span),
                );
            } else {
                tokio::spawn(
                    async move { worker.run_attempt(job, attempt).await }.instrument(span),
                );
            }
        }
        Ok(())
    }

    fn run_spec(&self, job: &Job, attempt: u32) -> RunSpec {
        let spec = &job.spec;
        let image = if spec.image.is_empty() {
            self.node.config.executor.default_image.clone()
        } else {
            spec.image.clone()
        };
        RunSpec {
            job_id: job.id.to_string(),
            attempt,
            command: spec.command.clone(),
            args: spec.args.clone(),
            image,
            env: spec.env.clone(),
            cpu_millis: spec.resources.cpu_millis,
            memory_mib: spec.resources.memory_mib,
            pids: spec.resources.pids,
            timeout: (spec.timeout_ms > 0).then(|| Duration::from_millis(spec.timeout_ms)),
            network: spec.network,
            user: spec.user.clone(),
        }
    }

    /// Output of an attempt: a bounded channel from the driver, pumped into
    /// the node-local store and its live followers.
    fn output_sink(&self, job: JobId, attempt: u32) -> (OutputSink, tokio::task::JoinHandle<()>) {
        // Lossless: the container writes to the engine's log file, which
        // the driver follows, so waiting here never slows the job.
        let (sink, mut rx) = OutputSink::lossless_channel(OUTPUT_QUEUE);
        let writer = self.node.output.writer(job, attempt);
        let pump = tokio::spawn(
            async move {
                let mut failed = false;
                let mut carried = None;
                loop {
                    let first = match carried.take() {
                        Some(chunk) => chunk,
                        None => match rx.recv().await {
                            Some(chunk) => chunk,
                            None => break,
                        },
                    };
                    // Coalesce what is already waiting from the same stream into
                    // one store write: far fewer writes for chatty jobs.
                    let stream = first.stream;
                    let mut data = first.data.to_vec();
                    while data.len() < COALESCE_BYTES {
                        match rx.try_recv() {
                            Ok(next) if next.stream == stream => data.extend_from_slice(&next.data),
                            Ok(next) => {
                                carried = Some(next);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = writer.write(stream, &data) {
                        if !failed {
                            tracing::error!("cannot store output, dropping it: {e}");
                            failed = true;
                        }
                    }
                }
                writer.close();
            }
            .in_current_span(),
        );
        (sink, pump)
    }

    /// Runs one attempt to its reported end. Called inside its
    /// [`attempt_span`], like every task it spawns.
    async fn run_attempt(self, job: Job, attempt: u32) {
        let spec = self.run_spec(&job, attempt);
        tracing::info!(image = %spec.image, "starting the attempt");
        let (sink, pump) = self.output_sink(job.id, attempt);
        let started = self.driver.start(&spec, Some(sink)).await;
        let end = match started {
            Ok(Started::Finished(outcome)) => {
                let _ = pump.await;
                End::from_outcome(outcome)
            }
            Ok(Started::Running(mut handle)) => {
                handle.remove_after_wait = false;
                let container = handle.container_id.clone();
                // Stopped or reassigned while the container was being
                // created: the stop that `sync` sent found nothing to stop.
                if !self.still_ours(job.id, attempt) {
                    let grace = self.node.config.executor.stop_grace;
                    if let Err(e) = self.driver.stop(&job.id.to_string(), attempt, grace).await {
                        self.node.metrics.executor_error(ExecutorOp::Stop);
                        tracing::warn!("cannot stop container: {e}");
                    }
                }
                let reporter = self.clone();
                let job_id = job.id;
                tokio::spawn(
                    async move {
                        let command = Command::Started {
                            job: job_id,
                            attempt,
                            node: reporter.me(),
                            at_ms: now_ms(),
                        };
                        reporter
                            .report_until_verdict(&command, job_id, attempt)
                            .await;
                    }
                    .in_current_span(),
                );
                self.follow_to_end(&job, attempt, handle, pump, &container)
                    .await;
                return;
            }
            Err(ExecError::AlreadyExists(name)) => {
                // A container of this attempt exists though reconcile did
                // not see it (created during the restart): leave it to the
                // next reconcile rather than run the attempt twice.
                tracing::warn!(container = %name, "container already exists");
                let _ = pump.await;
                self.forget(job.id, attempt);
                self.reconcile().await;
                return;
            }
            Err(e) => {
                self.node.metrics.executor_error(ExecutorOp::Start);
                let _ = pump.await;
                End::platform(EndReason::StartFailed, e.to_string())
            }
        };
        self.finish(&job, attempt, end).await;
        self.forget(job.id, attempt);
    }

    /// A container found after a restart: follow it to its end. Called
    /// inside its [`attempt_span`].
    async fn supervise_existing(self, job: Job, attempt: u32, info: ContainerInfo) {
        let deadline = job.current_attempt().and_then(|a| {
            let started = a.started_at_ms?;
            (job.spec.timeout_ms > 0).then(|| {
                let end = started.saturating_add(job.spec.timeout_ms as i64);
                let left = end.saturating_sub(now_ms()).max(0) as u64;
                tokio::time::Instant::now() + Duration::from_millis(left)
            })
        });
        // The engine keeps the whole log: store it again from the start.
        if let Err(e) = self.node.store.clear_output(&job.id, attempt) {
            tracing::warn!("cannot clear output before re-reading it: {e}");
        }
        let (sink, pump) = self.output_sink(job.id, attempt);
        let mut handle = self.driver.reattach(&info, deadline, Some(sink));
        handle.remove_after_wait = false;
        if job.state == JobState::Assigned {
            let command = Command::Started {
                job: job.id,
                attempt,
                node: self.me(),
                at_ms: now_ms(),
            };
            self.report_until_verdict(&command, job.id, attempt).await;
        }
        self.follow_to_end(&job, attempt, handle, pump, &info.container_id)
            .await;
    }

    /// The common end of a started and a reattached attempt: wait for the
    /// container, drain its output, report the end, remove the container
    /// (only after the report, so a restart in between finds it again).
    async fn follow_to_end(
        &self,
        job: &Job,
        attempt: u32,
        handle: Handle,
        pump: tokio::task::JoinHandle<()>,
        container: &str,
    ) {
        let outcome = self.driver.wait(handle).await;
        let _ = pump.await;
        let end = match outcome {
            Ok(outcome) => End::from_outcome(outcome),
            Err(e) => {
                self.node.metrics.executor_error(ExecutorOp::Wait);
                End::platform(
                    EndReason::StartFailed,
                    format!("lost track of the container: {e}"),
                )
            }
        };
        self.finish(job, attempt, end).await;
        if let Err(e) = self.driver.remove(container).await {
            self.node.metrics.executor_error(ExecutorOp::Remove);
            tracing::warn!("cannot remove container: {e}");
        }
        self.forget(job.id, attempt);
    }

    fn forget(&self, job: JobId, attempt: u32) {
        let mut running = self.running();
        if running.get(&job) == Some(&attempt) {
            running.remove(&job);
        }
        self.node.metrics.set_running_containers(running.len());
    }

    /// Whether the local table still has this attempt assigned to or
    /// running on this node.
    fn still_ours(&self, job: JobId, attempt: u32) -> bool {
        self.node
            .store
            .get_job(&job)
            .ok()
            .flatten()
            .is_some_and(|j| j.active_on() == Some((self.me(), attempt)))
    }

    /// Reports an attempt's end, with the tail of its output. Runs inside
    /// the attempt's span, which names the job and attempt in the log.
    async fn finish(&self, job: &Job, attempt: u32, end: End) {
        let tail_bytes = self.node.config.executor.output_tail_bytes;
        let output_tail = self
            .node
            .store
            .output_tail(&job.id, attempt, tail_bytes)
            .unwrap_or_default();
        tracing::info!(reason = end.reason.as_str(), exit_code = ?end.exit_code, "attempt ended");
        let command = Command::Finished {
            job: job.id,
            attempt,
            node: self.me(),
            at_ms: end.at_ms,
            exit_code: end.exit_code,
            reason: end.reason,
            message: end.message,
            output_tail,
        };
        self.report_until_verdict(&command, job.id, attempt).await;
    }

    /// Retries a report until the state machine accepts or refuses it, or
    /// until the table shows the attempt is no longer this node's (someone
    /// else decided its fate, e.g. the leader declared this node down).
    async fn report_until_verdict(&self, command: &Command, job: JobId, attempt: u32) {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.node.report(command).await {
                Ok(ReportOutcome::Accepted) => return,
                Ok(ReportOutcome::Refused(reason)) => {
                    // The normal end of a stopped or reassigned attempt: the
                    // table already holds its fate.
                    tracing::debug!("report not needed, the cluster already decided: {reason}");
                    return;
                }
                Err(e) => {
                    if !self.still_ours(job, attempt) {
                        return;
                    }
                    tracing::debug!("report not delivered, retrying: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// How an attempt ended, as reported.
struct End {
    exit_code: Option<i64>,
    reason: EndReason,
    message: String,
    at_ms: i64,
}

impl End {
    fn platform(reason: EndReason, message: String) -> End {
        End {
            exit_code: None,
            reason,
            message,
            at_ms: now_ms(),
        }
    }

    fn from_outcome(outcome: crate::executor::Outcome) -> End {
        let (reason, message) = match outcome.reason {
            Reason::Exited(code) => (EndReason::Exited { code }, String::new()),
            Reason::Signaled(signal) => (EndReason::Signaled { signal }, String::new()),
            Reason::OomKilled => (EndReason::OomKilled, "killed at its memory limit".into()),
            Reason::TimedOut => (EndReason::TimedOut, "killed at its timeout".into()),
            Reason::ImageUnavailable(message) => (EndReason::ImageUnavailable, message),
            Reason::Refused(message) => (EndReason::StartFailed, message),
            Reason::Cancelled => (EndReason::Cancelled, "stopped".into()),
        };
        End {
            exit_code: outcome.exit_code,
            reason,
            message,
            at_ms: unix_ms(outcome.finished_at),
        }
    }
}
