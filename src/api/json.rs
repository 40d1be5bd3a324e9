//! The JSON shapes of Drover's objects: what the REST API sends and accepts
//! and what the CLI prints with `--output json`. One definition, so the two
//! never drift apart, and the OpenAPI document is derived from it.
//!
//! Conversions go from and to the `drover.v1` messages, because the REST
//! API is an adapter over the gRPC service: the messages are the contract.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::proto::v1 as pb;

/// A job as clients see it. Optional fields are `null` when not set yet
/// (e.g. `finished_at_ms` of an active job).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobJson {
    /// ULID, sortable by submission time.
    pub id: String,
    /// QUEUED, ASSIGNED, RUNNING, SUCCEEDED, FAILED, TIMED_OUT, CANCELLED or LOST.
    pub state: String,
    /// Shell string run as `/bin/sh -c`; `null` when `args` is used.
    pub command: Option<String>,
    /// Argument vector run without a shell.
    pub args: Vec<String>,
    pub image: String,
    pub env: BTreeMap<String, String>,
    pub resources: ResourcesJson,
    /// 0 = no timeout.
    pub timeout_ms: u64,
    pub retry: RetryJson,
    pub priority: i32,
    pub constraints: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub idempotency_key: Option<String>,
    pub network: bool,
    /// UID or UID:GID the container runs as; `null`: the node's
    /// `executor.policy.user`.
    pub user: Option<String>,
    /// Unix milliseconds (leader's clock) when the job was proposed.
    pub submitted_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// A queued retry is not placed before this time (Unix ms).
    pub not_before_ms: i64,
    /// Raft log index at which the submission was committed.
    pub index: u64,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptJson>,
    /// Accessor id of the token that submitted it; `null` without one.
    pub owner: Option<String>,
}

/// One run of a job on one node.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AttemptJson {
    pub number: u32,
    pub node: u64,
    pub assigned_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub exit_code: Option<i64>,
    /// `null` while active; else EXIT_CODE, SIGNAL, OOM_KILLED, TIMED_OUT,
    /// IMAGE_UNAVAILABLE, NODE_LOST, CANCELLED, START_FAILED, NODE_DRAINED.
    pub reason: Option<String>,
    /// The signal number when `reason` is SIGNAL.
    pub signal: Option<i64>,
    pub message: String,
    /// The last bytes of output committed with the result, as UTF-8 (invalid
    /// sequences replaced by U+FFFD). Empty in lists: `GET /v1/jobs/{id}`
    /// has it.
    pub output_tail: String,
}

/// What a job may use. In a submission, 0 or a missing field means the
/// default (100 millicores, 128 MiB, 256 pids).
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ResourcesJson {
    pub cpu_millis: u32,
    pub memory_mib: u32,
    pub pids: u32,
}

/// How often and how soon a failed job is retried. In a submission, 0 or a
/// missing field means the default (one attempt: no retry).
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetryJson {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

/// The body of `POST /v1/jobs`: a job spec with snake_case keys. Unknown keys
/// are refused, so a typo never silently falls back to a default.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SubmitJobJson {
    /// Shell string run as `/bin/sh -c`. Exactly one of `command` / `args`.
    pub command: Option<String>,
    /// Argument vector run without a shell.
    pub args: Vec<String>,
    /// Empty or missing: the node's `executor.default_image`.
    pub image: Option<String>,
    pub env: BTreeMap<String, String>,
    pub resources: Option<ResourcesJson>,
    /// 0 = no timeout.
    pub timeout_ms: u64,
    pub retry: Option<RetryJson>,
    /// Higher is placed first (-1000..1000).
    pub priority: i32,
    /// Node labels the job needs.
    pub constraints: BTreeMap<String, String>,
    /// A resubmission with the same key returns the first job.
    pub idempotency_key: Option<String>,
    /// Give the container a network (none by default).
    pub network: bool,
    pub labels: BTreeMap<String, String>,
    /// Run as this UID or UID:GID instead of the node's
    /// `executor.policy.user`; only what `executor.policy.allowed_users`
    /// lists is accepted.
    pub user: Option<String>,
}

