//! The node's Prometheus metrics, served at `GET /metrics`.
//!
//! One [`Metrics`] per node, owned by the [`Node`](super::Node) and
//! registered once. Two kinds of values:
//!
//! - Counters and the histogram are moved where the event happens: the Raft
//!   loop counts leader changes and answered proposals, the store reports
//!   each fsync's duration, the executor counts engine errors and its
//!   supervised containers.
//! - Gauges that mirror state the node already keeps (the Raft status, the
//!   job counters the store keeps in `sm_meta`) are set at scrape time by
//!   [`Metrics::refresh`], so nothing has to remember to update them and a
//!   scrape costs O(1): it never walks the job table.
//!
//! Names are part of the operator's interface (dashboards, alerts): they are
//! listed in the README's Observability section; change both together.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::RaftStatus;
use crate::raft::Role;
use crate::store::SpaceReport;

/// The content type of [`Metrics::encode`]'s output (OpenMetrics text, which
/// Prometheus scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prefix of every metric name.
const PREFIX: &str = "drover";

/// Buckets of the fsync histogram, in seconds: 100 µs doubling to ~1.6 s
/// (15 buckets). A healthy disk sits in the first few; the tail shows stalls.
const FSYNC_BUCKET_START: f64 = 0.0001;
const FSYNC_BUCKETS: u16 = 15;

/// The Raft roles, as the values of `drover_raft_role{role=...}`.
const ROLES: [(Role, &str); 4] = [
    (Role::Follower, "follower"),
    (Role::PreCandidate, "pre_candidate"),
    (Role::Candidate, "candidate"),
    (Role::Leader, "leader"),
];

/// Docker operations whose failures `drover_executor_errors_total` counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExecutorOp {
    /// Connecting to the engine at start (each failed try).
    Connect,
    /// Listing this node's containers (reconciliation after a restart).
    List,
    /// Creating and starting an attempt's container.
    Start,
    /// Following a container to its end.
    Wait,
    /// Stopping a container (job stopped, reassigned, drained).
    Stop,
    /// Removing a container after its result is committed, or an orphan.
    Remove,
}

impl ExecutorOp {
    const ALL: [ExecutorOp; 6] = [
        ExecutorOp::Connect,
        ExecutorOp::List,
        ExecutorOp::Start,
        ExecutorOp::Wait,
        ExecutorOp::Stop,
        ExecutorOp::Remove,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ExecutorOp::Connect => "connect",
            ExecutorOp::List => "list",
            ExecutorOp::Start => "start",
            ExecutorOp::Wait => "wait",
            ExecutorOp::Stop => "stop",
            ExecutorOp::Remove => "remove",
        }
    }
}

/// `{role="leader"}` and the like.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

/// `{state="queued"}` and the like.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// `{op="start"}` and the like.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

/// A gauge of a count or an index (never negative).
type Count = Gauge<u64, AtomicU64>;

/// What the store counts of the job table, read at scrape time (O(1)).
#[derive(Clone, Copy, Debug, Default)]
pub struct JobCounts {
    /// Rows in the job table.
    pub total: u64,
    /// Jobs in QUEUED (waiting for placement or for a retry's backoff).
    pub queued: u64,
    /// Jobs in a terminal state.
    pub finished: u64,
    /// `scheduler.queue_capacity`: the bound on `queued`.
    pub queue_capacity: u64,
    /// The job table's footprint in bytes (`Job::footprint` summed).
    pub state_bytes: u64,
    /// `quotas.max_state_bytes`: the bound on `state_bytes`.
    pub max_state_bytes: u64,
}

