//! End-to-end benchmarks of running jobs: real `drover agent` processes with
//! the Docker executor enabled, real containers, everything on loopback and
//! on this machine's Docker engine.
//!
//! Three phases, each on a fresh cluster in its own temp dir, with the
//! default Raft and scheduler settings (what ships is what is measured):
//!
//! * `latency` (1 node): wall time from `SubmitJob` to seeing the job
//!   SUCCEEDED, for a `true` job, against `docker run --rm IMAGE true`
//!   spawned as a process in the same run. The two (and, unless turned off,
//!   a third: `docker run` with the flags Drover's containers get) are
//!   interleaved, the order rotating every round, N rounds. End detection:
//!   `StreamJobOutput { follow: true }` until the stream ends (that is when
//!   the attempt's output closes), then `GetJob` every 5 ms until the job is
//!   terminal (the result is committed a moment after the output closes).
//!   Drover's breakdown comes from the job record's timestamps.
//! * `throughput` (3 nodes, each offering plenty of CPU and memory): M
//!   `true` jobs submitted as fast as possible by C concurrent clients (one
//!   connection each, all to the leader, closed loop), then `ListJobs` on the
//!   leader every 50 ms until every one is terminal. Reports jobs/s from the
//!   first submit to the poll that saw the last one finished, queue-to-start
//!   and placement latencies from the records, and jobs per node.
//! * `output` (1 node, `executor.output_cap_bytes` above the output size):
//!   a job writing S MiB to stdout (`head -c BYTES /dev/zero | tr '\0' x`:
//!   printable, because Docker's json-file log driver writes a NUL byte as
//!   the six characters `\u0000`), `GetJob` every 20 ms until terminal,
//!   against `docker run --rm IMAGE sh -c '…' > /dev/null`, interleaved, R
//!   rounds. Afterwards the stored output is paged through `GetJobOutput`
//!   and its size, content and notices are checked. Each round also runs an
//!   untimed engine control: the same command under `docker run -d`, read
//!   with `docker logs -f` (the engine API Drover's driver reads output
//!   with), to tell the engine's behaviour from Drover's.
//!
//! Every node of a phase runs in cluster `<prefix>-<phase>`, so each
//! container it creates carries the label `drover.cluster=<prefix>-<phase>`;
//! the baseline containers get `drover.cluster=<prefix>-baseline`. All of
//! them are removed by label when the phase ends (and by `benches/jobs.sh`
//! if the bench itself is killed). Agents are killed, temp dirs removed.
//!
//! Environment (all optional):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `BENCH_JOBS_PHASES` | `latency,throughput,output` | phases, in order |
//! | `BENCH_JOBS_LATENCY_RUNS` | 20 | rounds of the latency phase |
//! | `BENCH_JOBS_LOCKED_BASELINE` | 1 | 0 leaves out `docker run` with Drover's flags |
//! | `BENCH_JOBS_COUNT` | 200 | jobs of the throughput phase |
//! | `BENCH_JOBS_CLIENTS` | 4 | concurrent submitting clients |
//! | `BENCH_JOBS_OUTPUT_MIB` | 200 | output of the output phase's job |
//! | `BENCH_JOBS_OUTPUT_RUNS` | 3 | rounds of the output phase |
//! | `BENCH_JOBS_CLUSTER_PREFIX` | `bench-jobs-<pid>` | cluster ids (and container labels) |
//! | `BENCH_JOBS_TLS` | 0 | 1 runs every agent with mutual TLS on every port (certificates by `drover tls`; `benches/tls.sh`) |
//! | `DROVER_JOB_IMAGE` | `drover-job:latest` | the job image (`bash tests/build-job-image.sh`) |
//! | `DROVER_BIN` | the release `drover` cargo built for this bench | agent binary |
//! | `BENCH_RESULTS` | unset | also write the markdown report to this file |
//! | `BENCH_LOG_DIR` | unset | keep every agent log there |
//!
//! Temp dirs honour `TMPDIR`. The markdown report goes to stdout, progress
//! to stderr. The exit status is 1 when a phase failed (the report still
//! says how far it got), 2 for bad settings.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    connect, connect_tls, free_port, make_certs, scan_log, strip_ansi, tls_section, which, LogScan,
    Proc,
};
use drover::proto::v1 as pb;
use drover::proto::v1::drover_client::DroverClient;
use tonic::transport::Channel;

/// Deadline of one unary call (Drover's default propose timeout is 10 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(12);
/// Leader elected, every node READY and a first job SUCCEEDED, at most.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// One short job (or one `docker run` of it), at most.
const SHORT_JOB_TIMEOUT: Duration = Duration::from_secs(60);
/// Every job of the throughput phase finished, at most, from the first submit.
const THROUGHPUT_TIMEOUT: Duration = Duration::from_secs(240);
/// One run of the big-output job (or its `docker run`), at most.
const OUTPUT_JOB_TIMEOUT: Duration = Duration::from_secs(180);
/// Paging through one job's stored output, at most.
const OUTPUT_READ_TIMEOUT: Duration = Duration::from_secs(120);
/// `GetJob` interval after the output stream of a latency job ended.
const LATENCY_POLL: Duration = Duration::from_millis(5);
/// `ListJobs` interval while the throughput jobs run.
const THROUGHPUT_POLL: Duration = Duration::from_millis(50);
/// `GetJob` interval while the big-output job runs.
const OUTPUT_POLL: Duration = Duration::from_millis(20);
/// Bytes asked per `GetJobOutput` page (the server caps pages at 4 MiB; the
/// client's default decoding limit is 4 MiB too).
const OUTPUT_PAGE_BYTES: u32 = 2 << 20;
/// `docker rm -f` of a phase's leftovers, at most.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Capacity each node of the throughput cluster offers: room for 1000
/// default jobs (100 millicores, 128 MiB) per node, so capacity never limits.
const THROUGHPUT_NODE_CPU_MILLIS: u64 = 100_000;
const THROUGHPUT_NODE_MEMORY_MIB: u64 = 128 * 1024;
/// CPU of the big-output job: both cores, so the job's own cgroup is not
/// what limits it (the `docker run` baseline has no limit).
const OUTPUT_JOB_CPU_MILLIS: u32 = 2000;

// ---------------------------------------------------------------------------
// Settings

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Latency,
    Throughput,
    Output,
}

