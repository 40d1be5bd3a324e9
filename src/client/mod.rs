//! The CLI's client commands, over the gRPC API. Errors are one clear line
//! and an exit code a script can use; `--output json` everywhere.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use crate::api::json;
use crate::proto::v1 as pb;

mod acl;
mod connect;
mod failover;
mod failure;
mod list;
mod node;
mod run;
mod snapshot;
pub mod tls;
mod watch;

pub use self::acl::{acl, AclCommand};
pub use self::connect::{
    client_over, connect, connect_unix, unix_socket_path, Client, TokenInterceptor,
};
pub use self::failure::{Failure, EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE};
pub use self::node::{node, NodeCommand};
pub use self::snapshot::SnapshotCommand;

/// `drover operator snapshot …` against a cluster (save, online restore).
pub async fn snapshot_online(
    client: Client,
    output: Output,
    cmd: SnapshotCommand,
) -> Result<u8, Failure> {
    snapshot::online(client, output, cmd).await
}

/// `drover operator snapshot …` on files only (inspect, offline restore).
pub fn snapshot_offline(output: Output, cmd: SnapshotCommand) -> ExitCode {
    snapshot::offline(output, cmd)
}
pub use self::run::{exit_code_of, SpecArgs};

/// Deadline of an ordinary call (enforced by the server via grpc-timeout).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// AddPeer waits for the new node to catch up before promoting it.
pub(crate) const ADD_PEER_TIMEOUT: Duration = Duration::from_secs(150);

/// A spinner on stderr while the CLI waits on the cluster (a job to start,
/// a node to catch up), so a wait never looks like a hang. Only on a
/// terminal: scripts and pipes see no control characters.
pub fn spinner(message: String) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(100));
    Some(bar)
}

/// Prints a line to stderr without tearing an active spinner.
pub fn notice(spinner: Option<&indicatif::ProgressBar>, line: &str) {
    match spinner {
        Some(bar) => bar.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}

/// A request with its deadline.
fn call<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Options every client command takes (listed under "Connection").
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Connection")]
pub struct ClientOpts {
    /// Node API address(es), comma-separated; the next is tried when one is
    /// down. `unix:///path/drover.sock` is a node's local socket.
    #[arg(
        long,
        global = true,
        env = "DROVER_ADDR",
        default_value = "http://127.0.0.1:7700"
    )]
    pub address: String,
    /// Output format.
    #[arg(
        short = 'o',
        long,
        global = true,
        value_enum,
        default_value_t = Output::Table
    )]
    pub output: Output,
    /// ACL token secret (needed when the cluster has ACLs enabled).
    #[arg(long, global = true, env = "DROVER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The cluster's CA certificate (PEM): speak TLS to addresses without a
    /// scheme and to https:// ones, and trust only nodes it signed.
    #[arg(long, global = true, env = "DROVER_CACERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// A client certificate (PEM) from `drover tls cert create --client`,
    /// for nodes that require one (tls.verify_client); with --client-key.
    #[arg(long, global = true, env = "DROVER_CLIENT_CERT")]
    pub client_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM); with --client-cert.
    #[arg(long, global = true, env = "DROVER_CLIENT_KEY")]
    pub client_key: Option<std::path::PathBuf>,
}

/// How results are printed (`-o`, as kubectl's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Columns that fit the terminal.
    Table,
    /// Every column, whatever the width (`job list`).
    Wide,
    /// One JSON document, the REST API's shapes.
    Json,
}

