//! The `drover.v1` gRPC service. Any node serves every call: reads are local
//! (or linearizable on request), writes are forwarded to the leader.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::node::{Node, RaftError};
use crate::proto::v1 as pb;
use crate::raft::NodeId;

mod acl;
mod backup;
mod bootstrap;
mod cluster;
mod forward;
mod jobs;
mod output;

use acl::{mint_token_with_hash, propose_acl};
use cluster::{job_counts_to_proto, members_to_proto, storage_to_proto};
pub use cluster::{role_name, CATCH_UP_WAIT};
use forward::NOT_LEADER_TEXT;
use forward::{no_leader, FORWARDED};
pub(crate) use forward::{LEADER_ADDR, LEADER_HTTP};

pub use bootstrap::read_bootstrap_secret;

/// How long a call waits for a leader during an election before UNAVAILABLE.
const LEADER_WAIT: Duration = Duration::from_secs(5);

/// The client API implementation over one node.
#[derive(Clone)]
pub struct DroverService {
    node: Arc<Node>,
    /// The leader's REST address as its last forwarded answer named it
    /// (nodes do not replicate their REST addresses), with its id.
    leader_http: Arc<std::sync::Mutex<Option<(NodeId, String)>>>,
    /// Job watches open per token (see `api::caps`).
    watches: Arc<crate::api::caps::PerCaller>,
    /// Live output streams open per token.
    output_streams: Arc<crate::api::caps::PerCaller>,
    /// Calls per second per client (`limits.rate`).
    rate: Arc<crate::api::rate::RateLimits>,
}

impl DroverService {
    /// Wraps a running node.
    pub fn new(node: Arc<Node>) -> Self {
        let limits = &node.config.limits;
        let rate = Arc::new(crate::api::rate::RateLimits::new(limits.rate, limits.burst));
        DroverService {
            rate,
            node,
            leader_http: Arc::new(std::sync::Mutex::new(None)),
            watches: crate::api::caps::PerCaller::new(
                "job watches",
                crate::api::caps::WATCHES_PER_TOKEN,
            ),
            output_streams: crate::api::caps::PerCaller::new(
                "live output streams",
                crate::api::caps::OUTPUT_STREAMS_PER_TOKEN,
            ),
        }
    }

    /// The check every call makes first: who calls and may they (see
    /// `api::auth`), then whether their share of this node's calls per
    /// second has room (`api::rate`). Calls refused by the access check
    /// take from their address's share first, so guessing tokens is as
    /// slow as any other flood.
    fn authorize<T>(
        &self,
        request: &Request<T>,
        action: crate::acl::Action,
    ) -> Result<crate::api::auth::Caller, Status> {
        use crate::api::rate::{limits_role, ClientKey};
        match crate::api::auth::authorize(&self.node, request, action) {
            Ok(caller) => {
                if limits_role(caller.role) {
                    self.rate.check(caller.client.as_ref())?;
                }
                Ok(caller)
            }
            Err(refused) => {
                if crate::api::auth::calling_node(&self.node, request).is_none() {
                    let address = request.remote_addr().map(|a| ClientKey::address(a.ip()));
                    self.rate.check(address.as_ref())?;
                }
                Err(refused)
            }
        }
    }

    /// This node's metrics in the Prometheus text format, for the
    /// unauthenticated `GET /metrics` (scrapers carry no token).
    pub fn render_metrics(&self) -> Result<String, std::fmt::Error> {
        self.node.render_metrics()
    }

    /// This node's view of the cluster, without an access check: what
    /// GetClusterStatus answers and what `/v1/ready` (probed without a
    /// token) judges readiness by.
    pub fn cluster_status(&self) -> pb::ClusterStatus {
        let status = self.node.status();
        let leader_api_addr = self.node.leader().map(|(_, addr)| addr).unwrap_or_default();
        let (fsyncs, max_fsync) = self.node.fsync_stats();
        pb::ClusterStatus {
            cluster_id: self.node.config.cluster_id.clone(),
            node_id: status.node_id,
            role: role_name(status.role).to_string(),
            term: status.term,
            leader_id: status.leader.unwrap_or(0),
            leader_api_addr,
            commit_index: status.commit,
            applied_index: status.applied,
            snapshot_index: status.snapshot_index,
            last_log_index: status.last_index,
            members: members_to_proto(&self.node, &status),
            snapshots_installed: status.snapshots_installed,
            fsyncs,
            max_fsync_micros: u64::try_from(max_fsync.as_micros()).unwrap_or(u64::MAX),
            storage: Some(storage_to_proto(&self.node.storage_report())),
            transport_security: self.node.transport_security().to_string(),
            jobs: Some(job_counts_to_proto(
                &self.node.job_counts(),
                &self.node.jobs_by_state(),
            )),
        }
    }
}