impl Phase {
    fn parse(s: &str) -> Result<Phase, String> {
        match s.trim() {
            "latency" => Ok(Phase::Latency),
            "throughput" => Ok(Phase::Throughput),
            "output" => Ok(Phase::Output),
            other => Err(format!(
                "BENCH_JOBS_PHASES: unknown phase {other:?} (latency, throughput, output)"
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Phase::Latency => "latency",
            Phase::Throughput => "throughput",
            Phase::Output => "output",
        }
    }
}

struct Settings {
    phases: Vec<Phase>,
    latency_runs: usize,
    locked_baseline: bool,
    jobs: usize,
    clients: usize,
    output_mib: u64,
    output_runs: usize,
    prefix: String,
    image: String,
    drover_bin: PathBuf,
    docker_bin: PathBuf,
    results_path: Option<PathBuf>,
    log_dir: Option<PathBuf>,
    /// Mutual TLS on every port of every agent.
    tls: bool,
}

fn env_count(name: &str, default: usize, max: usize) -> Result<usize, String> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(text) => text
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| format!("{name}={text:?} is not a count in 1..={max}")),
    }
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        let phases = std::env::var("BENCH_JOBS_PHASES")
            .unwrap_or_else(|_| "latency,throughput,output".into())
            .split(',')
            .map(Phase::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let prefix = std::env::var("BENCH_JOBS_CLUSTER_PREFIX")
            .unwrap_or_else(|_| format!("bench-jobs-{}", std::process::id()));
        if prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "BENCH_JOBS_CLUSTER_PREFIX={prefix:?} must be non-empty [A-Za-z0-9_.-]"
            ));
        }
        let drover_bin = std::env::var_os("DROVER_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_drover")));
        if !drover_bin.is_file() {
            return Err(format!(
                "drover binary not found at {} (cargo build --release, or set DROVER_BIN)",
                drover_bin.display()
            ));
        }
        let docker_bin = which("docker", &["/usr/bin/docker", "/usr/local/bin/docker"])
            .ok_or("the docker CLI is not installed (needed for the baselines and cleanup)")?;
        Ok(Settings {
            phases,
            latency_runs: env_count("BENCH_JOBS_LATENCY_RUNS", 20, 1000)?,
            locked_baseline: std::env::var("BENCH_JOBS_LOCKED_BASELINE")
                .map_or(true, |v| v.trim() != "0"),
            jobs: env_count("BENCH_JOBS_COUNT", 200, 5000)?,
            clients: env_count("BENCH_JOBS_CLIENTS", 4, 256)?,
            output_mib: env_count("BENCH_JOBS_OUTPUT_MIB", 200, 4096)? as u64,
            output_runs: env_count("BENCH_JOBS_OUTPUT_RUNS", 3, 50)?,
            prefix,
            image: std::env::var("DROVER_JOB_IMAGE").unwrap_or_else(|_| "drover-job:latest".into()),
            drover_bin,
            docker_bin,
            results_path: std::env::var_os("BENCH_RESULTS").map(PathBuf::from),
            log_dir: std::env::var_os("BENCH_LOG_DIR").map(PathBuf::from),
            tls: std::env::var("BENCH_JOBS_TLS").is_ok_and(|v| v.trim() == "1"),
        })
    }

    fn cluster_id(&self, phase: Phase) -> String {
        format!("{}-{}", self.prefix, phase.name())
    }

    fn baseline_label(&self) -> String {
        format!("drover.cluster={}-baseline", self.prefix)
    }

    fn output_bytes(&self) -> u64 {
        self.output_mib << 20
    }

    /// The shell command of the big-output job (and of its baseline).
    fn output_command(&self) -> String {
        format!("head -c {} /dev/zero | tr '\\0' x", self.output_bytes())
    }
}

// ---------------------------------------------------------------------------
// Small helpers

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    Some(sorted[rank - 1])
}

/// Summary of a sample: nearest-rank percentiles.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    n: usize,
    p50: Option<f64>,
    p90: Option<f64>,
    p99: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
}

fn stats(mut values: Vec<f64>) -> Stats {
    values.sort_by(f64::total_cmp);
    Stats {
        n: values.len(),
        p50: percentile(&values, 0.5),
        p90: percentile(&values, 0.9),
        p99: percentile(&values, 0.99),
        min: values.first().copied(),
        max: values.last().copied(),
    }
}

fn fmt_num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
        None => "–".to_string(),
    }
}

fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "–".to_string(),
    }
}

fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "SUCCEEDED" | "FAILED" | "TIMED_OUT" | "CANCELLED" | "LOST"
    )
}

/// One line about how a job ended, for error messages.
fn describe_end(job: &pb::Job) -> String {
    match job.attempts.last() {
        Some(a) => format!(
            "job {} ended {} (attempt {} on node {}: reason {}, exit {:?}, {:?})",
            job.id, job.state, a.number, a.node, a.reason, a.exit_code, a.message
        ),
        None => format!("job {} ended {} without an attempt", job.id, job.state),
    }
}

fn shell_job(command: &str) -> pb::JobSpec {
    pb::JobSpec {
        command: command.to_string(),
        ..Default::default()
    }
}

async fn submit(client: &mut DroverClient<Channel>, spec: pb::JobSpec) -> Result<String, String> {
    let response = client
        .submit_job(pb::SubmitJobRequest { spec: Some(spec) })
        .await
        .map_err(|s| format!("SubmitJob: {:?}: {}", s.code(), s.message()))?;
    response
        .into_inner()
        .job
        .map(|j| j.id)
        .ok_or_else(|| "SubmitJob answered without a job".to_string())
}

async fn get_job(client: &mut DroverClient<Channel>, id: &str) -> Result<pb::Job, String> {
    client
        .get_job(pb::GetJobRequest {
            id: id.to_string(),
            consistent: false,
        })
        .await
        .map_err(|s| format!("GetJob {id}: {:?}: {}", s.code(), s.message()))?
        .into_inner()
        .job
        .ok_or_else(|| format!("GetJob {id} answered without a job"))
}

/// Polls `GetJob` every `interval` until the job is terminal; returns it and
/// when that was first seen.
async fn poll_until_terminal(
    client: &mut DroverClient<Channel>,
    id: &str,
    interval: Duration,
    deadline: Instant,
) -> Result<(pb::Job, Instant), String> {
    loop {
        let job = get_job(client, id).await?;
        let now = Instant::now();
        if is_terminal(&job.state) {
            return Ok((job, now));
        }
        if now > deadline {
            return Err(format!("job {id} still {} at its deadline", job.state));
        }
        tokio::time::sleep(interval).await;
    }
}

/// What a process run by [`run_process`] did.
struct Ran {
    /// From just before the spawn to its exit.
    elapsed: Duration,
    /// Bytes it wrote to stdout (0 unless counted).
    stdout_bytes: u64,
    /// The first bytes of its stdout, as text (empty unless counted).
    stdout_head: String,
}

/// Where a child's stdout goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stdout {
    /// `> /dev/null`.
    Null,
    /// A pipe the bench reads to its end, counting the bytes.
    Count,
}

/// Bytes of a counted stdout kept as text.
const STDOUT_HEAD: usize = 256;

/// Runs a process to its end (at most `limit`, then SIGKILL) with stdin
/// closed and stderr captured; fails unless it exits 0.
async fn run_process(
    program: &Path,
    args: &[String],
    stdout: Stdout,
    limit: Duration,
) -> Result<Ran, String> {
    let what = format!(
        "{} {}",
        program.display(),
        args.iter()
            .map(|a| if a.len() > 60 { "…" } else { a.as_str() })
            .collect::<Vec<_>>()
            .join(" ")
    );
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(match stdout {
            Stdout::Null => Stdio::null(),
            Stdout::Count => Stdio::piped(),
        })
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {what}: {e}"))?;
    let pid = child.id();
    let out_pipe = child.stdout.take();
    let err_pipe = child.stderr.take();
    // The blocking reads and wait run on their own threads; both pipes are
    // read to their end before the wait, so a chatty child cannot fill a
    // pipe and hang.
    let mut waiter = tokio::task::spawn_blocking(move || {
        let stderr_reader = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = err_pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        });
        let mut bytes = 0u64;
        let mut head = Vec::new();
        let mut read_error = None;
        if let Some(mut pipe) = out_pipe {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        bytes += n as u64;
                        let room = STDOUT_HEAD.saturating_sub(head.len());
                        head.extend_from_slice(&buf[..n.min(room)]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        read_error = Some(e);
                        break;
                    }
                }
            }
        }
        let stderr_text = stderr_reader.join().unwrap_or_default();
        let status = child.wait();
        (status, Instant::now(), bytes, head, read_error, stderr_text)
    });
    let (status, ended, bytes, head, read_error, stderr_text) =
        match tokio::time::timeout(limit, &mut waiter).await {
            Ok(joined) => joined.map_err(|e| format!("waiting for {what}: {e}"))?,
            Err(_) => {
                // Not reaped yet (the waiter has not returned), so the pid
                // is still this child's.
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let _ = tokio::time::timeout(Duration::from_secs(10), waiter).await;
                return Err(format!("{what} did not end within {limit:?}; killed"));
            }
        };
    let status = status.map_err(|e| format!("wait for {what}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "{what} failed ({status}): {}",
            stderr_text.trim().chars().take(400).collect::<String>()
        ));
    }
    if let Some(e) = read_error {
        return Err(format!("reading the stdout of {what}: {e}"));
    }
    Ok(Ran {
        elapsed: ended.duration_since(started),
        stdout_bytes: bytes,
        stdout_head: String::from_utf8_lossy(&head).into_owned(),
    })
}

