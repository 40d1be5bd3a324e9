//! The Docker driver (bollard).
//!
//! Every container is locked down: network mode `none` unless the spec asks
//! for a network and the policy allows one (then the node's job network,
//! see `network`), all capabilities dropped, read-only root fs with a tmpfs at
//! `/tmp`, `no-new-privileges`, memory (swap equal to it, so no swap), CPU and
//! pids limits, block-I/O rates and a `/scratch` of its own (see `disk`), a
//! non-root user, labels `drover.job` / `drover.attempt`, and the environment
//! variables `DROVER_JOB_ID` / `DROVER_ATTEMPT`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerState, HostConfig, HostConfigLogConfig, ResourcesUlimits,
    ThrottleDevice,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

use crate::jobs::policy::{PullPolicy, SandboxPolicy};
use tokio::time::Instant;

use super::disk::JobDisk;
use super::logs;
use super::network::JobNetwork;
use super::{
    container_name, ContainerInfo, Driver, ExecError, Handle, Outcome, OutputSink, Reason, RunSpec,
    Started, LABEL_ATTEMPT, LABEL_JOB,
};

/// Settings of the Docker driver.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Grace between SIGTERM and SIGKILL when an attempt times out.
    pub timeout_grace: Duration,
    /// How long a pull of a missing image may take before the attempt fails
    /// with [`Reason::ImageUnavailable`].
    pub pull_timeout: Duration,
    /// Size of the `/tmp` tmpfs, in Docker's notation (`64m`).
    pub tmp_size: String,
    /// How long `wait` waits for the output stream to drain after the exit.
    pub output_drain: Duration,
    /// The engine endpoint (`unix:///path` or `tcp://host:port`); empty =
    /// `DOCKER_HOST` or the default socket.
    pub docker_host: String,
    /// Size of the engine's log file of a container (json-file driver, one
    /// file, never rotated below this size). Output is read by following
    /// that log; a rotation would lose and repeat data, so it must hold at
    /// least what the node keeps per attempt.
    pub log_max_bytes: u64,
    /// Labels put on every container this driver creates, and required of
    /// every container it lists. A node sets its cluster and node id here,
    /// so that nodes sharing one engine never reattach to, or remove as
    /// orphans, each other's containers.
    pub owner_labels: Vec<(String, String)>,
    /// Who containers run as, which images they may use and how those are
    /// fetched, their ulimits and I/O rates (`[executor.policy]`).
    pub policy: SandboxPolicy,
    /// Where attempts get their `/scratch` (`executor.scratch_dir`); None:
    /// jobs get none.
    pub scratch_dir: Option<PathBuf>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            timeout_grace: Duration::from_secs(10),
            pull_timeout: Duration::from_secs(300),
            tmp_size: "64m".into(),
            output_drain: Duration::from_secs(5),
            docker_host: String::new(),
            log_max_bytes: 128 << 20,
            owner_labels: Vec::new(),
            policy: SandboxPolicy::default(),
            scratch_dir: None,
        }
    }
}

/// How often, and how far apart, `wait` re-reads a SIGKILLed container's
/// OOM flag (see there).
const OOM_FLAG_CHECKS: usize = 30;
const OOM_FLAG_PAUSE: Duration = Duration::from_millis(100);

/// Runs attempts as Docker containers.
#[derive(Debug, Clone)]
pub struct DockerDriver {
    docker: Docker,
    config: DockerConfig,
    /// Names of containers a `stop` was asked for, so `wait` reports Cancelled.
    cancelled: Arc<Mutex<HashSet<String>>>,
    /// Held while the job network is checked or made, so two jobs starting
    /// at once neither both create it nor both insert its rules.
    network_lock: Arc<tokio::sync::Mutex<()>>,
    /// Scratch directories and the disks I/O limits apply to.
    disk: JobDisk,
}

/// What a container is made with beyond its spec: who it runs as, its
/// network, its scratch bind.
struct Placement<'a> {
    user: String,
    network: Option<&'a JobNetwork>,
    scratch: Option<String>,
}

fn unreachable(e: DockerError) -> ExecError {
    ExecError::Unreachable(e.to_string())
}

fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn engine(op: &'static str, e: DockerError) -> ExecError {
    match e {
        DockerError::DockerResponseServerError {
            status_code: 404,
            message,
        } => ExecError::NotFound(message),
        e => ExecError::Engine {
            op,
            message: e.to_string(),
        },
    }
}

fn parse_time(s: Option<&str>) -> Option<SystemTime> {
    let s = s?;
    // Docker reports "0001-01-01T00:00:00Z" for "never".
    if s.starts_with("0001-") {
        return None;
    }
    humantime::parse_rfc3339_weak(s).ok()
}

impl DockerDriver {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket),
    /// negotiates the API version and pings it.
    pub async fn connect(config: DockerConfig) -> Result<Self, ExecError> {
        let host = config.docker_host.as_str();
        let docker = if host.is_empty() {
            Docker::connect_with_local_defaults()
        } else if let Some(path) = host.strip_prefix("unix://") {
            Docker::connect_with_socket(path, 120, bollard::API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_http(host, 120, bollard::API_DEFAULT_VERSION)
        }
        .map_err(unreachable)?;
        let docker = docker.negotiate_version().await.map_err(unreachable)?;
        docker.ping().await.map_err(unreachable)?;
        // The engine's data root is a path on this machine only when the
        // engine is local (a socket); a remote engine's disks are not ours
        // to look up.
        let engine_root = match host.is_empty() || host.starts_with("unix://") {
            true => docker
                .info()
                .await
                .ok()
                .and_then(|info| info.docker_root_dir)
                .map(PathBuf::from),
            false => None,
        };
        let disk =
            JobDisk::new(config.scratch_dir.clone(), engine_root.as_deref()).map_err(|e| {
                ExecError::Engine {
                    op: "make executor.scratch_dir",
                    message: e.to_string(),
                }
            })?;
        let policy = &config.policy;
        if (policy.io_read_bps > 0 || policy.io_write_bps > 0) && disk.devices().is_empty() {
            tracing::warn!("executor.policy.io_read_bps/io_write_bps are set, but no block device was found under the engine's data root or executor.scratch_dir: job I/O is not throttled");
        }
        let driver = DockerDriver {
            docker,
            config,
            cancelled: Arc::new(Mutex::new(HashSet::new())),
            network_lock: Arc::new(tokio::sync::Mutex::new(())),
            disk,
        };
        if driver.config.scratch_dir.is_some() {
            let live: HashSet<String> = driver.list().await?.into_iter().map(|c| c.name).collect();
            driver.disk.sweep(&live);
        }
        if driver.config.policy.allow_network {
            // Up front, so a problem shows at start; checked again per job.
            match driver.job_network().await {
                Ok(network) => {
                    tracing::info!(network = %network.name, bridge = %network.bridge, "job network ready, kept off this host")
                }
                Err(why) => tracing::error!("jobs that ask for a network will be refused: {why}"),
            }
        }
        Ok(driver)
    }

    /// The node's job network, made and fenced off from the host if need
    /// be (see `network`); Err says why a job cannot have a network here.
    async fn job_network(&self) -> Result<JobNetwork, String> {
        if !self.config.policy.allow_network {
            return Err(
                "this node gives jobs no network (executor.policy.allow_network is false)".into(),
            );
        }
        let network = JobNetwork::for_owner(&self.config.owner_labels);
        let _one_at_a_time = self.network_lock.lock().await;
        network
            .ensure(&self.docker, &self.config.owner_labels)
            .await?;
        Ok(network)
    }

    /// A fresh scratch directory for container `name`, owned by `user`
    /// (`UID:GID`), as a bind; None when this node gives jobs none. A
    /// container of that name already there (a duplicate attempt) keeps
    /// its own directory: the start is refused as AlreadyExists.
    async fn scratch_for(&self, name: &str, user: &str) -> Result<Option<String>, ExecError> {
        if self.config.scratch_dir.is_none() {
            return Ok(None);
        }
        match self.docker.inspect_container(name, None).await {
            Ok(_) => return Err(ExecError::AlreadyExists(name.to_string())),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(engine("inspect", e)),
        }
        let (uid, gid) = crate::jobs::user_ids(user).map_err(ExecError::InvalidSpec)?;
        self.disk
            .prepare(name, uid, gid)
            .map_err(|e| ExecError::Engine {
                op: "make the scratch directory",
                message: e.to_string(),
            })
    }

    fn cancelled(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.cancelled.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes sure the image is present, pulling it if needed. `Ok(Err(msg))`
    /// means the image is unavailable (an outcome, not a driver error).
    async fn ensure_image(&self, image: &str) -> Result<Result<(), String>, ExecError> {
        let policy = &self.config.policy;
        if let Some(refusal) = policy.image_refusal(image) {
            return Ok(Err(refusal));
        }
        if policy.pull != PullPolicy::Always {
            match self.docker.inspect_image(image).await {
                Ok(_) => return Ok(Ok(())),
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => return Err(engine("inspect image", e)),
            }
            if policy.pull == PullPolicy::Never {
                return Ok(Err(format!(
                    "image {image} is not on this node and executor.policy.pull = \"never\""
                )));
            }
        }
        let options = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let pull = async {
            let mut stream = self.docker.create_image(Some(options), None, None);
            while let Some(item) = stream.next().await {
                if let Err(e) = item {
                    return Err(format!("pulling {image} failed: {e}"));
                }
            }
            Ok(())
        };
        let pulled = match tokio::time::timeout(self.config.pull_timeout, pull).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "pulling {image} timed out after {:?}",
                self.config.pull_timeout
            )),
        };
        if let Err(message) = pulled {
            return Ok(Err(message));
        }
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(Ok(())),
            Err(e) if status_of(&e) == Some(404) => {
                Ok(Err(format!("image {image} still missing after pull")))
            }
            Err(e) => Err(engine("inspect image", e)),
        }
    }

    fn ulimits(&self) -> Vec<ResourcesUlimits> {
        let policy = &self.config.policy;
        let limit = |name: &str, n: u64| ResourcesUlimits {
            name: Some(name.to_string()),
            soft: Some(i64::try_from(n).unwrap_or(i64::MAX)),
            hard: Some(i64::try_from(n).unwrap_or(i64::MAX)),
        };
        let mut out = vec![limit("nofile", policy.ulimit_nofile)];
        if policy.ulimit_nproc > 0 {
            out.push(limit("nproc", policy.ulimit_nproc));
        }
        out
    }

    /// The I/O limits of `[executor.policy]` on every disk jobs touch.
    fn throttles(&self, rate: u64) -> Option<Vec<ThrottleDevice>> {
        (rate > 0).then(|| {
            self.disk
                .devices()
                .iter()
                .map(|device| ThrottleDevice {
                    path: Some(device.clone()),
                    rate: Some(i64::try_from(rate).unwrap_or(i64::MAX)),
                })
                .collect()
        })
    }

    fn create_body(
        &self,
        spec: &RunSpec,
        argv: Vec<String>,
        placement: Placement<'_>,
    ) -> ContainerCreateBody {
        let network = placement.network;
        let mut env: Vec<String> = spec
            .env
            .iter()
            .filter(|(k, _)| k != "DROVER_JOB_ID" && k != "DROVER_ATTEMPT")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.push(format!("DROVER_JOB_ID={}", spec.job_id));
        env.push(format!("DROVER_ATTEMPT={}", spec.attempt));
        let mut labels = HashMap::from([
            (LABEL_JOB.to_string(), spec.job_id.clone()),
            (LABEL_ATTEMPT.to_string(), spec.attempt.to_string()),
        ]);
        labels.extend(self.config.owner_labels.iter().cloned());
        let memory = i64::from(spec.memory_mib) * 1024 * 1024;
        let host_config = HostConfig {
            network_mode: Some(network.map_or("none", |n| n.name.as_str()).to_string()),
            cap_drop: Some(vec!["ALL".to_string()]),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                format!("rw,nosuid,nodev,size={}", self.config.tmp_size),
            )])),
            // Docker's default seccomp profile stays on (no `seccomp=` here).
            security_opt: Some(vec!["no-new-privileges".to_string()]),
            ulimits: Some(self.ulimits()),
            // No volumes, no devices and no bind but its own empty scratch
            // directory: a job sees no host path, the engine's socket
            // least of all.
            binds: placement.scratch.map(|bind| vec![bind]),
            blkio_device_read_bps: self.throttles(self.config.policy.io_read_bps),
            blkio_device_write_bps: self.throttles(self.config.policy.io_write_bps),
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: Some(i64::from(spec.cpu_millis) * 1_000_000),
            pids_limit: Some(i64::from(spec.pids)),
            auto_remove: Some(false),
            // A tiny init (the engine's docker-init) is PID 1, so the job's
            // process gets default signal handling (PID 1 ignores SIGTERM
            // without a handler: every stop would wait the full grace) and
            // its orphaned children are reaped.
            init: Some(true),
            // Whatever the daemon's default, a driver the output can be read
            // back from, and no rotation within what we keep (see
            // `log_max_bytes`).
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".to_string()),
                config: Some(HashMap::from([
                    (
                        "max-size".to_string(),
                        format!("{}k", self.config.log_max_bytes.div_ceil(1024).max(1024)),
                    ),
                    ("max-file".to_string(), "1".to_string()),
                ])),
            }),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            user: Some(placement.user),
            cmd: Some(argv),
            // The image's entrypoint must not wrap our argv.
            entrypoint: Some(vec![]),
            env: Some(env),
            labels: Some(labels),
            network_disabled: Some(network.is_none()),
            attach_stdin: Some(false),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            tty: Some(false),
            open_stdin: Some(false),
            host_config: Some(host_config),
            ..Default::default()
        }
    }

    /// A handle for a container found by [`Driver::list`] after a restart,
    /// re-streaming its whole output (the engine keeps it from the start)
    /// into `sink`.
    pub fn reattach(
        &self,
        info: &ContainerInfo,
        deadline: Option<Instant>,
        sink: Option<OutputSink>,
    ) -> Handle {
        let mut handle = Handle::reattach(info, deadline);
        handle.output = sink.map(|sink| self.forward_output(&info.container_id, sink));
        handle
    }

    fn forward_output(&self, name: &str, sink: OutputSink) -> tokio::task::JoinHandle<()> {
        logs::follow(self.docker.clone(), name, sink, self.config.output_drain)
    }

    /// Waits until the container is not running, at most `limit`. Returns
    /// whether it stopped in time.
    async fn wait_not_running(&self, name: &str, limit: Duration) -> Result<bool, ExecError> {
        let deadline = Instant::now() + limit;
        loop {
            let mut stream = self.docker.wait_container(name, None);
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => return Ok(false),
                Ok(Some(Ok(_))) | Ok(Some(Err(DockerError::DockerContainerWaitError { .. }))) => {
                    return Ok(true)
                }
                Ok(Some(Err(e))) if status_of(&e) == Some(404) => return Ok(true),
                Ok(_) => {
                    // The wait request failed or ended early (e.g. the client's
                    // request timeout): look at the state and wait again.
                    if !self.is_running(name).await? {
                        return Ok(true);
                    }
                    if tokio::time::timeout_at(
                        deadline,
                        tokio::time::sleep(Duration::from_millis(200)),
                    )
                    .await
                    .is_err()
                    {
                        return Ok(false);
                    }
                }
            }
        }
    }

    async fn is_running(&self, name: &str) -> Result<bool, ExecError> {
        match self.docker.inspect_container(name, None).await {
            Ok(info) => Ok(info.state.and_then(|s| s.running).unwrap_or(false)),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(engine("inspect", e)),
        }
    }

    async fn kill(&self, name: &str, signal: &str) -> Result<(), ExecError> {
        let options = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        match self.docker.kill_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            // 404: gone; 409: not running. Either way nothing to kill.
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(engine("kill", e)),
        }
    }

    /// SIGTERM, up to `grace` for the exit, then SIGKILL.
    async fn terminate(&self, name: &str, grace: Duration) -> Result<(), ExecError> {
        self.kill(name, "SIGTERM").await?;
        if !self.wait_not_running(name, grace).await? {
            self.kill(name, "SIGKILL").await?;
        }
        Ok(())
    }

    async fn inspect_state(&self, name: &str) -> Result<ContainerState, ExecError> {
        match self.docker.inspect_container(name, None).await {
            Ok(info) => Ok(info.state.unwrap_or_default()),
            Err(e) => Err(engine("inspect", e)),
        }
    }
}

