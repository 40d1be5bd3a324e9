//! End-to-end write throughput of Drover against etcd, on loopback.
//!
//! For each target (Drover 1 node, Drover 3 nodes, etcd 3 members) the bench
//! starts real server processes with fresh data dirs in a temp dir, waits for a
//! leader, then for each concurrency (1, 16, 64 by default) runs that many
//! clients in a closed loop — each sends one write, waits for the
//! acknowledgement, sends the next — for a fixed duration after a short
//! warm-up. It reports acknowledged (= committed) writes/s and latency
//! p50/p99, and the ratio to etcd at the same concurrency.
//!
//! Every client has its own HTTP/2 connection to the leader (Drover's
//! followers would forward; etcd's would too; going to the leader directly
//! measures the consensus path, not the forwarding hop, for both systems).
//!
//! * Drover: `SubmitJob { command: "true" }`, default raft config, real fsync,
//!   no executor (jobs stay queued; the queue bound is lifted for the bench).
//! * etcd 3.4: `KV.Put` of a 17-byte key and a 64-byte value over gRPC, with
//!   etcd's defaults (100 ms heartbeat, 1 s election timeout).
//!
//! A second pass ("fsync probe") restarts each target with every server under
//! `strace --seccomp-bpf -e trace=fsync,fdatasync,...` (only those syscalls
//! stop the process) and counts sync calls per committed Raft entry. It is a
//! separate pass because tracing slows the servers down; its writes/s are not
//! comparable with the main table and are shown only to size the distortion.
//!
//! Environment (all optional):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `BENCH_DURATION_SECS` | 5 | measured time per cell |
//! | `BENCH_WARMUP_SECS` | 1 | unmeasured warm-up per cell, same clients |
//! | `BENCH_CLIENTS` | `1,16,64` | concurrencies |
//! | `BENCH_TARGETS` | `drover-1,drover-3,etcd-3` | targets, in order; `drover-3-tls` is the 3-node cluster with mutual TLS on every port (`benches/tls.sh` sets `drover-3,drover-3-tls`) |
//! | `BENCH_FSYNC_PROBE` | 1 | 0 skips the strace pass |
//! | `BENCH_FSYNC_SECS` | 3 | measured time per fsync-probe cell |
//! | `DROVER_BIN` | the release `drover` cargo built for this bench | agent binary |
//! | `ETCD_BIN` | `etcd` on PATH, else /usr/bin/etcd | etcd 3.4 binary |
//! | `BENCH_RESULTS` | unset | also write the markdown report to this file |
//! | `BENCH_LOG_DIR` | unset | keep every server log (and strace output) there |
//! | `BENCH_ROUNDS` | 1 | repeat the throughput pass (fresh clusters); report the median cell and the range |
//!
//! Temp dirs honour `TMPDIR`. The markdown report goes to stdout, progress to
//! stderr.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::cluster::Servers;
use common::{agent, cpu_time_of, env_secs, which, LogScan, Proc, SyncCounts, SYNC_SYSCALLS};
use drover::proto::v1 as pb;
use drover::proto::v1::drover_client::DroverClient;
use tonic::transport::Channel;

/// The slice of etcd's `api/etcdserverpb/rpc.proto` (v3.4) that a Put and a
/// Maintenance.Status need, written exactly as prost would generate it from
///
/// ```proto
/// package etcdserverpb;
/// service KV { rpc Put(PutRequest) returns (PutResponse); }
/// service Maintenance { rpc Status(StatusRequest) returns (StatusResponse); }
/// message ResponseHeader { uint64 cluster_id = 1; uint64 member_id = 2;
///                          int64 revision = 3; uint64 raft_term = 4; }
/// message PutRequest { bytes key = 1; bytes value = 2; int64 lease = 3;
///                      bool prev_kv = 4; bool ignore_value = 5; bool ignore_lease = 6; }
/// message PutResponse { ResponseHeader header = 1; /* prev_kv = 2 unused */ }
/// message StatusRequest {}
/// message StatusResponse { ResponseHeader header = 1; string version = 2;
///                          int64 dbSize = 3; uint64 leader = 4; uint64 raftIndex = 5;
///                          uint64 raftTerm = 6; uint64 raftAppliedIndex = 7;
///                          repeated string errors = 8; }
/// ```
///
/// Hand-written instead of generated so the bench needs no build-script
/// change to the crate; the wire format is the same (prost skips the fields
/// left out).
mod etcdpb {
    use tonic::codegen::http::uri::PathAndQuery;
    use tonic::transport::Channel;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseHeader {
        #[prost(uint64, tag = "1")]
        pub cluster_id: u64,
        #[prost(uint64, tag = "2")]
        pub member_id: u64,
        #[prost(int64, tag = "3")]
        pub revision: i64,
        #[prost(uint64, tag = "4")]
        pub raft_term: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
        #[prost(int64, tag = "3")]
        pub lease: i64,
        #[prost(bool, tag = "4")]
        pub prev_kv: bool,
        #[prost(bool, tag = "5")]
        pub ignore_value: bool,
        #[prost(bool, tag = "6")]
        pub ignore_lease: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusRequest {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(int64, tag = "3")]
        pub db_size: i64,
        #[prost(uint64, tag = "4")]
        pub leader: u64,
        #[prost(uint64, tag = "5")]
        pub raft_index: u64,
        #[prost(uint64, tag = "6")]
        pub raft_term: u64,
        #[prost(uint64, tag = "7")]
        pub raft_applied_index: u64,
        #[prost(string, repeated, tag = "8")]
        pub errors: Vec<String>,
    }