/// Wall time of a process run with stdout to /dev/null.
async fn run_timed(program: &Path, args: &[String], limit: Duration) -> Result<Duration, String> {
    run_process(program, args, Stdout::Null, limit)
        .await
        .map(|r| r.elapsed)
}

/// Containers labelled `drover.cluster=<cluster>`, running or not; removes
/// them. Returns how many there were.
fn remove_containers(docker: &Path, label: &str) -> Result<usize, String> {
    let listed = Command::new(docker)
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label={label}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("docker ps: {e}"))?;
    if !listed.status.success() {
        return Err(format!(
            "docker ps --filter label={label}: {}",
            String::from_utf8_lossy(&listed.stderr).trim()
        ));
    }
    let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        return Ok(0);
    }
    let mut child = Command::new(docker)
        .args(["rm", "-f"])
        .args(&ids)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("docker rm: {e}"))?;
    let deadline = Instant::now() + CLEANUP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(ids.len()),
            Ok(Some(status)) => return Err(format!("docker rm -f of {label}: {status}")),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "docker rm -f of {label} took over {CLEANUP_TIMEOUT:?}"
                ));
            }
            Err(e) => return Err(format!("docker rm: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------
// The cluster under test

/// What each node's executor offers.
#[derive(Clone, Copy)]
struct Executor {
    cpu_millis: u64,
    memory_mib: u64,
    output_cap_bytes: u64,
}

/// Agents of one phase. Dropping it kills them and removes every container
/// labelled with its cluster id; the temp dir goes last.
struct JobCluster {
    id: String,
    procs: Vec<Proc>,
    urls: Vec<String>,
    leader: usize,
    docker_bin: PathBuf,
    /// With TLS: the CA, node and `client-bench` certificates.
    tls: Option<PathBuf>,
    // Declared last: dropped after the processes are killed.
    dir: tempfile::TempDir,
}

impl JobCluster {
    async fn start(
        settings: &Settings,
        phase: Phase,
        nodes: usize,
        executor: Executor,
    ) -> Result<JobCluster, String> {
        let dir = tempfile::Builder::new()
            .prefix("drover-bench-jobs-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let mut cluster = JobCluster {
            id: settings.cluster_id(phase),
            procs: Vec::new(),
            urls: Vec::new(),
            leader: 0,
            docker_bin: settings.docker_bin.clone(),
            tls: None,
            dir,
        };
        let ports: Vec<(u16, u16)> = (0..nodes).map(|_| (free_port(), free_port())).collect();
        let root = cluster.dir.path().to_path_buf();
        if settings.tls {
            let tls = root.join("tls");
            make_certs(&settings.drover_bin, &tls, &cluster.id, nodes)?;
            cluster.tls = Some(tls);
        }
        for i in 0..nodes {
            let config = write_config(
                &root,
                &cluster.id,
                i,
                &ports,
                &settings.image,
                executor,
                cluster.tls.as_deref(),
            )?;
            let name = format!("node{}", i + 1);
            let args = vec![
                "agent".to_string(),
                "--config".to_string(),
                config.display().to_string(),
            ];
            let log_path = root.join(format!("{name}.log"));
            let proc = Proc::spawn(name, &settings.drover_bin, &args, log_path, None)?;
            cluster.procs.push(proc);
            let scheme = if settings.tls { "https" } else { "http" };
            cluster
                .urls
                .push(format!("{scheme}://127.0.0.1:{}", ports[i].0));
        }
        cluster.wait_ready(nodes).await?;
        Ok(cluster)
    }

    fn check_alive(&mut self) -> Result<(), String> {
        for p in &mut self.procs {
            if let Some(note) = p.exited() {
                let text = std::fs::read_to_string(&p.log_path).unwrap_or_default();
                let cause = text
                    .lines()
                    .map(strip_ansi)
                    .find(|l| l.contains("panicked") || l.contains(" ERROR "))
                    .unwrap_or_default();
                return Err(format!("{note}: {cause}\nlog tail:\n{}", p.log_tail(20)));
            }
        }
        Ok(())
    }

    async fn client(&self, i: usize) -> Result<DroverClient<Channel>, String> {
        let channel = match &self.tls {
            Some(dir) => connect_tls(&self.urls[i], dir, REQUEST_TIMEOUT).await?,
            None => connect(&self.urls[i], REQUEST_TIMEOUT).await?,
        };
        Ok(DroverClient::new(channel))
    }

    async fn leader_client(&self) -> Result<DroverClient<Channel>, String> {
        self.client(self.leader).await
    }

    /// A leader, every node READY in its node table, then one `true` job
    /// run to SUCCEEDED (so the executor path is warm and known to work).
    async fn wait_ready(&mut self, nodes: usize) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no answer yet");
        loop {
            self.check_alive()?;
            if let Some(leader) = self.find_leader(&mut last).await {
                self.leader = leader;
                match self.ready_nodes().await {
                    Ok(ready) if ready == nodes => break,
                    Ok(ready) => last = format!("{ready} of {nodes} nodes READY"),
                    Err(e) => last = e,
                }
            }
            if Instant::now() > deadline {
                return Err(self.not_ready(&last));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut client = self.leader_client().await?;
        let id = submit(&mut client, shell_job("true")).await?;
        let (job, _) = poll_until_terminal(&mut client, &id, Duration::from_millis(20), deadline)
            .await
            .map_err(|e| self.not_ready(&format!("warm-up job: {e}")))?;
        if job.state != "SUCCEEDED" {
            return Err(self.not_ready(&format!("warm-up {}", describe_end(&job))));
        }
        for p in &mut self.procs {
            p.log_offset = std::fs::metadata(&p.log_path).map_or(0, |m| m.len() as usize);
        }
        Ok(())
    }

    async fn find_leader(&self, last: &mut String) -> Option<usize> {
        for i in 0..self.urls.len() {
            let status = match self.client(i).await {
                Ok(mut c) => c.get_cluster_status(pb::GetClusterStatusRequest {}).await,
                Err(e) => {
                    *last = e;
                    continue;
                }
            };
            match status {
                Ok(s) if s.get_ref().role == "leader" => return Some(i),
                Ok(_) => *last = "no leader yet".into(),
                Err(s) => *last = format!("status of node {}: {}", i + 1, s.message()),
            }
        }
        None
    }

    async fn ready_nodes(&self) -> Result<usize, String> {
        let nodes = self
            .leader_client()
            .await?
            .list_nodes(pb::ListNodesRequest { consistent: false })
            .await
            .map_err(|s| format!("ListNodes: {}", s.message()))?
            .into_inner()
            .nodes;
        Ok(nodes.iter().filter(|n| n.status == "READY").count())
    }

    fn not_ready(&self, last: &str) -> String {
        let tails: Vec<String> = self
            .procs
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.name, p.log_tail(15)))
            .collect();
        format!(
            "not ready within {READY_TIMEOUT:?} (last: {last})\n{}",
            tails.join("\n")
        )
    }

    fn scan_logs(&self) -> Vec<LogScan> {
        self.procs.iter().map(scan_log).collect()
    }

    fn keep_logs(&self, dir: &Path, phase: Phase) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("[jobs] cannot create {}: {e}", dir.display());
            return;
        }
        for p in &self.procs {
            let target = dir.join(format!("jobs-{}-{}.log", phase.name(), p.name));
            if let Err(e) = std::fs::copy(&p.log_path, &target) {
                eprintln!("[jobs] cannot keep {}: {e}", p.log_path.display());
            }
        }
    }
}

