//! The server processes of one bench target under one temp dir: Drover
//! agents laid out by the test harness's `agent` module (ports, config,
//! certificates), or other servers (etcd). Both benches start their
//! clusters here; dropping one stops its processes before the temp dir
//! goes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::Channel;

use super::agent::{self, Member, NodeConfig};
use super::{connect, connect_tls, scan_log, strip_ansi, LogScan, Proc};

/// The processes, their API URLs and (with TLS) their certificates.
pub struct Servers {
    pub procs: Vec<Proc>,
    /// The client API of each process, by position.
    pub urls: Vec<String>,
    /// With TLS: the CA, node and `client-bench` certificates.
    pub tls: Option<PathBuf>,
    // Declared last: dropped after the processes are stopped.
    pub dir: tempfile::TempDir,
}

/// Ports of one node: its client API and its peer port.
pub type Ports = (u16, u16);

impl Servers {
    /// No process yet, a fresh temp dir named `prefix…`.
    pub fn new(prefix: &str) -> Result<Servers, String> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        Ok(Servers {
            procs: Vec::new(),
            urls: Vec::new(),
            tls: None,
            dir,
        })
    }

    /// The temp dir (data dirs, configs, logs live in it).
    pub fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// `n` pairs of free loopback ports.
    pub fn ports(n: usize) -> Vec<Ports> {
        (0..n)
            .map(|_| (agent::free_port(), agent::free_port()))
            .collect()
    }

    /// Certificates for nodes 1..=n of `cluster` and the client `bench`,
    /// made by `drover`; later agents get a `[tls]` section.
    pub fn make_certs(&mut self, drover: &Path, cluster: &str, n: usize) -> Result<(), String> {
        let dir = self.dir.path().join("tls");
        agent::make_certs(drover, &dir, cluster, n as u64, "bench")?;
        self.tls = Some(dir);
        Ok(())
    }

    /// Writes the config of node `i` (0-based) of a cluster founded by
    /// every node of `ports`: identity, listeners, members, `sections`,
    /// and `[tls]` when certificates were made.
    pub fn write_agent_config(
        &self,
        cluster_id: &str,
        i: usize,
        ports: &[Ports],
        http: Option<u16>,
        sections: &str,
    ) -> Result<PathBuf, String> {
        let addr = |port: u16| format!("127.0.0.1:{port}");
        let members: Vec<Member> = ports
            .iter()
            .enumerate()
            .map(|(j, (api, raft))| Member {
                id: j as u64 + 1,
                api: addr(*api),
                raft: addr(*raft),
            })
            .collect();
        let id = i as u64 + 1;
        let root = self.root();
        let http = http.map(addr);
        let text = NodeConfig {
            id,
            cluster_id,
            data_dir: &root.join(format!("node{id}")),
            api: &members[i].api,
            raft: &members[i].raft,
            http: http.as_deref(),
            members: &members,
            tls_dir: self.tls.as_deref(),
        }
        .render(sections);
        let path = root.join(format!("node{id}.toml"));
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(path)
    }

    /// Starts `program` as process `name`, its client API at `api_port`,
    /// logging to `name.log` (under strace, writing `name.strace`, when
    /// `strace` is given).
    pub fn spawn(
        &mut self,
        name: String,
        program: &Path,
        args: &[String],
        api_port: u16,
        strace: Option<&Path>,
    ) -> Result<(), String> {
        let root = self.root();
        let log_path = root.join(format!("{name}.log"));
        let trace = strace.map(|s| super::strace_wrapper(s, root.join(format!("{name}.strace"))));
        self.procs
            .push(Proc::spawn(name, program, args, log_path, trace)?);
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.urls.push(format!("{scheme}://127.0.0.1:{api_port}"));
        Ok(())
    }

    /// Starts `drover agent --config CONFIG` as node `i` (0-based).
    pub fn spawn_agent(
        &mut self,
        drover: &Path,
        i: usize,
        config: &Path,
        api_port: u16,
        strace: Option<&Path>,
    ) -> Result<(), String> {
        let args = [
            "agent".to_string(),
            "--config".to_string(),
            config.display().to_string(),
        ];
        self.spawn(format!("node{}", i + 1), drover, &args, api_port, strace)
    }

    /// An error naming the first process that exited, with its cause.
    pub fn check_alive(&mut self) -> Result<(), String> {
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

    /// A channel to process `i` (with the bench's client certificate under
    /// TLS), every call bounded by `timeout`.
    pub async fn channel(&self, i: usize, timeout: Duration) -> Result<Channel, String> {
        match &self.tls {
            Some(dir) => connect_tls(&self.urls[i], dir, timeout).await,
            None => connect(&self.urls[i], timeout).await,
        }
    }

    /// Marks the logs' current ends: the anomaly scan starts there, so
    /// start-up chatter is not reported as behaviour under load.
    pub fn mark_logs(&mut self) {
        for p in &mut self.procs {
            p.log_offset = std::fs::metadata(&p.log_path).map_or(0, |m| m.len() as usize);
        }
    }

    /// "Not ready" with why and every process's log tail.
    pub fn not_ready(&self, timeout: Duration, last: &str) -> String {
        let tails: Vec<String> = self
            .procs
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.name, p.log_tail(15)))
            .collect();
        format!(
            "not ready within {timeout:?} (last: {last})\n{}",
            tails.join("\n")
        )
    }

    /// Copies every log (and strace output) to `dir` as `PREFIX-FILE`.
    pub fn keep_logs(&self, dir: &Path, prefix: &str) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("[bench] cannot create {}: {e}", dir.display());
            return;
        }
        for p in &self.procs {
            let files = [Some(&p.log_path), p.trace_path.as_ref()];
            for file in files.into_iter().flatten() {
                let Some(name) = file.file_name() else {
                    continue;
                };
                let target = dir.join(format!("{prefix}-{}", name.to_string_lossy()));
                if let Err(e) = std::fs::copy(file, &target) {
                    eprintln!("[bench] cannot keep {}: {e}", file.display());
                }
            }
        }
    }

    /// Warnings and errors each process logged since [`Servers::mark_logs`].
    pub fn scan_logs(&self) -> Vec<LogScan> {
        self.procs.iter().map(scan_log).collect()
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.stop();
        }
    }
}