/// One page of jobs, in submission order.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobPageJson {
    pub jobs: Vec<JobJson>,
    /// Pass as `page_token` for the next page; empty on the last page.
    pub next_page_token: String,
    /// The applied log index the page was read at (or after): watch
    /// `/v1/events?from_index=` it to miss no later change.
    pub index: u64,
}

/// One change to one job (`event: job` of `/v1/events`, a line of
/// `drover job watch --output json`): the job's state after the entry at
/// `index` was applied.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobEventJson {
    /// Log index of the entry that made the change (shared by the events of
    /// one entry; never goes down).
    pub index: u64,
    /// CREATED, UPDATED or DELETED (collected after it finished).
    pub kind: String,
    pub job_id: String,
    /// The state after the change; `null` when DELETED.
    pub state: Option<String>,
    /// The current attempt's number and node; 0 = none.
    pub attempt: u32,
    pub node: u64,
    /// Why the current attempt ended (EXIT_CODE, NODE_LOST, …); `null` while
    /// it is active or when there is none. QUEUED with a reason is a retry.
    pub reason: Option<String>,
    /// When the change happened (Unix ms); 0 for DELETED.
    pub at_ms: i64,
    /// The last event of its entry in this stream: resuming from `index`
    /// after it misses nothing (SSE gives such events an `id:`).
    pub last_in_entry: bool,
}

/// A piece of an attempt's output.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct OutputChunkJson {
    /// Position in the attempt's output; resume with `after_seq` (or the SSE
    /// `Last-Event-ID`) set to it.
    pub seq: u64,
    /// stdout, stderr, notice (Drover's own, e.g. a truncation marker) or
    /// tail (the committed tail, when the node that ran it is gone).
    pub stream: String,
    pub attempt: u32,
    /// The bytes as UTF-8 text, invalid sequences replaced by U+FFFD: for
    /// reading. A multi-byte character split between chunks shows as U+FFFD.
    pub text: String,
    /// The exact bytes, standard base64: for byte-exact copies.
    pub data_base64: String,
}

/// The output stored so far for one attempt.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct OutputJson {
    /// The attempt shown (0 when the job has none yet).
    pub attempt: u32,
    /// "node": the full stored output; "committed_tail": only the tail
    /// committed with the result (the node that ran it is unreachable);
    /// "none": no attempt yet.
    pub source: String,
    pub chunks: Vec<OutputChunkJson>,
}

/// A member of the Raft group.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberJson {
    pub id: u64,
    pub raft_addr: String,
    pub api_addr: String,
    /// "voter" or "learner".
    pub suffrage: String,
    pub is_leader: bool,
    /// Highest log index known replicated to it; `null` where unknown
    /// (only the leader tracks replication).
    pub match_index: Option<u64>,
    /// Milliseconds since the answering node last heard from it; `null`
    /// for the answering node itself or a member not heard from yet.
    pub last_contact_ms: Option<u64>,
    /// Its disk is below its free-space reserve (for a peer: as its latest
    /// Raft message to the answering node said).
    pub disk_low: bool,
}

/// The answering node's data-directory disk against its reserve.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct StorageJson {
    /// "ok"; "low": below the reserve, new work refused (507);
    /// "exhausted": below half of it, replicated writes refused too.
    pub state: String,
    pub free_bytes: u64,
    /// storage.min_free_bytes, or storage.min_free_percent of the disk.
    pub reserve_bytes: u64,
    pub total_bytes: u64,
    /// The data directory.
    pub path: String,
}

