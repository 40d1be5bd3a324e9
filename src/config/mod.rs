//! Node configuration: a TOML file (or the embedded dev defaults), then
//! `DROVER_*` environment overrides, then command-line flags. Validated once,
//! up front, with errors that name the file, the key and what is wrong.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::raft::{Membership, NodeId, PeerInfo};

mod keys;
mod limits;

use keys::{env_value, set_path};
pub use keys::{env_var_of, KEYS};
pub use limits::{LimitsConfig, QuotaConfig, MAX_STATE_BYTES_CEILING};

/// The embedded defaults of `drover agent --dev`: one node on 127.0.0.1.
pub const DEV_CONFIG: &str = include_str!("../../config/dev.toml");

/// Everything a node needs to run. Unknown keys are errors, so a typo never
/// silently falls back to a default.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id, unique in the cluster, never 0. Stored in the data dir.
    pub node_id: NodeId,
    /// Name of the cluster. Stored in the data dir on first start; a data dir
    /// of another cluster is refused, and peers of another cluster are too.
    pub cluster_id: String,
    /// Where the Raft log, snapshots and the job table live.
    pub data_dir: PathBuf,
    /// Addresses this node listens on.
    pub listen: Listen,
    /// Addresses other nodes and clients reach this node at, when they
    /// differ from `listen` (a container or NAT: listen on 0.0.0.0,
    /// advertise the host name).
    #[serde(default)]
    pub advertise: Advertise,
    /// Members of a brand-new cluster. Used only on the first start with an
    /// empty data dir; ignored afterwards (membership then lives in the log).
    /// Empty means "join": wait to be added with `operator raft add-peer`.
    #[serde(default)]
    pub initial_members: Vec<InitialMember>,
    /// Consensus timings and log compaction.
    #[serde(default)]
    pub raft: RaftConfig,
    /// Running jobs on this node.
    #[serde(default)]
    pub executor: ExecutorConfig,
    /// Placement, node liveness, retention and queue bounds (used while
    /// this node leads).
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Access control.
    #[serde(default)]
    pub acl: AclConfig,
    /// The free-space reserve of the data directory.
    #[serde(default)]
    pub storage: StorageConfig,
    /// TLS on every listener and channel (see `tls`).
    #[serde(default)]
    pub tls: TlsConfig,
    /// What one owner may hold in the job table, and the table in all.
    #[serde(default)]
    pub quotas: QuotaConfig,
    /// What one client may take of this node's listeners.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// TLS of every listener and every channel between nodes (see `tls`).
/// Off unless all three files are set.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The cluster's CA certificate (PEM), as `drover tls ca create` makes.
    pub ca_file: Option<PathBuf>,
    /// This node's certificate (PEM), from `drover tls cert create --node`.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// The client gRPC API requires a client certificate signed by the CA.
    pub verify_client: bool,
    /// The REST API requires one too (off: browsers and curl carry tokens).
    pub verify_https_client: bool,
    /// Run without TLS although a listener is not on loopback. Anyone who
    /// reaches the ports can then change the cluster's state: only for a
    /// network nobody else reaches. Reported in the log and `/v1/cluster`.
    pub insecure_plaintext: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            ca_file: None,
            cert_file: None,
            key_file: None,
            verify_client: true,
            verify_https_client: false,
            insecure_plaintext: false,
        }
    }
}

impl TlsConfig {
    /// Whether TLS is on (all three files given).
    pub fn enabled(&self) -> bool {
        self.ca_file.is_some() && self.cert_file.is_some() && self.key_file.is_some()
    }
}

/// The free-space reserve kept on the data directory's filesystem (see
/// `store::space`): below it the node refuses new writes with
/// RESOURCE_EXHAUSTED / 507 instead of letting its store run out of disk.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Bytes that must stay free. 0, with `min_free_percent` 0, turns the
    /// reserve off (not recommended: a full disk then stops the node).
    pub min_free_bytes: u64,
    /// Share of the filesystem (in percent) that must stay free, if that is
    /// more than `min_free_bytes`.
    pub min_free_percent: u8,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            min_free_bytes: 256 << 20,
            min_free_percent: 1,
        }
    }
}

