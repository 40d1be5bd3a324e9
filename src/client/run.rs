//! `drover job run|logs|stop` and the flags that describe a job: the
//! commands that follow a job's execution rather than its record.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use clap::Args;

use super::Client;
use super::{call, job_json, Failure, Output, CALL_TIMEOUT, EXIT_FAILED};
use crate::proto::v1 as pb;

/// How long `job run` waits for an attempt's result to be committed after
/// its output ended (the node reports it through the leader).
const RESULT_WAIT: Duration = Duration::from_secs(60);

/// What to run and how: the flags of `job submit` and `job run`.
#[derive(Args, Clone, Debug, Default)]
pub struct SpecArgs {
    /// Container image (default: the node's executor.default_image).
    #[arg(long)]
    pub image: Option<String>,
    /// Environment variable NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// CPU in millicores (1000 = one core; default 100).
    #[arg(long, value_name = "MILLICORES")]
    pub cpu: Option<u32>,
    /// Memory limit in MiB (default 128).
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u32>,
    /// Process limit (default 256).
    #[arg(long)]
    pub pids: Option<u32>,
    /// Kill an attempt after this long, e.g. 30s, 5m.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Attempts in total, the first included (default 1: no retry).
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Wait before the first retry; doubled each time (default 1s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub backoff: Option<Duration>,
    /// Cap on the retry wait (default 60s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub max_backoff: Option<Duration>,
    /// Higher runs first (-1000..1000).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Node label the job needs, KEY=VALUE (repeatable).
    #[arg(long = "constraint", value_name = "KEY=VALUE")]
    pub constraints: Vec<String>,
    /// A label of the job, KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Submitting again with the same key returns the first job.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Give the container a network (none by default).
    #[arg(long)]
    pub network: bool,
    /// Run as this UID or UID:GID instead of the node's
    /// `executor.policy.user` (only what `executor.policy.allowed_users`
    /// lists is accepted).
    #[arg(long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// What to run. One argument runs in a shell (`sh -c`, so pipes,
    /// `;` and `$VAR` work); several run as an argument vector without a
    /// shell. Put `--` before it so its own flags are not taken for
    /// drover's. It runs in a container of the job's image: it sees the
    /// image's files, not this machine's.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// Parses repeated `--flag KEY=VALUE` arguments.
pub(super) fn pairs(values: &[String], flag: &str) -> Result<Vec<(String, String)>, Failure> {
    values
        .iter()
        .map(|v| {
            v.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Failure {
                    message: format!("--{flag} {v:?}: expected KEY=VALUE"),
                    code: 2,
                })
        })
        .collect()
}

fn millis(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl SpecArgs {
    /// The spec to submit. One word of `command` is a shell command line;
    /// several are an argument vector run without a shell.
    pub fn to_spec(&self) -> Result<pb::JobSpec, Failure> {
        let command = self.command.clone();
        let (command, args) = match command.len() {
            1 => (command.into_iter().next().unwrap_or_default(), Vec::new()),
            _ => (String::new(), command),
        };
        let resources =
            (self.cpu.is_some() || self.memory.is_some() || self.pids.is_some()).then(|| {
                pb::Resources {
                    cpu_millis: self.cpu.unwrap_or(0),
                    memory_mib: self.memory.unwrap_or(0),
                    pids: self.pids.unwrap_or(0),
                }
            });
        let retry =
            (self.max_attempts.is_some() || self.backoff.is_some() || self.max_backoff.is_some())
                .then(|| pb::RetryPolicy {
                    max_attempts: self.max_attempts.unwrap_or(0),
                    initial_backoff_ms: millis(self.backoff),
                    max_backoff_ms: millis(self.max_backoff),
                });
        Ok(pb::JobSpec {
            command,
            args,
            image: self.image.clone().unwrap_or_default(),
            env: pairs(&self.env, "env")?
                .into_iter()
                .map(|(name, value)| pb::EnvVar { name, value })
                .collect(),
            resources,
            timeout_ms: millis(self.timeout),
            retry,
            priority: self.priority,
            constraints: pairs(&self.constraints, "constraint")?
                .into_iter()
                .collect::<HashMap<_, _>>(),
            idempotency_key: self.idempotency_key.clone().unwrap_or_default(),
            network: self.network,
            labels: pairs(&self.labels, "label")?.into_iter().collect(),
            user: self.user.clone().unwrap_or_default(),
        })
    }
}

/// Submits a job and returns it.
pub async fn submit(client: &mut Client, spec: pb::JobSpec) -> Result<pb::Job, Failure> {
    client
        .submit_job(call(
            pb::SubmitJobRequest { spec: Some(spec) },
            CALL_TIMEOUT,
        ))
        .await?
        .into_inner()
        .job
        .ok_or_else(Failure::empty_response)
}

async fn get(client: &mut Client, id: &str) -> Result<pb::Job, Failure> {
    client
        .get_job(call(
            pb::GetJobRequest {
                id: id.to_string(),
                consistent: false,
            },
            CALL_TIMEOUT,
        ))
        .await?
        .into_inner()
        .job
        .ok_or_else(Failure::empty_response)
}

/// Writes one chunk where it belongs: stdout, or stderr for the job's
/// stderr and Drover's notices.
fn print_chunk(chunk: &pb::OutputChunk) {
    let result = match chunk.stream.as_str() {
        "stderr" | "notice" => std::io::stderr().write_all(&chunk.data),
        _ => {
            let mut out = std::io::stdout();
            out.write_all(&chunk.data).and_then(|()| out.flush())
        }
    };
    let _ = result;
}

/// Streams one attempt's output until it ends.
/// The spinner, if any, goes away with the first output.
async fn follow_attempt(
    client: &mut Client,
    id: &str,
    attempt: u32,
    spinner: Option<&indicatif::ProgressBar>,
) -> Result<(), Failure> {
    let mut request = tonic::Request::new(pb::StreamJobOutputRequest {
        id: id.to_string(),
        attempt,
        follow: true,
        after_seq: None,
    });
    // A job may wait in the queue and run for a long time: no deadline on
    // the stream itself (the connection's keepalive notices a dead node).
    request.set_timeout(Duration::from_secs(365 * 24 * 3600));
    let mut stream = client.stream_job_output(request).await?.into_inner();
    while let Some(chunk) = stream.message().await? {
        if let Some(bar) = spinner {
            bar.finish_and_clear();
        }
        print_chunk(&chunk);
    }
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    Ok(())
}

/// The exit code `job run` ends with for a finished job: the job's own
/// exit code when it exited, 128+N for signal N, 124 for a timeout (as
/// timeout(1)), 125 when it never ran (image or start failure, as
/// `docker run`), 130 when stopped, 1 when lost.
pub fn exit_code_of(job: &pb::Job) -> u8 {
    let last = job.attempts.last();
    match job.state.as_str() {
        "SUCCEEDED" => 0,
        "TIMED_OUT" => 124,
        "CANCELLED" => 130,
        _ => match last {
            Some(a) if a.reason == "SIGNAL" => (128 + a.signal.clamp(1, 127)) as u8,
            Some(a) if a.reason == "IMAGE_UNAVAILABLE" || a.reason == "START_FAILED" => 125,
            Some(a) => match a.exit_code {
                Some(code) if (1..=255).contains(&code) => code as u8,
                _ => 1,
            },
            None => 1,
        },
    }
}

/// `drover job run`: submit, stream each attempt's output, exit with the
/// job's exit code. The first Ctrl-C stops the job and waits for it to end
/// (as `docker run` does); a second one leaves it running and says how to
/// stop it.
pub async fn run(
    client: &mut Client,
    opts_output: Output,
    spec: pb::JobSpec,
    detach: bool,
) -> Result<u8, Failure> {
    let job = submit(client, spec).await?;
    if detach {
        match opts_output {
            Output::Json => println!("{}", job_json(&job)),
            Output::Table | Output::Wide => println!("{}", job.id),
        }
        return Ok(0);
    }
    let id = job.id.clone();
    let mut interrupts = interrupts();
    let mut stopper = client.clone();
    let follow = follow_job(client, opts_output, id.clone());
    tokio::pin!(follow);
    let mut stopping = false;
    loop {
        tokio::select! {
            done = &mut follow => return done,
            Some(()) = interrupts.recv() => {
                if stopping {
                    eprintln!("drover: still running: drover job stop {id}");
                    return Ok(130);
                }
                stopping = true;
                eprintln!("drover: stopping job {id} (Ctrl-C again to leave it running)");
                let request = pb::StopJobRequest { id: id.clone() };
                if let Err(e) = stopper.stop_job(call(request, CALL_TIMEOUT)).await {
                    let failure = Failure::from(e);
                    eprintln!("drover: cannot stop job {id}: {}; still running", failure.message);
                    return Ok(130);
                }
            }
        }
    }
}

/// Every Ctrl-C (SIGINT) from now on, as a message.
fn interrupts() -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Follows job `id` through its attempts to its end: the exit code.
async fn follow_job(client: &mut Client, opts_output: Output, id: String) -> Result<u8, Failure> {
    let mut attempt = 1;
    loop {
        if attempt == 1 {
            // A job that waits in the queue with no node able to run it
            // would look like a hang: say why, once, and keep waiting.
            let mut hint_client = client.clone();
            let waiting = match opts_output {
                Output::Table | Output::Wide => {
                    super::spinner(format!("job {id}: waiting for it to start"))
                }
                Output::Json => None,
            };
            let follow = follow_attempt(client, &id, attempt, waiting.as_ref());
            tokio::pin!(follow);
            tokio::select! {
                done = &mut follow => done?,
                () = queue_hint(&mut hint_client, &id, waiting.as_ref()) => follow.await?,
            }
        } else {
            follow_attempt(client, &id, attempt, None).await?;
        }
        // The output ended; wait for the attempt's result to be committed.
        let deadline = tokio::time::Instant::now() + RESULT_WAIT;
        let job = loop {
            let job = get(client, &id).await?;
            let ended = job
                .attempts
                .iter()
                .find(|a| a.number == attempt)
                .is_some_and(|a| !a.reason.is_empty());
            if ended || terminal(&job.state) {
                break job;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Failure {
                    message: format!("job {id}: attempt {attempt}'s output ended but no result was committed within {RESULT_WAIT:?}; see `drover job status {id}`"),
                    code: EXIT_FAILED,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if terminal(&job.state) {
            if opts_output == Output::Json {
                println!("{}", job_json(&job));
            } else if job.state != "SUCCEEDED" {
                eprintln!(
                    "drover: job {id} {}{}",
                    job.state,
                    describe_end(job.attempts.last())
                );
            }
            return Ok(exit_code_of(&job));
        }
        if let Some(a) = job.attempts.iter().find(|a| a.number == attempt) {
            eprintln!(
                "drover: attempt {attempt} ended{}; retrying",
                describe_end(Some(a))
            );
        }
        attempt += 1;
    }
}

/// After a few seconds in QUEUED, tells the user when no node is ready to
/// run jobs (e.g. Docker unreachable, every node draining).
async fn queue_hint(client: &mut Client, id: &str, spinner: Option<&indicatif::ProgressBar>) {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let queued = get(client, id).await.is_ok_and(|j| j.state == "QUEUED");
    if queued {
        let nodes = client
            .list_nodes(call(
                pb::ListNodesRequest { consistent: false },
                CALL_TIMEOUT,
            ))
            .await
            .map(|r| r.into_inner().nodes)
            .unwrap_or_default();
        let ready = nodes
            .iter()
            .filter(|n| n.status == "READY" && !n.draining)
            .count();
        if ready == 0 {
            super::notice(
                spinner,
                &format!(
                    "drover: job {id} is queued but no node is ready to run jobs \
                     (is Docker running on the nodes? see `drover node status`); still waiting"
                ),
            );
        } else {
            super::notice(
                spinner,
                &format!("drover: job {id} is queued, waiting for a node with room for it"),
            );
        }
    }
    // Never resolves again: the caller keeps following the job.
    std::future::pending::<()>().await
}

pub(super) fn terminal(state: &str) -> bool {
    matches!(
        state,
        "SUCCEEDED" | "FAILED" | "TIMED_OUT" | "CANCELLED" | "LOST"
    )
}

fn describe_end(attempt: Option<&pb::Attempt>) -> String {
    let Some(a) = attempt else {
        return String::new();
    };
    let mut text = match (a.reason.as_str(), a.exit_code) {
        ("EXIT_CODE", Some(127)) => {
            " (exit code 127: the command was not found in the job's image; jobs run \
             in a container and do not see this machine's files)"
                .to_string()
        }
        ("EXIT_CODE", Some(code)) => format!(" (exit code {code})"),
        ("SIGNAL", _) => format!(" (signal {})", a.signal),
        // CANCELLED, TIMED_OUT: the state already says it.
        ("", _) | ("CANCELLED", _) | ("TIMED_OUT", _) => String::new(),
        (reason, _) => format!(" ({reason})"),
    };
    if !a.message.is_empty() && a.reason != "EXIT_CODE" {
        text.push_str(&format!(": {}", a.message));
    }
    text
}

/// `drover job logs [-f] ID`.
pub async fn logs(
    client: &mut Client,
    id: String,
    attempt: u32,
    follow: bool,
) -> Result<(), Failure> {
    if follow {
        return follow_attempt(client, &id, attempt, None).await;
    }
    let mut after_seq = None;
    loop {
        let page = client
            .get_job_output(call(
                pb::GetJobOutputRequest {
                    id: id.clone(),
                    attempt,
                    after_seq,
                    max_bytes: 0,
                },
                CALL_TIMEOUT,
            ))
            .await?
            .into_inner();
        if page.source == "committed_tail" {
            eprintln!("drover: the node that ran attempt {} is unreachable; showing the output tail committed with its result", page.attempt);
        }
        let Some(last) = page.chunks.last().map(|c| c.seq) else {
            return Ok(());
        };
        for chunk in &page.chunks {
            print_chunk(chunk);
        }
        if page.source != "node" {
            return Ok(());
        }
        after_seq = Some(last);
    }
}

/// `drover job stop ID`.
pub async fn stop(client: &mut Client, output: Output, id: String) -> Result<(), Failure> {
    let job = client
        .stop_job(call(pb::StopJobRequest { id }, CALL_TIMEOUT))
        .await?
        .into_inner()
        .job
        .ok_or_else(Failure::empty_response)?;
    match output {
        Output::Json => println!("{}", job_json(&job)),
        Output::Table | Output::Wide => println!("{} {}", job.id, job.state),
    }
    Ok(())
}