/// One node's view of the cluster.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatusJson {
    pub cluster_id: String,
    pub node_id: u64,
    /// "leader", "follower", "candidate" or "pre-candidate".
    pub role: String,
    pub term: u64,
    /// 0 = no leader known.
    pub leader_id: u64,
    pub leader_api_addr: String,
    pub commit_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub last_log_index: u64,
    pub members: Vec<MemberJson>,
    pub snapshots_installed: u64,
    pub fsyncs: u64,
    pub max_fsync_micros: u64,
    /// This node's disk.
    pub storage: StorageJson,
    /// "tls", "plaintext" (loopback only) or "insecure-plaintext".
    pub transport_security: String,
    /// The job table by phase, as the answering node has applied it.
    pub jobs: JobCountsJson,
}

/// Rows of the job table by phase.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct JobCountsJson {
    pub total: u64,
    /// QUEUED.
    pub queued: u64,
    /// ASSIGNED or RUNNING.
    pub active: u64,
    /// In a terminal state.
    pub finished: u64,
    /// `scheduler.queue_capacity`: the bound on `queued`.
    pub queue_capacity: u64,
    /// Jobs in each state (`QUEUED`, `ASSIGNED`, `RUNNING`, `SUCCEEDED`, …).
    pub by_state: BTreeMap<String, u64>,
    /// The job table's footprint in bytes (specs, attempts, output tails).
    #[serde(default)]
    pub state_bytes: u64,
    /// `quotas.max_state_bytes`: submits are refused once `state_bytes`
    /// reaches it.
    #[serde(default)]
    pub max_state_bytes: u64,
}

/// A node of the node table with its use.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeJson {
    pub id: u64,
    /// READY or DOWN.
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub cpu_millis: u64,
    pub memory_mib: u64,
    pub used_cpu_millis: u64,
    pub used_memory_mib: u64,
    pub active_jobs: u32,
    pub draining: bool,
    pub drain_deadline_ms: Option<i64>,
    pub api_addr: String,
}

/// The node table.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeListJson {
    pub nodes: Vec<NodeJson>,
}

/// The body of `POST /v1/nodes/{id}/drain` (may be omitted: drain with no
/// deadline).
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DrainJson {
    /// From now; missing or 0 = wait for the node's jobs to finish.
    pub deadline_ms: Option<u64>,
    /// True ends the drain.
    pub disable: Option<bool>,
}

impl From<&pb::Job> for JobJson {
    fn from(job: &pb::Job) -> Self {
        let spec = job.spec.clone().unwrap_or_default();
        let resources = spec.resources.unwrap_or_default();
        let retry = spec.retry.unwrap_or_default();
        JobJson {
            id: job.id.clone(),
            state: job.state.clone(),
            command: (!spec.command.is_empty()).then_some(spec.command),
            args: spec.args,
            image: spec.image,
            env: spec.env.into_iter().map(|e| (e.name, e.value)).collect(),
            resources: ResourcesJson {
                cpu_millis: resources.cpu_millis,
                memory_mib: resources.memory_mib,
                pids: resources.pids,
            },
            timeout_ms: spec.timeout_ms,
            retry: RetryJson {
                max_attempts: retry.max_attempts,
                initial_backoff_ms: retry.initial_backoff_ms,
                max_backoff_ms: retry.max_backoff_ms,
            },
            priority: spec.priority,
            constraints: spec.constraints.into_iter().collect(),
            labels: spec.labels.into_iter().collect(),
            idempotency_key: (!spec.idempotency_key.is_empty()).then_some(spec.idempotency_key),
            network: spec.network,
            user: (!spec.user.is_empty()).then_some(spec.user),
            submitted_at_ms: job.submitted_at_ms,
            finished_at_ms: (job.finished_at_ms != 0).then_some(job.finished_at_ms),
            not_before_ms: job.not_before_ms,
            index: job.index,
            attempts: job.attempts.iter().map(AttemptJson::from).collect(),
            owner: (!job.owner.is_empty()).then(|| job.owner.clone()),
        }
    }
}

