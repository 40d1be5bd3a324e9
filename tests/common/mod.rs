//! Test harness: real `drover agent` processes on loopback, each with its own
//! data dir, killed with SIGKILL and restarted like an operator would.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub mod agent;
pub mod browser;
pub mod process;
pub mod small_fs;
pub mod sse;

pub use agent::free_port;
pub use process::Proc;

use drover::proto::v1 as pb;
/// The API client of the tests: every call carries the cluster's token.
pub type Client = drover::client::Client;

/// Path of the binary under test.
pub fn drover_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_drover"))
}

/// Polls `check` until it returns Some, or panics with `what` at the deadline.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One node's addresses and files.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub id: u64,
    pub api: String,
    pub raft: String,
    /// The REST API's address (listen.http).
    pub http: String,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

/// Raft settings a test wants (fast ticks keep elections short).
#[derive(Clone, Debug)]
pub struct RaftSettings {
    pub tick_ms: u64,
    pub election_ticks: u32,
    pub snapshot_threshold: u64,
    pub trailing_entries: u64,
    /// Whether nodes run jobs (needs Docker and the job image). Off for
    /// tests of the replicated table alone, so their jobs stay queued.
    pub executor: bool,
    /// The leader's liveness timeout.
    pub node_down_after_ms: u64,
    /// CPU each node offers, in millicores.
    pub cpu_millis: u64,
    /// scheduler.queue_capacity.
    pub queue_capacity: u64,
    /// scheduler.retain_max.
    pub retain_max: u64,
    /// acl.enabled.
    pub acl: bool,
    /// acl.cors_origins.
    pub cors_origins: Vec<String>,
    /// acl.bootstrap_token_file.
    pub bootstrap_token_file: Option<PathBuf>,
    /// executor.scratch_dir.
    pub scratch_dir: Option<PathBuf>,
    /// Extra `drover agent` arguments, after `--config FILE`.
    pub agent_args: Vec<String>,
    /// Data directory of node i (by position), where a test puts it on a
    /// filesystem of its own; the rest live under the cluster's temp dir.
    pub data_dirs: Vec<PathBuf>,
    /// TOML appended to every node's config (extra sections, e.g. `[storage]`).
    pub extra_config: String,
    /// TOML appended to the config of node i (by id, from 1) after
    /// `extra_config`, for nodes whose settings differ.
    pub node_config: Vec<(u64, String)>,
    /// With TLS: the directory holding `ca.pem`, `node-ID.pem` (and keys)
    /// for every node and `client-admin.pem`, as `drover tls` makes them
    /// (see [`make_certs`]). Nodes get a `[tls]` section; the helpers
    /// (`client`, `status`, `cli`) connect with the admin client certificate.
    pub tls_dir: Option<PathBuf>,
    /// A cluster id of the test's choosing (certificates name it); default
    /// one unique to the process and cluster.
    pub cluster_id: Option<String>,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            tick_ms: 50,
            election_ticks: 10,
            snapshot_threshold: 8192,
            trailing_entries: 1024,
            executor: false,
            node_down_after_ms: 10_000,
            cpu_millis: 4000,
            queue_capacity: 100_000,
            retain_max: 100_000,
            scratch_dir: None,
            acl: false,
            cors_origins: Vec::new(),
            bootstrap_token_file: None,
            agent_args: Vec::new(),
            data_dirs: Vec::new(),
            extra_config: String::new(),
            node_config: Vec::new(),
            tls_dir: None,
            cluster_id: None,
        }
    }
}

/// Makes, with the real `drover tls` commands, a CA in `dir`, node
/// certificates for nodes 1..=nodes (valid for 127.0.0.1) of `cluster`,
/// and a client certificate `client-admin`.
pub fn make_certs(dir: &Path, cluster: &str, nodes: u64) {
    if let Err(e) = agent::make_certs(&drover_bin(), dir, cluster, nodes, "admin") {
        panic!("making test certificates: {e}");
    }
}

/// The client side of TLS with the CA of `dir` and the certificate
/// `dir/STEM.pem` (e.g. `client-admin`, `node-2`).
pub fn client_tls(dir: &Path, stem: &str) -> tonic::transport::ClientTlsConfig {
    match agent::client_tls(dir, stem) {
        Ok(tls) => tls,
        Err(e) => panic!("a test certificate: {e}"),
    }
}

