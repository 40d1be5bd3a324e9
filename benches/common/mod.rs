//! Shared by the end-to-end benches (`write_throughput`, `jobs`): server
//! processes with their logs (optionally under strace), the cluster of them
//! (`cluster`, nodes laid out by the test harness's `agent`), gRPC channels
//! and the scan of server logs for anomalies. Each bench is
//! its own crate and uses a different part of this, hence the allow.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

/// The test harness's node layout (ports, config, certificates), shared.
#[path = "../../tests/common/agent.rs"]
pub mod agent;
pub mod cluster;

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

/// One server process, optionally started under strace.
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
    pub log_path: PathBuf,
    /// strace's output file when the server runs under strace.
    pub trace_path: Option<PathBuf>,
    pub exit_note: Option<String>,
    /// Log length when the cluster became ready: the scan starts there, so
    /// start-up chatter is not reported as behaviour under load.
    pub log_offset: usize,
}

impl Proc {
    /// CPU time (user + system) the process has used so far, from
    /// /proc/PID/stat; None once it exited or where /proc is missing. Under
    /// strace this is strace's own time, so callers skip traced runs.
    pub fn cpu_time(&self) -> Option<Duration> {
        let pid = self.child.as_ref()?.id();
        cpu_time_of(&format!("/proc/{pid}/stat"))
    }

    pub fn spawn(
        name: String,
        program: &Path,
        args: &[String],
        log_path: PathBuf,
        strace: Option<(&Path, PathBuf)>,
    ) -> Result<Proc, String> {
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("create {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("clone log handle: {e}"))?;
        let mut command = match &strace {
            Some((strace_bin, trace_path)) => {
                let mut c = Command::new(strace_bin);
                c.arg("-f")
                    .arg("-qq")
                    .arg("-T")
                    .arg("--seccomp-bpf")
                    .arg("-e")
                    .arg(format!("trace={}", SYNC_SYSCALLS.join(",")))
                    .arg("-e")
                    .arg("signal=none")
                    .arg("-o")
                    .arg(trace_path)
                    .arg("--")
                    .arg(program);
                c
            }
            None => Command::new(program),
        };
        command
            .args(args)
            .env("NO_COLOR", "1")
            // A panic's message, not 40 frames of backtrace, in the log tail.
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = command
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", program.display()))?;
        Ok(Proc {
            name,
            child: Some(child),
            log_path,
            trace_path: strace.map(|(_, p)| p),
            exit_note: None,
            log_offset: 0,
        })
    }

    /// The server's pid: the child itself, or strace's child when traced.
    pub fn server_pid(&self) -> Option<u32> {
        let pid = self.child.as_ref()?.id();
        if self.trace_path.is_none() {
            return Some(pid);
        }
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// `Some(description)` once the process has exited (remembered).
    pub fn exited(&mut self) -> Option<String> {
        if self.exit_note.is_none() {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.exit_note = Some(format!("{} exited: {status}", self.name));
                }
            }
        }
        self.exit_note.clone()
    }

    /// Sync syscalls so far, by name, from strace's output file.
    pub fn sync_calls(&self) -> Option<SyncCounts> {
        let text = std::fs::read_to_string(self.trace_path.as_ref()?).ok()?;
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

    pub fn stop(&mut self) {
        let inner = if self.trace_path.is_some() {
            self.server_pid()
        } else {
            None
        };
        if let Some(pid) = inner {
            // The server is strace's child: kill it by pid, strace then exits.
            sigkill(pid);
        }
        if let Some(mut child) = self.child.take() {
            if inner.is_some() {
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIGKILL to `pid`, a process of this bench's (or its child's) that has
/// not been reaped, so the pid cannot be another's.
pub fn sigkill(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) shares no memory; the caller vouches for the pid.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
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

/// User + system CPU time from a /proc/.../stat file (fields 14 and 15, in
/// clock ticks of `sysconf(_SC_CLK_TCK)`).
pub fn cpu_time_of(stat_path: &str) -> Option<Duration> {
    let text = std::fs::read_to_string(stat_path).ok()?;
    // The command name (field 2) may hold spaces: count from after its ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the C library; no memory is shared.
    let ticks_per_sec = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|&t| t > 0)?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks_per_sec as f64,
    ))
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