impl Drop for JobCluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.stop();
        }
        // The containers outlive their agents by design (reattach).
        match remove_containers(&self.docker_bin, &format!("drover.cluster={}", self.id)) {
            Ok(0) => {}
            Ok(n) => eprintln!("[jobs] removed {n} leftover containers of {}", self.id),
            Err(e) => eprintln!("[jobs] cleanup of {}: {e}", self.id),
        }
    }
}

fn write_config(
    root: &Path,
    cluster_id: &str,
    i: usize,
    ports: &[(u16, u16)],
    image: &str,
    executor: Executor,
    tls: Option<&Path>,
) -> Result<PathBuf, String> {
    let id = i + 1;
    let (api, raft) = ports[i];
    let mut text = format!(
        "node_id = {id}\ncluster_id = \"{cluster_id}\"\ndata_dir = \"{dir}\"\n\n\
         [listen]\napi = \"127.0.0.1:{api}\"\nraft = \"127.0.0.1:{raft}\"\n\n",
        dir = root.join(format!("node{id}")).display(),
    );
    for (j, (api, raft)) in ports.iter().enumerate() {
        let _ = write!(
            text,
            "[[initial_members]]\nid = {}\nraft_addr = \"127.0.0.1:{raft}\"\napi_addr = \"127.0.0.1:{api}\"\n\n",
            j + 1
        );
    }
    // No [raft] or [scheduler] section: the defaults are what we measure.
    let _ = write!(
        text,
        "[log]\nlevel = \"info\"\nformat = \"text\"\n\n\
         [executor]\nenabled = true\ndefault_image = \"{image}\"\ncpu_millis = {}\n\
         memory_mib = {}\noutput_cap_bytes = {}\n",
        executor.cpu_millis, executor.memory_mib, executor.output_cap_bytes
    );
    if let Some(dir) = tls {
        text += &tls_section(dir, id);
    }
    let path = root.join(format!("node{id}.toml"));
    std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(path)
}

/// What a phase left for the report besides its numbers.
#[derive(Default)]
struct PhaseNotes {
    failure: Option<String>,
    logs: Vec<LogScan>,
}

impl PhaseNotes {
    fn fail(&mut self, phase: Phase, e: String) {
        eprintln!("[jobs] {}: {e}", phase.name());
        if self.failure.is_none() {
            self.failure = Some(e);
        }
    }

    fn finish(&mut self, cluster: &JobCluster, settings: &Settings, phase: Phase) {
        self.logs = cluster.scan_logs();
        if let Some(dir) = &settings.log_dir {
            cluster.keep_logs(dir, phase);
        }
    }
}

// ---------------------------------------------------------------------------
// (a) latency of one short job

/// One Drover run of the latency phase.
struct DroverSample {
    /// SubmitJob sent -> SUCCEEDED seen (monotonic clock).
    total: Duration,
    /// SubmitJob round trip.
    submit_rpc: Duration,
    /// SubmitJob sent -> the output stream ended.
    stream_end: Duration,
    /// Unix ms when SubmitJob was sent and when SUCCEEDED was seen.
    sent_ms: i64,
    seen_ms: i64,
    job: pb::Job,
}

impl DroverSample {
    /// The record's segments: sent -> submitted -> assigned -> started ->
    /// finished -> seen, in ms (wall clock, one machine). They add up to
    /// `seen_ms - sent_ms`.
    fn segments(&self) -> Option<[i64; 5]> {
        let a = self.job.attempts.last()?;
        Some([
            self.job.submitted_at_ms - self.sent_ms,
            a.assigned_at_ms - self.job.submitted_at_ms,
            a.started_at_ms - a.assigned_at_ms,
            a.finished_at_ms - a.started_at_ms,
            self.seen_ms - a.finished_at_ms,
        ])
    }
}

const SEGMENTS: [&str; 5] = [
    "client sends SubmitJob → submitted_at (leader stamps the proposal)",
    "submitted_at → assigned_at (commit, apply, scheduler pass; stamped when the placement is proposed)",
    "assigned_at → started_at (placement committed and applied, container created and started; stamped after the start call returns)",
    "started_at → finished_at (the engine's FinishedAt; can be below 0: `true` may exit before the start call returns)",
    "finished_at → SUCCEEDED seen (exit noticed, output drained, Finished committed, client's next look)",
];

async fn drover_once(client: &mut DroverClient<Channel>) -> Result<DroverSample, String> {
    let sent = SystemTime::now();
    let t0 = Instant::now();
    let deadline = t0 + SHORT_JOB_TIMEOUT;
    let id = submit(client, shell_job("true")).await?;
    let submit_rpc = t0.elapsed();
    let follow = async {
        let mut stream = client
            .stream_job_output(pb::StreamJobOutputRequest {
                id: id.clone(),
                attempt: 0,
                follow: true,
                after_seq: None,
            })
            .await
            .map_err(|s| format!("StreamJobOutput: {}", s.message()))?
            .into_inner();
        while stream
            .message()
            .await
            .map_err(|s| format!("StreamJobOutput: {}", s.message()))?
            .is_some()
        {}
        Ok::<(), String>(())
    };
    tokio::time::timeout_at(deadline.into(), follow)
        .await
        .map_err(|_| format!("job {id}: output stream still open after {SHORT_JOB_TIMEOUT:?}"))??;
    let stream_end = t0.elapsed();
    let (job, seen) = poll_until_terminal(client, &id, LATENCY_POLL, deadline).await?;
    if job.state != "SUCCEEDED" {
        return Err(describe_end(&job));
    }
    let total = seen.duration_since(t0);
    let sent_ms = unix_ms(sent);
    Ok(DroverSample {
        total,
        submit_rpc,
        stream_end,
        sent_ms,
        seen_ms: sent_ms + total.as_millis() as i64,
        job,
    })
}

/// The flags Drover's docker driver gives a default job's container.
fn locked_flags() -> Vec<String> {
    [
        "--init",
        "--network",
        "none",
        "--cap-drop",
        "ALL",
        "--read-only",
        "--tmpfs",
        "/tmp:rw,nosuid,nodev,size=64m",
        "--security-opt",
        "no-new-privileges",
        "--memory",
        "128m",
        "--memory-swap",
        "128m",
        "--cpus",
        "0.1",
        "--pids-limit",
        "256",
    ]
    .into_iter()
    .map(str::to_string)
    .collect()
}

fn docker_run_args(settings: &Settings, flags: &[String], command: &[&str]) -> Vec<String> {
    let mut args = vec![
        "run".to_string(),
        "--rm".to_string(),
        "--label".to_string(),
        settings.baseline_label(),
    ];
    args.extend(flags.iter().cloned());
    args.push(settings.image.clone());
    args.extend(command.iter().map(|s| s.to_string()));
    args
}

#[derive(Default)]
struct LatencyResult {
    drover: Vec<DroverSample>,
    docker: Vec<Duration>,
    locked: Vec<Duration>,
    errors: Vec<String>,
    notes: PhaseNotes,
}