    /// A unary gRPC client for the two calls above.
    #[derive(Clone)]
    pub struct Client {
        inner: tonic::client::Grpc<Channel>,
    }

    impl Client {
        pub fn new(channel: Channel) -> Self {
            Client {
                inner: tonic::client::Grpc::new(channel),
            }
        }

        async fn unary<Req, Resp>(
            &mut self,
            path: &'static str,
            request: Req,
        ) -> Result<Resp, tonic::Status>
        where
            Req: prost::Message + Send + Sync + 'static,
            Resp: prost::Message + Default + Send + Sync + 'static,
        {
            self.inner
                .ready()
                .await
                .map_err(|e| tonic::Status::unavailable(format!("channel not ready: {e}")))?;
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            self.inner
                .unary(
                    tonic::Request::new(request),
                    PathAndQuery::from_static(path),
                    codec,
                )
                .await
                .map(|r| r.into_inner())
        }

        pub async fn put(&mut self, request: PutRequest) -> Result<PutResponse, tonic::Status> {
            self.unary("/etcdserverpb.KV/Put", request).await
        }

        pub async fn status(&mut self) -> Result<StatusResponse, tonic::Status> {
            self.unary("/etcdserverpb.Maintenance/Status", StatusRequest {})
                .await
        }
    }
}

/// Per-request deadline (Drover's default propose timeout is 10 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(12);
/// How long a cluster may take to elect a leader and accept a first write.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Slowest requests listed per cell in the anomalies section.
const SLOWEST: usize = 5;
/// A cell whose slowest write took at least this long lists its slowest
/// writes (with wall-clock times, to match against the server logs).
const SLOW_MS: f64 = 100.0;

// ---------------------------------------------------------------------------
// Settings

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Kind {
    #[default]
    Drover1,
    Drover3,
    /// Drover3 with mutual TLS on every port (certificates by `drover tls`).
    Drover3Tls,
    Etcd3,
}

impl Kind {
    fn parse(s: &str) -> Kind {
        match s.trim() {
            "drover-1" => Kind::Drover1,
            "drover-3" => Kind::Drover3,
            "drover-3-tls" => Kind::Drover3Tls,
            "etcd-3" => Kind::Etcd3,
            other => panic!(
                "BENCH_TARGETS: unknown target {other:?} (drover-1, drover-3, drover-3-tls, etcd-3)"
            ),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Drover1 => "drover 1 node",
            Kind::Drover3 => "drover 3 nodes",
            Kind::Drover3Tls => "drover 3 nodes, mTLS",
            Kind::Etcd3 => "etcd 3 members",
        }
    }

    fn nodes(self) -> usize {
        match self {
            Kind::Drover1 => 1,
            Kind::Drover3 | Kind::Drover3Tls | Kind::Etcd3 => 3,
        }
    }

    fn is_etcd(self) -> bool {
        self == Kind::Etcd3
    }

    fn is_tls(self) -> bool {
        self == Kind::Drover3Tls
    }
}

struct Settings {
    duration: Duration,
    warmup: Duration,
    clients: Vec<usize>,
    targets: Vec<Kind>,
    fsync_probe: bool,
    fsync_duration: Duration,
    drover_bin: PathBuf,
    etcd_bin: Option<PathBuf>,
    strace_bin: Option<PathBuf>,
    results_path: Option<PathBuf>,
    log_dir: Option<PathBuf>,
    rounds: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let clients = std::env::var("BENCH_CLIENTS")
            .unwrap_or_else(|_| "1,16,64".into())
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .unwrap_or_else(|| panic!("BENCH_CLIENTS: {s:?} is not a count in 1..=1024"))
            })
            .collect();
        let targets = std::env::var("BENCH_TARGETS")
            .unwrap_or_else(|_| "drover-1,drover-3,etcd-3".into())
            .split(',')
            .map(Kind::parse)
            .collect();
        let drover_bin = std::env::var_os("DROVER_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_drover")));
        let etcd_bin = std::env::var_os("ETCD_BIN")
            .map(PathBuf::from)
            .or_else(|| which("etcd", &["/usr/bin/etcd", "/usr/local/bin/etcd"]));
        Settings {
            duration: env_secs("BENCH_DURATION_SECS", 5.0),
            warmup: env_secs("BENCH_WARMUP_SECS", 1.0),
            clients,
            targets,
            fsync_probe: std::env::var("BENCH_FSYNC_PROBE").map_or(true, |v| v.trim() != "0"),
            fsync_duration: env_secs("BENCH_FSYNC_SECS", 3.0),
            drover_bin,
            etcd_bin,
            strace_bin: which("strace", &["/usr/bin/strace"]),
            results_path: std::env::var_os("BENCH_RESULTS").map(PathBuf::from),
            log_dir: std::env::var_os("BENCH_LOG_DIR").map(PathBuf::from),
            rounds: std::env::var("BENCH_ROUNDS").map_or(1, |v| {
                v.trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=10).contains(n))
                    .unwrap_or_else(|| panic!("BENCH_ROUNDS={v:?} is not a count in 1..=10"))
            }),
        }
    }
}