/// Access control of the client APIs (gRPC, REST). Off by default so a dev
/// node works without tokens; a production cluster turns it on on every
/// node (a mixed setting lets the open nodes bypass the closed ones).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AclConfig {
    /// Refuse every call without a valid token (UNAUTHENTICATED / 401) or
    /// without the right (PERMISSION_DENIED / 403).
    pub enabled: bool,
    /// Browser origins allowed to call the REST API cross-origin (CORS),
    /// e.g. `https://dash.example.com`. Empty: no cross-origin access.
    pub cors_origins: Vec<String>,
    /// A file holding the secret that `drover acl bootstrap` must present
    /// (it becomes the first admin token, like Consul's initial management
    /// token), so nobody can race the operator to it over the network.
    /// Without it, bootstrap works only over the node's unix socket.
    pub bootstrap_token_file: Option<PathBuf>,
}

/// How this node runs jobs.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    /// Whether this node runs jobs at all (a node without it only votes and
    /// serves the API; it never heartbeats, so nothing is placed on it).
    pub enabled: bool,
    /// The Docker endpoint; empty = the local default (DOCKER_HOST or the
    /// Unix socket).
    pub docker_host: String,
    /// Image of a job that names none.
    pub default_image: String,
    /// CPU offered to jobs, in millicores; 0 = all cores of this machine.
    pub cpu_millis: u64,
    /// Memory offered to jobs, in MiB; 0 = the machine's memory.
    pub memory_mib: u64,
    /// Labels that job constraints match against.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Output kept per attempt on this node; beyond it a marker and nothing.
    pub output_cap_bytes: u64,
    /// Last bytes of output committed with an attempt's result.
    pub output_tail_bytes: usize,
    /// Between SIGTERM and SIGKILL when a job is stopped.
    #[serde(with = "humantime_serde")]
    pub stop_grace: Duration,
    /// A directory on a disk-backed filesystem where each attempt gets a
    /// fresh, empty directory mounted at `/scratch` (its only writable
    /// place on disk; `/tmp` is memory), removed with the container. None:
    /// jobs get no `/scratch`. Put it on its own filesystem: a job can fill
    /// it, and must not fill the one holding the data directory.
    pub scratch_dir: Option<PathBuf>,
    /// What a job's container may be and do (`[executor.policy]`).
    pub policy: crate::jobs::policy::SandboxPolicy,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            enabled: true,
            docker_host: String::new(),
            default_image: "drover-job:latest".into(),
            cpu_millis: 0,
            memory_mib: 0,
            labels: Default::default(),
            output_cap_bytes: 64 << 20,
            output_tail_bytes: 64 << 10,
            stop_grace: Duration::from_secs(10),
            scratch_dir: None,
            policy: Default::default(),
        }
    }
}

/// The leader's scheduling policy.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// How often each node tells the leader it is alive.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Silence after which the leader declares a node down and re-queues
    /// its jobs. A node restarted within it reattaches to its jobs.
    #[serde(with = "humantime_serde")]
    pub node_down_after: Duration,
    /// Finished jobs are deleted this long after they finish.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// At most this many finished jobs are kept (oldest deleted first).
    pub retain_max: u64,
    /// Most jobs waiting in QUEUED; a submission beyond it gets
    /// RESOURCE_EXHAUSTED.
    pub queue_capacity: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            heartbeat_interval: Duration::from_secs(1),
            node_down_after: Duration::from_secs(10),
            retention: Duration::from_secs(24 * 3600),
            retain_max: 10_000,
            queue_capacity: 100_000,
        }
    }
}