async fn run_latency(settings: &Settings) -> LatencyResult {
    let phase = Phase::Latency;
    let mut result = LatencyResult::default();
    eprintln!("[jobs] latency: starting a 1-node cluster");
    let executor = Executor {
        cpu_millis: 0,
        memory_mib: 0,
        output_cap_bytes: 64 << 20,
    };
    let mut cluster = match JobCluster::start(settings, phase, 1, executor).await {
        Ok(c) => c,
        Err(e) => {
            result.notes.fail(phase, format!("did not start: {e}"));
            return result;
        }
    };
    let plain = docker_run_args(settings, &[], &["true"]);
    let locked = docker_run_args(settings, &locked_flags(), &["true"]);
    let mut client = match cluster.leader_client().await {
        Ok(c) => c,
        Err(e) => {
            result.notes.fail(phase, e);
            return result;
        }
    };
    // Unmeasured warm-up of the baselines (the cluster ran one job already).
    for args in [&plain, &locked] {
        if let Err(e) = run_timed(&settings.docker_bin, args, SHORT_JOB_TIMEOUT).await {
            result.notes.fail(phase, format!("baseline warm-up: {e}"));
            return result;
        }
    }
    let kinds = if settings.locked_baseline { 3 } else { 2 };
    for round in 0..settings.latency_runs {
        // Rotate who goes first, so neither side always runs right after
        // the other's container teardown.
        for k in 0..kinds {
            match (round + k) % kinds {
                0 => match drover_once(&mut client).await {
                    Ok(s) => result.drover.push(s),
                    Err(e) => result.errors.push(format!("drover: {e}")),
                },
                1 => match run_timed(&settings.docker_bin, &plain, SHORT_JOB_TIMEOUT).await {
                    Ok(d) => result.docker.push(d),
                    Err(e) => result.errors.push(format!("docker: {e}")),
                },
                _ => match run_timed(&settings.docker_bin, &locked, SHORT_JOB_TIMEOUT).await {
                    Ok(d) => result.locked.push(d),
                    Err(e) => result.errors.push(format!("docker (Drover's flags): {e}")),
                },
            }
        }
        if let Err(e) = cluster.check_alive() {
            result.notes.fail(phase, e);
            break;
        }
        if result.errors.len() > settings.latency_runs {
            result
                .notes
                .fail(phase, "too many errors, giving up".into());
            break;
        }
        if let (Some(d), Some(b)) = (result.drover.last(), result.docker.last()) {
            eprintln!(
                "[jobs] latency {}/{}: drover {:.0} ms, docker run {:.0} ms",
                round + 1,
                settings.latency_runs,
                ms(d.total),
                ms(*b)
            );
        }
    }
    result.notes.finish(&cluster, settings, phase);
    result
}

// ---------------------------------------------------------------------------
// (b) throughput of many short jobs

#[derive(Default)]
struct ThroughputResult {
    submitted: usize,
    submit_errors: Vec<String>,
    /// First submit -> last SubmitJob acknowledged.
    submit_phase: Duration,
    /// First submit -> the poll that saw the last job terminal.
    total: Option<Duration>,
    jobs: Vec<pb::Job>,
    notes: PhaseNotes,
}

async fn submit_many(
    mut client: DroverClient<Channel>,
    count: usize,
) -> (Vec<String>, Vec<String>) {
    let mut ids = Vec::with_capacity(count);
    let mut errors = Vec::new();
    for _ in 0..count {
        match submit(&mut client, shell_job("true")).await {
            Ok(id) => ids.push(id),
            Err(e) => errors.push(e),
        }
    }
    (ids, errors)
}

/// Every job of the cluster, all pages (bounded).
async fn list_all(client: &mut DroverClient<Channel>) -> Result<Vec<pb::Job>, String> {
    let mut jobs = Vec::new();
    let mut token = String::new();
    for _ in 0..1000 {
        let page = client
            .list_jobs(pb::ListJobsRequest {
                page_size: 1000,
                page_token: token,
                consistent: false,
                ..Default::default()
            })
            .await
            .map_err(|s| format!("ListJobs: {}", s.message()))?
            .into_inner();
        jobs.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return Ok(jobs);
        }
        token = page.next_page_token;
    }
    Err("ListJobs: more than 1000 pages".into())
}

async fn run_throughput(settings: &Settings) -> ThroughputResult {
    let phase = Phase::Throughput;
    let mut result = ThroughputResult::default();
    eprintln!("[jobs] throughput: starting a 3-node cluster");
    let executor = Executor {
        cpu_millis: THROUGHPUT_NODE_CPU_MILLIS,
        memory_mib: THROUGHPUT_NODE_MEMORY_MIB,
        output_cap_bytes: 64 << 20,
    };
    let mut cluster = match JobCluster::start(settings, phase, 3, executor).await {
        Ok(c) => c,
        Err(e) => {
            result.notes.fail(phase, format!("did not start: {e}"));
            return result;
        }
    };
    let mut clients = Vec::new();
    for _ in 0..settings.clients {
        match cluster.leader_client().await {
            Ok(c) => clients.push(c),
            Err(e) => {
                result.notes.fail(phase, e);
                return result;
            }
        }
    }
    let mut poller = match cluster.leader_client().await {
        Ok(c) => c,
        Err(e) => {
            result.notes.fail(phase, e);
            return result;
        }
    };
    eprintln!(
        "[jobs] throughput: submitting {} jobs with {} clients",
        settings.jobs, settings.clients
    );
    let start = Instant::now();
    let deadline = start + THROUGHPUT_TIMEOUT;
    let mut tasks = tokio::task::JoinSet::new();
    for (k, client) in clients.into_iter().enumerate() {
        let share =
            settings.jobs / settings.clients + usize::from(k < settings.jobs % settings.clients);
        tasks.spawn(submit_many(client, share));
    }
    let mut ids: HashSet<String> = HashSet::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((submitted, errors)) => {
                ids.extend(submitted);
                result.submit_errors.extend(errors);
            }
            Err(e) => result.submit_errors.push(format!("client task: {e}")),
        }
    }
    result.submit_phase = start.elapsed();
    result.submitted = ids.len();
    eprintln!(
        "[jobs] throughput: {} submitted in {:.2} s, waiting for them to finish",
        ids.len(),
        result.submit_phase.as_secs_f64()
    );
    // Poll until every submitted job is terminal.
    let mut finished: HashMap<String, pb::Job> = HashMap::new();
    loop {
        if let Err(e) = cluster.check_alive() {
            result.notes.fail(phase, e);
            break;
        }
        match list_all(&mut poller).await {
            Ok(jobs) => {
                for job in jobs {
                    if ids.contains(&job.id) && is_terminal(&job.state) {
                        finished.entry(job.id.clone()).or_insert(job);
                    }
                }
            }
            Err(e) => eprintln!("[jobs] throughput: poll: {e}"),
        }
        if finished.len() == ids.len() {
            result.total = Some(start.elapsed());
            break;
        }
        if Instant::now() > deadline {
            result.notes.fail(
                phase,
                format!(
                    "{} of {} jobs still not finished after {THROUGHPUT_TIMEOUT:?}",
                    ids.len() - finished.len(),
                    ids.len()
                ),
            );
            break;
        }
        tokio::time::sleep(THROUGHPUT_POLL).await;
    }
    let mut jobs: Vec<pb::Job> = finished.into_values().collect();
    jobs.sort_by(|a, b| a.id.cmp(&b.id));
    result.jobs = jobs;
    result.notes.finish(&cluster, settings, phase);
    result
}

// ---------------------------------------------------------------------------
// (c) capture of a big output

/// What the node stored of one attempt's output.
#[derive(Default)]
struct StoredOutput {
    stdout_bytes: u64,
    stderr_bytes: u64,
    /// Stdout bytes other than the `x` the job writes.
    unexpected_bytes: u64,
    chunks: u64,
    notices: Vec<String>,
    source: String,
}

struct OutputSample {
    job: pb::Job,
    /// SubmitJob sent -> SUCCEEDED seen.
    total: Duration,
    stored: Result<StoredOutput, String>,
}

impl OutputSample {
    /// started_at -> finished_at of the attempt, in seconds.
    fn run_secs(&self) -> Option<f64> {
        let a = self.job.attempts.last()?;
        (a.started_at_ms > 0 && a.finished_at_ms >= a.started_at_ms)
            .then(|| (a.finished_at_ms - a.started_at_ms) as f64 / 1e3)
    }