/// A cluster of agent processes under one temp dir.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub cluster_id: String,
    pub nodes: Vec<NodeSpec>,
    pub children: Vec<Option<Proc>>,
    pub settings: RaftSettings,
    /// Token secret the helpers (`client`, `cli`) send; set it after
    /// bootstrapping a cluster with ACLs.
    pub token: Option<String>,
}

impl Cluster {
    /// Writes configs for `n` founding members and starts them all.
    pub fn start(n: usize, settings: RaftSettings) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        // Unique per cluster, not just per process: tests of one binary run
        // in parallel and share the Docker engine, where containers are
        // told apart by cluster id.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cluster_id = settings
            .cluster_id
            .clone()
            .unwrap_or_else(|| format!("test-{}-{serial}", std::process::id()));
        let mut cluster = Cluster {
            dir,
            cluster_id,
            nodes: Vec::new(),
            children: Vec::new(),
            settings,
            token: None,
        };
        for id in 1..=n as u64 {
            cluster.add_spec(id);
        }
        let founders: Vec<NodeSpec> = cluster.nodes.clone();
        for spec in &founders {
            cluster.write_config(spec, &founders);
        }
        for i in 0..n {
            cluster.children.push(None);
            cluster.restart(i);
        }
        cluster
    }

    fn add_spec(&mut self, id: u64) -> NodeSpec {
        let root = self.dir.path();
        let spec = NodeSpec {
            id,
            api: format!("127.0.0.1:{}", free_port()),
            raft: format!("127.0.0.1:{}", free_port()),
            http: format!("127.0.0.1:{}", free_port()),
            data_dir: self
                .settings
                .data_dirs
                .get(self.nodes.len())
                .cloned()
                .unwrap_or_else(|| root.join(format!("node{id}"))),
            config_path: root.join(format!("node{id}.toml")),
            log_path: root.join(format!("node{id}.log")),
        };
        self.nodes.push(spec.clone());
        spec
    }

    fn write_config(&self, spec: &NodeSpec, initial: &[NodeSpec]) {
        let s = &self.settings;
        let members: Vec<agent::Member> = initial
            .iter()
            .map(|m| agent::Member {
                id: m.id,
                api: m.api.clone(),
                raft: m.raft.clone(),
            })
            .collect();
        let mut sections = format!(
            "[raft]\ntick = \"{}ms\"\nelection_ticks = {}\nheartbeat_ticks = 2\nsnapshot_threshold = {}\nsnapshot_interval = \"0s\"\ntrailing_entries = {}\n\n[log]\nlevel = \"info,drover=debug\"\n\n",
            s.tick_ms, s.election_ticks, s.snapshot_threshold, s.trailing_entries
        );
        sections += &format!(
            "[executor]\nenabled = {}\ncpu_millis = {}\nmemory_mib = 8192\nstop_grace = \"2s\"\nlabels = {{ node = \"{}\" }}\n\n\
             [scheduler]\nheartbeat_interval = \"200ms\"\nnode_down_after = \"{}ms\"\nqueue_capacity = {}\nretain_max = {}\n\n\
             [acl]\nenabled = {}\ncors_origins = {:?}\n",
            s.executor, s.cpu_millis, spec.id, s.node_down_after_ms, s.queue_capacity, s.retain_max, s.acl, s.cors_origins
        );
        if let Some(dir) = &s.scratch_dir {
            sections = sections.replacen(
                "[executor]\n",
                &format!(
                    "[executor]\nscratch_dir = {:?}\n",
                    dir.display().to_string()
                ),
                1,
            );
        }
        if let Some(file) = &s.bootstrap_token_file {
            sections += &format!("bootstrap_token_file = \"{}\"\n", file.display());
        }
        sections += &s.extra_config;
        for (_, extra) in s.node_config.iter().filter(|(id, _)| *id == spec.id) {
            sections += extra;
        }
        let text = agent::NodeConfig {
            id: spec.id,
            cluster_id: &self.cluster_id,
            data_dir: &spec.data_dir,
            api: &spec.api,
            raft: &spec.raft,
            http: Some(&spec.http),
            members: &members,
            tls_dir: s.tls_dir.as_deref(),
        }
        .render(&sections);
        std::fs::write(&spec.config_path, text).expect("write node config");
    }

    /// Rewrites node `i`'s config without initial members, so that with an
    /// empty data dir it waits to be added instead of founding a cluster.
    pub fn make_joiner(&mut self, i: usize) {
        let spec = self.nodes[i].clone();
        self.write_config(&spec, &[]);
    }

    /// Adds a node configured to join (no initial members) and starts it.
    pub fn start_joiner(&mut self) -> usize {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        let spec = self.add_spec(id);
        self.write_config(&spec, &[]);
        self.children.push(None);
        let index = self.nodes.len() - 1;
        self.restart(index);
        index
    }

    /// (Re)starts node `i` from its config and data dir.
    pub fn restart(&mut self, i: usize) {
        let spec = &self.nodes[i];
        let mut args = vec![
            "agent".to_string(),
            "--config".to_string(),
            spec.config_path.display().to_string(),
        ];
        args.extend(self.settings.agent_args.iter().cloned());
        let name = format!("node{}", spec.id);
        let proc = Proc::spawn(name, &drover_bin(), &args, spec.log_path.clone(), None)
            .expect("spawn drover agent");
        self.children[i] = Some(proc);
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to node `i`, if it runs.
    pub fn signal(&self, i: usize, signal: i32) {
        if let Some(proc) = &self.children[i] {
            proc.signal(signal);
        }
    }

    /// SIGKILL: no shutdown path runs, unflushed writes are lost.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut proc) = self.children[i].take() {
            proc.stop();
        }
    }

    /// Waits (bounded) for node `i` to exit by itself; its exit status, or
    /// None if it still runs after `timeout` (it is left running).
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        let status = self.children[i].as_mut()?.wait_exit(timeout)?;
        self.children[i] = None;
        Some(status)
    }

    /// SIGTERM, as `systemctl stop` does, and waits (bounded) for the exit;
    /// the exit status, or None if it had to be killed after 30 s.
    pub fn terminate(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.children[i].take()?.terminate(Duration::from_secs(30))
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.children[i].is_some()
    }

    pub fn api_url(&self, i: usize) -> String {
        match self.settings.tls_dir {
            Some(_) => format!("https://{}", self.nodes[i].api),
            None => format!("http://{}", self.nodes[i].api),
        }
    }

    /// Base URL of node `i`'s REST API, e.g. `http://127.0.0.1:PORT` (routes
    /// are under `/v1`).
    pub fn http_url(&self, i: usize) -> String {
        format!("http://{}", self.nodes[i].http)
    }

    /// Every running node's URL, comma-separated (for DROVER_ADDR).
    pub fn addresses(&self) -> String {
        (0..self.nodes.len())
            .filter(|i| self.is_running(*i))
            .map(|i| self.api_url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A client of node `i` carrying the cluster's token (if set).
    pub async fn client(&self, i: usize) -> Option<Client> {
        self.client_with(i, self.token.as_deref()).await
    }

    /// A client of node `i` carrying `token` (None: no token).
    pub async fn client_with(&self, i: usize, token: Option<&str>) -> Option<Client> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(self.api_url(i)).ok()?;
        if let Some(dir) = &self.settings.tls_dir {
            endpoint = endpoint.tls_config(client_tls(dir, "client-admin")).ok()?;
        }
        let endpoint = endpoint
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(15));
        let interceptor = drover::client::TokenInterceptor::new(token).ok()?;
        let channel = endpoint.connect().await.ok()?;
        Some(drover::client::client_over(
            channel,
            &self.api_url(i),
            interceptor,
        ))
    }

    /// Node `i`'s unix socket (`listen.socket`'s default).
    pub fn socket_path(&self, i: usize) -> PathBuf {
        self.nodes[i].data_dir.join("drover.sock")
    }

    /// A client of node `i` over its unix socket, carrying no token.
    pub async fn socket_client(&self, i: usize) -> Option<Client> {
        let path = self.socket_path(i);
        let channel = drover::client::connect_unix(path.to_str()?).await.ok()?;
        let interceptor = drover::client::TokenInterceptor::new(None).ok()?;
        Some(drover::client::client_over(
            channel,
            &path.display().to_string(),
            interceptor,
        ))
    }

    /// Bootstraps the ACL system over a node's unix socket, as an operator
    /// on that machine would (without TLS only the leader's socket can:
    /// the others say so and the next is tried). Returns the admin secret
    /// and sets it as the cluster's token.
    pub async fn bootstrap_over_socket(&mut self, timeout: Duration) -> String {
        let secret = wait_for("bootstrap over a node's socket", timeout, || async {
            for i in (0..self.nodes.len()).filter(|i| self.is_running(*i)) {
                let Some(mut client) = self.socket_client(i).await else {
                    continue;
                };
                match client.acl_bootstrap(pb::AclBootstrapRequest {}).await {
                    Ok(r) => return Some(r.into_inner().secret),
                    Err(s)
                        if matches!(
                            s.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::DeadlineExceeded
                                | tonic::Code::FailedPrecondition
                        ) && !s.message().contains("already bootstrapped") => {}
                    Err(s) => panic!("bootstrap over node {}'s socket: {s:?}", i + 1),
                }
            }
            None
        })
        .await;
        self.token = Some(secret.clone());
        secret
    }

    pub async fn status(&self, i: usize) -> Option<pb::ClusterStatus> {
        let mut client = self.client(i).await?;
        client
            .get_cluster_status(pb::GetClusterStatusRequest::default())
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// Waits until a running node reports itself leader; returns its index.
    pub async fn wait_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            for i in 0..self.nodes.len() {
                if !self.is_running(i) {
                    continue;
                }
                if let Some(status) = self.status(i).await {
                    if status.role == "leader" {
                        return i;
                    }
                }
            }
            if Instant::now() > deadline {
                let logs: String = (0..self.nodes.len())
                    .map(|i| format!("\n--- node {} ---\n{}", self.nodes[i].id, self.log_tail(i)))
                    .collect();
                panic!("no leader within {timeout:?}; logs:{logs}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs the CLI against this cluster and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut command = Command::new(drover_bin());
        command.args(args).env("DROVER_ADDR", self.addresses());
        if let Some(dir) = &self.settings.tls_dir {
            command
                .env("DROVER_CACERT", dir.join("ca.pem"))
                .env("DROVER_CLIENT_CERT", dir.join("client-admin.pem"))
                .env("DROVER_CLIENT_KEY", dir.join("client-admin-key.pem"));
        }
        match &self.token {
            Some(token) => command.env("DROVER_TOKEN", token),
            None => command.env_remove("DROVER_TOKEN"),
        };
        command.output().expect("run drover CLI")
    }

    /// Creates a token with the CLI (`acl token create --output json`, as
    /// the cluster's token); returns (accessor, secret).
    pub fn create_token(&self, name: &str, role: &str) -> (String, String) {
        let out = self.cli(&[
            "acl", "token", "create", "--name", name, "--role", role, "--output", "json",
        ]);
        let v = json_of(&out, &format!("create a {role} token"));
        let field = |key: &str| v["token"][key].as_str().unwrap_or_default().to_string();
        assert_eq!(field("role"), role, "{v}");
        let secret = v["secret"].as_str().expect("secret").to_string();
        assert!(secret.starts_with("drv_"), "{v}");
        (field("accessor"), secret)
    }

    /// The tail of a node's log, for failure messages.
    pub fn log_tail(&self, i: usize) -> String {
        process::log_tail(&self.nodes[i].log_path, 30)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The test failed: what each node logged last tells why.
            for i in 0..self.nodes.len() {
                eprintln!("--- node {} log tail ---\n{}", i + 1, self.log_tail(i));
            }
        }
        for i in 0..self.children.len() {
            self.kill(i);
        }
        if self.settings.executor {
            remove_containers(&self.cluster_id);
        }
    }
}