impl From<&pb::Attempt> for AttemptJson {
    fn from(a: &pb::Attempt) -> Self {
        AttemptJson {
            number: a.number,
            node: a.node,
            assigned_at_ms: a.assigned_at_ms,
            started_at_ms: (a.started_at_ms != 0).then_some(a.started_at_ms),
            finished_at_ms: (a.finished_at_ms != 0).then_some(a.finished_at_ms),
            exit_code: a.exit_code,
            reason: (!a.reason.is_empty()).then(|| a.reason.clone()),
            signal: (a.reason == "SIGNAL").then_some(a.signal),
            message: a.message.clone(),
            output_tail: String::from_utf8_lossy(&a.output_tail).into_owned(),
        }
    }
}

impl From<SubmitJobJson> for pb::JobSpec {
    fn from(s: SubmitJobJson) -> Self {
        pb::JobSpec {
            command: s.command.unwrap_or_default(),
            args: s.args,
            image: s.image.unwrap_or_default(),
            env: s
                .env
                .into_iter()
                .map(|(name, value)| pb::EnvVar { name, value })
                .collect(),
            resources: s.resources.map(|r| pb::Resources {
                cpu_millis: r.cpu_millis,
                memory_mib: r.memory_mib,
                pids: r.pids,
            }),
            timeout_ms: s.timeout_ms,
            retry: s.retry.map(|r| pb::RetryPolicy {
                max_attempts: r.max_attempts,
                initial_backoff_ms: r.initial_backoff_ms,
                max_backoff_ms: r.max_backoff_ms,
            }),
            priority: s.priority,
            constraints: s.constraints.into_iter().collect(),
            idempotency_key: s.idempotency_key.unwrap_or_default(),
            network: s.network,
            labels: s.labels.into_iter().collect(),
            user: s.user.unwrap_or_default(),
        }
    }
}

impl From<&pb::ListJobsResponse> for JobPageJson {
    fn from(page: &pb::ListJobsResponse) -> Self {
        JobPageJson {
            jobs: page.jobs.iter().map(JobJson::from).collect(),
            next_page_token: page.next_page_token.clone(),
            index: page.index,
        }
    }
}

impl From<&pb::OutputChunk> for OutputChunkJson {
    fn from(c: &pb::OutputChunk) -> Self {
        OutputChunkJson {
            seq: c.seq,
            stream: c.stream.clone(),
            attempt: c.attempt,
            text: String::from_utf8_lossy(&c.data).into_owned(),
            data_base64: base64::engine::general_purpose::STANDARD.encode(&c.data),
        }
    }
}

impl From<&pb::GetJobOutputResponse> for OutputJson {
    fn from(r: &pb::GetJobOutputResponse) -> Self {
        OutputJson {
            attempt: r.attempt,
            source: r.source.clone(),
            chunks: r.chunks.iter().map(OutputChunkJson::from).collect(),
        }
    }
}

impl From<&pb::Member> for MemberJson {
    fn from(m: &pb::Member) -> Self {
        MemberJson {
            id: m.id,
            raft_addr: m.raft_addr.clone(),
            api_addr: m.api_addr.clone(),
            suffrage: m.suffrage.clone(),
            is_leader: m.is_leader,
            match_index: m.match_index,
            last_contact_ms: m.last_contact_ms,
            disk_low: m.disk_low,
        }
    }
}

