//! Moves Raft messages between nodes over gRPC (proto/raft.proto).
//!
//! Outbound: one task per peer owns one reused tonic channel and a bounded
//! queue. It sends whatever is queued as one batch; when the queue is full,
//! new messages are dropped (Raft retransmits), so a slow or dead peer costs
//! nothing but its retries, which back off exponentially. Inbound: the
//! `RaftPeer` service checks the cluster id and destination, decodes each
//! message and hands it to the Raft loop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::raft_loop::{Input, InputSender};
use crate::proto::raft::raft_peer_client::RaftPeerClient;
use crate::proto::raft::raft_peer_server::RaftPeer;
use crate::proto::raft::{
    DeliverReply, HeartbeatReply, MessageBatch, NodeHeartbeat, ReportReply, ReportRequest,
};
use crate::raft::{Message, NodeId};
use crate::store::{SpaceGuard, SpaceLevel};

/// Version of the peer protocol; bumped on any incompatible message change.
pub const PROTOCOL_VERSION: u32 = 1;
/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// Messages in one Deliver call.
const MAX_BATCH_MESSAGES: usize = 512;
/// Upper bound of one encoded batch (a snapshot chunk is at most 8 MiB).
pub const MAX_RPC_BYTES: usize = 64 << 20;
/// Batches are cut at this many message bytes, well under the RPC limit
/// (a single message up to the chunk/append bound always goes alone).
const MAX_BATCH_BYTES: usize = 16 << 20;
/// Bounds of the reconnect backoff for an unreachable peer.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Deadline of one Deliver call.
const DELIVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Encodes a core message for the wire.
pub fn encode_message(msg: &Message) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(msg, bincode::config::standard())
}

/// Decodes a core message from the wire; bad bytes are an error, not a panic.
pub fn decode_message(bytes: &[u8]) -> Result<Message, bincode::error::DecodeError> {
    let limit = bincode::config::standard().with_limit::<{ MAX_RPC_BYTES }>();
    bincode::serde::decode_from_slice(bytes, limit).map(|(msg, _)| msg)
}

/// Outbound side: the set of peer tasks, kept in step with the membership.
pub struct Outbound {
    cluster_id: String,
    from: NodeId,
    /// This node's data-directory incarnation, sent with every batch.
    incarnation: u64,
    /// Peers' incarnations, shared with the peer service that checks them.
    pub incarnations: Arc<PeerIncarnations>,
    from_addr: String,
    peers: BTreeMap<NodeId, PeerHandle>,
    inputs: InputSender,
    runtime: tokio::runtime::Handle,
    /// This node's disk reserve, whose state every batch carries.
    space: Arc<SpaceGuard>,
    /// Makes each peer task's channel (TLS or not).
    dialer: super::dial::Dialer,
    /// What peers' batches said of their disks, shared with the peer
    /// service that records it.
    pub peer_disks: Arc<PeerDisks>,
}

/// Which peers said, in their latest batch, that their disk is below its
/// reserve. Soft state: a leader with a full disk hands leadership only to
/// a peer that has room.
#[derive(Default)]
pub struct PeerDisks(std::sync::Mutex<BTreeMap<NodeId, bool>>);

impl PeerDisks {
    /// Records what a batch from `from` said.
    pub fn record(&self, from: NodeId, low: bool) {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.insert(from, low);
    }

    /// Whether `id` said its disk is low (false if never heard from).
    pub fn is_low(&self, id: NodeId) -> bool {
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&id).copied().unwrap_or(false)
    }
}

/// The data-directory incarnation each peer has shown this process.
///
/// A node that lost its data (a replaced disk) and comes back under the
/// same id while still a member has forgotten its votes and its log: letting
/// it vote could elect two leaders in one term. Its new incarnation gives it
/// away, and its messages are refused with the way out (remove it, then add
/// it again), which makes it stop. A node removed from the membership is
/// forgotten, so it may come back with a new data dir once re-added. Soft
/// state: a peer restarted at the same time sees the new incarnation first.
#[derive(Default)]
pub struct PeerIncarnations(std::sync::Mutex<std::collections::HashMap<NodeId, u64>>);