fn outcome_of(
    state: &ContainerState,
    cancelled: bool,
    timed_out: bool,
    fallback: SystemTime,
) -> Outcome {
    let exit_code = state.exit_code;
    let code = exit_code.unwrap_or(-1);
    let reason = if cancelled {
        Reason::Cancelled
    } else if timed_out {
        Reason::TimedOut
    } else if state.oom_killed == Some(true) && code != 0 {
        Reason::OomKilled
    } else if (129..=128 + 64).contains(&code) {
        Reason::Signaled(code - 128)
    } else {
        Reason::Exited(code)
    };
    let started_at = parse_time(state.started_at.as_deref()).unwrap_or(fallback);
    // For very short runs the engine can record FinishedAt a hair before
    // StartedAt; never report a negative run time.
    let finished_at = parse_time(state.finished_at.as_deref())
        .unwrap_or_else(SystemTime::now)
        .max(started_at);
    Outcome {
        exit_code,
        reason,
        started_at,
        finished_at,
    }
}

impl Driver for DockerDriver {
    async fn start(&self, spec: &RunSpec, sink: Option<OutputSink>) -> Result<Started, ExecError> {
        let argv = spec.argv()?;
        let began = SystemTime::now();
        if let Err(message) = self.ensure_image(&spec.image).await? {
            return Ok(Started::Finished(Outcome {
                exit_code: None,
                reason: Reason::ImageUnavailable(message),
                started_at: began,
                finished_at: SystemTime::now(),
            }));
        }
        let refused = |why: String| {
            Ok(Started::Finished(Outcome {
                exit_code: None,
                reason: Reason::Refused(why),
                started_at: began,
                finished_at: SystemTime::now(),
            }))
        };
        let user = match self.config.policy.run_as(spec.user.as_deref()) {
            Ok(user) => user,
            Err(why) => return refused(why),
        };
        let network = match spec.network {
            true => match self.job_network().await {
                Ok(network) => Some(network),
                Err(why) => return refused(why),
            },
            false => None,
        };
        let name = container_name(&spec.job_id, spec.attempt);
        let scratch = self.scratch_for(&name, &user).await?;
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let placement = Placement {
            user,
            network: network.as_ref(),
            scratch,
        };
        let body = self.create_body(spec, argv, placement);
        let created = match self.docker.create_container(Some(options), body).await {
            Ok(created) => created,
            // Its scratch directory is the other container's now: kept.
            Err(e) if status_of(&e) == Some(409) => return Err(ExecError::AlreadyExists(name)),
            Err(e) if status_of(&e) == Some(404) => {
                self.disk.release(&name);
                // The image vanished between the check and the create.
                return Ok(Started::Finished(Outcome {
                    exit_code: None,
                    reason: Reason::ImageUnavailable(e.to_string()),
                    started_at: began,
                    finished_at: SystemTime::now(),
                }));
            }
            Err(e) => {
                self.disk.release(&name);
                return Err(engine("create", e));
            }
        };
        let deadline = spec.timeout.map(|t| Instant::now() + t);
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            // A start failure that left an exit code (e.g. 127: no such
            // executable) is the job's outcome; anything else is ours.
            let state = self.inspect_state(&created.id).await.ok();
            let _ = self.remove(&created.id).await;
            return match state {
                Some(state) if state.exit_code.is_some_and(|c| c != 0) => {
                    Ok(Started::Finished(outcome_of(&state, false, false, began)))
                }
                _ => Err(engine("start", e)),
            };
        }
        let output = sink.map(|sink| self.forward_output(&created.id, sink));
        Ok(Started::Running(Handle {
            container_id: created.id,
            name,
            job_id: spec.job_id.clone(),
            attempt: spec.attempt,
            deadline,
            output,
            remove_after_wait: true,
        }))
    }

    async fn wait(&self, mut handle: Handle) -> Result<Outcome, ExecError> {
        let id = handle.container_id.clone();
        let mut timed_out = false;
        if let Some(deadline) = handle.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.wait_not_running(&id, left).await? {
                timed_out = true;
                self.terminate(&id, self.config.timeout_grace).await?;
            }
        }
        // Unbounded from here on (the kill above, or no timeout).
        while !self
            .wait_not_running(&id, Duration::from_secs(3600))
            .await?
        {}
        let mut state = self.inspect_state(&id).await?;
        // The engine learns of an OOM kill from a separate event that can
        // arrive just after the exit: a SIGKILLed job Drover did not kill
        // gets a moment for that flag to show up, so it is reported as
        // OOM_KILLED rather than as signal 9.
        let killed_by_someone = state.exit_code == Some(137) && !timed_out;
        for _ in 0..OOM_FLAG_CHECKS {
            if !killed_by_someone || state.oom_killed == Some(true) {
                break;
            }
            tokio::time::sleep(OOM_FLAG_PAUSE).await;
            state = self.inspect_state(&id).await?;
        }
        if let Some(task) = handle.output.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(self.config.output_drain, task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        let cancelled = self.cancelled().remove(&handle.name);
        let outcome = outcome_of(&state, cancelled, timed_out, SystemTime::now());
        if handle.remove_after_wait {
            self.remove(&id).await?;
        }
        Ok(outcome)
    }

    async fn stop(&self, job_id: &str, attempt: u32, grace: Duration) -> Result<(), ExecError> {
        let name = container_name(job_id, attempt);
        if !self.is_running(&name).await? {
            return Ok(());
        }
        self.cancelled().insert(name.clone());
        self.terminate(&name, grace).await
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>, ExecError> {
        let owner: Vec<String> = self
            .config
            .owner_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut wanted = vec![LABEL_JOB];
        wanted.extend(owner.iter().map(String::as_str));
        let filters = HashMap::from([("label", wanted)]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| engine("list", e))?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                let job_id = labels.get(LABEL_JOB)?.clone();
                let attempt = labels.get(LABEL_ATTEMPT).and_then(|a| a.parse().ok());
                let name = c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default();
                let running = matches!(
                    c.state,
                    Some(bollard::models::ContainerSummaryStateEnum::RUNNING)
                );
                Some(ContainerInfo {
                    container_id: c.id?,
                    name,
                    job_id,
                    attempt,
                    running,
                })
            })
            .collect())
    }

    async fn remove(&self, container: &str) -> Result<(), ExecError> {
        // `container` may be an id; the scratch directory goes by name.
        let name = match self.config.scratch_dir.is_some() {
            true => match self.docker.inspect_container(container, None).await {
                Ok(info) => info.name.map(|n| n.trim_start_matches('/').to_string()),
                Err(_) => Some(container.to_string()),
            },
            false => None,
        };
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(container, Some(options)).await {
            // 404: already gone; 409: removal already in progress.
            Ok(()) => {}
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => {}
            Err(e) => return Err(engine("remove", e)),
        }
        if let Some(name) = name {
            self.disk.release(&name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_timestamps_parse() {
        let t = parse_time(Some("2026-11-23T20:19:36.123456789Z"));
        let base = parse_time(Some("2026-11-23T20:19:36Z"));
        assert!(t.is_some() && base.is_some());
        assert_eq!(
            t.zip(base).and_then(|(t, b)| t.duration_since(b).ok()),
            Some(Duration::from_nanos(123_456_789))
        );
        assert_eq!(parse_time(Some("0001-01-01T00:00:00Z")), None);
    }

    #[test]
    fn reasons_from_engine_state() {
        let now = SystemTime::now();
        let state = |code: i64, oom: bool| ContainerState {
            exit_code: Some(code),
            oom_killed: Some(oom),
            ..Default::default()
        };
        assert_eq!(
            outcome_of(&state(0, false), false, false, now).reason,
            Reason::Exited(0)
        );
        assert_eq!(
            outcome_of(&state(137, true), false, false, now).reason,
            Reason::OomKilled
        );
        assert_eq!(
            outcome_of(&state(0, true), false, false, now).reason,
            Reason::Exited(0)
        );
        assert_eq!(
            outcome_of(&state(143, false), false, false, now).reason,
            Reason::Signaled(15)
        );
        assert_eq!(
            outcome_of(&state(137, false), false, true, now).reason,
            Reason::TimedOut
        );
        assert_eq!(
            outcome_of(&state(137, false), true, true, now).reason,
            Reason::Cancelled
        );
    }
}
