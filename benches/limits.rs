//! One token's abuse against another token's submit, on real sockets.
//!
//! One node on loopback, ACLs on, executor off (jobs stay QUEUED). A
//! "victim" token submits a job every 100 ms and records how long each
//! takes to be answered. For `BENCH_LIMITS_IDLE` seconds nothing else runs
//! (the baseline); then for `BENCH_LIMITS_ATTACK` seconds an "attacker"
//! token at the same time
//!
//! - opens 2,000 idle connections (an HTTP/2 preface, then silence) to the
//!   client API from 127.0.0.2,
//! - opens 500 job watches (`WatchJobs` streams) from 127.0.0.3 and holds
//!   them,
//! - floods the node with `ListJobs` calls from 127.0.0.4 at a target of
//!   10,000 a second (at most 1,024 in flight).
//!
//! The whole run is made twice in one process: with the shipped `[limits]`
//! and with them lifted (`rate = 0`, connection caps out of reach), so the
//! figures compare on the same machine in the same minute. The report
//! (victim latency: median, p99, max, share answered within 1 s; what the
//! attacker got) is printed and written to `benches/LIMITS_RESULTS.md`.
//!
//! | variable | default | what |
//! | --- | --- | --- |
//! | `BENCH_LIMITS_IDLE` | 5 | seconds of the baseline |
//! | `BENCH_LIMITS_ATTACK` | 10 | seconds of the attack |
//! | `DROVER_BIN` | the `drover` cargo built for this bench | agent binary |

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::Servers;
use drover::proto::v1 as pb;
use drover::proto::v1::drover_client::DroverClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const IDLE_CONNECTIONS: usize = 2_000;
const STREAMS: usize = 500;
const FLOOD_PER_SECOND: u64 = 10_000;
const MAX_IN_FLIGHT: u64 = 1_024;
const VICTIM_EVERY: Duration = Duration::from_millis(100);
/// At least 32 characters, as `acl.bootstrap_token_file` wants.
const BOOTSTRAP_SECRET: &str = "drv_benchlimitsbootstrapsecret0123456789abcdef";

fn env_secs(name: &str, default: u64) -> Duration {
    let secs = match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        Err(_) => default,
    };
    Duration::from_secs(secs.max(1))
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

fn with_token<T>(message: T, secret: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {secret}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

async fn channel_from(url: &str, from: IpAddr) -> Result<Channel, String> {
    Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("bad url {url}: {e}"))?
        .local_address(Some(from))
        .connect_timeout(Duration::from_secs(2))
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connect {url} from {from}: {e}"))
}

/// The sorted latencies' summary, in ms.
#[derive(Debug, Default, Clone, Copy)]
struct Latency {
    count: usize,
    median: f64,
    p99: f64,
    max: f64,
    within_1s: f64,
    failed: usize,
}

