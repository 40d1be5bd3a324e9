//! Shared by the end-to-end benches (`write_throughput`, `jobs`): server
//! processes with their logs (optionally under strace), the cluster of them
//! (`cluster`, nodes laid out by the test harness's `agent`), gRPC channels
//! and the scan of server logs for anomalies. Each bench is
//! its own crate and uses a different part of this, hence the allow.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// The test harness's node layout (ports, config, certificates), shared.
#[path = "../../tests/common/agent.rs"]
pub mod agent;
/// The test harness's headless Chromium (the dashboard bench).
#[path = "../../tests/common/browser.rs"]
pub mod browser;
pub mod cluster;
/// The test harness's server processes (spawn, signal, SIGKILL), shared.
#[path = "../../tests/common/process.rs"]
pub mod process;

// Each bench uses some of these.
#[allow(unused_imports)]
pub use process::{cpu_time_of, Proc, Wrapper};

/// The `main` of a bench that makes one report: `run` on a fresh runtime;
/// the report printed and written to `results` (a path in the repository),
/// or the error printed and exit 1. `cargo test --benches --list` runs
/// nothing.
pub fn report_main<F>(name: &str, results: &str, run: impl FnOnce() -> F)
where
    F: std::future::Future<Output = Result<String, String>>,
{
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name} bench: no runtime: {e}");
            std::process::exit(1);
        }
    };
    match runtime.block_on(run()) {
        Ok(report) => {
            println!("{report}");
            if let Err(e) = std::fs::write(results, &report) {
                eprintln!("cannot write {results}: {e}");
            }
        }
        Err(e) => {
            eprintln!("{name} bench failed: {e}");
            std::process::exit(1);
        }
    }
}

/// Syscalls counted by the fsync probe.
pub const SYNC_SYSCALLS: [&str; 5] = ["fsync", "fdatasync", "sync_file_range", "syncfs", "msync"];
/// Calls of, and microseconds spent in, each of SYNC_SYSCALLS (same order).
#[derive(Clone, Copy, Default)]
pub struct SyncCounts {
    pub calls: [u64; 5],
    pub micros: [u64; 5],
}

impl SyncCounts {
    pub fn since(self, before: SyncCounts) -> SyncCounts {
        SyncCounts {
            calls: std::array::from_fn(|i| self.calls[i].saturating_sub(before.calls[i])),
            micros: std::array::from_fn(|i| self.micros[i].saturating_sub(before.micros[i])),
        }
    }

    /// fsync + fdatasync: the durability barriers proper.
    pub fn fsyncs(&self) -> u64 {
        self.calls[0] + self.calls[1]
    }

    pub fn total_micros(&self) -> u64 {
        self.micros.iter().sum()
    }
}

/// Log lines quoted per node in the anomalies section.
pub const EXCERPT_LINES: usize = 6;

/// A duration in seconds from the environment (`default` when unset).
pub fn env_secs(name: &str, default: f64) -> Duration {
    let value = match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number of seconds")),
        Err(_) => default,
    };
    assert!(
        value.is_finite() && (0.0..=600.0).contains(&value),
        "{name} must be between 0 and 600 seconds"
    );
    Duration::from_secs_f64(value)
}