/// Removes every container the nodes of `cluster_id` created (they outlive
/// their killed agents by design).
pub fn remove_containers(cluster_id: &str) {
    let ids = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=drover.cluster={cluster_id}"),
        ])
        .output();
    if let Ok(out) = ids {
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}

/// Containers of `cluster_id` still present (running or not), by name.
pub fn containers(cluster_id: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("label=drover.cluster={cluster_id}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

impl Cluster {
    /// A cluster of `n` nodes that run jobs in Docker (`executor` on), or
    /// `None` when Docker is unreachable and not required: the test then
    /// returns (see [`docker_ready`]).
    pub fn start_running_jobs(n: usize, settings: RaftSettings) -> Option<Cluster> {
        if !docker_ready() {
            return None;
        }
        Some(Cluster::start(
            n,
            RaftSettings {
                executor: true,
                ..settings
            },
        ))
    }
}

/// Whether Docker-dependent tests should run: true if the engine answers.
/// With `DROVER_REQUIRE_DOCKER=1` an unreachable engine is a failure, not
/// a skip. Builds the job image once per test binary.
pub fn docker_ready() -> bool {
    let required = std::env::var("DROVER_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    let up = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !up {
        assert!(
            !required,
            "DROVER_REQUIRE_DOCKER=1 but Docker is unreachable"
        );
        eprintln!("NOTICE: skipping a Docker test, Docker is unreachable");
        return false;
    }
    if let Err(e) = job_image() {
        panic!("Docker is reachable but the job image cannot be built: {e}");
    }
    true
}

/// Builds the job image once per test binary; returns the error text on failure.
pub fn job_image() -> Result<(), String> {
    use std::sync::{Mutex, OnceLock};
    static BUILT: OnceLock<Mutex<Option<Result<(), String>>>> = OnceLock::new();
    let cell = BUILT.get_or_init(|| Mutex::new(None));
    let mut guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(done) = guard.as_ref() {
        return done.clone();
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/build-job-image.sh");
    let result = match Command::new("bash").arg(script).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "build-job-image.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Err(format!("cannot run build-job-image.sh: {e}")),
    };
    *guard = Some(result.clone());
    result
}

/// Submits a shell command and returns the job as the server answered it.
pub async fn submit_job(client: &mut Client, command: &str) -> Result<pb::Job, tonic::Status> {
    let spec = pb::JobSpec {
        command: command.to_string(),
        ..Default::default()
    };
    let response = client
        .submit_job(pb::SubmitJobRequest { spec: Some(spec) })
        .await?;
    response
        .into_inner()
        .job
        .ok_or_else(|| tonic::Status::internal("SubmitJob answered without a job"))
}

/// Submits a shell command and returns the job id.
pub async fn submit(client: &mut Client, command: &str) -> Result<String, tonic::Status> {
    Ok(submit_job(client, command).await?.id)
}

/// Every job a node has, walking every page; `consistent` reads each page
/// linearizably (ReadIndex) instead of from the local table.
pub async fn all_jobs(
    client: &mut Client,
    consistent: bool,
) -> Result<Vec<pb::Job>, tonic::Status> {
    let mut jobs = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_jobs(pb::ListJobsRequest {
                page_size: 1000,
                page_token: token,
                consistent,
                ..Default::default()
            })
            .await?
            .into_inner();
        jobs.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return Ok(jobs);
        }
        token = page.next_page_token;
    }
}