    fn complete(&self, expected: u64) -> bool {
        self.stored.as_ref().is_ok_and(|s| {
            s.stdout_bytes == expected && s.unexpected_bytes == 0 && s.notices.is_empty()
        })
    }
}

async fn read_stored_output(
    client: &mut DroverClient<Channel>,
    id: &str,
) -> Result<StoredOutput, String> {
    let deadline = Instant::now() + OUTPUT_READ_TIMEOUT;
    let mut stored = StoredOutput::default();
    let mut after_seq = None;
    loop {
        if Instant::now() > deadline {
            return Err(format!(
                "reading the output took over {OUTPUT_READ_TIMEOUT:?}"
            ));
        }
        let page = client
            .get_job_output(pb::GetJobOutputRequest {
                id: id.to_string(),
                attempt: 0,
                after_seq,
                max_bytes: OUTPUT_PAGE_BYTES,
            })
            .await
            .map_err(|s| format!("GetJobOutput: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        stored.source = page.source;
        let Some(last) = page.chunks.last() else {
            return Ok(stored);
        };
        if after_seq.is_some_and(|s| last.seq <= s) {
            return Err(format!("GetJobOutput: seq went back to {}", last.seq));
        }
        after_seq = Some(last.seq);
        for chunk in &page.chunks {
            stored.chunks += 1;
            match chunk.stream.as_str() {
                "stdout" => {
                    stored.stdout_bytes += chunk.data.len() as u64;
                    stored.unexpected_bytes +=
                        chunk.data.iter().filter(|b| **b != b'x').count() as u64;
                }
                "stderr" => stored.stderr_bytes += chunk.data.len() as u64,
                _ => {
                    if stored.notices.len() < 3 {
                        stored
                            .notices
                            .push(String::from_utf8_lossy(&chunk.data).trim().to_string());
                    }
                }
            }
        }
    }
}

async fn output_once(
    client: &mut DroverClient<Channel>,
    settings: &Settings,
) -> Result<OutputSample, String> {
    let spec = pb::JobSpec {
        command: settings.output_command(),
        resources: Some(pb::Resources {
            cpu_millis: OUTPUT_JOB_CPU_MILLIS,
            ..Default::default()
        }),
        ..Default::default()
    };
    let t0 = Instant::now();
    let id = submit(client, spec).await?;
    let (job, seen) =
        poll_until_terminal(client, &id, OUTPUT_POLL, t0 + OUTPUT_JOB_TIMEOUT).await?;
    if job.state != "SUCCEEDED" {
        return Err(describe_end(&job));
    }
    let total = seen.duration_since(t0);
    let stored = read_stored_output(client, &id).await;
    Ok(OutputSample { job, total, stored })
}

/// The engine alone, following a container's log the way Drover's driver
/// does: `docker run -d`, at once `docker logs -f` (bytes counted); whether
/// the container was still running when that follow ended; then, after
/// `docker wait`, `docker logs` without follow.
struct EngineFollow {
    followed_bytes: u64,
    running_after_follow: bool,
    after_exit_bytes: u64,
    /// The container's log driver and options, as the engine reports them.
    log_config: String,
}

async fn engine_follow_control(settings: &Settings) -> Result<EngineFollow, String> {
    let command = settings.output_command();
    let mut run = vec![
        "run".to_string(),
        "-d".to_string(),
        "--label".to_string(),
        settings.baseline_label(),
        settings.image.clone(),
    ];
    run.extend(["sh".to_string(), "-c".to_string(), command]);
    let docker = &settings.docker_bin;
    let started = run_process(docker, &run, Stdout::Count, SHORT_JOB_TIMEOUT).await?;
    let id = started.stdout_head.trim().to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("docker run -d printed {id:?}, not a container id"));
    }
    let args = |follow: bool| {
        let mut a = vec!["logs".to_string()];
        if follow {
            a.push("-f".to_string());
        }
        a.push(id.clone());
        a
    };
    let result = async {
        let followed = run_process(docker, &args(true), Stdout::Count, OUTPUT_JOB_TIMEOUT).await?;
        let inspect = vec![
            "inspect".to_string(),
            "-f".to_string(),
            "{{.State.Running}} {{json .HostConfig.LogConfig}}".to_string(),
            id.clone(),
        ];
        let running = run_process(docker, &inspect, Stdout::Count, SHORT_JOB_TIMEOUT).await?;
        let wait = vec!["wait".to_string(), id.clone()];
        run_process(docker, &wait, Stdout::Count, OUTPUT_JOB_TIMEOUT).await?;
        let after = run_process(docker, &args(false), Stdout::Count, OUTPUT_JOB_TIMEOUT).await?;
        let (state, log_config) = running
            .stdout_head
            .trim()
            .split_once(' ')
            .unwrap_or((running.stdout_head.trim(), ""));
        Ok(EngineFollow {
            followed_bytes: followed.stdout_bytes,
            running_after_follow: state == "true",
            after_exit_bytes: after.stdout_bytes,
            log_config: log_config.to_string(),
        })
    }
    .await;
    let rm = vec!["rm".to_string(), "-f".to_string(), id.clone()];
    if let Err(e) = run_timed(docker, &rm, CLEANUP_TIMEOUT).await {
        eprintln!("[jobs] removing the control container {id}: {e}");
    }
    result
}

#[derive(Default)]
struct OutputResult {
    drover: Vec<OutputSample>,
    docker: Vec<Duration>,
    engine: Vec<EngineFollow>,
    errors: Vec<String>,
    notes: PhaseNotes,
}

async fn run_output(settings: &Settings) -> OutputResult {
    let phase = Phase::Output;
    let mut result = OutputResult::default();
    eprintln!("[jobs] output: starting a 1-node cluster");
    let executor = Executor {
        cpu_millis: 0,
        memory_mib: 0,
        output_cap_bytes: settings.output_bytes() + (64 << 20),
    };
    let mut cluster = match JobCluster::start(settings, phase, 1, executor).await {
        Ok(c) => c,
        Err(e) => {
            result.notes.fail(phase, format!("did not start: {e}"));
            return result;
        }
    };
    let mut client = match cluster.leader_client().await {
        Ok(c) => c,
        Err(e) => {
            result.notes.fail(phase, e);
            return result;
        }
    };
    let command = settings.output_command();
    let baseline = docker_run_args(settings, &[], &["sh", "-c", &command]);
    for round in 0..settings.output_runs {
        for k in 0..2 {
            if (round + k) % 2 == 0 {
                match output_once(&mut client, settings).await {
                    Ok(sample) => {
                        eprintln!(
                            "[jobs] output {}/{}: drover {:.2} s submit->SUCCEEDED, run {} s",
                            round + 1,
                            settings.output_runs,
                            sample.total.as_secs_f64(),
                            fmt_num(sample.run_secs())
                        );
                        result.drover.push(sample);
                    }
                    Err(e) => result.errors.push(format!("drover: {e}")),
                }
            } else {
                match run_timed(&settings.docker_bin, &baseline, OUTPUT_JOB_TIMEOUT).await {
                    Ok(d) => {
                        eprintln!(
                            "[jobs] output {}/{}: docker run {:.2} s",
                            round + 1,
                            settings.output_runs,
                            d.as_secs_f64()
                        );
                        result.docker.push(d);
                    }
                    Err(e) => result.errors.push(format!("docker: {e}")),
                }
            }
        }
        // Not timed against anything: shows what the engine's own log
        // follow returns for the same output.
        match engine_follow_control(settings).await {
            Ok(c) => {
                eprintln!(
                    "[jobs] output {}/{}: engine control: docker logs -f {} bytes (still running after it: {}), docker logs after exit {} bytes",
                    round + 1,
                    settings.output_runs,
                    c.followed_bytes,
                    c.running_after_follow,
                    c.after_exit_bytes
                );
                result.engine.push(c);
            }
            Err(e) => result.errors.push(format!("engine control: {e}")),
        }
        if let Err(e) = cluster.check_alive() {
            result.notes.fail(phase, e);
            break;
        }
    }
    result.notes.finish(&cluster, settings, phase);
    result
}

