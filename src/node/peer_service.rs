//! The inbound side of the peer port (proto/raft.proto): the `RaftPeer`
//! service checks who is calling (with TLS, a member's node certificate
//! naming the sender), the cluster id, the destination and the sender's
//! data-directory incarnation, decodes each message and hands it to the Raft
//! loop; heartbeats and reports go to the node.

use std::collections::BTreeMap;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::input::{Input, InputSender};
use super::wire::{carries_data, decode_message, PROTOCOL_VERSION};
use crate::proto::raft::raft_peer_server::RaftPeer;
use crate::proto::raft::{
    DeliverReply, HeartbeatReply, MessageBatch, NodeHeartbeat, ReportReply, ReportRequest,
};
use crate::raft::NodeId;

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

/// Marks the refusal a node receives when it lost its data; it stops.
pub const LOST_DATA_MARKER: &str = "lost its data";

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
        // Even a member's heartbeat is bounded like a job's labels: it ends
        // up in the replicated node table.
        let labels: std::collections::BTreeMap<String, String> = beat.labels.into_iter().collect();
        crate::jobs::check_map("labels", &labels).map_err(Status::invalid_argument)?;
        self.node.liveness.heartbeat(beat.node_id, labels, capacity);
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