impl From<&pb::ClusterStatus> for ClusterStatusJson {
    fn from(s: &pb::ClusterStatus) -> Self {
        ClusterStatusJson {
            cluster_id: s.cluster_id.clone(),
            node_id: s.node_id,
            role: s.role.clone(),
            term: s.term,
            leader_id: s.leader_id,
            leader_api_addr: s.leader_api_addr.clone(),
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            snapshot_index: s.snapshot_index,
            last_log_index: s.last_log_index,
            members: s.members.iter().map(MemberJson::from).collect(),
            snapshots_installed: s.snapshots_installed,
            fsyncs: s.fsyncs,
            max_fsync_micros: s.max_fsync_micros,
            storage: s
                .storage
                .as_ref()
                .map(|d| StorageJson {
                    state: d.state.clone(),
                    free_bytes: d.free_bytes,
                    reserve_bytes: d.reserve_bytes,
                    total_bytes: d.total_bytes,
                    path: d.path.clone(),
                })
                .unwrap_or_default(),
            transport_security: s.transport_security.clone(),
            jobs: s
                .jobs
                .as_ref()
                .map(|j| JobCountsJson {
                    total: j.total,
                    queued: j.queued,
                    active: j.active,
                    finished: j.finished,
                    queue_capacity: j.queue_capacity,
                    by_state: j.by_state.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    state_bytes: j.state_bytes,
                    max_state_bytes: j.max_state_bytes,
                })
                .unwrap_or_default(),
        }
    }
}

impl From<&pb::NodeInfo> for NodeJson {
    fn from(n: &pb::NodeInfo) -> Self {
        NodeJson {
            id: n.id,
            status: n.status.clone(),
            labels: n.labels.clone().into_iter().collect(),
            cpu_millis: n.cpu_millis,
            memory_mib: n.memory_mib,
            used_cpu_millis: n.used_cpu_millis,
            used_memory_mib: n.used_memory_mib,
            active_jobs: n.active_jobs,
            draining: n.draining,
            drain_deadline_ms: (n.drain_deadline_ms != 0).then_some(n.drain_deadline_ms),
            api_addr: n.api_addr.clone(),
        }
    }
}

impl From<&pb::JobEvent> for JobEventJson {
    fn from(e: &pb::JobEvent) -> Self {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        JobEventJson {
            index: e.index,
            kind: e.kind.clone(),
            job_id: e.job_id.clone(),
            state: non_empty(&e.state),
            attempt: e.attempt,
            node: e.node,
            reason: non_empty(&e.reason),
            at_ms: e.at_ms,
            last_in_entry: e.last_in_entry,
        }
    }
}

/// A value as a `serde_json::Value`, for callers that print or embed it.
/// Serializing these plain structs cannot fail; `Null` is the fallback that
/// keeps the signature honest without an `expect`.
pub fn to_value<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// A token as listings show it: never its secret.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenJson {
    /// Public id: names the token in job ownership and revocation.
    pub accessor: String,
    pub name: String,
    /// admin, operator, submitter or viewer.
    pub role: String,
    /// Unix milliseconds; 0 for the anonymous caller.
    pub created_at_ms: i64,
}

impl From<&pb::AclToken> for TokenJson {
    fn from(t: &pb::AclToken) -> Self {
        TokenJson {
            accessor: t.accessor.clone(),
            name: t.name.clone(),
            role: t.role.clone(),
            created_at_ms: t.created_at_ms,
        }
    }
}

/// A new token with its secret, shown this once.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenSecretJson {
    pub token: TokenJson,
    /// Send as `Authorization: Bearer <secret>`. Only its hash is stored.
    pub secret: String,
    /// Members that had not applied the change when it was acknowledged
    /// (down or cut off); it reaches them when they catch up.
    pub unconfirmed_nodes: Vec<u64>,
}

impl From<&pb::AclTokenSecret> for TokenSecretJson {
    fn from(t: &pb::AclTokenSecret) -> Self {
        TokenSecretJson {
            token: TokenJson::from(&t.token.clone().unwrap_or_default()),
            secret: t.secret.clone(),
            unconfirmed_nodes: t.unconfirmed_nodes.clone(),
        }
    }
}

/// Body of `POST /v1/acl/tokens`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenJson {
    /// A human label ("ci", "alice").
    pub name: String,
    /// admin, operator, submitter or viewer.
    pub role: String,
}

/// Every token.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenListJson {
    pub tokens: Vec<TokenJson>,
}

/// A revoked token.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RevokedTokenJson {
    pub token: TokenJson,
    /// Members that had not applied the revocation when it was acknowledged.
    pub unconfirmed_nodes: Vec<u64>,
}