/// `drover job …`
#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Submit a job and print its id. One argument is a shell command
    /// (`/bin/sh -c`); several are an argument vector run without a shell.
    #[command(after_help = "Examples:
  drover job submit -- 'echo hello; date'            one shell command
  drover job submit --image alpine:3 -- ls -l /      an argument vector
  drover job submit --max-attempts 3 --backoff 2s -- sh -c 'exit $((RANDOM % 2))'
  drover job submit --idempotency-key nightly-2026-12-03 -- ./backup.sh   # submitting again returns the first job")]
    Submit {
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Run a job: submit it, stream its output, exit with its exit code
    /// (124 timed out, 125 could not start, 128+N signal N, 130 stopped).
    #[command(after_help = "Examples:
  drover job run -- echo hello                       prints hello, exits 0
  drover job run --timeout 5s -- sleep 60            exits 124 (timed out)
  drover job run --max-attempts 3 --backoff 1s -- sh -c 'exit $((RANDOM % 2))'
  drover job run -d -- sleep 300                     prints the id, returns at once

Ctrl-C stops the job and waits for it to end (exit 130); a second Ctrl-C
leaves it running and prints how to stop it.")]
    Run {
        #[command(flatten)]
        spec: SpecArgs,
        /// Print the job id and return at once.
        #[arg(long, short)]
        detach: bool,
    },
    /// Print a job's output (stdout to stdout, stderr to stderr).
    Logs {
        id: String,
        /// Keep printing until the attempt ends.
        #[arg(long, short)]
        follow: bool,
        /// Which attempt (default: the latest).
        #[arg(long, default_value_t = 0)]
        attempt: u32,
    },
    /// List jobs, newest last, with filters; `--all` walks every page.
    List {
        /// Only jobs in this state (repeatable): QUEUED, RUNNING, FAILED, ...
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
        /// Only jobs with this label, KEY=VALUE (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Only jobs whose latest attempt is on this node.
        #[arg(long)]
        node: Option<u64>,
        /// Only jobs submitted with this token (accessor id; `drover acl
        /// token self` shows yours).
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        paging: Paging,
        /// Every page, not just the first.
        #[arg(long)]
        all: bool,
        /// Oldest first (submission order) instead of newest first.
        #[arg(long)]
        oldest_first: bool,
    },
    /// Stop a job in any state: its container gets SIGTERM, then SIGKILL
    /// after the node's stop grace. Stopping a finished job changes nothing.
    Stop { id: String },
    /// Print job state changes as they happen, one line each, until
    /// interrupted: every job's, or one job's. With `--from-index` (the
    /// `index` of `job list --output json`), first every change after that
    /// index, so nothing between the list and the watch is missed.
    Watch {
        /// Only this job's changes.
        id: Option<String>,
        /// Start after this log index (0: from now).
        #[arg(long, default_value_t = 0)]
        from_index: u64,
    },
    /// Show one job, or list jobs when no id is given.
    Status {
        id: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
}

/// How a job listing reads its page.
#[derive(Args, Clone, Debug)]
pub struct Paging {
    /// Read through the leader (linearizable) instead of this node's copy.
    #[arg(long)]
    pub consistent: bool,
    /// Jobs per page (at most 1000).
    #[arg(long, default_value_t = 100)]
    pub page_size: u32,
    /// Continue a listing from this token.
    #[arg(long, default_value = "")]
    pub page_token: String,
}

/// `drover operator raft …`
#[derive(Subcommand, Debug)]
pub enum RaftCommand {
    /// List the members with their role and replication progress, as the
    /// leader sees them (asked through any node).
    ListPeers {
        /// The answering node's own view instead (a follower knows only
        /// the leader's contact and no one's progress).
        #[arg(long)]
        local: bool,
    },
    /// Add a node: as a learner first, promoted to voter once caught up.
    AddPeer {
        #[arg(long)]
        id: u64,
        /// host:port of the new node's raft listener.
        #[arg(long)]
        raft_addr: String,
        /// host:port of the new node's API listener.
        #[arg(long)]
        api_addr: String,
        /// Keep it a non-voting learner.
        #[arg(long)]
        learner_only: bool,
    },
    /// Remove a node from the cluster.
    RemovePeer {
        #[arg(long)]
        id: u64,
    },
    /// Hand leadership to another voter.
    TransferLeader {
        #[arg(long)]
        to: u64,
    },
}

/// Runs a client command and turns the outcome into an exit code (a
/// command may choose its own success code, as `job run` does).
pub async fn run<F, Fut>(opts: ClientOpts, f: F) -> ExitCode
where
    F: FnOnce(Client, ClientOpts) -> Fut,
    Fut: std::future::Future<Output = Result<u8, Failure>>,
{
    let outcome = match connect(&opts).await {
        Ok(client) => f(client, opts).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("drover: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// `drover job …`
pub async fn job(mut client: Client, opts: ClientOpts, cmd: JobCommand) -> Result<u8, Failure> {
    match cmd {
        JobCommand::Run { spec, detach } => {
            let spec = spec.to_spec()?;
            return run::run(&mut client, opts.output, spec, detach).await;
        }
        JobCommand::Logs {
            id,
            follow,
            attempt,
        } => {
            let id = list::resolve_id(&mut client, &id).await?;
            run::logs(&mut client, id, attempt, follow).await?
        }
        JobCommand::Stop { id } => {
            let id = list::resolve_id(&mut client, &id).await?;
            run::stop(&mut client, opts.output, id).await?
        }
        JobCommand::Watch { id, from_index } => {
            let id = match id {
                Some(id) => Some(list::resolve_id(&mut client, &id).await?),
                None => None,
            };
            watch::watch(&mut client, opts.output, from_index, id).await?
        }
        JobCommand::Submit { spec } => {
            let job = run::submit(&mut client, spec.to_spec()?).await?;
            match opts.output {
                Output::Json => println!("{}", job_json(&job)),
                Output::Table | Output::Wide => println!("{}", job.id),
            }
        }
        JobCommand::Status {
            id: Some(id),
            paging: Paging { consistent, .. },
        } => {
            let id = list::resolve_id(&mut client, &id).await?;
            let job = client
                .get_job(call(pb::GetJobRequest { id, consistent }, CALL_TIMEOUT))
                .await?
                .into_inner()
                .job;
            let job = job.ok_or_else(Failure::empty_response)?;
            match opts.output {
                Output::Json => println!("{}", job_json(&job)),
                Output::Table | Output::Wide => {
                    let spec = job.spec.clone().unwrap_or_default();
                    println!("ID          = {}", job.id);
                    println!("State       = {}", job.state);
                    println!("Command     = {}", describe_spec(job.spec.as_ref()));
                    println!("Image       = {}", spec.image);
                    println!("Submitted   = {}", human_time(job.submitted_at_ms));
                    println!("Log index   = {}", job.index);
                    if !job.attempts.is_empty() {
                        println!();
                        println!(
                            "{:<7}  {:<4}  {:<10}  {:<10}  {:<18}  MESSAGE",
                            "ATTEMPT", "NODE", "STARTED", "FINISHED", "REASON"
                        );
                        for a in &job.attempts {
                            let when = |ms: i64| {
                                if ms == 0 {
                                    "-".to_string()
                                } else {
                                    human_time(ms)
                                }
                            };
                            let reason = match (a.reason.as_str(), a.exit_code) {
                                ("", _) => "(active)".to_string(),
                                ("EXIT_CODE", Some(code)) => format!("exit code {code}"),
                                ("SIGNAL", _) => format!("signal {}", a.signal),
                                (r, _) => r.to_string(),
                            };
                            println!(
                                "{:<7}  {:<4}  {:<10}  {:<10}  {:<18}  {}",
                                a.number,
                                a.node,
                                when(a.started_at_ms),
                                when(a.finished_at_ms),
                                reason,
                                truncate(&a.message, 60)
                            );
                        }
                    }
                }
            }
        }
        JobCommand::Status {
            id: None,
            paging:
                Paging {
                    consistent,
                    page_size,
                    page_token,
                },
        } => {
            let request = pb::ListJobsRequest {
                page_size,
                page_token,
                consistent,
                newest_first: true,
                ..Default::default()
            };
            list::list_jobs(&mut client, opts.output, request, false).await?;
        }
        JobCommand::List {
            states,
            labels,
            node,
            owner,
            paging:
                Paging {
                    consistent,
                    page_size,
                    page_token,
                },
            all,
            oldest_first,
        } => {
            let labels = run::pairs(&labels, "label")?.into_iter().collect();
            let request = pb::ListJobsRequest {
                page_size,
                page_token,
                consistent,
                states,
                labels,
                node: node.unwrap_or(0),
                owner: owner.unwrap_or_default(),
                newest_first: !oldest_first,
                id_prefix: String::new(),
            };
            list::list_jobs(&mut client, opts.output, request, all).await?;
        }
    }
    Ok(0)
}

/// `drover operator raft …`
pub async fn raft(mut client: Client, opts: ClientOpts, cmd: RaftCommand) -> Result<(), Failure> {
    let members = match cmd {
        RaftCommand::ListPeers { local } => {
            let request = pb::GetClusterStatusRequest {
                leader_view: !local,
            };
            let status = client
                .get_cluster_status(call(request, CALL_TIMEOUT))
                .await?
                .into_inner();
            if opts.output == Output::Json {
                println!("{}", status_json(&status));
                return Ok(());
            }
            status.members
        }
        RaftCommand::AddPeer {
            id,
            raft_addr,
            api_addr,
            learner_only,
        } => {
            let waiting = match opts.output {
                Output::Table | Output::Wide => spinner(format!(
                    "adding node {id}: waiting for it to catch up with the log"
                )),
                Output::Json => None,
            };
            let added = client
                .add_peer(call(
                    pb::AddPeerRequest {
                        id,
                        raft_addr,
                        api_addr,
                        learner_only,
                    },
                    ADD_PEER_TIMEOUT,
                ))
                .await;
            if let Some(bar) = waiting {
                bar.finish_and_clear();
            }
            added?.into_inner().members
        }
        RaftCommand::RemovePeer { id } => {
            client
                .remove_peer(call(pb::RemovePeerRequest { id }, CALL_TIMEOUT))
                .await?
                .into_inner()
                .members
        }
        RaftCommand::TransferLeader { to } => {
            let r = client
                .transfer_leader(call(pb::TransferLeaderRequest { to }, CALL_TIMEOUT))
                .await?
                .into_inner();
            match opts.output {
                Output::Json => println!("{}", json!({ "leader_id": r.leader_id })),
                Output::Table | Output::Wide => println!("leader is now node {}", r.leader_id),
            }
            return Ok(());
        }
    };
    match opts.output {
        Output::Json => println!(
            "{}",
            json!({ "members": members.iter().map(member_json).collect::<Vec<_>>() })
        ),
        Output::Table | Output::Wide => {
            println!(
                "{:<6}  {:<22}  {:<22}  {:<8}  {:<7}  {:<8}  LAST CONTACT",
                "ID", "RAFT ADDRESS", "API ADDRESS", "SUFFRAGE", "LEADER", "MATCH"
            );
            for m in &members {
                let mut contact = m.last_contact_ms.map_or("-".to_string(), |ms| {
                    format!("{:.1}s ago", ms as f64 / 1000.0)
                });
                if m.disk_low {
                    contact += "  (disk below its reserve: refusing new work)";
                }
                println!(
                    "{:<6}  {:<22}  {:<22}  {:<8}  {:<7}  {:<8}  {}",
                    m.id,
                    m.raft_addr,
                    m.api_addr,
                    m.suffrage,
                    m.is_leader,
                    m.match_index.map_or("-".to_string(), |i| i.to_string()),
                    contact
                );
            }
        }
    }
    Ok(())
}

fn describe_spec(spec: Option<&pb::JobSpec>) -> String {
    match spec {
        Some(s) if !s.command.is_empty() => s.command.clone(),
        Some(s) => s.args.join(" "),
        None => String::new(),
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    }
}

/// "3s ago", "5m ago", … relative to now.
pub fn human_time(ms: i64) -> String {
    let secs = ((crate::jobs::now_ms() - ms) / 1000).max(0);
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// A job as `--output json` prints it: the same shape the REST API sends.
fn job_json(job: &pb::Job) -> serde_json::Value {
    json::to_value(&json::JobJson::from(job))
}

fn member_json(m: &pb::Member) -> serde_json::Value {
    json::to_value(&json::MemberJson::from(m))
}

fn status_json(s: &pb::ClusterStatus) -> serde_json::Value {
    json::to_value(&json::ClusterStatusJson::from(s))
}