/// Listen addresses. All bind to 127.0.0.1 unless the config says otherwise.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Client gRPC API (CLI, forwarding between nodes).
    pub api: SocketAddr,
    /// Peer gRPC service carrying Raft messages.
    pub raft: SocketAddr,
    /// REST API (JSON, Server-Sent Events, OpenAPI document). Absent: no
    /// HTTP listener, so a node exposes nothing the operator did not ask for.
    #[serde(default)]
    pub http: Option<SocketAddr>,
    /// Unix socket of the client gRPC API, for whoever may open it on this
    /// machine (mode 0600: the node's user). The one place `drover acl
    /// bootstrap` works without a provisioned secret. Default:
    /// `<data_dir>/drover.sock`.
    #[serde(default)]
    pub socket: Option<PathBuf>,
}

/// Where this node is reachable, as other nodes see it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Advertise {
    /// host:port of the client gRPC API (how a joining node is added).
    /// Default: this node's `initial_members` entry, else `listen.api`.
    pub api: Option<String>,
    /// host:port of the peer (Raft) listener, sent with every Raft message
    /// so a leader can answer a node it does not know yet. Default: this
    /// node's `initial_members` entry, else `listen.raft`.
    pub raft: Option<String>,
    /// host:port of the REST API, named by `X-Drover-Leader` in answers of
    /// other nodes while this one leads. Default: `listen.http`.
    pub http: Option<String>,
}

/// One member of the initial cluster.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InitialMember {
    pub id: NodeId,
    /// host:port of its peer (Raft) listener as reachable from other nodes.
    pub raft_addr: String,
    /// host:port of its client API as reachable from other nodes.
    pub api_addr: String,
}

/// Consensus timings (Drover's defaults follow etcd: 100 ms heartbeat,
/// 1 s election timeout) and compaction (Nomad's 8192-entry threshold,
/// checked no more often than every 30 s, as Consul does).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// Length of one logical tick of the Raft core.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// Heartbeat interval, in ticks.
    pub heartbeat_ticks: u32,
    /// Minimum election timeout, in ticks (randomized up to twice that).
    pub election_ticks: u32,
    /// Take a snapshot and compact the log once this many entries were
    /// applied since the last snapshot.
    pub snapshot_threshold: u64,
    /// Minimum time between two snapshots. A snapshot copies the whole job
    /// table, so under a sustained write load a threshold alone would copy
    /// it every few seconds; this bounds how often that cost is paid. The
    /// log still never grows past 16 thresholds (a snapshot is then taken
    /// regardless), which bounds its memory and disk. 0 disables the wait.
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
    /// Entries kept below a snapshot so slightly lagging followers catch up
    /// from the log instead of a full snapshot.
    pub trailing_entries: u64,
    /// Append messages in flight per follower (pipelining window).
    pub max_inflight: usize,
    /// Size of one InstallSnapshot chunk, in bytes.
    pub snapshot_chunk_bytes: usize,
    /// How long a client write waits for commit before failing with
    /// DEADLINE_EXCEEDED (the write may still commit: check before retrying).
    #[serde(with = "humantime_serde")]
    pub propose_timeout: Duration,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            tick: Duration::from_millis(100),
            heartbeat_ticks: 1,
            election_ticks: 10,
            snapshot_threshold: 8192,
            snapshot_interval: Duration::from_secs(30),
            trailing_entries: 1024,
            max_inflight: 64,
            snapshot_chunk_bytes: 1 << 20,
            propose_timeout: Duration::from_secs(10),
        }
    }
}

/// Log output of the agent.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter, e.g. "info" or "drover=debug,info".
    pub level: String,
    /// "text" (human) or "json".
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// A configuration problem, with where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid config {origin}: key `{key}`: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

