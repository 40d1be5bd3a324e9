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

#[path = "../common/mod.rs"]
mod common;

mod baseline;
mod cluster;
mod latency;
mod output;
mod throughput;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::cluster::Servers;
use common::{which, LogScan};
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

use baseline::*;
use cluster::*;
use latency::*;
use output::*;
use throughput::*;

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

    /// Starts the phase's cluster; `None`, with the failure recorded, if it
    /// did not come up (the phase then returns what it has).
    async fn start(
        &mut self,
        settings: &Settings,
        phase: Phase,
        nodes: usize,
        executor: Executor,
    ) -> Option<JobCluster> {
        match JobCluster::start(settings, phase, nodes, executor).await {
            Ok(cluster) => Some(cluster),
            Err(e) => {
                self.fail(phase, format!("did not start: {e}"));
                None
            }
        }
    }

    /// A client of the leader; `None`, with the failure recorded, if there
    /// is none.
    async fn leader_client(
        &mut self,
        cluster: &JobCluster,
        phase: Phase,
    ) -> Option<DroverClient<Channel>> {
        match cluster.leader_client().await {
            Ok(client) => Some(client),
            Err(e) => {
                self.fail(phase, e);
                None
            }
        }
    }

    fn finish(&mut self, cluster: &JobCluster, settings: &Settings, phase: Phase) {
        self.logs = cluster.scan_logs();
        if let Some(dir) = &settings.log_dir {
            cluster.keep_logs(dir, phase);
        }
    }
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
        for note in notes.logs.iter().filter_map(common::log_scan_note) {
            let _ = writeln!(text, "{note}");
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