/// The job `id` as `client`'s node has it now (not linearizable), or None
/// when it cannot say.
pub async fn get_job(client: &mut Client, id: &str) -> Option<pb::Job> {
    client
        .get_job(pb::GetJobRequest {
            id: id.to_string(),
            consistent: false,
        })
        .await
        .ok()?
        .into_inner()
        .job
}

/// A job spec for the executor's driver as the tests run it: `command` in
/// the job image, small limits, no timeout, no network.
pub fn run_spec(job_id: &str, command: &str) -> drover::executor::RunSpec {
    drover::executor::RunSpec {
        job_id: job_id.to_string(),
        attempt: 1,
        command: Some(command.to_string()),
        args: vec![],
        image: "drover-job:latest".to_string(),
        env: vec![],
        cpu_millis: 500,
        memory_mib: 64,
        pids: 64,
        timeout: None,
        network: false,
        user: None,
    }
}

/// All job ids a node has, walking every page.
pub async fn all_job_ids(client: &mut Client) -> Result<Vec<String>, tonic::Status> {
    let jobs = all_jobs(client, false).await?;
    Ok(jobs.into_iter().map(|j| j.id).collect())
}

/// The JSON a successful CLI run printed; panics with its stderr (or
/// stdout, if it is not JSON) otherwise.
pub fn json_of(out: &std::process::Output, what: &str) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{what}: exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Asserts a path exists (helps failure messages read well).
pub fn assert_exists(path: &Path) {
    assert!(path.exists(), "{} should exist", path.display());
}