// ---------------------------------------------------------------------------
// Report

fn render_latency(out: &mut String, settings: &Settings, r: &LatencyResult) {
    let _ = writeln!(
        out,
        "## (a) One `true` job: submit to SUCCEEDED vs `docker run`\n\n\
         1 node (default Raft and scheduler settings, executor on{}), one client on one connection. \
         {} rounds after one unmeasured run of each; each round runs every variant once, the order rotating. \
         Drover: wall time from sending `SubmitJob` to the first `GetJob` that shows SUCCEEDED \
         (`StreamJobOutput` with follow until the stream ends, which is when the attempt's output closes, \
         then `GetJob` every {} ms). Docker: wall time of the `docker` CLI process, spawned by the bench.\n",
        if settings.tls {
            ", mutual TLS on every port"
        } else {
            ", plaintext"
        },
        settings.latency_runs,
        LATENCY_POLL.as_millis()
    );
    let drover = stats(r.drover.iter().map(|s| ms(s.total)).collect());
    let docker = stats(r.docker.iter().map(|d| ms(*d)).collect());
    let locked = stats(r.locked.iter().map(|d| ms(*d)).collect());
    out.push_str(
        "| variant | runs | median ms | p90 ms | min ms | max ms | median vs docker run |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    let mut row = |name: &str, s: &Stats| {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            s.n,
            fmt_num(s.p50),
            fmt_num(s.p90),
            fmt_num(s.min),
            fmt_num(s.max),
            fmt_ratio(s.p50, docker.p50)
        );
    };
    row("drover: submit → SUCCEEDED", &drover);
    row("`docker run --rm IMAGE true`", &docker);
    if settings.locked_baseline {
        row("`docker run --rm` + Drover's container flags ¹", &locked);
    }
    let _ = writeln!(
        out,
        "\n**drover / docker run: {} at the median, {} at p90** (target: within 1.20x).\n",
        fmt_ratio(drover.p50, docker.p50),
        fmt_ratio(drover.p90, docker.p90)
    );
    if settings.locked_baseline {
        let _ = writeln!(
            out,
            "¹ `{}`: what Drover's driver asks of the engine for a default job, \
             to separate the cost of the lock-down from Drover's own.\n",
            locked_flags().join(" ")
        );
    }
    out.push_str(
        "Where Drover's time goes, from the job record (Unix ms, all clocks on this machine; \
         each run's segments add up to its total):\n\n",
    );
    out.push_str("| segment | median ms | p90 ms | min ms | max ms |\n|---|---:|---:|---:|---:|\n");
    let segments: Vec<[i64; 5]> = r.drover.iter().filter_map(DroverSample::segments).collect();
    for (i, name) in SEGMENTS.iter().enumerate() {
        let s = stats(segments.iter().map(|seg| seg[i] as f64).collect());
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} |",
            fmt_num(s.p50),
            fmt_num(s.p90),
            fmt_num(s.min),
            fmt_num(s.max)
        );
    }
    let rpc = stats(r.drover.iter().map(|s| ms(s.submit_rpc)).collect());
    let stream = stats(
        r.drover
            .iter()
            .map(|s| ms(s.total.saturating_sub(s.stream_end)))
            .collect(),
    );
    let _ = writeln!(
        out,
        "\nAlso: the `SubmitJob` round trip (commit + apply) took {} ms at the median (p90 {}); \
         after the output stream ended, SUCCEEDED showed up {} ms later at the median (p90 {}).\n",
        fmt_num(rpc.p50),
        fmt_num(rpc.p90),
        fmt_num(stream.p50),
        fmt_num(stream.p90)
    );
    render_errors(out, &r.errors);
}

fn render_throughput(out: &mut String, settings: &Settings, r: &ThroughputResult) {
    let _ = writeln!(
        out,
        "## (b) {} `true` jobs on a 3-node cluster\n\n\
         Each node offers {} millicores and {} MiB (default jobs ask 100 and 128, so capacity never limits). \
         {} clients, one connection each to the leader, submit back to back (closed loop); then `ListJobs` \
         on the leader every {} ms until every job is terminal. jobs/s = jobs / (first submit → the poll \
         that saw the last one finished). Latencies from the records: placement = `assigned_at - submitted_at`, \
         queue-to-start = `started_at - submitted_at` (started_at is stamped by the node once the container \
         has been started).\n",
        settings.jobs,
        THROUGHPUT_NODE_CPU_MILLIS,
        THROUGHPUT_NODE_MEMORY_MIB,
        settings.clients,
        THROUGHPUT_POLL.as_millis()
    );
    let succeeded = r.jobs.iter().filter(|j| j.state == "SUCCEEDED").count();
    let rate = r
        .total
        .map(|t| format!("{:.1}", succeeded as f64 / t.as_secs_f64().max(1e-9)));
    out.push_str(
        "| jobs submitted | SUCCEEDED | other end | submit phase s | submits/s | first submit → last SUCCEEDED s | jobs/s |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let _ = writeln!(
        out,
        "| {} | {} | {} | {:.2} | {:.0} | {} | **{}** |\n",
        r.submitted,
        succeeded,
        r.jobs.len() - succeeded,
        r.submit_phase.as_secs_f64(),
        r.submitted as f64 / r.submit_phase.as_secs_f64().max(1e-9),
        r.total
            .map_or("–".into(), |t| format!("{:.2}", t.as_secs_f64())),
        rate.unwrap_or_else(|| "–".into())
    );
    let first_attempt = |j: &pb::Job| j.attempts.first().cloned();
    let placement = stats(
        r.jobs
            .iter()
            .filter_map(|j| Some((first_attempt(j)?.assigned_at_ms - j.submitted_at_ms) as f64))
            .collect(),
    );
    let queue_to_start = stats(
        r.jobs
            .iter()
            .filter_map(|j| {
                let a = first_attempt(j)?;
                (a.started_at_ms > 0).then(|| (a.started_at_ms - j.submitted_at_ms) as f64)
            })
            .collect(),
    );
    let run = stats(
        r.jobs
            .iter()
            .filter_map(|j| {
                let a = first_attempt(j)?;
                (a.started_at_ms > 0).then(|| (a.finished_at_ms - a.started_at_ms) as f64)
            })
            .collect(),
    );
    out.push_str("| latency | jobs | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|\n");
    for (name, s) in [
        ("placement (submitted → assigned)", placement),
        ("queue-to-start (submitted → started)", queue_to_start),
        ("run (started → finished)", run),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} |",
            s.n,
            fmt_num(s.p50),
            fmt_num(s.p99),
            fmt_num(s.max)
        );
    }
    let mut per_node: BTreeMap<u64, usize> = BTreeMap::new();
    for job in &r.jobs {
        if let Some(a) = job.attempts.last() {
            *per_node.entry(a.node).or_default() += 1;
        }
    }
    let spread: Vec<String> = per_node
        .iter()
        .map(|(node, n)| format!("node {node}: {n}"))
        .collect();
    let _ = writeln!(
        out,
        "\nJobs per node: {}. At most {} containers ran at once (from the attempts' started/finished stamps).\n",
        if spread.is_empty() {
            "–".to_string()
        } else {
            spread.join(", ")
        },
        max_concurrent(&r.jobs)
    );
    let mut errors = r.submit_errors.clone();
    for job in r.jobs.iter().filter(|j| j.state != "SUCCEEDED").take(5) {
        errors.push(describe_end(job));
    }
    render_errors(out, &errors);
}