fn latency(mut ms: Vec<f64>, failed: usize) -> Latency {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        ms.get(((ms.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let within = ms.iter().filter(|&&m| m <= 1000.0).count();
    Latency {
        count: ms.len() + failed,
        median: at(0.5),
        p99: at(0.99),
        max: ms.last().copied().unwrap_or(f64::NAN),
        within_1s: within as f64 / (ms.len() + failed).max(1) as f64,
        failed,
    }
}

/// Submits a job as the victim every [`VICTIM_EVERY`] until `stop`.
async fn victim(channel: Channel, secret: String, stop: Arc<AtomicBool>) -> Latency {
    let mut client = DroverClient::new(channel);
    let mut ticks = tokio::time::interval(VICTIM_EVERY);
    let (mut ms, mut failed) = (Vec::new(), 0);
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let spec = pb::JobSpec {
            command: "true".into(),
            ..Default::default()
        };
        let started = Instant::now();
        match client
            .submit_job(with_token(
                pb::SubmitJobRequest { spec: Some(spec) },
                &secret,
            ))
            .await
        {
            Ok(_) => ms.push(started.elapsed().as_secs_f64() * 1000.0),
            Err(_) => failed += 1,
        }
    }
    latency(ms, failed)
}

/// Whether the server answers an HTTP/2 preface on a new connection from
/// `from`; the connection is returned to be held open when it does.
async fn idle_connection(from: IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(from, 0)).ok()?;
    let mut stream = socket.connect(to).await.ok()?;
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    stream.write_all(&hello).await.ok()?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(REQUEST_TIMEOUT, stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(stream),
        _ => None,
    }
}

/// What the attacker got.
#[derive(Debug, Default)]
struct Attack {
    connections_held: usize,
    streams_held: usize,
    streams_refused: usize,
    flood_sent: u64,
    flood_ok: u64,
    flood_limited: u64,
    flood_other: u64,
    seconds: f64,
}

async fn attack(
    url: &str,
    api: SocketAddr,
    secret: &str,
    length: Duration,
    stop: Arc<AtomicBool>,
) -> Result<Attack, String> {
    let mut report = Attack::default();
    // Idle connections, opened 100 at a time.
    let mut held = Vec::new();
    for batch in (0..IDLE_CONNECTIONS).collect::<Vec<_>>().chunks(100) {
        let opened =
            futures::future::join_all(batch.iter().map(|_| idle_connection(loopback(2), api)))
                .await;
        held.extend(opened.into_iter().flatten());
    }
    report.connections_held = held.len();

    // Watches, held open over a few connections.
    let mut streams = Vec::new();
    for i in 0..STREAMS {
        if i % 100 == 0 {
            streams.push((channel_from(url, loopback(3)).await?, Vec::new()));
        }
        let Some((channel, open)) = streams.last_mut() else {
            break;
        };
        let mut client = DroverClient::new(channel.clone());
        match client
            .watch_jobs(with_token(pb::WatchJobsRequest::default(), secret))
            .await
        {
            Ok(stream) => open.push(stream.into_inner()),
            Err(status) if status.code() == Code::ResourceExhausted => report.streams_refused += 1,
            Err(status) => return Err(format!("watch: {status}")),
        }
    }
    report.streams_held = streams.iter().map(|(_, open)| open.len()).sum();

    // The flood: 10 calls a millisecond, open loop, bounded in flight.
    let flood = channel_from(url, loopback(4)).await?;
    let counts = Arc::new([
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    ]);
    let in_flight = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while started.elapsed() < length {
        ticks.tick().await;
        for _ in 0..FLOOD_PER_SECOND / 1000 {
            if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
                break;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            counts[0].fetch_add(1, Ordering::Relaxed);
            let mut client = DroverClient::new(flood.clone());
            let (counts, in_flight, secret) =
                (counts.clone(), in_flight.clone(), secret.to_string());
            tokio::spawn(async move {
                let request = pb::ListJobsRequest {
                    page_size: 1,
                    ..Default::default()
                };
                let slot = match client.list_jobs(with_token(request, &secret)).await {
                    Ok(_) => 1,
                    Err(s) if s.code() == Code::ResourceExhausted => 2,
                    Err(_) => 3,
                };
                counts[slot].fetch_add(1, Ordering::Relaxed);
                in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    report.flood_sent = counts[0].load(Ordering::Relaxed);
    report.flood_ok = counts[1].load(Ordering::Relaxed);
    report.flood_limited = counts[2].load(Ordering::Relaxed);
    report.flood_other = counts[3].load(Ordering::Relaxed);
    drop(held);
    drop(streams);
    Ok(report)
}

/// A submitter token named `name`, made with the admin secret; its secret.
async fn create_token(
    client: &mut DroverClient<Channel>,
    admin: &str,
    name: &str,
) -> Result<String, String> {
    let request = pb::CreateTokenRequest {
        name: name.into(),
        role: "submitter".into(),
    };
    client
        .create_token(with_token(request, admin))
        .await
        .map(|r| r.into_inner().secret)
        .map_err(|e| format!("create token {name}: {e}"))
}

/// One run: a node with `limits`, the baseline, then the attack.
async fn run_once(
    drover: &Path,
    label: &str,
    limits: &str,
    idle: Duration,
    length: Duration,
) -> Result<(Latency, Latency, Attack), String> {
    let mut servers = Servers::new("drover-bench-limits-")?;
    let ports = Servers::ports(1);
    let secret_file = servers.root().join("bootstrap.token");
    std::fs::write(&secret_file, BOOTSTRAP_SECRET).map_err(|e| format!("secret: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600));
    }
    let sections = format!(
        "[log]\nlevel = \"warn\"\n\n[executor]\nenabled = false\n\n\
         [acl]\nenabled = true\nbootstrap_token_file = \"{}\"\n\n{limits}",
        secret_file.display()
    );
    let config = servers.write_agent_config("bench-limits", 0, &ports, None, &sections)?;
    servers.spawn_agent(drover, 0, &config, ports[0].0, None)?;
    let url = servers.urls[0].clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let admin = loop {
        servers.check_alive()?;
        if let Ok(channel) = servers.channel(0, REQUEST_TIMEOUT).await {
            let mut client = DroverClient::new(channel);
            if let Ok(answer) = client
                .acl_bootstrap(with_token(pb::AclBootstrapRequest {}, BOOTSTRAP_SECRET))
                .await
            {
                break answer.into_inner().secret;
            }
        }
        if Instant::now() > deadline {
            return Err(servers.not_ready(Duration::from_secs(60), "no bootstrap"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut client = DroverClient::new(servers.channel(0, REQUEST_TIMEOUT).await?);
    let victim_secret = create_token(&mut client, &admin, "victim").await?;
    let attacker_secret = create_token(&mut client, &admin, "attacker").await?;

    let victim_channel = channel_from(&url, loopback(1)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let baseline = tokio::spawn(victim(
        victim_channel.clone(),
        victim_secret.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(idle).await;
    stop.store(true, Ordering::Relaxed);
    let baseline = baseline.await.map_err(|e| format!("victim: {e}"))?;
    eprintln!("[bench] {label}: baseline {baseline:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let during = tokio::spawn(victim(victim_channel, victim_secret, stop.clone()));
    let api: SocketAddr = format!("127.0.0.1:{}", ports[0].0)
        .parse()
        .map_err(|e| format!("api address: {e}"))?;
    let attacked = attack(&url, api, &attacker_secret, length, stop.clone()).await;
    stop.store(true, Ordering::Relaxed);
    let during = during.await.map_err(|e| format!("victim: {e}"))?;
    let attacked = attacked?;
    eprintln!("[bench] {label}: under attack {during:?}, attacker {attacked:?}");
    servers.check_alive()?;
    Ok((baseline, during, attacked))
}

fn row(label: &str, l: &Latency) -> String {
    format!(
        "| {label} | {} | {:.1} | {:.1} | {:.1} | {:.1} % | {} |",
        l.count,
        l.median,
        l.p99,
        l.max,
        l.within_1s * 100.0,
        l.failed
    )
}

async fn run() -> Result<String, String> {
    let idle = env_secs("BENCH_LIMITS_IDLE", 5);
    let length = env_secs("BENCH_LIMITS_ATTACK", 10);
    let drover = std::env::var_os("DROVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_drover")));
    let lifted = "[limits]\nrate = 0\nmax_connections = 100000\nmax_connections_per_address = 100000\nmax_streams_per_connection = 100000\n";
    let mut report = String::from(
        "# One token's abuse against another token's submit\n\n\
         Made by `cargo bench --bench limits` (see the doc comment of `benches/limits.rs`).\n\
         One node, ACLs on, executor off. The victim submits every 100 ms; the attacker opens\n\
         2,000 idle connections, 500 watches and a 10,000 calls/s `ListJobs` flood at once.\n\
         Victim submit latency in ms; the ratio is its median under attack over its own\n\
         baseline median in the same run.\n\n",
    );
    for (label, limits) in [("shipped [limits]", ""), ("limits lifted", lifted)] {
        let (baseline, during, attack) = run_once(&drover, label, limits, idle, length).await?;
        report += &format!(
            "## {label}\n\n| phase | submits | median | p99 | max | within 1 s | failed |\n\
             | --- | --- | --- | --- | --- | --- | --- |\n{}\n{}\n\n\
             Median under attack / baseline: {:.2}x.\n\n\
             Attacker: {} of {IDLE_CONNECTIONS} idle connections held; {} of {STREAMS} watches held \
             ({} refused); flood: {} calls in {:.1} s ({:.0}/s), {} answered, {} refused \
             RESOURCE_EXHAUSTED, {} other errors.\n\n",
            row("baseline", &baseline),
            row("under attack", &during),
            during.median / baseline.median,
            attack.connections_held,
            attack.streams_held,
            attack.streams_refused,
            attack.flood_sent,
            attack.seconds,
            attack.flood_sent as f64 / attack.seconds.max(0.001),
            attack.flood_ok,
            attack.flood_limited,
            attack.flood_other,
        );
    }
    Ok(report)
}

fn main() {
    common::report_main(
        "limits",
        concat!(env!("CARGO_MANIFEST_DIR"), "/benches/LIMITS_RESULTS.md"),
        run,
    );
}