/// Marks the refusal a node receives when it lost its data; it stops.
pub const LOST_DATA_MARKER: &str = "lost its data";

impl PeerIncarnations {
    /// Checks the incarnation of a batch from `from`. `is_member`: whether
    /// `from` is in this node's membership.
    pub fn check(
        &self,
        cluster_id: &str,
        from: NodeId,
        incarnation: u64,
        is_member: bool,
    ) -> Result<(), String> {
        if incarnation == 0 {
            return Ok(());
        }
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get(&from) {
            Some(&known) if known != incarnation && is_member => Err(format!(
                "node {from} came back with a new data directory while it is still a member of \
                 cluster `{cluster_id}`: it {LOST_DATA_MARKER} (votes and log), and rejoining as is \
                 could break consensus. To replace its disk: (1) `drover operator raft remove-peer \
                 --id {from}` on a live node; (2) start it with the empty data dir and a config \
                 without initial_members; (3) `drover node join <a member's API address> --config \
                 <its config>` (or `drover operator raft add-peer`)"
            )),
            _ => {
                seen.insert(from, incarnation);
                Ok(())
            }
        }
    }

    /// Forgets peers that are no longer members.
    pub fn retain_members(&self, is_member: impl Fn(NodeId) -> bool) {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|id, _| is_member(*id));
    }
}

struct PeerHandle {
    addr: String,
    queue: mpsc::Sender<Message>,
}

impl Outbound {
    /// Creates an empty peer set; `inputs` receives unreachable reports.
    pub fn new(
        cluster_id: String,
        (from, incarnation): (NodeId, u64),
        from_addr: String,
        inputs: InputSender,
        runtime: tokio::runtime::Handle,
        space: Arc<SpaceGuard>,
        dialer: super::dial::Dialer,
    ) -> Self {
        Outbound {
            cluster_id,
            from,
            incarnation,
            incarnations: Arc::new(PeerIncarnations::default()),
            from_addr,
            peers: BTreeMap::new(),
            inputs,
            runtime,
            space,
            dialer,
            peer_disks: Arc::new(PeerDisks::default()),
        }
    }

    /// Makes the peer set match `peers` (id -> raft address): starts tasks for
    /// new or moved peers, stops tasks of removed ones (dropping the sender
    /// ends the task).
    pub fn set_peers(&mut self, peers: &BTreeMap<NodeId, String>) {
        self.peers
            .retain(|id, handle| peers.get(id) == Some(&handle.addr));
        for (&id, addr) in peers {
            if id == self.from || self.peers.contains_key(&id) {
                continue;
            }
            let (queue, rx) = mpsc::channel(PEER_QUEUE);
            let task = PeerTask {
                cluster_id: self.cluster_id.clone(),
                incarnation: self.incarnation,
                from: self.from,
                from_addr: self.from_addr.clone(),
                to: id,
                addr: addr.clone(),
                inputs: self.inputs.clone(),
                space: self.space.clone(),
                dialer: self.dialer.clone(),
            };
            self.runtime.spawn(task.run(rx));
            self.peers.insert(
                id,
                PeerHandle {
                    addr: addr.clone(),
                    queue,
                },
            );
        }
    }

    /// Changes the address this node advertises to peers; restarts the peer
    /// tasks so every later batch carries it.
    pub fn set_self_addr(&mut self, addr: &str) {
        if self.from_addr != addr {
            self.from_addr = addr.to_string();
            self.peers.clear();
        }
    }

    /// Adds a peer that is not in the membership yet (a leader contacting
    /// this node before it has learned the membership). Replaced by the next
    /// `set_peers`.
    pub fn ensure_peer(&mut self, id: NodeId, addr: &str) {
        if self.peers.contains_key(&id) || addr.is_empty() || id == self.from {
            return;
        }
        let mut peers: BTreeMap<NodeId, String> = self
            .peers
            .iter()
            .map(|(id, p)| (*id, p.addr.clone()))
            .collect();
        peers.insert(id, addr.to_string());
        self.set_peers(&peers);
    }