/// Every metric of one node. Cheap to share (`Arc`); every method takes
/// `&self` and is safe from any thread, the Raft thread included.
pub struct Metrics {
    registry: Registry,
    term: Count,
    role: Family<RoleLabel, Count>,
    leader: Count,
    commit_index: Count,
    applied_index: Count,
    last_index: Count,
    snapshot_index: Count,
    apply_lag: Count,
    leader_changes: Counter,
    proposals_committed: Counter,
    proposals_failed: Counter,
    fsync_seconds: Histogram,
    jobs: Family<StateLabel, Count>,
    queue_depth: Count,
    queue_capacity: Count,
    state_bytes: Count,
    max_state_bytes: Count,
    running_containers: Count,
    executor_errors: Family<OpLabel, Counter>,
    storage_free: Count,
    storage_reserve: Count,
    storage_low: Count,
    storage_refused: Counter,
    /// The guard's refusal count as of the last refresh (the counter moves
    /// by the difference).
    storage_refused_seen: std::sync::Mutex<u64>,
    tls_expiry: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric, each at zero (labelled families
    /// with every label value, so a dashboard sees a 0, not a gap).
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let term = Count::default();
        let role = Family::<RoleLabel, Count>::default();
        let leader = Count::default();
        let commit_index = Count::default();
        let applied_index = Count::default();
        let last_index = Count::default();
        let snapshot_index = Count::default();
        let apply_lag = Count::default();
        let leader_changes = Counter::default();
        let proposals_committed = Counter::default();
        let proposals_failed = Counter::default();
        let fsync_seconds =
            Histogram::new(exponential_buckets(FSYNC_BUCKET_START, 2.0, FSYNC_BUCKETS));
        let jobs = Family::<StateLabel, Count>::default();
        let queue_depth = Count::default();
        let queue_capacity = Count::default();
        let state_bytes = Count::default();
        let max_state_bytes = Count::default();
        let running_containers = Count::default();
        let executor_errors = Family::<OpLabel, Counter>::default();
        let storage_free = Count::default();
        let storage_reserve = Count::default();
        let storage_low = Count::default();
        let storage_refused = Counter::default();

        registry.register("raft_term", "Current Raft term", term.clone());
        registry.register(
            "raft_role",
            "This node's Raft role: 1 for the role it has, 0 for the others",
            role.clone(),
        );
        registry.register(
            "raft_leader",
            "Node id of the leader this node knows (0: none)",
            leader.clone(),
        );
        registry.register(
            "raft_commit_index",
            "Highest log index known committed",
            commit_index.clone(),
        );
        registry.register(
            "raft_applied_index",
            "Highest log index applied to the job table",
            applied_index.clone(),
        );
        registry.register(
            "raft_last_index",
            "Index of the last entry in this node's log",
            last_index.clone(),
        );
        registry.register(
            "raft_snapshot_index",
            "Index covered by this node's latest snapshot",
            snapshot_index.clone(),
        );
        registry.register(
            "raft_apply_lag",
            "Committed entries not applied yet (commit index - applied index)",
            apply_lag.clone(),
        );
        registry.register(
            "raft_leader_changes",
            "Times this node saw a new leader (the first one included)",
            leader_changes.clone(),
        );
        registry.register(
            "raft_proposals_committed",
            "Proposals made on this node that committed and were applied",
            proposals_committed.clone(),
        );
        registry.register(
            "raft_proposals_failed",
            "Proposals made on this node answered with an error (refused, lost to a leader change, or fate unknown)",
            proposals_failed.clone(),
        );
        registry.register_with_unit(
            "store_fsync_duration",
            "Duration of each durability barrier (sled flush + fdatasync of its log)",
            Unit::Seconds,
            fsync_seconds.clone(),
        );
        registry.register(
            "jobs",
            "Jobs in the table by state: queued, active (assigned or running), finished (any terminal state)",
            jobs.clone(),
        );
        registry.register(
            "queue_depth",
            "Jobs waiting in QUEUED, the count scheduler.queue_capacity bounds",
            queue_depth.clone(),
        );
        registry.register(
            "queue_capacity",
            "scheduler.queue_capacity: submissions beyond it are refused",
            queue_capacity.clone(),
        );
        registry.register(
            "state_bytes",
            "The job table's footprint in bytes (specs, attempts, output tails), the figure quotas.max_state_bytes bounds",
            state_bytes.clone(),
        );
        registry.register(
            "max_state_bytes",
            "quotas.max_state_bytes: submits are refused once state_bytes reaches it",
            max_state_bytes.clone(),
        );
        registry.register(
            "executor_running_containers",
            "Job containers this node's executor supervises (starting, running, or reporting their end)",
            running_containers.clone(),
        );
        registry.register(
            "executor_errors",
            "Container engine calls that failed, by operation",
            executor_errors.clone(),
        );

        registry.register_with_unit(
            "storage_free",
            "Free space on the data directory's filesystem",
            Unit::Bytes,
            storage_free.clone(),
        );
        registry.register_with_unit(
            "storage_reserve",
            "Free space the node keeps (storage.min_free_bytes / min_free_percent); below it new writes are refused",
            Unit::Bytes,
            storage_reserve.clone(),
        );
        registry.register(
            "storage_low",
            "0: disk above the reserve; 1: below it (new work refused); 2: below half of it (replication refused too)",
            storage_low.clone(),
        );
        registry.register(
            "storage_refused_writes",
            "Writes this node refused since it started because its disk was below the reserve",
            storage_refused.clone(),
        );

        for (_, name) in ROLES {
            role.get_or_create(&RoleLabel { role: name }).set(0);
        }
        for state in ["queued", "active", "finished"] {
            jobs.get_or_create(&StateLabel { state }).set(0);
        }
        for op in ExecutorOp::ALL {
            executor_errors
                .get_or_create(&OpLabel { op: op.as_str() })
                .inc_by(0);
        }
        Metrics {
            registry,
            term,
            role,
            leader,
            commit_index,
            applied_index,
            last_index,
            snapshot_index,
            apply_lag,
            leader_changes,
            proposals_committed,
            proposals_failed,
            fsync_seconds,
            jobs,
            queue_depth,
            queue_capacity,
            state_bytes,
            max_state_bytes,
            running_containers,
            executor_errors,
            storage_free,
            storage_reserve,
            storage_low,
            storage_refused,
            storage_refused_seen: std::sync::Mutex::new(0),
            tls_expiry: Gauge::default(),
        }
    }

