//! Wiring: the only place that connects the Raft core, the store, the
//! transport and the servers. A [`Node`] is the handle the API layer uses.

pub mod backup;
pub mod dial;
pub mod events;
pub mod input;
pub mod metrics;
pub mod output_hub;
pub mod peer_service;
mod quotas;
pub mod raft_loop;
mod reads;
pub mod reports;
pub mod run;
mod sandbox;
pub mod scheduler_loop;
pub mod transport;
pub mod wire;
pub mod worker;
pub mod writes;

use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::config::Config;
use crate::jobs::Applied;
use crate::jobs::{Command, MAX_COMMAND_ENCODED_BYTES};
use crate::raft::{self, ConfChange, Index, NodeId, Role};
use crate::scheduler::Liveness;
use crate::store::{SpaceGuard, Store, StoreError};

/// The data disk's reading (the store's space guard) as status shows it.
pub use crate::store::SpaceReport as StorageReport;
pub use input::{Input, InputSender, RaftError};
pub use raft_loop::RaftStatus;

pub use crate::jobs::{now_ms, unix_ms};

/// This node's wall clock in Unix seconds.
pub fn now_unix_secs() -> i64 {
    now_ms() / 1000
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot start the consensus core: {0}")]
    Core(String),
    #[error("cannot start the raft thread: {0}")]
    Thread(std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// A running node: the Raft loop thread plus what the API needs.
pub struct Node {
    pub config: Config,
    /// The node's store: read and written only through the node's own
    /// methods (`reads`, `writes`), never by the front ends.
    store: Arc<Store>,
    /// Node liveness as heard in heartbeats (the leader's soft state).
    pub liveness: Liveness,
    /// Job output captured on this node, and its live followers.
    pub output: Arc<output_hub::OutputHub>,
    /// Changes to the job table as this node applied them, for watches.
    pub events: Arc<events::EventLog>,
    /// Peers' data-directory incarnations (see `peer_service::PeerIncarnations`).
    pub incarnations: Arc<peer_service::PeerIncarnations>,
    /// The data directory's free-space reserve (see `store::space`).
    pub space: Arc<SpaceGuard>,
    /// Which peers last said their disk is below its reserve.
    pub peer_disks: Arc<peer_service::PeerDisks>,
    /// `[tls]`, loaded: the listeners' acceptors come from it.
    pub tls: Option<Arc<crate::tls::TlsIdentity>>,
    /// Makes every channel to another node (TLS configured once).
    pub dialer: dial::Dialer,
    /// What `GET /metrics` serves; moved by the Raft loop, the store's
    /// fsyncs and the executor.
    pub metrics: Arc<metrics::Metrics>,
    /// Channels to other nodes: forwarding, output reads, reports.
    pub channels: dial::Channels,
    inputs: InputSender,
    status: watch::Receiver<RaftStatus>,
    applied: watch::Receiver<Index>,
    /// Mints job ids in strictly increasing order, so jobs submitted through
    /// this node list in submission order even within one millisecond.
    job_ids: std::sync::Mutex<crate::jobs::JobIdGenerator>,
}

impl Node {
    /// Opens (or creates) the data dir, founds a new cluster if this is
    /// the first start and the config lists initial members, and starts the
    /// Raft loop on its own thread. Must be called inside a tokio runtime.
    pub fn start(config: Config) -> Result<Arc<Node>, StartError> {
        let tls = crate::tls::TlsIdentity::load(&config.tls, &config.cluster_id)?.map(Arc::new);
        let dialer = dial::Dialer::new(tls.clone());
        let store = Arc::new(Store::open(
            &config.data_dir,
            &config.cluster_id,
            config.node_id,
        )?);
        let space = Arc::new(SpaceGuard::new(
            &config.data_dir,
            config.storage.min_free_bytes,
            config.storage.min_free_percent,
        ));
        let mut restored = store.restored()?;
        if store.is_fresh() && !config.initial_members.is_empty() {
            // A new cluster: the core starts every founding member from the
            // same genesis snapshot (index 1) carrying this membership, and
            // the first Ready makes it durable. A node that joins later gets
            // the membership with the snapshot the leader sends it.
            restored.membership = config.initial_membership();
            tracing::info!(
                members = config.initial_members.len(),
                "founding a new cluster"
            );
        }
        let mut metrics = metrics::Metrics::new();
        if tls.is_some() {
            metrics.register_tls_expiry();
        }
        let metrics = Arc::new(metrics);
        {
            let metrics = metrics.clone();
            store.observe_fsyncs(move |elapsed| metrics.fsync_observed(elapsed));
        }
        let applied = restored.applied;
        let snapshot_index = restored
            .snapshot
            .as_ref()
            .map(|(meta, _)| meta.index)
            .unwrap_or(0);
        let membership = restored.membership.clone();
        if membership.voters.is_empty() && membership.learners.is_empty() {
            tracing::info!(
                "no membership yet: waiting to be added to a cluster (operator raft add-peer)"
            );
        }

        let mut core_config = raft::Config::new(config.node_id, rand::random());
        core_config.election_ticks = config.raft.election_ticks;
        core_config.heartbeat_ticks = config.raft.heartbeat_ticks;
        core_config.max_inflight = config.raft.max_inflight;
        core_config.snapshot_chunk_bytes = config.raft.snapshot_chunk_bytes;
        core_config.trailing_entries = config.raft.trailing_entries;
        core_config.snapshot_check = Some(crate::store::check_received_snapshot);
        let raw = raft::RawNode::new(core_config, restored).map_err(StartError::Core)?;

        let (input_tx, input_rx) = sync_channel(raft_loop::INPUT_QUEUE);
        let initial = RaftStatus {
            node_id: config.node_id,
            role: Role::Follower,
            term: 0,
            leader: None,
            commit: 0,
            applied,
            snapshot_index,
            last_index: 0,
            membership: membership.clone(),
            progress: Default::default(),
            snapshots_installed: 0,
            last_contact: Default::default(),
            failed: None,
        };
        let (status_tx, status_rx) = watch::channel(initial);
        let advertised_raft =
            config.advertised_raft_or(membership.peer(config.node_id).map(|p| p.raft_addr.clone()));
        let outbound = transport::Outbound::new(
            config.cluster_id.clone(),
            (config.node_id, store.incarnation()),
            advertised_raft,
            input_tx.clone(),
            tokio::runtime::Handle::current(),
            space.clone(),
            dialer.clone(),
        );
        let incarnations = outbound.incarnations.clone();
        let peer_disks = outbound.peer_disks.clone();
        let (applied_tx, applied_rx) = watch::channel(applied);
        // Entries up to `applied` were applied by an earlier process: their
        // events are unknown here.
        let events = Arc::new(events::EventLog::new(applied, events::EVENT_LOG_CAPACITY));
        let settings = raft_loop::LoopSettings {
            tick: config.raft.tick,
            election_ticks: config.raft.election_ticks,
            snapshot_threshold: config.raft.snapshot_threshold,
            snapshot_interval: config.raft.snapshot_interval,
            applied: applied_tx,
            events: events.clone(),
            metrics: metrics.clone(),
            space: space.clone(),
        };
        let raft_loop = raft_loop::RaftLoop::new(
            raw,
            store.clone(),
            outbound,
            (input_tx.clone(), input_rx),
            status_tx,
            settings,
            applied,
            snapshot_index,
        );
        std::thread::Builder::new()
            .name("raft".into())
            .spawn(move || raft_loop.run())
            .map_err(StartError::Thread)?;
        let output = Arc::new(output_hub::OutputHub::new(
            store.clone(),
            config.executor.output_cap_bytes,
            space.clone(),
        ));
        Ok(Arc::new(Node {
            config,
            store,
            liveness: Liveness::default(),
            output,
            events,
            incarnations,
            space,
            peer_disks,
            metrics,
            channels: dial::Channels::new(dialer.clone()),
            tls,
            dialer,
            inputs: input_tx,
            status: status_rx,
            applied: applied_rx,
            job_ids: std::sync::Mutex::default(),
        }))
    }

    /// The sender the peer service feeds.
    pub fn inputs(&self) -> InputSender {
        self.inputs.clone()
    }

    /// Changes whenever the applied index moves: what the scheduler and
    /// the executor wait on.
    pub fn applied_watch(&self) -> watch::Receiver<Index> {
        self.applied.clone()
    }

    /// Waits until the local state machine has applied `index`, bounded.
    pub async fn wait_applied(&self, index: Index, timeout: Duration) -> bool {
        let mut applied = self.applied.clone();
        let reached = tokio::time::timeout(timeout, applied.wait_for(|a| *a >= index))
            .await
            .is_ok_and(|r| r.is_ok());
        reached
    }

    /// The latest Raft status published by the loop.
    pub fn status(&self) -> RaftStatus {
        self.status.borrow().clone()
    }

    /// The job table by phase, from counters the store keeps (O(1)).
    pub fn job_counts(&self) -> metrics::JobCounts {
        metrics::JobCounts {
            total: self.store.job_count(),
            queued: self.store.queued_count(),
            finished: self.store.finished_count(),
            queue_capacity: self.config.scheduler.queue_capacity,
            state_bytes: self.store.state_bytes(),
            max_state_bytes: self.config.quotas.max_state_bytes,
        }
    }

    /// Jobs in each state, as of the latest apply (O(1)).
    pub fn jobs_by_state(&self) -> Vec<(crate::jobs::JobState, u64)> {
        self.store.jobs_by_state()
    }

    /// How full the data directory's disk is, as the writes see it now:
    /// status pages show it so an operator sees a full disk coming.
    pub fn storage_report(&self) -> StorageReport {
        self.space.report()
    }

    /// Every metric in the Prometheus (OpenMetrics) text format, the
    /// state-derived gauges read now. O(1) in the size of the job table.
    pub fn render_metrics(&self) -> Result<String, std::fmt::Error> {
        self.metrics
            .refresh(&self.status.borrow(), self.job_counts());
        self.metrics
            .refresh_storage(&self.space.report(), self.space.refused());
        if let Some(tls) = &self.tls {
            self.metrics
                .set_tls_expiry(tls.current().not_after - now_unix_secs());
        }
        self.metrics.encode()
    }

    /// A new job id, greater than every id this node minted before.
    pub fn next_job_id(&self) -> crate::jobs::JobId {
        // A panic while holding the lock cannot leave the generator
        // half-updated in a way that matters: its worst is one unordered id.
        self.job_ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .next_id()
    }

    /// The current Raft term (cheap: no copy of the status).
    pub fn term(&self) -> raft::Term {
        self.status.borrow().term
    }

    /// Whether `id` is in the membership in effect here (cheap: no copy of
    /// the status; it is asked for every batch of peer messages).
    pub fn is_member(&self, id: NodeId) -> bool {
        self.status.borrow().membership.contains(id)
    }

    /// Whether this node knows any membership yet (a node waiting to be
    /// added knows none). Cheap: no copy of the status.
    pub fn has_membership(&self) -> bool {
        let status = self.status.borrow();
        !status.membership.voters.is_empty() || !status.membership.learners.is_empty()
    }

    /// True if this node currently leads (cheap: no copy of the status).
    pub fn is_leader(&self) -> bool {
        self.status.borrow().role == Role::Leader
    }

    /// The current leader and its client API address, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let status = self.status.borrow();
        let leader = status.leader?;
        let addr = status.membership.peer(leader)?.api_addr.clone();
        Some((leader, addr))
    }

    /// Waits (bounded) until some leader is known, e.g. during an election.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<(NodeId, String)> {
        let deadline = Instant::now() + timeout;
        let mut status = self.status.clone();
        loop {
            if let Some(found) = self.leader() {
                return Some(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match tokio::time::timeout(left, status.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.leader(),
            }
        }
    }

    /// Waits (bounded) until the status satisfies `pred`.
    pub async fn wait_status(&self, timeout: Duration, pred: impl Fn(&RaftStatus) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut status = self.status.clone();
        loop {
            if pred(&status.borrow_and_update()) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if tokio::time::timeout(left, status.changed()).await.is_err() {
                return pred(&status.borrow());
            }
        }
    }

    /// Resolves with the reason if the Raft loop stops on a storage failure:
    /// the process must then exit rather than serve stale data.
    pub async fn failure(&self) -> String {
        let mut status = self.status.clone();
        loop {
            if let Some(reason) = status.borrow_and_update().failed.clone() {
                return reason;
            }
            if status.changed().await.is_err() {
                return "the raft loop stopped".to_string();
            }
        }
    }

    /// Proposes an application command on this node (it must be the
    /// leader) and waits until it is applied, or the propose timeout passes.
    /// Refused with [`RaftError::NoSpace`] when this node's disk has no room
    /// for it (new work below the reserve, anything below half of it).
    pub async fn propose_command(&self, command: &Command) -> Result<Applied, RaftError> {
        let bytes = command
            .encode()
            .map_err(|e| RaftError::Rejected(format!("cannot encode the command: {e}")))?;
        // Refused before it reaches the log, whoever proposes it: an entry
        // beyond the bound no replica could decode (and the honest ones, a
        // restore chunk or a result with the largest tail, are far below).
        if bytes.len() > MAX_COMMAND_ENCODED_BYTES {
            return Err(RaftError::Rejected(format!(
                "the entry would be {} bytes; one log entry holds at most {MAX_COMMAND_ENCODED_BYTES}",
                bytes.len()
            )));
        }
        self.space
            .admit(command.is_new_work(), bytes.len() as u64)
            .map_err(|report| RaftError::NoSpace(report.refusal()))?;
        self.propose(bytes).await
    }

    /// How this node's ports are protected (see `ClusterStatus` in the
    /// proto): "tls", "plaintext" (all on loopback) or "insecure-plaintext".
    pub fn transport_security(&self) -> &'static str {
        let listen = &self.config.listen;
        let loopback = listen.api.ip().is_loopback()
            && listen.raft.ip().is_loopback()
            && listen.http.is_none_or(|a| a.ip().is_loopback());
        match (self.tls.is_some(), loopback) {
            (true, _) => "tls",
            (false, true) => "plaintext",
            (false, false) => "insecure-plaintext",
        }
    }

    /// Whether node `id`'s disk is below its reserve: this node's own
    /// latest reading, or what `id`'s latest Raft batch said.
    pub fn disk_low(&self, id: NodeId) -> bool {
        if id == self.config.node_id {
            self.space.last_level() != crate::store::SpaceLevel::Ok
        } else {
            self.peer_disks.is_low(id)
        }
    }

    /// Refuses new work a client sends this node while its disk is below
    /// the reserve, before it is forwarded anywhere: the node would have to
    /// store it too.
    pub fn admit_new_work(&self) -> Result<(), RaftError> {
        self.space
            .admit(true, 0)
            .map_err(|report| RaftError::NoSpace(report.refusal()))
    }

    async fn propose(&self, command: Vec<u8>) -> Result<Applied, RaftError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Input::Propose { command, reply })?;
        self.await_reply(rx).await?
    }

    /// Proposes a membership change and waits until it is applied.
    pub async fn change_membership(&self, change: ConfChange) -> Result<Applied, RaftError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Input::ConfChange { change, reply })?;
        self.await_reply(rx).await?
    }

    /// Returns once this node's state machine reflects every write committed
    /// before the call (ReadIndex), so a local read after it is linearizable.
    pub async fn read_barrier(&self) -> Result<Index, RaftError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Input::ReadIndex { reply })?;
        self.await_reply(rx).await?
    }

    /// Asks the loop to hand leadership to `to`.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), RaftError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Input::TransferLeader { to, reply })?;
        self.await_reply(rx).await?
    }

    /// Before a planned stop: if this node leads, hands leadership to the
    /// most caught-up other voter and waits (bounded) until it has taken
    /// over, so a rolling restart costs the cluster no election timeout.
    /// Returns the new leader, if the handover happened.
    pub async fn hand_over_leadership(&self, wait: Duration) -> Option<NodeId> {
        let status = self.status();
        if status.role != Role::Leader {
            return None;
        }
        // Only a voter heard from lately can take over: with the others
        // gone, stop at once instead of waiting out a transfer.
        let fresh = self.config.raft.tick * self.config.raft.election_ticks.saturating_mul(2);
        let target = status
            .membership
            .voters
            .keys()
            .filter(|&&id| id != status.node_id)
            .filter(|id| {
                status
                    .last_contact
                    .get(id)
                    .is_some_and(|at| at.elapsed() < fresh)
            })
            .max_by_key(|&&id| {
                let room = !self.peer_disks.is_low(id);
                (room, status.progress.get(&id).copied().unwrap_or(0))
            })
            .copied()?;
        if let Err(e) = self.transfer_leader(target).await {
            tracing::warn!(
                to = target,
                "cannot hand leadership over before stopping: {e}"
            );
            return None;
        }
        let done = self.wait_status(wait, |s| s.leader == Some(target)).await;
        if done {
            tracing::info!(to = target, "handed leadership over before stopping");
            Some(target)
        } else {
            tracing::warn!(
                to = target,
                "leadership handover did not finish in {wait:?}; stopping anyway"
            );
            None
        }
    }

    /// Stops the Raft loop (pending requests fail with ShuttingDown).
    pub fn shutdown(&self) {
        let _ = self.inputs.try_send(Input::Shutdown);
    }

    fn submit(&self, input: Input) -> Result<(), RaftError> {
        self.inputs.try_send(input).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => RaftError::Overloaded,
            std::sync::mpsc::TrySendError::Disconnected(_) => RaftError::ShuttingDown,
        })
    }

    async fn await_reply<T>(&self, rx: oneshot::Receiver<T>) -> Result<T, RaftError> {
        match tokio::time::timeout(self.config.raft.propose_timeout, rx).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(RaftError::ShuttingDown),
            Err(_) => Err(RaftError::Timeout),
        }
    }
}
