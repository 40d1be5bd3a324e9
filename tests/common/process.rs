//! One server process of a test or bench: started with its output in a
//! log file (optionally under a wrapper such as strace), signalled, killed
//! with SIGKILL, waited for with a deadline. The test harness's `Cluster`
//! and the benches' `Servers` both hold their agents as these, so "start",
//! "kill -9" and "stop as systemd does" mean the same in both.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A program the server runs under (strace, say), writing `output`.
pub struct Wrapper {
    pub program: PathBuf,
    /// Arguments before `--` and the server's command line.
    pub args: Vec<String>,
    pub output: PathBuf,
}

/// One server process and its log.
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
    pub log_path: PathBuf,
    /// The wrapper's output file when the server runs under one.
    pub trace_path: Option<PathBuf>,
    pub exit_note: Option<String>,
    /// Log length when the cluster became ready: a log scan starts there,
    /// so start-up chatter is not reported as behaviour under load.
    pub log_offset: usize,
}

impl Proc {
    /// Starts `program ARGS`, appending its stdout and stderr to `log_path`
    /// (a restarted node keeps one log), under `wrapper` when given.
    pub fn spawn(
        name: String,
        program: &Path,
        args: &[String],
        log_path: PathBuf,
        wrapper: Option<Wrapper>,
    ) -> Result<Proc, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("open {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("clone log handle: {e}"))?;
        let mut command = match &wrapper {
            Some(w) => {
                let mut c = Command::new(&w.program);
                c.args(&w.args).arg("--").arg(program);
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
            trace_path: wrapper.map(|w| w.output),
            exit_note: None,
            log_offset: 0,
        })
    }

    /// The server's pid: the child itself, or the wrapper's child.
    pub fn server_pid(&self) -> Option<u32> {
        let pid = self.child.as_ref()?.id();
        if self.trace_path.is_none() {
            return Some(pid);
        }
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the server, if it runs.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.server_pid() {
            send(pid, signal);
        }
    }

    /// The exit status once the process has ended (not waiting).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits (bounded) for the process to exit by itself; its status, or
    /// None if it still runs after `timeout` (it is left running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if self.child.is_none() || Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, as `systemctl stop` sends, then waits up to `timeout`; the
    /// exit status, or None if it had to be killed.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(timeout);
        self.stop();
        status
    }

    /// `Some(description)` once the process has exited (remembered).
    pub fn exited(&mut self) -> Option<String> {
        if self.exit_note.is_none() {
            if let Some(status) = self.try_wait() {
                self.exit_note = Some(format!("{} exited: {status}", self.name));
            }
        }
        self.exit_note.clone()
    }

    /// SIGKILL: no shutdown path runs, unflushed writes are lost. Under a
    /// wrapper the server is killed first, then the wrapper is reaped.
    pub fn stop(&mut self) {
        let inner = if self.trace_path.is_some() {
            self.server_pid()
        } else {
            None
        };
        if let Some(pid) = inner {
            send(pid, libc::SIGKILL);
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

    /// CPU time (user + system) the process has used so far; None once it
    /// exited. Under a wrapper this is the wrapper's own time.
    pub fn cpu_time(&self) -> Option<Duration> {
        let pid = self.child.as_ref()?.id();
        cpu_time_of(&format!("/proc/{pid}/stat"))
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of the file at `path` (empty if unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `signal` to `pid`, a child of this process (or of its wrapper) that has
/// not been reaped, so the pid cannot be another's.
pub fn send(pid: u32, signal: i32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) shares no memory; the caller vouches for the pid.
        unsafe {
            libc::kill(pid, signal);
        }
    }
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