    /// Registers `drover_tls_cert_expiry_seconds` (only a node with TLS
    /// has it: a 0 would look like an expired certificate).
    pub fn register_tls_expiry(&mut self) {
        self.registry.register_with_unit(
            "tls_cert_expiry",
            "Time until this node's TLS certificate expires (negative: expired)",
            Unit::Seconds,
            self.tls_expiry.clone(),
        );
    }

    /// Sets the seconds left on this node's certificate.
    pub fn set_tls_expiry(&self, seconds: i64) {
        self.tls_expiry.set(seconds);
    }

    /// Sets the storage gauges from the disk reserve's latest reading and
    /// the count of writes it refused.
    pub fn refresh_storage(&self, report: &SpaceReport, refused: u64) {
        self.storage_free.set(report.free_bytes);
        self.storage_reserve.set(report.reserve_bytes);
        self.storage_low.set(u64::from(report.level.code()));
        let mut seen = self
            .storage_refused_seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if refused > *seen {
            self.storage_refused.inc_by(refused - *seen);
            *seen = refused;
        }
    }

    /// Sets the scrape-time gauges from the latest Raft status and the
    /// store's job counters. Two concurrent scrapes may interleave; each
    /// value is then one of two recent readings, never a torn one.
    pub fn refresh(&self, status: &RaftStatus, jobs: JobCounts) {
        self.term.set(status.term);
        for (role, name) in ROLES {
            self.role
                .get_or_create(&RoleLabel { role: name })
                .set(u64::from(status.role == role));
        }
        self.leader.set(status.leader.unwrap_or(0));
        self.commit_index.set(status.commit);
        self.applied_index.set(status.applied);
        self.last_index.set(status.last_index);
        self.snapshot_index.set(status.snapshot_index);
        self.apply_lag
            .set(status.commit.saturating_sub(status.applied));

        // Every job is queued, active or finished, so active is what the
        // other two leave (the store keeps no active counter).
        let active = jobs
            .total
            .saturating_sub(jobs.queued)
            .saturating_sub(jobs.finished);
        for (state, n) in [
            ("queued", jobs.queued),
            ("active", active),
            ("finished", jobs.finished),
        ] {
            self.jobs.get_or_create(&StateLabel { state }).set(n);
        }
        self.queue_depth.set(jobs.queued);
        self.queue_capacity.set(jobs.queue_capacity);
        self.state_bytes.set(jobs.state_bytes);
        self.max_state_bytes.set(jobs.max_state_bytes);
    }

    /// Every metric in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// The Raft loop saw a leader it did not know a moment ago.
    pub fn leader_changed(&self) {
        self.leader_changes.inc();
    }