/// First executable named `name` on PATH, then the fallbacks.
pub fn which(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// strace counting SYNC_SYSCALLS (with their time) into `output`.
pub fn strace_wrapper(strace: &Path, output: PathBuf) -> Wrapper {
    let args = [
        "-f".to_string(),
        "-qq".to_string(),
        "-T".to_string(),
        "--seccomp-bpf".to_string(),
        "-e".to_string(),
        format!("trace={}", SYNC_SYSCALLS.join(",")),
        "-e".to_string(),
        "signal=none".to_string(),
        "-o".to_string(),
        output.display().to_string(),
    ];
    Wrapper {
        program: strace.to_path_buf(),
        args: args.to_vec(),
        output,
    }
}

/// Sync syscalls so far, by name, from strace's output file.
pub fn sync_calls(proc: &Proc) -> Option<SyncCounts> {
    let text = std::fs::read_to_string(proc.trace_path.as_ref()?).ok()?;
    let mut counts = SyncCounts::default();
    for line in text.lines() {
        // "PID name(args) = ret <secs>", or split across threads as
        // "PID name(args <unfinished ...>" + "PID <... name resumed>) = ret <secs>".
        let call = line.split_once(' ').map_or(line, |(_, rest)| rest);
        let (name, first_half) = match call.strip_prefix("<... ") {
            Some(rest) => (rest.split(' ').next().unwrap_or_default(), false),
            None => (call.split('(').next().unwrap_or_default(), true),
        };
        let Some(i) = SYNC_SYSCALLS.iter().position(|s| *s == name.trim()) else {
            continue;
        };
        if first_half {
            counts.calls[i] += 1;
        }
        let secs = line
            .rsplit_once('<')
            .and_then(|(_, t)| t.strip_suffix('>'))
            .and_then(|t| t.parse::<f64>().ok());
        if let Some(secs) = secs {
            counts.micros[i] += (secs * 1e6) as u64;
        }
    }
    Some(counts)
}

/// The anomaly line of one server's log for a report, or `None` when it
/// logged no warning, error or panic.
pub fn log_scan_note(scan: &LogScan) -> Option<String> {
    if scan.warnings + scan.errors + scan.panics == 0 {
        return None;
    }
    Some(format!(
        "- {} log: {} warn, {} error, {} panic lines; first:\n\n```\n{}\n```",
        scan.name,
        scan.warnings,
        scan.errors,
        scan.panics,
        scan.excerpts.join("\n")
    ))
}

/// A channel to `url` on which every unary call (and the opening of every
/// stream) must answer within `request_timeout`.
pub async fn connect(url: &str, request_timeout: Duration) -> Result<Channel, String> {
    open(endpoint(url)?, url, request_timeout).await
}

fn endpoint(url: &str) -> Result<Endpoint, String> {
    Endpoint::from_shared(url.to_string()).map_err(|e| format!("bad url {url}: {e}"))
}

async fn open(endpoint: Endpoint, url: &str, request_timeout: Duration) -> Result<Channel, String> {
    endpoint
        .connect_timeout(Duration::from_secs(2))
        .timeout(request_timeout)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connect {url}: {e}"))
}

/// Warnings, errors, panics and notable events in one server log.
pub struct LogScan {
    pub name: String,
    pub warnings: usize,
    pub errors: usize,
    pub panics: usize,
    pub excerpts: Vec<String>,
    /// Log lines that explain stalls (Drover's snapshots).
    pub events: Vec<String>,
    pub event_count: usize,
}

/// Informational log lines worth showing next to latency spikes.
pub const EVENT_PATTERNS: [&str; 2] = ["snapshot taken", "installed snapshot"];

/// The line without terminal colour escapes.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip "ESC [ ... letter".
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Scans a server's log from its `log_offset` on.
pub fn scan_log(proc: &Proc) -> LogScan {
    let bytes = std::fs::read(&proc.log_path).unwrap_or_default();
    let text = String::from_utf8_lossy(bytes.get(proc.log_offset..).unwrap_or_default());
    let mut scan = LogScan {
        name: proc.name.clone(),
        warnings: 0,
        errors: 0,
        panics: 0,
        excerpts: Vec::new(),
        events: Vec::new(),
        event_count: 0,
    };
    for raw in text.lines() {
        let line = strip_ansi(raw);
        let lower = line.to_ascii_lowercase();
        let panic = lower.contains("panicked");
        let error = line.contains(" ERROR ") || lower.contains("\"level\":\"error\"");
        let warn = line.contains(" WARN ") || lower.contains("\"level\":\"warn\"");
        scan.panics += panic as usize;
        scan.errors += error as usize;
        scan.warnings += warn as usize;
        if (panic || error || warn) && scan.excerpts.len() < EXCERPT_LINES {
            let mut excerpt: String = line.chars().take(400).collect();
            if excerpt.len() < line.len() {
                excerpt.push('…');
            }
            scan.excerpts.push(excerpt);
        }
        if EVENT_PATTERNS.iter().any(|p| line.contains(p)) {
            scan.event_count += 1;
            if scan.events.len() < EXCERPT_LINES {
                scan.events.push(line.chars().take(400).collect());
            }
        }
    }
    scan
}

/// A TLS channel to `url` with the CA and `client-bench` of `dir`.
pub async fn connect_tls(
    url: &str,
    dir: &Path,
    request_timeout: Duration,
) -> Result<Channel, String> {
    let tls = agent::client_tls(dir, "client-bench")?;
    let endpoint = endpoint(url)?
        .tls_config(tls)
        .map_err(|e| format!("tls config: {e}"))?;
    open(endpoint, url, request_timeout).await
}