// ---------------------------------------------------------------------------
// Clusters

/// The servers of one target.
struct Cluster {
    kind: Kind,
    leader: usize,
    servers: Servers,
}

/// Node status as the bench needs it, for either system.
struct NodeView {
    is_leader: bool,
    commit_index: u64,
    term: u64,
}

impl Cluster {
    async fn start(kind: Kind, settings: &Settings, traced: bool) -> Result<Cluster, String> {
        let strace = if traced {
            Some(
                settings
                    .strace_bin
                    .clone()
                    .ok_or("strace is not installed")?,
            )
        } else {
            None
        };
        let mut cluster = Cluster {
            kind,
            leader: 0,
            servers: Servers::new("drover-bench-")?,
        };
        let n = kind.nodes();
        let ports = Servers::ports(n);
        // Drover's REST listener only serves /metrics here, for a look at a
        // node while the bench runs (its address goes to stderr).
        let http_ports: Vec<u16> = (0..n).map(|_| agent::free_port()).collect();
        let cluster_id = format!("bench-{}", std::process::id());
        if kind.is_tls() {
            cluster
                .servers
                .make_certs(&settings.drover_bin, &cluster_id, n)?;
        }
        for (i, (api, _)) in ports.iter().enumerate() {
            if kind.is_etcd() {
                let etcd = settings
                    .etcd_bin
                    .clone()
                    .ok_or("etcd is not installed (apt-get install etcd-server)")?;
                let args = etcd_args(&cluster.servers.root(), i, &ports);
                cluster.servers.spawn(
                    format!("etcd{}", i + 1),
                    &etcd,
                    &args,
                    *api,
                    strace.as_deref(),
                )?;
            } else {
                let config = cluster.servers.write_agent_config(
                    &cluster_id,
                    i,
                    &ports,
                    Some(http_ports[i]),
                    DROVER_SECTIONS,
                )?;
                eprintln!(
                    "[bench] node{}: metrics at http://127.0.0.1:{}/metrics",
                    i + 1,
                    http_ports[i]
                );
                cluster.servers.spawn_agent(
                    &settings.drover_bin,
                    i,
                    &config,
                    *api,
                    strace.as_deref(),
                )?;
            }
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    fn check_alive(&mut self) -> Result<(), String> {
        self.servers.check_alive()
    }

    /// A channel to node `i` (with the bench's client certificate under TLS).
    async fn channel(&self, i: usize) -> Result<Channel, String> {
        self.servers.channel(i, REQUEST_TIMEOUT).await
    }

    async fn view(&self, i: usize) -> Result<NodeView, String> {
        let channel = self.channel(i).await?;
        if self.kind.is_etcd() {
            let status = etcdpb::Client::new(channel)
                .status()
                .await
                .map_err(|s| format!("etcd status: {s}"))?;
            let me = status.header.map_or(0, |h| h.member_id);
            Ok(NodeView {
                is_leader: status.leader != 0 && status.leader == me,
                commit_index: status.raft_index,
                term: status.raft_term,
            })
        } else {
            let status = DroverClient::new(channel)
                .get_cluster_status(pb::GetClusterStatusRequest::default())
                .await
                .map_err(|s| format!("drover status: {s}"))?
                .into_inner();
            Ok(NodeView {
                is_leader: status.role == "leader",
                commit_index: status.commit_index,
                term: status.term,
            })
        }
    }

    /// Polls until one node leads and a write through it succeeds.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_error = String::from("no answer yet");
        loop {
            self.check_alive()?;
            for i in 0..self.servers.procs.len() {
                match self.view(i).await {
                    Ok(v) if v.is_leader => match self.connect_writer(i).await {
                        Ok(mut w) => match w.write(0, 0).await {
                            Ok(()) => {
                                self.leader = i;
                                self.servers.mark_logs();
                                return Ok(());
                            }
                            Err(s) => last_error = format!("first write: {s}"),
                        },
                        Err(e) => last_error = e,
                    },
                    Ok(_) => {}
                    Err(e) => last_error = e,
                }
            }
            if Instant::now() > deadline {
                return Err(self.servers.not_ready(READY_TIMEOUT, &last_error));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn connect_writer(&self, i: usize) -> Result<Writer, String> {
        let channel = self.channel(i).await?;
        Ok(if self.kind.is_etcd() {
            Writer::Etcd(etcdpb::Client::new(channel))
        } else {
            Writer::Drover(DroverClient::new(channel))
        })
    }

    async fn leader_view(&self) -> Option<NodeView> {
        self.view(self.leader).await.ok()
    }

    /// Total CPU time of every server process; None if any is gone or
    /// traced (strace's time is not the server's).
    fn cpu_time(&self) -> Option<Duration> {
        let procs = &self.servers.procs;
        if procs.iter().any(|p| p.trace_path.is_some()) {
            return None;
        }
        procs.iter().map(Proc::cpu_time).sum()
    }

    fn sync_calls(&self) -> Vec<Option<SyncCounts>> {
        self.servers.procs.iter().map(common::sync_calls).collect()
    }

    /// Copies every log (and strace output) to `dir`, for a post-mortem.
    fn keep_logs(&self, dir: &Path, phase: &str) {
        let slug = self.kind.label().replace(' ', "-");
        self.servers.keep_logs(dir, &format!("{slug}-{phase}"));
    }

    /// Warnings and errors the servers logged, per process.
    fn scan_logs(&self) -> Vec<LogScan> {
        self.servers.scan_logs()
    }
}

/// Every Drover node's sections. No [raft] section: the defaults are what
/// we measure. No executor: this measures the replicated table, not running
/// thousands of containers, so every job stays queued: the queue bound
/// (100,000 by default, a guard for real clusters) is lifted, or a fast run
/// would hit it mid-cell; so are the per-client rate and connection limits
/// and the state cap (admission guards against hostile clients, not costs:
/// every bench client calls from 127.0.0.1 without a token).
const DROVER_SECTIONS: &str =
    "[log]\nlevel = \"info\"\nformat = \"text\"\n\n[executor]\nenabled = false\n\n\
                               [scheduler]\nqueue_capacity = 100000000\n\n\
                               [limits]\nrate = 0\nmax_connections_per_address = 4096\n\n\
                               [quotas]\nmax_state_bytes = 536870912\n";

fn etcd_args(root: &Path, i: usize, ports: &[(u16, u16)]) -> Vec<String> {
    let name = |j: usize| format!("etcd{}", j + 1);
    let cluster = ports
        .iter()
        .enumerate()
        .map(|(j, (_, peer))| format!("{}=http://127.0.0.1:{peer}", name(j)))
        .collect::<Vec<_>>()
        .join(",");
    let (client, peer) = ports[i];
    [
        ("--name", name(i)),
        ("--data-dir", root.join(name(i)).display().to_string()),
        ("--listen-client-urls", format!("http://127.0.0.1:{client}")),
        (
            "--advertise-client-urls",
            format!("http://127.0.0.1:{client}"),
        ),
        ("--listen-peer-urls", format!("http://127.0.0.1:{peer}")),
        (
            "--initial-advertise-peer-urls",
            format!("http://127.0.0.1:{peer}"),
        ),
        ("--initial-cluster", cluster),
        ("--initial-cluster-state", "new".to_string()),
        (
            "--initial-cluster-token",
            format!("bench-{}", std::process::id()),
        ),
        ("--logger", "zap".to_string()),
        ("--log-outputs", "stderr".to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect()
}

// ---------------------------------------------------------------------------
// Load

enum Writer {
    Drover(DroverClient<Channel>),
    Etcd(etcdpb::Client),
}

/// The etcd value size: about what one Drover Submit entry carries.
const ETCD_VALUE: [u8; 64] = [b'x'; 64];

impl Writer {
    async fn write(&mut self, client: usize, seq: u64) -> Result<(), tonic::Status> {
        match self {
            Writer::Drover(c) => {
                let request = pb::SubmitJobRequest {
                    spec: Some(pb::JobSpec {
                        command: "true".to_string(),
                        ..Default::default()
                    }),
                };
                c.submit_job(request).await.map(|_| ())
            }
            Writer::Etcd(c) => {
                let request = etcdpb::PutRequest {
                    key: format!("b/{client:04}/{seq:010}").into_bytes(),
                    value: ETCD_VALUE.to_vec(),
                    ..Default::default()
                };
                c.put(request).await.map(|_| ())
            }
        }
    }
}

/// What one client saw during the measured window.
#[derive(Default)]
struct ClientLog {
    latencies_us: Vec<u64>,
    /// Completions per second of the window.
    per_second: Vec<u64>,
    errors: BTreeMap<String, u64>,
    error_samples: Vec<String>,
    last_done: Option<Instant>,
    /// The slowest requests: (latency µs, wall-clock completion).
    slowest: Vec<(u64, std::time::SystemTime)>,
}

/// Keeps the `SLOWEST` largest latencies.
fn keep_slowest(list: &mut Vec<(u64, std::time::SystemTime)>, item: (u64, std::time::SystemTime)) {
    if list.len() < SLOWEST {
        list.push(item);
    } else if let Some(min) = list.iter_mut().min_by_key(|(us, _)| *us) {
        if min.0 < item.0 {
            *min = item;
        }
    }
}

async fn client_loop(
    mut writer: Writer,
    id: usize,
    measure_start: Instant,
    end: Instant,
) -> ClientLog {
    let mut log = ClientLog::default();
    let mut seq = 1u64;
    // Bounded: no request starts after `end`, and each has REQUEST_TIMEOUT.
    loop {
        let start = Instant::now();
        if start >= end {
            break;
        }
        let result = writer.write(id, seq).await;
        seq += 1;
        let done = Instant::now();
        if start < measure_start {
            continue;
        }
        match result {
            Ok(()) => {
                let us = done.duration_since(start).as_micros() as u64;
                log.latencies_us.push(us);
                keep_slowest(&mut log.slowest, (us, std::time::SystemTime::now()));
                let second = done.duration_since(measure_start).as_secs() as usize;
                if log.per_second.len() <= second {
                    log.per_second.resize(second + 1, 0);
                }
                log.per_second[second] += 1;
                log.last_done = Some(done);
            }
            Err(status) => {
                let code = format!("{:?}", status.code());
                *log.errors.entry(code).or_default() += 1;
                if log.error_samples.len() < 3 {
                    log.error_samples.push(format!(
                        "{:?} after {:.0} ms: {}",
                        status.code(),
                        done.duration_since(start).as_secs_f64() * 1e3,
                        status.message()
                    ));
                }
                // Don't spin on a failing server.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    log
}

/// The merged result of one (target, clients) cell.
struct Cell {
    clients: usize,
    ok: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
    per_second: Vec<u64>,
    errors: BTreeMap<String, u64>,
    error_samples: Vec<String>,
    slowest: Vec<(u64, std::time::SystemTime)>,
    committed: Option<u64>,
    /// min and max writes/s over the rounds, when there was more than one.
    range: Option<(f64, f64)>,
    /// Set when the leader changed or did not answer around the cell.
    leadership_note: Option<String>,
    /// Sync calls per process during the cell (fsync probe only).
    sync_calls: Vec<Option<SyncCounts>>,
    /// CPU time the servers (all of them) and this bench process used in
    /// the measured window: on a CPU-bound machine, CPU per write is the
    /// cost that decides throughput, and it is far less noisy than writes/s.
    cpu: Option<(Duration, Duration)>,
}

impl Cell {
    fn writes_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentile_ms(&self, q: f64) -> Option<f64> {
        let n = self.latencies_us.len();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        Some(self.latencies_us[rank - 1] as f64 / 1e3)
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

async fn run_cell(
    cluster: &Cluster,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Cell, String> {
    let mut writers = Vec::with_capacity(clients);
    for _ in 0..clients {
        writers.push(cluster.connect_writer(cluster.leader).await?);
    }
    let measure_start = Instant::now() + warmup;
    let end = measure_start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (id, writer) in writers.into_iter().enumerate() {
        tasks.spawn(client_loop(writer, id, measure_start, end));
    }
    // Counters are read when the measured window opens, under load.
    tokio::time::sleep_until(tokio::time::Instant::from_std(measure_start)).await;
    let before = cluster.leader_view().await;
    let syncs_before = cluster.sync_calls();
    let cpu_before = cluster.cpu_time().zip(cpu_time_of("/proc/self/stat"));
    let mut cell = Cell {
        clients,
        ok: 0,
        elapsed: duration,
        latencies_us: Vec::new(),
        per_second: Vec::new(),
        errors: BTreeMap::new(),
        error_samples: Vec::new(),
        slowest: Vec::new(),
        committed: None,
        range: None,
        leadership_note: None,
        sync_calls: Vec::new(),
        cpu: None,
    };
    let hard_deadline =
        tokio::time::Instant::from_std(end + REQUEST_TIMEOUT + Duration::from_secs(5));
    let mut last_done = end;
    loop {
        let joined = match tokio::time::timeout_at(hard_deadline, tasks.join_next()).await {
            Ok(Some(joined)) => joined,
            Ok(None) => break,
            Err(_) => {
                tasks.abort_all();
                *cell.errors.entry("ClientStuck".into()).or_default() += tasks.len() as u64;
                break;
            }
        };
        let log = joined.map_err(|e| format!("client task failed: {e}"))?;
        cell.ok += log.latencies_us.len() as u64;
        cell.latencies_us.extend(log.latencies_us);
        if cell.per_second.len() < log.per_second.len() {
            cell.per_second.resize(log.per_second.len(), 0);
        }
        for (i, n) in log.per_second.into_iter().enumerate() {
            cell.per_second[i] += n;
        }
        for (code, n) in log.errors {
            *cell.errors.entry(code).or_default() += n;
        }
        for sample in log.error_samples {
            if cell.error_samples.len() < 5 {
                cell.error_samples.push(sample);
            }
        }
        for item in log.slowest {
            keep_slowest(&mut cell.slowest, item);
        }
        if let Some(done) = log.last_done {
            last_done = last_done.max(done);
        }
    }
    cell.elapsed = last_done.duration_since(measure_start);
    let cpu_after = cluster.cpu_time().zip(cpu_time_of("/proc/self/stat"));
    cell.cpu = cpu_before
        .zip(cpu_after)
        .map(|((sb, cb), (sa, ca))| (sa.saturating_sub(sb), ca.saturating_sub(cb)));
    // Only whole seconds inside the window count as per-second samples.
    cell.per_second.truncate(duration.as_secs() as usize);
    cell.latencies_us.sort_unstable();
    let after = cluster.leader_view().await;
    cell.committed = before
        .as_ref()
        .zip(after.as_ref())
        .map(|(b, a)| a.commit_index.saturating_sub(b.commit_index));
    cell.leadership_note = match (&before, &after) {
        (Some(b), Some(a)) if !a.is_leader || a.term != b.term => Some(format!(
            "leadership moved during the cell: node {} term {} -> {} (still leader: {})",
            cluster.leader + 1,
            b.term,
            a.term,
            a.is_leader
        )),
        (Some(_), Some(_)) => None,
        _ => Some("the leader did not answer a status call around the cell".into()),
    };
    cell.sync_calls = syncs_before
        .into_iter()
        .zip(cluster.sync_calls())
        .map(|(b, a)| Some(a?.since(b?)))
        .collect();
    Ok(cell)
}

// ---------------------------------------------------------------------------
// Driver and report

#[derive(Default)]
struct TargetRun {
    kind: Kind,
    cells: Vec<Cell>,
    failure: Option<String>,
    logs: Vec<LogScan>,
    /// Index of the process that led when the target became ready.
    leader: usize,
}

/// Runs every concurrency against a fresh `kind` cluster. `tag` names the
/// pass in kept log files ("load-r1", "fsync").
async fn run_target(kind: Kind, settings: &Settings, probe: bool, tag: &str) -> TargetRun {
    let mut run = TargetRun {
        kind,
        cells: Vec::new(),
        failure: None,
        logs: Vec::new(),
        leader: 0,
    };
    let phase = if probe { "fsync probe" } else { "throughput" };
    eprintln!("[bench] {phase}: starting {}", kind.label());
    let mut cluster = match Cluster::start(kind, settings, probe).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("[bench] {}: failed to start: {e}", kind.label());
            run.failure = Some(format!("did not start: {e}"));
            return run;
        }
    };
    run.leader = cluster.leader;
    let (warmup, duration) = if probe {
        (Duration::ZERO, settings.fsync_duration)
    } else {
        (settings.warmup, settings.duration)
    };
    for &clients in &settings.clients {
        match run_cell(&cluster, clients, warmup, duration).await {
            Ok(cell) => {
                eprintln!(
                    "[bench] {} x{clients}: {:.0} writes/s, p50 {} ms, p99 {} ms, {} errors",
                    kind.label(),
                    cell.writes_per_sec(),
                    fmt_ms(cell.percentile_ms(0.5)),
                    fmt_ms(cell.percentile_ms(0.99)),
                    cell.error_count()
                );
                run.cells.push(cell);
            }
            Err(e) => {
                eprintln!("[bench] {} x{clients}: {e}", kind.label());
                run.failure = Some(format!("{clients} clients: {e}"));
                break;
            }
        }
        if let Err(e) = cluster.check_alive() {
            eprintln!("[bench] {}: {e}", kind.label());
            run.failure = Some(e);
            break;
        }
    }
    run.logs = cluster.scan_logs();
    if let Some(dir) = &settings.log_dir {
        cluster.keep_logs(dir, tag);
    }
    run
}

/// One TargetRun per target from several rounds: per concurrency, the cell
/// of the median round (by writes/s) with the range over all rounds.
fn merge_rounds(rounds: Vec<Vec<TargetRun>>, clients: &[usize]) -> Vec<TargetRun> {
    let count = rounds.len();
    if count == 1 {
        return rounds.into_iter().next().unwrap_or_default();
    }
    let mut per_target: Vec<Vec<TargetRun>> = Vec::new();
    for (r, runs) in rounds.into_iter().enumerate() {
        for (t, mut run) in runs.into_iter().enumerate() {
            for scan in &mut run.logs {
                scan.name = format!("{} (round {})", scan.name, r + 1);
            }
            if let Some(f) = run.failure.take() {
                run.failure = Some(format!("round {}: {f}", r + 1));
            }
            if per_target.len() <= t {
                per_target.push(Vec::new());
            }
            per_target[t].push(run);
        }
    }
    per_target
        .into_iter()
        .filter_map(|runs| {
            let mut runs = runs.into_iter();
            let mut merged = runs.next()?;
            let mut all_cells = std::mem::take(&mut merged.cells);
            for run in runs {
                all_cells.extend(run.cells);
                merged.logs.extend(run.logs);
                if merged.failure.is_none() {
                    merged.failure = run.failure;
                }
            }
            for &c in clients {
                let mut cells: Vec<Cell> = Vec::new();
                let mut rest = Vec::new();
                for cell in all_cells.drain(..) {
                    if cell.clients == c {
                        cells.push(cell);
                    } else {
                        rest.push(cell);
                    }
                }
                all_cells = rest;
                cells.sort_by(|a, b| a.writes_per_sec().total_cmp(&b.writes_per_sec()));
                let (Some(min), Some(max)) = (cells.first(), cells.last()) else {
                    continue;
                };
                let range = (min.writes_per_sec(), max.writes_per_sec());
                let mut median = cells.swap_remove((cells.len() - 1) / 2);
                median.range = Some(range);
                merged.cells.push(median);
            }
            Some(merged)
        })
        .collect()
}

fn fmt_ms(ms: Option<f64>) -> String {
    match ms {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
        None => "–".to_string(),
    }
}

fn render(settings: &Settings, runs: &[TargetRun], probes: &[TargetRun]) -> String {
    let mut out = String::new();
    let etcd = runs.iter().find(|r| r.kind.is_etcd());
    let etcd_rate = |clients: usize| {
        etcd.and_then(|r| r.cells.iter().find(|c| c.clients == clients))
            .map(Cell::writes_per_sec)
            .filter(|r| *r > 0.0)
    };
    let _ = write!(
        out,
        "## Write throughput\n\n{:.0} s measured per cell after {:.0} s warm-up; closed-loop clients, \
         one connection each, all to the leader; all processes on this machine (loopback).",
        settings.duration.as_secs_f64(),
        settings.warmup.as_secs_f64()
    );
    if settings.rounds > 1 {
        let _ = write!(
            out,
            " {} rounds, each on fresh clusters: every row is the round with the median writes/s \
             (lower middle for an even count; latencies are that round's), with the range over the rounds in brackets.",
            settings.rounds
        );
    }
    out += "\n\n";
    out += "| target | clients | writes/s | p50 ms | p99 ms | vs etcd | errors |\n";
    out += "|---|---:|---:|---:|---:|---:|---:|\n";
    for run in runs {
        for cell in &run.cells {
            let ratio = if run.kind.is_etcd() {
                "1.00x".to_string()
            } else {
                etcd_rate(cell.clients).map_or("–".into(), |e| {
                    format!("{:.2}x", cell.writes_per_sec() / e)
                })
            };
            let rate = match cell.range {
                Some((min, max)) => format!("{:.0} ({min:.0}–{max:.0})", cell.writes_per_sec()),
                None => format!("{:.0}", cell.writes_per_sec()),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                run.kind.label(),
                cell.clients,
                rate,
                fmt_ms(cell.percentile_ms(0.5)),
                fmt_ms(cell.percentile_ms(0.99)),
                ratio,
                cell.error_count()
            );
        }
        if let Some(failure) = &run.failure {
            if run.cells.len() < settings.clients.len() {
                let first_line = failure.lines().next().unwrap_or_default();
                let _ = writeln!(
                    out,
                    "| {} | – | failed | | | | {} |",
                    run.kind.label(),
                    first_line.replace('|', "/")
                );
            }
        }
    }

    let plain = runs.iter().find(|r| r.kind == Kind::Drover3);
    if let (Some(plain), Some(tls)) = (plain, runs.iter().find(|r| r.kind.is_tls())) {
        out += "\n### Mutual TLS against plaintext (3 nodes, same run)\n\n\
                | clients | plaintext writes/s | mTLS writes/s | mTLS / plaintext | p50 ms plaintext / mTLS |\n\
                |---:|---:|---:|---:|---:|\n";
        for cell in &tls.cells {
            let Some(base) = plain.cells.iter().find(|c| c.clients == cell.clients) else {
                continue;
            };
            let ratio = if base.writes_per_sec() > 0.0 {
                format!("{:.2}x", cell.writes_per_sec() / base.writes_per_sec())
            } else {
                "–".into()
            };
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.0} | {ratio} | {} / {} |",
                cell.clients,
                base.writes_per_sec(),
                cell.writes_per_sec(),
                fmt_ms(base.percentile_ms(0.5)),
                fmt_ms(cell.percentile_ms(0.5)),
            );
        }
    }

    out += "\n### Details\n\n\
            `entries/write`: leader commit-index advance per acknowledged write. \
            `1 s buckets`: slowest / fastest whole second of the window (writes). \
            `server CPU µs/write`: CPU time of all the target's server processes \
            (user + system) in the window per acknowledged write; `client`: the \
            same for this bench process (the load generator).\n\n";
    out += "| target | clients | acked | entries/write | p99.9 ms | max ms | 1 s buckets min / max | server CPU µs/write | client CPU µs/write |\n";
    out += "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for run in runs {
        for cell in &run.cells {
            let entries = cell
                .committed
                .filter(|_| cell.ok > 0)
                .map_or("–".into(), |c| {
                    format!("{:.2}", c as f64 / cell.ok as f64)
                });
            let buckets = match (cell.per_second.iter().min(), cell.per_second.iter().max()) {
                (Some(min), Some(max)) => format!("{min} / {max}"),
                _ => "–".into(),
            };
            let per_write = |d: Duration| {
                if cell.ok == 0 {
                    "–".to_string()
                } else {
                    format!("{:.0}", d.as_secs_f64() * 1e6 / cell.ok as f64)
                }
            };
            let (server_cpu, client_cpu) =
                cell.cpu.map_or(("–".into(), "–".into()), |(s, c)| {
                    (per_write(s), per_write(c))
                });
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                run.kind.label(),
                cell.clients,
                cell.ok,
                entries,
                fmt_ms(cell.percentile_ms(0.999)),
                fmt_ms(cell.percentile_ms(1.0)),
                buckets,
                server_cpu,
                client_cpu
            );
        }
    }

    if !probes.is_empty() {
        let _ = writeln!(
            out,
            "\n### fsyncs per committed entry (strace pass)\n\n\
             Servers restarted under `strace -f --seccomp-bpf -e trace={}`; {:.0} s per cell, no warm-up. \
             `fsync/entry` = fsync + fdatasync calls / leader commit-index advance, for the leader \
             and summed over all nodes; `leader sync ms/entry` = time the leader spent in all these \
             calls (strace -T) / the same advance; `leader calls` = its calls by syscall, with mean ms. \
             Tracing slows each sync call, so writes/s here are not comparable with the table above.\n",
            SYNC_SYSCALLS.join(","),
            settings.fsync_duration.as_secs_f64()
        );
        out += "| target | clients | writes/s (traced) | entries | leader fsync/entry | all nodes fsync/entry | leader sync ms/entry | leader calls |\n";
        out += "|---|---:|---:|---:|---:|---:|---:|---|\n";
        for run in probes {
            for cell in &run.cells {
                let leader = cell.sync_calls.get(run.leader).copied().flatten();
                let total: Option<u64> = cell
                    .sync_calls
                    .iter()
                    .map(|c| c.as_ref().map(SyncCounts::fsyncs))
                    .sum();
                let per = |n: Option<u64>| match (n, cell.committed) {
                    (Some(n), Some(c)) if c > 0 => format!("{:.3}", n as f64 / c as f64),
                    _ => "–".into(),
                };
                let calls = leader.map_or("–".into(), |c| {
                    (0..SYNC_SYSCALLS.len())
                        .filter(|&i| c.calls[i] > 0)
                        .map(|i| {
                            format!(
                                "{} {} ({:.2} ms)",
                                SYNC_SYSCALLS[i],
                                c.calls[i],
                                c.micros[i] as f64 / 1e3 / c.calls[i] as f64
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                });
                let sync_ms = match (leader, cell.committed) {
                    (Some(l), Some(c)) if c > 0 => {
                        format!("{:.3}", l.total_micros() as f64 / 1e3 / c as f64)
                    }
                    _ => "–".into(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.0} | {} | {} | {} | {} | {} |",
                    run.kind.label(),
                    cell.clients,
                    cell.writes_per_sec(),
                    cell.committed.map_or("–".into(), |c| c.to_string()),
                    per(leader.as_ref().map(SyncCounts::fsyncs)),
                    per(total),
                    sync_ms,
                    calls
                );
            }
            if let Some(failure) = &run.failure {
                let first_line = failure.lines().next().unwrap_or_default();
                let _ = writeln!(
                    out,
                    "| {} | – | failed | | | | | {} |",
                    run.kind.label(),
                    first_line.replace('|', "/")
                );
            }
        }
    }

    out += "\n### Anomalies\n\nLeadership changes, client errors, exited processes, the slowest writes of cells \
        with a write of 100 ms or more (wall-clock UTC, to match the logs), Drover's snapshot log lines \
        (snapshots are taken on the raft loop), and warn/error/panic lines the servers logged after \
        the cluster was ready.\n\n";
    let mut any = false;
    for (phase, list) in [("throughput", runs), ("fsync probe", probes)] {
        for run in list {
            let mut notes = String::new();
            if let Some(failure) = &run.failure {
                let _ = writeln!(notes, "- failure:\n\n```\n{}\n```", failure.trim_end());
            }
            for cell in &run.cells {
                if let Some(note) = &cell.leadership_note {
                    let _ = writeln!(notes, "- {} clients: {note}", cell.clients);
                }
                if cell.percentile_ms(1.0).is_some_and(|max| max >= SLOW_MS) {
                    let mut slowest = cell.slowest.clone();
                    slowest.sort_by_key(|(us, _)| std::cmp::Reverse(*us));
                    let list: Vec<String> = slowest
                        .iter()
                        .map(|(us, at)| {
                            format!(
                                "{:.0} ms (done {})",
                                *us as f64 / 1e3,
                                humantime::format_rfc3339_millis(*at)
                            )
                        })
                        .collect();
                    let _ = writeln!(
                        notes,
                        "- {} clients: slowest writes {}",
                        cell.clients,
                        list.join(", ")
                    );
                }
                if cell.error_count() > 0 {
                    let _ = writeln!(
                        notes,
                        "- {} clients: errors {:?}; e.g. {}",
                        cell.clients,
                        cell.errors,
                        cell.error_samples.join(" / ")
                    );
                }
            }
            for scan in &run.logs {
                if scan.event_count > 0 {
                    let _ = writeln!(
                        notes,
                        "- {} log: {} snapshot events; first:\n\n```\n{}\n```",
                        scan.name,
                        scan.event_count,
                        scan.events.join("\n")
                    );
                }
                if let Some(note) = common::log_scan_note(scan) {
                    let _ = writeln!(notes, "{note}");
                }
            }
            if !notes.is_empty() {
                any = true;
                let _ = writeln!(out, "**{} ({phase})**\n\n{notes}", run.kind.label());
            }
        }
    }
    if !any {
        out += "None: no client errors, no warnings or errors in any server log.\n";
    }
    out
}

fn main() {
    let settings = Settings::from_env();
    assert!(
        settings.drover_bin.is_file() || !settings.targets.iter().any(|k| !k.is_etcd()),
        "drover binary not found at {} (cargo build --release, or set DROVER_BIN)",
        settings.drover_bin.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("start the tokio runtime");
    let report = runtime.block_on(async {
        let mut rounds = Vec::new();
        for round in 0..settings.rounds {
            if settings.rounds > 1 {
                eprintln!("[bench] round {}/{}", round + 1, settings.rounds);
            }
            let mut runs = Vec::new();
            for &kind in &settings.targets {
                runs.push(
                    run_target(kind, &settings, false, &format!("load-r{}", round + 1)).await,
                );
            }
            rounds.push(runs);
        }
        let runs = merge_rounds(rounds, &settings.clients);
        let mut probes = Vec::new();
        if settings.fsync_probe {
            if settings.strace_bin.is_none() {
                eprintln!("[bench] strace not found: skipping the fsync probe");
            } else {
                for &kind in &settings.targets {
                    probes.push(run_target(kind, &settings, true, "fsync").await);
                }
            }
        }
        render(&settings, &runs, &probes)
    });
    print!("{report}");
    if let Some(path) = &settings.results_path {
        if let Err(e) = std::fs::write(path, &report) {
            eprintln!("[bench] cannot write {}: {e}", path.display());
        }
    }
}