    /// Queues a message; drops it if the peer is unknown or its queue is
    /// full (Raft retransmits what matters).
    pub fn send(&self, msg: Message) {
        match self.peers.get(&msg.to) {
            Some(peer) => {
                if peer.queue.try_send(msg).is_err() {
                    tracing::trace!("peer queue full; message dropped");
                }
            }
            None => tracing::trace!(to = msg.to, "message to unknown peer dropped"),
        }
    }
}

struct PeerTask {
    cluster_id: String,
    incarnation: u64,
    from: NodeId,
    from_addr: String,
    to: NodeId,
    addr: String,
    inputs: InputSender,
    space: Arc<SpaceGuard>,
    dialer: super::dial::Dialer,
}

impl PeerTask {
    async fn run(self, mut rx: mpsc::Receiver<Message>) {
        let endpoint = match self.dialer.endpoint(self.to, &self.addr) {
            Ok(e) => e
                .connect_timeout(Duration::from_secs(2))
                .timeout(DELIVER_TIMEOUT)
                .http2_keep_alive_interval(Duration::from_secs(10)),
            Err(e) => {
                tracing::error!(peer = self.to, addr = %self.addr, "{e}");
                return;
            }
        };
        let channel = endpoint.connect_lazy();
        let mut client = RaftPeerClient::new(channel)
            .max_decoding_message_size(MAX_RPC_BYTES)
            .max_encoding_message_size(MAX_RPC_BYTES);
        let mut backoff = BACKOFF_MIN;
        // A message taken from the queue that did not fit the last batch.
        let mut carried: Option<Vec<u8>> = None;
        loop {
            let first = match carried.take() {
                Some(bytes) => bytes,
                None => match rx.recv().await {
                    Some(msg) => match encode_message(&msg) {
                        Ok(bytes) => bytes,
                        Err(e) => {
                            tracing::error!("cannot encode raft message: {e}");
                            continue;
                        }
                    },
                    None => return,
                },
            };
            // Batch by count and by bytes, so a window full of large appends
            // never exceeds the RPC size limit.
            let mut size = first.len();
            let mut encoded = vec![first];
            while encoded.len() < MAX_BATCH_MESSAGES {
                let Ok(msg) = rx.try_recv() else { break };
                match encode_message(&msg) {
                    Ok(bytes) if size + bytes.len() > MAX_BATCH_BYTES => {
                        carried = Some(bytes);
                        break;
                    }
                    Ok(bytes) => {
                        size += bytes.len();
                        encoded.push(bytes);
                    }
                    Err(e) => tracing::error!("cannot encode raft message: {e}"),
                }
            }
            let request = MessageBatch {
                cluster_id: self.cluster_id.clone(),
                protocol_version: PROTOCOL_VERSION,
                from: self.from,
                to: self.to,
                messages: encoded,
                from_raft_addr: self.from_addr.clone(),
                from_incarnation: self.incarnation,
                from_disk_low: self.space.last_level() != SpaceLevel::Ok,
            };
            match client.deliver(request).await {
                Ok(_) => backoff = BACKOFF_MIN,
                Err(status)
                    if status.code() == tonic::Code::FailedPrecondition
                        && status.message().contains(LOST_DATA_MARKER) =>
                {
                    // This node lost its data and must not take part.
                    let _ = self
                        .inputs
                        .try_send(Input::Fatal(status.message().to_string()));
                    return;
                }
                Err(status) => {
                    tracing::debug!(peer = self.to, addr = %self.addr, "deliver failed: {}", status.message());
                    let _ = self.inputs.try_send(Input::Unreachable(self.to));
                    // Everything queued meanwhile is stale; Raft resends.
                    tokio::time::sleep(backoff).await;
                    while rx.try_recv().is_ok() {}
                    carried = None;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// Whether a message writes replicated data (log entries, a snapshot chunk)
/// when stepped, as opposed to a vote, a heartbeat or a response.
fn carries_data(msg: &Message) -> bool {
    match &msg.body {
        crate::raft::MessageBody::Append { entries, .. } => !entries.is_empty(),
        crate::raft::MessageBody::InstallSnapshot { .. } => true,
        _ => false,
    }
}

/// Inbound side: the peer gRPC service.
pub struct PeerService {
    pub cluster_id: String,
    pub node_id: NodeId,
    pub inputs: InputSender,
    /// For heartbeats (liveness) and reports (proposed on the node's behalf).
    pub node: std::sync::Arc<super::Node>,
}

impl PeerService {
    /// With TLS, the caller must hold a node certificate of this cluster,
    /// of node `claimed` when the call names its sender (the `from` of a
    /// batch, heartbeat or report), and that node must be a member, unless
    /// this node has no membership yet (it is joining, and the leader
    /// adding it is talking). Without TLS, nothing to check.
    fn check_sender<T>(&self, request: &Request<T>, claimed: Option<NodeId>) -> Result<(), Status> {
        if self.node.tls.is_none() {
            return Ok(());
        }
        let certs = request.peer_certs();
        let Some(leaf) = certs.as_ref().and_then(|c| c.first()) else {
            tracing::warn!(?claimed, "peer call without a client certificate refused");
            return Err(Status::permission_denied("a node certificate is required"));
        };
        let subject = crate::tls::identity::subject_of(leaf);
        let claimed = match crate::tls::identity::node_of(leaf, &self.cluster_id) {
            Ok(id) if claimed.is_none_or(|c| c == id) => id,
            Ok(id) => {
                let claimed = claimed.unwrap_or(id);
                tracing::warn!(claimed, %subject, "refused: node {id}'s certificate sent as node {claimed}");
                return Err(Status::permission_denied(format!(
                    "this certificate belongs to node {id}, not node {claimed}"
                )));
            }
            Err(why) => {
                tracing::warn!(?claimed, %subject, "peer call refused: {why}");
                return Err(Status::permission_denied(
                    "not a node certificate of this cluster",
                ));
            }
        };
        // Cheap (no copy of the status): this runs for every batch.
        if self.node.has_membership() && !self.node.is_member(claimed) {
            tracing::warn!(claimed, %subject, "peer call from a node that is not a member refused");
            return Err(Status::permission_denied(format!(
                "node {claimed} is not a member of this cluster"
            )));
        }
        Ok(())
    }

    /// Refuses traffic of another cluster. The answer does not name this
    /// node's cluster (a caller guessing it learns nothing); the log does.
    fn check_cluster(&self, cluster_id: &str) -> Result<(), Status> {
        if cluster_id != self.cluster_id {
            tracing::warn!(
                theirs = cluster_id,
                ours = %self.cluster_id,
                "peer traffic of another cluster refused"
            );
            return Err(Status::failed_precondition(format!(
                "this node does not belong to cluster `{cluster_id}`: check the peer addresses"
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn deliver(
        &self,
        request: Request<MessageBatch>,
    ) -> Result<Response<DeliverReply>, Status> {
        self.check_sender(&request, Some(request.get_ref().from))?;
        let batch = request.into_inner();
        self.check_cluster(&batch.cluster_id)?;
        if batch.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "peer protocol version {} is not supported (this node speaks {})",
                batch.protocol_version, PROTOCOL_VERSION
            )));
        }
        let is_member = self.node.is_member(batch.from);
        self.node
            .incarnations
            .check(
                &self.cluster_id,
                batch.from,
                batch.from_incarnation,
                is_member,
            )
            .map_err(|message| {
                tracing::error!(from = batch.from, "{message}");
                Status::failed_precondition(message)
            })?;
        if batch.to != self.node_id {
            tracing::warn!(to = batch.to, "a batch for another node was delivered here");
            return Err(Status::failed_precondition(format!(
                "message for node {} delivered to another node: check the peer addresses",
                batch.to
            )));
        }
        self.node.peer_disks.record(batch.from, batch.from_disk_low);
        let mut messages = Vec::with_capacity(batch.messages.len());
        let mut replicated_bytes = 0u64;
        for bytes in &batch.messages {
            let msg = decode_message(bytes)
                .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))?;
            if msg.from != batch.from || msg.to != self.node_id {
                return Err(Status::invalid_argument(
                    "message sender or destination does not match the batch",
                ));
            }
            if carries_data(&msg) {
                replicated_bytes += bytes.len() as u64;
            }
            messages.push(msg);
        }
        // Entries and snapshot chunks take disk; below half the reserve they
        // are dropped before the core sees them (the leader resends once
        // there is room again). Votes and heartbeats still go through: the
        // node stays a member that votes and follows the commit.
        let replicate = replicated_bytes == 0
            || match self.node.space.admit(false, replicated_bytes) {
                Ok(()) => true,
                Err(report) => {
                    tracing::debug!(
                        from = batch.from,
                        "replicated data dropped: {}",
                        report.refusal()
                    );
                    false
                }
            };
        for msg in messages {
            if !replicate && carries_data(&msg) {
                continue;
            }
            if self
                .inputs
                .try_send(Input::Message(msg, batch.from_raft_addr.clone()))
                .is_err()
            {
                return Err(Status::resource_exhausted("raft input queue full"));
            }
        }
        Ok(Response::new(DeliverReply {}))
    }

    async fn heartbeat(
        &self,
        request: Request<NodeHeartbeat>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        self.check_sender(&request, Some(request.get_ref().node_id))?;
        let beat = request.into_inner();
        self.check_cluster(&beat.cluster_id)?;
        if beat.node_id == 0 {
            return Err(Status::invalid_argument("node id 0 is reserved"));
        }
        let capacity = crate::jobs::Capacity {
            cpu_millis: beat.cpu_millis,
            memory_mib: beat.memory_mib,
        };
        self.node
            .liveness
            .heartbeat(beat.node_id, beat.labels.into_iter().collect(), capacity);
        Ok(Response::new(HeartbeatReply {}))
    }

    async fn wait_applied(
        &self,
        request: Request<crate::proto::raft::WaitAppliedRequest>,
    ) -> Result<Response<crate::proto::raft::WaitAppliedReply>, Status> {
        self.check_sender(&request, None)?;
        let req = request.into_inner();
        self.check_cluster(&req.cluster_id)?;
        // Bounded by the caller's wish and by a ceiling of our own.
        let timeout = Duration::from_millis(u64::from(req.timeout_ms).min(10_000));
        self.node.wait_applied(req.index, timeout).await;
        Ok(Response::new(crate::proto::raft::WaitAppliedReply {
            applied: self.node.store.applied_index(),
        }))
    }

    async fn report(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<ReportReply>, Status> {
        self.check_sender(&request, Some(request.get_ref().from))?;
        let req = request.into_inner();
        self.check_cluster(&req.cluster_id)?;
        let command = crate::jobs::Command::decode(&req.command)
            .map_err(|e| Status::invalid_argument(format!("undecodable report: {e}")))?;
        // A node reports only on its own attempts.
        let reporter = match &command {
            crate::jobs::Command::Started { node, .. }
            | crate::jobs::Command::Finished { node, .. } => *node,
            _ => {
                return Err(Status::invalid_argument(
                    "only Started and Finished are reports",
                ))
            }
        };
        if reporter != req.from {
            return Err(Status::permission_denied(format!(
                "node {} cannot report for node {reporter}",
                req.from
            )));
        }
        if !self.node.is_leader() {
            return Err(Status::unavailable("this node is not the leader"));
        }
        match self.node.propose_report(&command).await {
            Ok(super::reports::ReportOutcome::Accepted) => Ok(Response::new(ReportReply {
                accepted: true,
                reason: String::new(),
            })),
            Ok(super::reports::ReportOutcome::Refused(reason)) => Ok(Response::new(ReportReply {
                accepted: false,
                reason,
            })),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }
}