#[tonic::async_trait]
impl pb::drover_server::Drover for DroverService {
    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        self.submit(request).await
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        self.get(request).await
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        self.list(request).await
    }

    async fn get_cluster_status(
        &self,
        request: Request<pb::GetClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        self.status(request).await
    }

    async fn add_peer(
        &self,
        request: Request<pb::AddPeerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.add_member(request).await
    }

    async fn remove_peer(
        &self,
        request: Request<pb::RemovePeerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.remove_member(request).await
    }

    async fn stop_job(
        &self,
        request: Request<pb::StopJobRequest>,
    ) -> Result<Response<pb::StopJobResponse>, Status> {
        self.stop(request).await
    }

    async fn get_job_output(
        &self,
        request: Request<pb::GetJobOutputRequest>,
    ) -> Result<Response<pb::GetJobOutputResponse>, Status> {
        self.output_page(request).await
    }

    type StreamJobOutputStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::OutputChunk, Status>> + Send + 'static>,
    >;

    async fn stream_job_output(
        &self,
        request: Request<pb::StreamJobOutputRequest>,
    ) -> Result<Response<Self::StreamJobOutputStream>, Status> {
        self.output_stream(request).await
    }

    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.nodes(request).await
    }

    async fn drain_node(
        &self,
        request: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<pb::DrainNodeResponse>, Status> {
        self.drain(request).await
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        self.hand_leadership_to(request).await
    }

    type SaveSnapshotStream = backup::SaveStream;

    async fn save_snapshot(
        &self,
        request: Request<pb::SaveSnapshotRequest>,
    ) -> Result<Response<Self::SaveSnapshotStream>, Status> {
        self.save(request).await
    }

    async fn restore_snapshot(
        &self,
        request: Request<tonic::Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RestoreSnapshotResponse>, Status> {
        self.restore(request).await
    }

    async fn acl_bootstrap(
        &self,
        request: Request<pb::AclBootstrapRequest>,
    ) -> Result<Response<pb::AclTokenSecret>, Status> {
        self.bootstrap(request).await
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::AclTokenSecret>, Status> {
        self.token_create(request).await
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.token_list(request).await
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        self.token_revoke(request).await
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::AclToken>, Status> {
        self.whoami(request).await
    }

    type WatchJobsStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::JobEvent, Status>> + Send + 'static>,
    >;

    async fn watch_jobs(
        &self,
        request: Request<pb::WatchJobsRequest>,
    ) -> Result<Response<Self::WatchJobsStream>, Status> {
        self.watch(request).await
    }
}

/// Metadata key set on a RESOURCE_EXHAUSTED that means "a disk is below its
/// reserve" (not "a queue is full"), so the REST API answers 507 for it.
pub const STORAGE_FULL: &str = "x-drover-storage-full";

/// RESOURCE_EXHAUSTED for a full disk, marked with [`STORAGE_FULL`].
pub fn no_space(message: String) -> Status {
    let mut status = Status::resource_exhausted(message);
    status.metadata_mut().insert(
        STORAGE_FULL,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    status
}

/// Maps a Raft failure to the gRPC status a client can act on.
pub fn raft_status(error: RaftError) -> Status {
    let message = error.to_string();
    match error {
        RaftError::NotLeader { .. } => Status::unavailable(NOT_LEADER_TEXT),
        RaftError::Overloaded => Status::resource_exhausted(message),
        RaftError::Lost => Status::aborted(message),
        // The entry may still commit: not "retry" but "check first".
        RaftError::Timeout => Status::deadline_exceeded(message),
        RaftError::Unknown => Status::unknown(message),
        RaftError::Busy(_) => Status::unavailable(message),
        RaftError::ReadFailed | RaftError::ShuttingDown => Status::unavailable(message),
        RaftError::Rejected(_) => Status::failed_precondition(message),
        RaftError::Storage(_) => Status::internal(message),
        RaftError::NoSpace(_) => no_space(message),
    }
}