/// Most attempts whose [started, finished] intervals overlap.
fn max_concurrent(jobs: &[pb::Job]) -> usize {
    let mut events: Vec<(i64, i32)> = Vec::new();
    for a in jobs.iter().flat_map(|j| j.attempts.iter()) {
        if a.started_at_ms > 0 && a.finished_at_ms > 0 {
            events.push((a.started_at_ms, 1));
            events.push((a.finished_at_ms.max(a.started_at_ms), -1));
        }
    }
    // Ends before starts at the same ms: touching intervals do not overlap.
    events.sort();
    let mut now = 0i32;
    let mut best = 0i32;
    for (_, delta) in events {
        now += delta;
        best = best.max(now);
    }
    best as usize
}

fn render_output(out: &mut String, settings: &Settings, r: &OutputResult) {
    let expected = settings.output_bytes();
    let mib = settings.output_mib as f64;
    let _ = writeln!(
        out,
        "## (c) A job writing {} MiB to stdout\n\n\
         1 node, `executor.output_cap_bytes` = {} MiB. The job: `{}` with {} millicores \
         (`tr` because Docker's json-file log driver would store each NUL byte as the six characters `\\u0000`). \
         Drover is polled with `GetJob` every {} ms. Baseline: `docker run --rm IMAGE sh -c '…' > /dev/null` \
         (stdout to /dev/null), wall time of the CLI process. {} rounds, interleaved, the order alternating.\n",
        settings.output_mib,
        (expected + (64 << 20)) >> 20,
        settings.output_command(),
        OUTPUT_JOB_CPU_MILLIS,
        OUTPUT_POLL.as_millis(),
        settings.output_runs
    );
    let run = stats(r.drover.iter().filter_map(OutputSample::run_secs).collect());
    let total = stats(r.drover.iter().map(|s| s.total.as_secs_f64()).collect());
    let docker = stats(r.docker.iter().map(|d| d.as_secs_f64()).collect());
    let rate = |secs: Option<f64>| secs.filter(|s| *s > 0.0).map(|s| mib / s);
    out.push_str(
        "| measure | runs | median s | MiB/s at the median | min s | max s | MiB/s vs docker run |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, s) in [
        ("drover: container started → finished (record)", run),
        (
            "drover: submit → SUCCEEDED (output stored, result committed)",
            total,
        ),
        ("`docker run --rm … > /dev/null` (wall)", docker),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            s.n,
            fmt_num(s.p50),
            fmt_num(rate(s.p50)),
            fmt_num(s.min),
            fmt_num(s.max),
            fmt_ratio(rate(s.p50), rate(docker.p50))
        );
    }
    out.push_str(
        "\nStored output per Drover run (paged back with `GetJobOutput`, 2 MiB pages):\n\n\
         | run | started → finished s | submit → SUCCEEDED s | stdout bytes stored | expected | non-`x` bytes | chunks | notices |\n\
         |---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for (i, s) in r.drover.iter().enumerate() {
        let (bytes, unexpected, chunks, notices) = match &s.stored {
            Ok(st) => (
                st.stdout_bytes.to_string(),
                st.unexpected_bytes.to_string(),
                st.chunks.to_string(),
                if st.notices.is_empty() {
                    format!("none (source {})", st.source)
                } else {
                    st.notices.join(" / ").replace('|', "/")
                },
            ),
            Err(e) => (
                "–".into(),
                "–".into(),
                "–".into(),
                format!("read failed: {e}"),
            ),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {bytes} | {expected} | {unexpected} | {chunks} | {notices} |",
            i + 1,
            fmt_num(s.run_secs()),
            s.total.as_secs_f64(),
        );
    }
    let complete = r.drover.iter().filter(|s| s.complete(expected)).count();
    let _ = writeln!(
        out,
        "\n**{complete} of {} Drover runs stored the whole output** (every byte, nothing else, no notice).\n",
        r.drover.len()
    );
    if !r.engine.is_empty() {
        let list = |f: fn(&EngineFollow) -> String| {
            r.engine
                .iter()
                .map(|c| f(c).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "Engine control, once per round and untimed: the same command in `docker run -d`, at once \
             `docker logs -f` (how Drover's driver reads output: the engine's log API with follow), bytes counted: \
             {} (expected {expected} each); container still running when that follow ended: {}; \
             `docker logs` without follow after `docker wait` (what the engine kept): {}. \
             The containers' log config: `{}`.\n",
            list(|c| c.followed_bytes.to_string()),
            list(|c| c.running_after_follow.to_string()),
            list(|c| c.after_exit_bytes.to_string()),
            r.engine.first().map_or("", |c| c.log_config.as_str())
        );
    }
    render_errors(out, &r.errors);
}

fn render_errors(out: &mut String, errors: &[String]) {
    if errors.is_empty() {
        return;
    }
    let _ = writeln!(out, "Errors ({}), first ones:\n", errors.len());
    for e in errors.iter().take(5) {
        let first = e.lines().next().unwrap_or_default();
        let _ = writeln!(out, "- {first}");
    }
    out.push('\n');
}

fn render_notes(out: &mut String, phases: &[(Phase, &PhaseNotes)]) {
    out.push_str(
        "## Anomalies\n\nPhase failures, and warn/error/panic lines the agents logged after their \
         cluster was ready.\n\n",
    );
    let mut any = false;
    for (phase, notes) in phases {
        let mut text = String::new();
        if let Some(f) = &notes.failure {
            let _ = writeln!(text, "- failure:\n\n```\n{}\n```", f.trim_end());
        }
        for scan in &notes.logs {
            if scan.warnings + scan.errors + scan.panics == 0 {
                continue;
            }
            let _ = writeln!(
                text,
                "- {} log: {} warn, {} error, {} panic lines; first:\n\n```\n{}\n```",
                scan.name,
                scan.warnings,
                scan.errors,
                scan.panics,
                scan.excerpts.join("\n")
            );
        }
        if !text.is_empty() {
            any = true;
            let _ = writeln!(out, "**{}**\n\n{text}", phase.name());
        }
    }
    if !any {
        out.push_str("None: no phase failed, no warnings or errors in any agent log.\n");
    }
}

fn main() {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("[jobs] {e}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("[jobs] cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let (report, failed) = runtime.block_on(async {
        let mut out = String::new();
        let mut latency = None;
        let mut throughput = None;
        let mut output = None;
        for &phase in &settings.phases {
            let started = Instant::now();
            match phase {
                Phase::Latency => latency = Some(run_latency(&settings).await),
                Phase::Throughput => throughput = Some(run_throughput(&settings).await),
                Phase::Output => output = Some(run_output(&settings).await),
            }
            eprintln!(
                "[jobs] {} phase done in {:.0} s",
                phase.name(),
                started.elapsed().as_secs_f64()
            );
        }
        let mut notes: Vec<(Phase, &PhaseNotes)> = Vec::new();
        if let Some(r) = &latency {
            render_latency(&mut out, &settings, r);
            notes.push((Phase::Latency, &r.notes));
        }
        if let Some(r) = &throughput {
            render_throughput(&mut out, &settings, r);
            notes.push((Phase::Throughput, &r.notes));
        }
        if let Some(r) = &output {
            render_output(&mut out, &settings, r);
            notes.push((Phase::Output, &r.notes));
        }
        render_notes(&mut out, &notes);
        let failed = notes.iter().any(|(_, n)| n.failure.is_some());
        (out, failed)
    });
    // Baseline containers end themselves (--rm); any left by a killed CLI go here.
    if let Err(e) = remove_containers(&settings.docker_bin, &settings.baseline_label()) {
        eprintln!("[jobs] cleanup of the baseline containers: {e}");
    }
    print!("{report}");
    if let Some(path) = &settings.results_path {
        if let Err(e) = std::fs::write(path, &report) {
            eprintln!("[jobs] cannot write {}: {e}", path.display());
        }
    }
    if failed {
        std::process::exit(1);
    }
}