    /// A proposal's waiter was answered: committed and applied, or not.
    pub fn proposal_answered(&self, committed: bool) {
        if committed {
            self.proposals_committed.inc();
        } else {
            self.proposals_failed.inc();
        }
    }

    /// One durability barrier took `elapsed`.
    pub fn fsync_observed(&self, elapsed: std::time::Duration) {
        self.fsync_seconds.observe(elapsed.as_secs_f64());
    }

    /// The executor now supervises `n` containers.
    pub fn set_running_containers(&self, n: usize) {
        self.running_containers
            .set(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// A container engine call failed.
    pub fn executor_error(&self, op: ExecutorOp) {
        self.executor_errors
            .get_or_create(&OpLabel { op: op.as_str() })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(role: Role, commit: u64, applied: u64) -> RaftStatus {
        RaftStatus {
            node_id: 1,
            role,
            term: 7,
            leader: Some(1),
            commit,
            applied,
            snapshot_index: 1,
            last_index: commit + 2,
            membership: Default::default(),
            progress: Default::default(),
            snapshots_installed: 0,
            last_contact: Default::default(),
            failed: None,
        }
    }

    /// The value of the sample line starting with `series ` in `text`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn scrape_reflects_status_counters_and_events() {
        let m = Metrics::new();
        let jobs = JobCounts {
            total: 10,
            queued: 3,
            finished: 5,
            queue_capacity: 100,
            state_bytes: 4096,
            max_state_bytes: 1 << 20,
        };
        m.refresh(&status(Role::Leader, 12, 9), jobs);
        m.leader_changed();
        m.proposal_answered(true);
        m.proposal_answered(true);
        m.proposal_answered(false);
        m.fsync_observed(std::time::Duration::from_micros(300));
        m.set_running_containers(2);
        m.executor_error(ExecutorOp::Start);
        let text = m.encode().expect("encode");

        assert_eq!(sample(&text, "drover_raft_term"), Some(7.0));
        assert_eq!(
            sample(&text, "drover_raft_role{role=\"leader\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "drover_raft_role{role=\"follower\"}"),
            Some(0.0)
        );
        assert_eq!(sample(&text, "drover_raft_leader"), Some(1.0));
        assert_eq!(sample(&text, "drover_raft_commit_index"), Some(12.0));
        assert_eq!(sample(&text, "drover_raft_applied_index"), Some(9.0));
        assert_eq!(sample(&text, "drover_raft_last_index"), Some(14.0));
        assert_eq!(sample(&text, "drover_raft_apply_lag"), Some(3.0));
        assert_eq!(sample(&text, "drover_raft_leader_changes_total"), Some(1.0));
        assert_eq!(
            sample(&text, "drover_raft_proposals_committed_total"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "drover_raft_proposals_failed_total"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "drover_store_fsync_duration_seconds_count"),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "drover_store_fsync_duration_seconds_bucket{le=\"0.0004\"}"
            ),
            Some(1.0)
        );
        assert_eq!(sample(&text, "drover_jobs{state=\"queued\"}"), Some(3.0));
        assert_eq!(sample(&text, "drover_jobs{state=\"active\"}"), Some(2.0));
        assert_eq!(sample(&text, "drover_jobs{state=\"finished\"}"), Some(5.0));
        assert_eq!(sample(&text, "drover_queue_depth"), Some(3.0));
        assert_eq!(sample(&text, "drover_queue_capacity"), Some(100.0));
        assert_eq!(
            sample(&text, "drover_executor_running_containers"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "drover_executor_errors_total{op=\"start\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "drover_executor_errors_total{op=\"remove\"}"),
            Some(0.0)
        );
        assert!(text.ends_with("# EOF\n"), "{text}");

        // A later refresh moves the role: exactly one role is 1.
        m.refresh(&status(Role::Follower, 12, 12), jobs);
        let text = m.encode().expect("encode");
        let ones = ROLES
            .iter()
            .filter(|(_, name)| {
                sample(&text, &format!("drover_raft_role{{role=\"{name}\"}}")) == Some(1.0)
            })
            .count();
        assert_eq!(ones, 1, "{text}");
        assert_eq!(sample(&text, "drover_raft_apply_lag"), Some(0.0));
    }
}