impl Config {
    /// Loads and validates a config file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        Config::load(Some(path), &[])
    }

    /// What `drover agent` runs with: the file (or, without one, the
    /// embedded dev defaults), then `DROVER_<KEY>` overrides from `env`
    /// (e.g. `DROVER_RAFT_SNAPSHOT_THRESHOLD=16384`, `DROVER_ACL_ENABLED=true`;
    /// see [`KEYS`]), validated. Errors name the file or the variable, the
    /// key, and what is wrong.
    pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let (text, origin) = match path {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?,
                path.display().to_string(),
            ),
            None => (
                DEV_CONFIG.to_string(),
                "(embedded dev defaults)".to_string(),
            ),
        };
        let mut document: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        let mut applied = Vec::new();
        for (key, var) in KEYS.iter().map(|k| (*k, env_var_of(k))) {
            let Some((_, raw)) = env.iter().find(|(name, _)| *name == var) else {
                continue;
            };
            let value = env_value(key, raw);
            set_path(&mut document, key, value).map_err(|message| ConfigError::Invalid {
                origin: format!("environment variable {var}"),
                key: key.to_string(),
                message,
            })?;
            applied.push(var);
        }
        let origin = match applied.is_empty() {
            true => origin,
            false => format!("{origin} with overrides {}", applied.join(", ")),
        };
        let config: Config =
            document
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    origin: origin.clone(),
                    message: e.to_string(),
                })?;
        config.validate(&origin)?;
        Ok(config)
    }

    /// The effective configuration as TOML (what `--check` prints).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Parse {
            origin: "(effective config)".into(),
            message: e.to_string(),
        })
    }

    /// The peer address this node announces (see [`Advertise::raft`]).
    pub fn advertised_raft(&self) -> String {
        self.advertised_raft_or(None)
    }

    /// [`Config::advertised_raft`], with the address the cluster's stored
    /// membership has for this node (a node that joined has no initial
    /// member entry) taking the place before `listen.raft`.
    pub fn advertised_raft_or(&self, from_membership: Option<String>) -> String {
        self.advertise
            .raft
            .clone()
            .or_else(|| self.own_initial_member().map(|m| m.raft_addr.clone()))
            .or(from_membership)
            .unwrap_or_else(|| self.listen.raft.to_string())
    }

    /// The client API address this node announces (see [`Advertise::api`]).
    pub fn advertised_api(&self) -> String {
        self.advertise
            .api
            .clone()
            .or_else(|| self.own_initial_member().map(|m| m.api_addr.clone()))
            .unwrap_or_else(|| self.listen.api.to_string())
    }

    /// The REST address this node announces (see [`Advertise::http`]);
    /// None without a REST listener.
    pub fn advertised_http(&self) -> Option<String> {
        let listen = self.listen.http?;
        Some(
            self.advertise
                .http
                .clone()
                .unwrap_or_else(|| listen.to_string()),
        )
    }

    /// Where the client API's unix socket lives (see [`Listen::socket`]).
    pub fn socket_path(&self) -> PathBuf {
        self.listen
            .socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join("drover.sock"))
    }

    fn own_initial_member(&self) -> Option<&InitialMember> {
        self.initial_members.iter().find(|m| m.id == self.node_id)
    }

    /// The embedded single-node dev configuration.
    pub fn dev() -> Result<Config, ConfigError> {
        Config::from_toml(DEV_CONFIG, "(embedded dev defaults)")
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges and cross-field rules.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key: key.to_string(),
            message,
        };
        if self.node_id == 0 {
            return Err(bad("node_id", "must be a positive integer".into()));
        }
        if self.cluster_id.trim().is_empty() {
            return Err(bad("cluster_id", "must not be empty".into()));
        }
        for origin in &self.acl.cors_origins {
            if axum::http::HeaderValue::from_str(origin).is_err()
                || !(origin.starts_with("http://") || origin.starts_with("https://"))
                || origin.ends_with('/')
            {
                return Err(bad(
                    "acl.cors_origins",
                    format!("`{origin}` is not an origin like https://dash.example.com"),
                ));
            }
        }
        let raft = &self.raft;
        if raft.tick < Duration::from_millis(1) || raft.tick > Duration::from_secs(10) {
            return Err(bad("raft.tick", "must be between 1ms and 10s".into()));
        }
        if raft.heartbeat_ticks == 0 || raft.heartbeat_ticks >= raft.election_ticks {
            return Err(bad(
                "raft.heartbeat_ticks",
                format!(
                    "must be at least 1 and less than raft.election_ticks ({})",
                    raft.election_ticks
                ),
            ));
        }
        if raft.snapshot_threshold < 16 {
            return Err(bad("raft.snapshot_threshold", "must be at least 16".into()));
        }
        if raft.max_inflight == 0 || raft.max_inflight > 4096 {
            return Err(bad(
                "raft.max_inflight",
                "must be between 1 and 4096".into(),
            ));
        }
        if raft.snapshot_chunk_bytes < 1024 || raft.snapshot_chunk_bytes > 8 << 20 {
            return Err(bad(
                "raft.snapshot_chunk_bytes",
                "must be between 1 KiB and 8 MiB".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &self.initial_members {
            if m.id == 0 || !seen.insert(m.id) {
                return Err(bad(
                    "initial_members",
                    format!("member id {} is zero or repeated", m.id),
                ));
            }
        }
        if !self.initial_members.is_empty() && !seen.contains(&self.node_id) {
            return Err(bad(
                "initial_members",
                format!(
                    "does not contain this node (node_id = {}); list every member of the new \
                     cluster, this one included, or leave it empty to join an existing cluster",
                    self.node_id
                ),
            ));
        }
        let listen = &self.listen;
        if listen.api == listen.raft
            || listen
                .http
                .is_some_and(|h| h == listen.api || h == listen.raft)
        {
            return Err(bad(
                "listen",
                "api, raft and http must be different addresses".into(),
            ));
        }
        let ex = &self.executor;
        if ex.default_image.trim().is_empty() {
            return Err(bad("executor.default_image", "must not be empty".into()));
        }
        if ex.output_tail_bytes > 512 << 10 {
            return Err(bad(
                "executor.output_tail_bytes",
                "must be at most 512 KiB (it is committed to the log)".into(),
            ));
        }
        if ex.output_cap_bytes < ex.output_tail_bytes as u64 {
            return Err(bad(
                "executor.output_cap_bytes",
                "must be at least executor.output_tail_bytes".into(),
            ));
        }
        let sc = &self.scheduler;
        if sc.heartbeat_interval < Duration::from_millis(10) {
            return Err(bad(
                "scheduler.heartbeat_interval",
                "must be at least 10ms".into(),
            ));
        }
        if sc.node_down_after < sc.heartbeat_interval * 3 {
            return Err(bad(
                "scheduler.node_down_after",
                "must be at least three heartbeat intervals".into(),
            ));
        }
        if sc.queue_capacity == 0 {
            return Err(bad("scheduler.queue_capacity", "must be positive".into()));
        }
        let executor = &self.executor;
        if let Some((key, message)) = executor.policy.problem(&executor.default_image) {
            return Err(bad(key, message));
        }
        if let Some(dir) = &executor.scratch_dir {
            if !dir.is_absolute() {
                return Err(bad(
                    "executor.scratch_dir",
                    format!("`{}` must be an absolute path", dir.display()),
                ));
            }
        }
        if let Some((key, message)) = self.quotas.problem().or_else(|| self.limits.problem()) {
            return Err(bad(key, message));
        }
        // Bounded as a job's labels are: the leader refuses heartbeats
        // beyond them, so a node configured so would never run anything.
        crate::jobs::check_map("executor.labels", &executor.labels)
            .map_err(|message| bad("executor.labels", message))?;
        if let Some(key) = executor
            .labels
            .keys()
            .find(|k| k.starts_with(crate::jobs::policy::RESERVED_LABEL_PREFIX))
        {
            return Err(bad(
                "executor.labels",
                format!("`{key}`: labels starting with `drover.` are the node's own (they say what executor.policy allows)"),
            ));
        }
        let mut heartbeat = executor.labels.clone();
        heartbeat.extend(executor.policy.offers());
        crate::jobs::check_map("executor.labels", &heartbeat).map_err(|message| {
            bad(
                "executor.labels",
                format!("{message} (with the node's own labels for executor.policy)"),
            )
        })?;
        for (key, addr) in [
            ("advertise.api", &self.advertise.api),
            ("advertise.raft", &self.advertise.raft),
            ("advertise.http", &self.advertise.http),
        ] {
            if let Some(addr) = addr {
                let port = addr.rsplit_once(':').and_then(|(host, port)| {
                    (!host.is_empty())
                        .then(|| port.parse::<u16>().ok())
                        .flatten()
                });
                if port.is_none_or(|p| p == 0) {
                    return Err(bad(key, format!("`{addr}` is not host:port")));
                }
            }
        }
        let tls = &self.tls;
        let given = [&tls.ca_file, &tls.cert_file, &tls.key_file]
            .iter()
            .filter(|f| f.is_some())
            .count();
        if given != 0 && given != 3 {
            return Err(bad(
                "tls",
                "set all of tls.ca_file, tls.cert_file and tls.key_file, or none".into(),
            ));
        }
        if tls.enabled() {
            crate::tls::identity::check_cluster_name(&self.cluster_id)
                .map_err(|message| bad("cluster_id", message))?;
        } else if !tls.insecure_plaintext {
            let listeners = [
                ("listen.api", Some(self.listen.api)),
                ("listen.raft", Some(self.listen.raft)),
                ("listen.http", self.listen.http),
            ];
            if let Some((key, addr)) = listeners
                .into_iter()
                .find_map(|(key, addr)| Some((key, addr?)).filter(|(_, a)| !a.ip().is_loopback()))
            {
                return Err(bad(
                    "tls",
                    format!(
                        "{key} {addr} is reachable from the network, and without TLS anyone who \
                         reaches it can change the cluster: set tls.ca_file, tls.cert_file and \
                         tls.key_file (`drover tls ca create`, see the README's TLS section), or \
                         tls.insecure_plaintext = true on a network nobody else reaches"
                    ),
                ));
            }
        }
        if self.storage.min_free_percent > 50 {
            return Err(bad(
                "storage.min_free_percent",
                "must be between 0 and 50".into(),
            ));
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            return Err(bad(
                "log.format",
                format!("`{}` is neither \"text\" nor \"json\"", self.log.format),
            ));
        }
        Ok(())
    }

    /// The membership a brand-new cluster starts with.
    pub fn initial_membership(&self) -> Membership {
        let mut membership = Membership::default();
        for m in &self.initial_members {
            membership.voters.insert(
                m.id,
                PeerInfo {
                    raft_addr: m.raft_addr.clone(),
                    api_addr: m.api_addr.clone(),
                },
            );
        }
        membership
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_defaults_parse_and_bind_loopback_only() {
        let config = Config::dev().expect("embedded dev config must be valid");
        assert!(config.listen.api.ip().is_loopback());
        assert!(config.listen.raft.ip().is_loopback());
        assert!(config.listen.http.is_some_and(|h| h.ip().is_loopback()));
        assert_eq!(config.initial_members.len(), 1);
    }

    #[test]
    fn shipped_cluster_configs_are_valid() {
        for n in 1..=3 {
            let path = format!("{}/config/cluster/node{n}.toml", env!("CARGO_MANIFEST_DIR"));
            let config = Config::from_file(Path::new(&path)).expect("shipped config must be valid");
            assert_eq!(config.node_id, n);
            assert_eq!(config.initial_members.len(), 3);
            assert!(config.tls.enabled(), "the shipped cluster is a TLS one");
        }
    }

    #[test]
    fn node_labels_are_bounded_like_a_jobs() {
        let mut config = Config::dev().expect("dev config");
        for i in 0..=crate::jobs::limits::MAX_LABELS {
            config.executor.labels.insert(format!("k{i}"), "v".into());
        }
        let err = config.validate("x.toml").unwrap_err().to_string();
        assert!(err.contains("executor.labels"), "{err}");
        let mut config = Config::dev().expect("dev config");
        config.executor.labels.insert("zone".into(), "a\0b".into());
        let err = config.validate("x.toml").unwrap_err().to_string();
        assert!(err.contains("NUL"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let text = DEV_CONFIG.replace("node_id = 1", "node_id = 1\nnode_idd = 2");
        let err = Config::from_toml(&text, "x.toml").unwrap_err().to_string();
        assert!(err.contains("node_idd"), "{err}");
        assert!(err.contains("x.toml"), "{err}");
    }

    const MINIMAL: &str = r#"
node_id = 1
cluster_id = "t"
data_dir = "d"
listen = { api = "127.0.0.1:1", raft = "127.0.0.1:2" }
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let config = Config::from_toml(MINIMAL, "x.toml").expect("minimal config is valid");
        assert_eq!(config.raft.snapshot_threshold, 8192);
        assert!(config.initial_members.is_empty());
        assert!(
            config.listen.http.is_none(),
            "no HTTP listener unless configured"
        );
    }

    #[test]
    fn http_address_must_differ_from_the_others() {
        let text = MINIMAL.replace(
            "raft = \"127.0.0.1:2\"",
            "raft = \"127.0.0.1:2\", http = \"127.0.0.1:1\"",
        );
        let err = Config::from_toml(&text, "x.toml").unwrap_err().to_string();
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn bad_duration_is_named() {
        let text = format!("{MINIMAL}\n[raft]\ntick = \"fast\"\n");
        let err = Config::from_toml(&text, "x.toml").unwrap_err().to_string();
        assert!(err.contains("tick"), "{err}");
    }

    #[test]
    fn the_nodes_own_labels_and_scratch_paths_are_checked() {
        let text = format!("{MINIMAL}\n[executor.labels]\n\"drover.network\" = \"allowed\"\n");
        let err = Config::from_toml(&text, "x.toml").unwrap_err().to_string();
        assert!(
            err.contains("executor.labels") && err.contains("drover.network"),
            "{err}"
        );
        let text = format!("{MINIMAL}\n[executor]\nscratch_dir = \"relative/dir\"\n");
        let err = Config::from_toml(&text, "x.toml").unwrap_err().to_string();
        assert!(err.contains("executor.scratch_dir"), "{err}");
    }

    #[test]
    fn heartbeat_must_be_shorter_than_election() {
        let text = format!("{MINIMAL}\n[raft]\nheartbeat_ticks = 10\nelection_ticks = 10\n");
        let err = Config::from_toml(&text, "x.toml").unwrap_err().to_string();
        assert!(err.contains("raft.heartbeat_ticks"), "{err}");
    }

    /// Dotted paths of every value in a TOML table (maps that are one
    /// setting, like labels, count as one value).
    fn leaf_keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (name, value) in table {
            let key = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            match value {
                toml::Value::Table(inner) if key != "executor.labels" => {
                    leaf_keys(inner, &key, out)
                }
                _ => out.push(key),
            }
        }
    }

    #[test]
    fn keys_lists_every_field_of_the_config() {
        let mut config = Config::dev().expect("dev config");
        config.advertise.api = Some("a:1".into());
        config.advertise.raft = Some("a:2".into());
        config.advertise.http = Some("a:3".into());
        config.executor.labels.insert("zone".into(), "a".into());
        config.tls.ca_file = Some("ca.pem".into());
        config.tls.cert_file = Some("node-1.pem".into());
        config.tls.key_file = Some("node-1-key.pem".into());
        config.listen.socket = Some("drover.sock".into());
        config.acl.bootstrap_token_file = Some("bootstrap.token".into());
        config.executor.scratch_dir = Some("/srv/scratch".into());
        let table: toml::Table = toml::from_str(&config.to_toml().expect("to toml")).expect("toml");
        let mut found = Vec::new();
        leaf_keys(&table, "", &mut found);
        found.sort();
        let mut keys: Vec<String> = KEYS.iter().map(|k| k.to_string()).collect();
        keys.sort();
        assert_eq!(found, keys, "KEYS must list every config key");
    }

    #[test]
    fn the_annotated_file_is_valid_and_documents_every_key() {
        let text = include_str!("../../config/drover.toml");
        Config::from_toml(text, "config/drover.toml").expect("config/drover.toml is valid");
        for key in KEYS {
            let (section, leaf) = match key.rsplit_once('.') {
                Some((section, leaf)) => (Some(section), leaf),
                None => (None, *key),
            };
            let mut current: Option<String> = None;
            let mut documented = false;
            for line in text.lines().map(str::trim) {
                if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
                    current = Some(name.to_string());
                    documented |= *key == name;
                } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']'))
                {
                    current = Some(name.to_string());
                    documented |= *key == name;
                } else if current.as_deref() == section {
                    let line = line.trim_start_matches('#').trim_start();
                    documented |= line
                        .strip_prefix(leaf)
                        .is_some_and(|rest| rest.trim_start().starts_with('='));
                }
            }
            assert!(documented, "config/drover.toml does not document `{key}`");
        }
    }

    #[test]
    fn a_node_reachable_from_the_network_needs_tls_or_says_it_does_without() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let open = [("DROVER_LISTEN_API", "0.0.0.0:7700")];
        let err = Config::load(None, &env(&open))
            .expect_err("no TLS beyond loopback")
            .to_string();
        assert!(
            err.contains("listen.api 0.0.0.0:7700") && err.contains("tls.insecure_plaintext"),
            "{err}"
        );
        let waived = [open[0], ("DROVER_TLS_INSECURE_PLAINTEXT", "true")];
        assert!(Config::load(None, &env(&waived)).is_ok());
        let partial = [("DROVER_TLS_CA_FILE", "/ca.pem")];
        let err = Config::load(None, &env(&partial))
            .expect_err("half a TLS setup")
            .to_string();
        assert!(err.contains("tls.cert_file"), "{err}");
        assert!(
            Config::dev().is_ok(),
            "dev mode stays plaintext on loopback"
        );
    }

    #[test]
    fn environment_overrides_the_file_and_errors_name_the_variable() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let config = Config::load(
            None,
            &env(&[
                ("DROVER_RAFT_SNAPSHOT_THRESHOLD", "16384"),
                ("DROVER_RAFT_TICK", "50ms"),
                ("DROVER_ACL_ENABLED", "true"),
                ("DROVER_CLUSTER_ID", "1"),
                ("DROVER_LISTEN_HTTP", "127.0.0.1:9999"),
                ("DROVER_EXECUTOR_LABELS", "{ zone = \"a\" }"),
                ("DROVER_ACL_CORS_ORIGINS", "[\"https://dash.example.com\"]"),
                ("DROVER_ADVERTISE_RAFT", "node1:7701"),
                ("DROVER_ADDR", "http://ignored:1"),
            ]),
        )
        .expect("overrides apply");
        assert_eq!(config.raft.snapshot_threshold, 16384);
        assert_eq!(config.raft.tick, Duration::from_millis(50));
        assert!(config.acl.enabled);
        assert_eq!(config.cluster_id, "1");
        assert_eq!(config.listen.http.map(|a| a.port()), Some(9999));
        assert_eq!(
            config.executor.labels.get("zone").map(String::as_str),
            Some("a")
        );
        assert_eq!(config.acl.cors_origins, ["https://dash.example.com"]);
        assert_eq!(config.advertised_raft(), "node1:7701");
        assert_eq!(config.advertised_api(), "127.0.0.1:7700");

        // A bad variable names itself and the key (and, when two keys
        // disagree, the other one).
        for (name, value, says) in [
            ("DROVER_RAFT_TICK", "fast", "tick"),
            ("DROVER_RAFT_ELECTION_TICKS", "1", "raft.heartbeat_ticks"),
            ("DROVER_ADVERTISE_API", "nohost", "advertise.api"),
        ] {
            let err = Config::load(None, &env(&[(name, value)]))
                .expect_err(name)
                .to_string();
            assert!(err.contains(says), "{name}={value}: {err}");
            assert!(
                err.contains(name) || name == "DROVER_ADVERTISE_API",
                "{name}={value}: {err}"
            );
        }
    }
}
