//! The `drover.v1` gRPC service. Any node serves every call: reads are local
//! (or linearizable on request), writes are forwarded to the leader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::auth::{authorize, forward_identity, Caller};
use super::convert::{job_to_proto, node_to_proto, spec_from_proto, token_to_proto};
use crate::acl::{self, Action, Token};
use crate::jobs::{Command, Drain, Job, JobId};
use crate::node::{now_ms, Node, RaftError, RaftStatus};
use crate::proto::v1 as pb;
use crate::proto::v1::drover_client::DroverClient;
use crate::raft::{ConfChange, NodeId, PeerInfo, Role};
use crate::store::{Applied, SpaceReport};

mod backup;
mod bootstrap;

pub use bootstrap::read_bootstrap_secret;

/// Metadata key marking a request already forwarded once, so two nodes with
/// stale views never bounce a request between them.
const FORWARDED: &str = "x-drover-forwarded";
/// Metadata key carrying the leader's API address in every write response.
pub(crate) const LEADER_ADDR: &str = "x-drover-leader";
/// Metadata key carrying, in a write's response, the index the leader had
/// applied when it answered: a follower that forwarded the write waits until
/// it has applied that far too, so the caller's next read on it (say, the
/// output of the job it just submitted) sees the write.
const APPLIED_INDEX: &str = "x-drover-applied-index";
/// How long a call waits for a leader during an election before UNAVAILABLE.
const LEADER_WAIT: Duration = Duration::from_secs(5);
/// Page sizes of ListJobs.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// How long AddPeer waits for a learner to catch up before promoting it.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(120);
/// Deadline of a call forwarded to the leader: long enough for AddPeer's
/// catch-up wait; a dead leader is noticed sooner by the HTTP/2 keepalive.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(150);

/// The client API implementation over one node.
#[derive(Clone)]
pub struct DroverService {
    node: Arc<Node>,
    /// One reused channel per leader address (shared by clones).
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl DroverService {
    /// Wraps a running node.
    pub fn new(node: Arc<Node>) -> Self {
        DroverService {
            node,
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Where a write must go: `None` = here (this node leads), `Some` = the
    /// leader's client. Waits for an election, bounded.
    async fn route<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<DroverClient<Channel>>, Status> {
        if self.node.is_leader() {
            return Ok(None);
        }
        if request.metadata().get(FORWARDED).is_some() {
            return Err(Status::unavailable(
                "this node is not the leader (forwarded request); retry",
            ));
        }
        let Some((leader, addr)) = self.node.wait_for_leader(LEADER_WAIT).await else {
            return Err(no_leader());
        };
        if leader == self.node.config.node_id {
            return Ok(None);
        }
        Ok(Some(self.client(leader, &addr)?))
    }

    fn client(&self, to: NodeId, addr: &str) -> Result<DroverClient<Channel>, Status> {
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| Status::internal("channel cache poisoned"))?;
        let channel = match channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let endpoint = self
                    .node
                    .dialer
                    .endpoint(to, addr)
                    .map_err(Status::internal)?
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(FORWARD_TIMEOUT)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5));
                let channel = endpoint.connect_lazy();
                channels.insert(addr.to_string(), channel.clone());
                channel
            }
        };
        Ok(DroverClient::new(channel))
    }

    /// Runs a write here if this node leads, otherwise forwards it. Retries
    /// once if leadership moved between routing and proposing.
    async fn write<Req, Resp, Local, LocalFut, Fwd, FwdFut>(
        &self,
        request: Request<Req>,
        local: Local,
        forward: Fwd,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        Local: Fn(Arc<Node>, Req) -> LocalFut,
        LocalFut: std::future::Future<Output = Result<Resp, Status>>,
        Fwd: Fn(DroverClient<Channel>, Request<Req>) -> FwdFut,
        FwdFut: std::future::Future<Output = Result<Response<Resp>, Status>>,
    {
        for _attempt in 0..2 {
            match self.route(&request).await? {
                None => match local(self.node.clone(), request.get_ref().clone()).await {
                    Err(status)
                        if status.code() == tonic::Code::Unavailable && is_not_leader(&status) =>
                    {
                        continue;
                    }
                    other => {
                        let forwarded = request.metadata().contains_key(FORWARDED);
                        return other.map(|r| self.with_leader(Response::new(r), forwarded));
                    }
                },
                Some(client) => {
                    let mut forwarded = Request::new(request.get_ref().clone());
                    forwarded
                        .metadata_mut()
                        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
                    forward_identity(&self.node, request.metadata(), forwarded.metadata_mut());
                    let response = forward(client, forwarded).await?;
                    let applied = response
                        .metadata()
                        .get(APPLIED_INDEX)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    if let Some(index) = applied {
                        // Bounded: a lagging follower answers anyway (the
                        // write is committed); reads may then trail it.
                        self.node.wait_applied(index, LEADER_WAIT).await;
                    }
                    return Ok(response);
                }
            }
        }
        Err(no_leader())
    }

    /// Adds the leader's address and, for a node that forwarded the write
    /// (the only reader: it waits to have applied as much), the applied
    /// index. A direct client does not get the index: a value new in every
    /// response costs HPACK a table insert and eviction each time.
    fn with_leader<T>(&self, mut response: Response<T>, forwarded: bool) -> Response<T> {
        if let Some((_, addr)) = self.node.leader() {
            if let Ok(value) = addr.parse() {
                response.metadata_mut().insert(LEADER_ADDR, value);
            }
        }
        if forwarded {
            let applied = self.node.store.applied_index().to_string();
            if let Ok(value) = applied.parse() {
                response.metadata_mut().insert(APPLIED_INDEX, value);
            }
        }
        response
    }

    /// Waits until the job has attempt `number` (0 = any) or has ended.
    async fn wait_for_attempt(&self, id: &JobId, number: u32) -> Result<Job, Status> {
        let mut applied = self.node.applied_watch();
        let mut job = self.job(id)?;
        while find_attempt(&job, number).is_none() && !job.state.is_terminal() {
            if applied.changed().await.is_err() {
                return Err(Status::unavailable("the node is shutting down"));
            }
            job = self.job(id)?;
        }
        Ok(job)
    }

    /// The output of one attempt: from this node's store, from the node that
    /// holds it, or (that node being unreachable) the committed tail.
    async fn attempt_output(
        &self,
        id: JobId,
        attempt: &crate::jobs::Attempt,
        after_seq: Option<u64>,
        follow: bool,
        forwarded: bool,
        auth: &tonic::metadata::MetadataMap,
    ) -> <Self as pb::drover_server::Drover>::StreamJobOutputStream {
        if attempt.node != self.node.config.node_id && !forwarded {
            if let Ok(mut client) = self.holder_client(attempt.node) {
                let mut forward = Request::new(pb::StreamJobOutputRequest {
                    id: id.to_string(),
                    attempt: attempt.number,
                    follow,
                    after_seq,
                });
                forward
                    .metadata_mut()
                    .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
                forward_identity(&self.node, auth, forward.metadata_mut());
                match client.stream_job_output(forward).await {
                    Ok(stream) => return Box::pin(stream.into_inner()),
                    Err(status) => tracing::debug!(
                        node = attempt.node,
                        "output holder unreachable: {}",
                        status.message()
                    ),
                }
            }
            // The holder is gone: what survives is the committed tail. A
            // running attempt there has none yet; it ends NODE_LOST.
            let tail = committed_tail(attempt).chunks;
            return Box::pin(futures::stream::iter(tail.into_iter().map(Ok)));
        }
        Box::pin(async_stream_of(
            self.node.clone(),
            id,
            attempt.number,
            after_seq,
            follow,
        ))
    }

    /// Streams every attempt of a job, in order, until the job ends.
    async fn follow_job(
        self,
        id: JobId,
        mut after_seq: Option<u64>,
        auth: tonic::metadata::MetadataMap,
        tx: tokio::sync::mpsc::Sender<Result<pb::OutputChunk, Status>>,
    ) {
        use futures::StreamExt;
        let mut number = match self.known_job(&id).await {
            Ok(job) => job.current_attempt().map_or(1, |a| a.number),
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        loop {
            let job = match self.wait_for_attempt(&id, number).await {
                Ok(job) => job,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            let Some(attempt) = find_attempt(&job, number).cloned() else {
                return; // ended without another attempt
            };
            let mut stream = self
                .attempt_output(id, &attempt, after_seq, true, false, &auth)
                .await;
            while let Some(item) = stream.next().await {
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
            after_seq = None;
            // Its output ended; the next attempt, if the job retries.
            number += 1;
        }
    }

    fn job(&self, id: &JobId) -> Result<Job, Status> {
        self.node
            .store
            .get_job(id)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("no job with id {id}")))
    }

    /// The job, for a request naming it: what this node has applied, or,
    /// when it has not (yet) applied it, what it finds after a read barrier.
    /// A node that restarted after `kill -9` may not have applied the tail
    /// of its durable log yet, so a miss here is not proof that the job does
    /// not exist: NotFound only once the leader confirmed this node is
    /// current, UNAVAILABLE (retry) when no leader can say.
    async fn known_job(&self, id: &JobId) -> Result<Job, Status> {
        if let Some(job) = self.lookup_job(id)? {
            return Ok(job);
        }
        if let Err(e) = self.node.read_barrier().await {
            return Err(Status::unavailable(format!(
                "job {id} is not in this node's table and no leader could confirm that it does                  not exist ({e}); the node may be catching up after a restart: retry, or ask                  another node"
            )));
        }
        self.job(id)
    }

    fn lookup_job(&self, id: &JobId) -> Result<Option<Job>, Status> {
        self.node
            .store
            .get_job(id)
            .map_err(|e| Status::internal(e.to_string()))
    }

    /// A client for the node that holds an attempt's output.
    fn holder_client(&self, holder: NodeId) -> Result<DroverClient<Channel>, Status> {
        let addr = self
            .node
            .status()
            .membership
            .peer(holder)
            .map(|p| p.api_addr.clone())
            .ok_or_else(|| Status::unavailable(format!("node {holder} is not a member")))?;
        self.client(holder, &addr)
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
            fsyncs: self.node.store.fsync_count(),
            max_fsync_micros: u64::try_from(self.node.store.max_fsync_duration().as_micros())
                .unwrap_or(u64::MAX),
            storage: Some(storage_to_proto(&self.node.space.report())),
            transport_security: self.node.transport_security().to_string(),
        }
    }

    async fn consistent_read(&self, consistent: bool) -> Result<(), Status> {
        if consistent {
            self.node.read_barrier().await.map_err(raft_status)?;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::drover_server::Drover for DroverService {
    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let caller = authorize(&self.node, &request, Action::SubmitJob)?;
        let spec = spec_from_proto(
            request.get_ref().spec.as_ref(),
            &self.node.config.executor.default_image,
        )?;
        spec.validate()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.node.admit_new_work().map_err(raft_status)?;
        self.write(
            request,
            move |node, _req| {
                let spec = spec.clone();
                let caller = caller.clone();
                async move {
                    // A resubmission answers with the first job, without a
                    // log entry (the state machine checks again on apply).
                    if let Some(key) = &spec.idempotency_key {
                        if let Some(job) = node
                            .store
                            .job_by_idempotency_key(key)
                            .map_err(|e| Status::internal(e.to_string()))?
                        {
                            caller.check_job(&job)?;
                            return Ok(pb::SubmitJobResponse {
                                job: Some(job_to_proto(&job)),
                            });
                        }
                    }
                    let capacity = node.config.scheduler.queue_capacity;
                    if node.store.queued_count() >= capacity {
                        return Err(Status::resource_exhausted(format!(
                            "the queue is full ({capacity} jobs waiting, scheduler.queue_capacity); retry later"
                        )));
                    }
                    let (id, submitted_at_ms) = (node.next_job_id(), now_ms());
                    let command = match caller.owner() {
                        Some(owner) => Command::SubmitAs {
                            id,
                            spec,
                            owner: owner.to_string(),
                            submitted_at_ms,
                        },
                        None => Command::Submit {
                            id,
                            spec,
                            submitted_at_ms,
                        },
                    };
                    match node.propose_command(&command).await.map_err(raft_status)? {
                        Applied::Job(job) | Applied::DuplicateJob(job) => {
                            caller.check_job(&job)?;
                            Ok(pb::SubmitJobResponse {
                                job: Some(job_to_proto(&job)),
                            })
                        }
                        other => Err(Status::internal(format!(
                            "unexpected apply result {other:?}"
                        ))),
                    }
                }
            },
            |mut client, req| async move { client.submit_job(req).await },
        )
        .await
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let caller = authorize(&self.node, &request, Action::ReadJobs)?;
        let req = request.into_inner();
        let id = parse_job_id(&req.id)?;
        self.consistent_read(req.consistent).await?;
        let job = if req.consistent {
            self.job(&id)?
        } else {
            self.known_job(&id).await?
        };
        caller.check_job(&job)?;
        Ok(Response::new(pb::GetJobResponse {
            job: Some(job_to_proto(&job)),
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let caller = authorize(&self.node, &request, Action::ReadJobs)?;
        let req = request.into_inner();
        let page_size = match req.page_size as usize {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => {
                return Err(Status::invalid_argument(format!(
                    "page_size {n} exceeds the maximum of {MAX_PAGE}"
                )))
            }
            n => n,
        };
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(req.page_token.parse::<JobId>().map_err(|_| {
                Status::invalid_argument(
                    "page_token is not a token returned by ListJobs; start again without it",
                )
            })?)
        };
        let mut filter = JobFilter::from_request(&req)?;
        if let Some(scope) = caller.list_scope() {
            // A submitter sees its own jobs only: asking for another
            // owner's finds none.
            if filter.owner.as_deref().is_some_and(|o| o != scope) {
                return Ok(Response::new(pb::ListJobsResponse::default()));
            }
            filter.owner = Some(scope.to_string());
        }
        self.consistent_read(req.consistent).await?;
        // Read before the page: every row then reflects at least this
        // index, so a watch from it misses nothing (read after, a change
        // between the page and the index would be in neither).
        let index = self.node.store.applied_index();
        let (jobs, next) = if filter.is_empty() {
            let jobs = self
                .node
                .store
                .list_jobs(after.as_ref(), page_size + 1)
                .map_err(|e| Status::internal(e.to_string()))?;
            let more = jobs.len() > page_size;
            let jobs: Vec<Job> = jobs.into_iter().take(page_size).collect();
            let next = if more {
                jobs.last().map(|j| j.id)
            } else {
                None
            };
            (jobs, next)
        } else {
            filtered_page(&self.node, after, page_size, &filter)?
        };
        let next_page_token = next.map(|id| id.to_string()).unwrap_or_default();
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.iter().map(job_to_proto).collect(),
            next_page_token,
            index,
        }))
    }

    async fn get_cluster_status(
        &self,
        request: Request<pb::GetClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        authorize(&self.node, &request, Action::ReadCluster)?;
        Ok(Response::new(self.cluster_status()))
    }

    async fn add_peer(
        &self,
        request: Request<pb::AddPeerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        authorize(&self.node, &request, Action::OperateRaft)?;
        let req = request.get_ref().clone();
        if req.id == 0 {
            return Err(Status::invalid_argument("id must be a positive integer"));
        }
        for (name, addr) in [("raft_addr", &req.raft_addr), ("api_addr", &req.api_addr)] {
            if !is_host_port(addr) {
                return Err(Status::invalid_argument(format!(
                    "{name} `{addr}` is not host:port"
                )));
            }
        }
        self.write(
            request,
            move |node, req| async move { add_peer_here(&node, req).await },
            |mut client, req| async move { client.add_peer(req).await },
        )
        .await
    }

    async fn remove_peer(
        &self,
        request: Request<pb::RemovePeerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        authorize(&self.node, &request, Action::OperateRaft)?;
        self.write(
            request,
            move |node, req| {
                async move {
                    // Checked on the leader: a lagging follower's view could
                    // be stale.
                    if !node.status().membership.contains(req.id) {
                        return Err(Status::not_found(format!(
                            "node {} is not a member",
                            req.id
                        )));
                    }
                    let applied = node
                        .change_membership(ConfChange::Remove { id: req.id })
                        .await
                        .map_err(raft_status)?;
                    membership_response(&node, applied).await
                }
            },
            |mut client, req| async move { client.remove_peer(req).await },
        )
        .await
    }

    async fn stop_job(
        &self,
        request: Request<pb::StopJobRequest>,
    ) -> Result<Response<pb::StopJobResponse>, Status> {
        let caller = authorize(&self.node, &request, Action::StopJob)?;
        let id = parse_job_id(&request.get_ref().id)?;
        // Checked here too, so a follower refuses without a round trip
        // (the leader checks again against its own table).
        if let Some(job) = self
            .node
            .store
            .get_job(&id)
            .map_err(|e| Status::internal(e.to_string()))?
        {
            caller.check_job(&job)?;
        }
        self.write(
            request,
            move |node, req| {
                let caller = caller.clone();
                async move {
                    let id = parse_job_id(&req.id)?;
                    // An unknown id is refused without a log entry. A new leader
                    // may not have applied its predecessor's last entries yet:
                    // a read barrier first, before saying "no such job".
                    let known = |node: &Node| {
                        node.store
                            .get_job(&id)
                            .map_err(|e| Status::internal(e.to_string()))
                    };
                    let job = match known(&node)? {
                        Some(job) => job,
                        None => {
                            node.read_barrier().await.map_err(raft_status)?;
                            known(&node)?
                                .ok_or_else(|| Status::not_found(format!("no job with id {id}")))?
                        }
                    };
                    caller.check_job(&job)?;
                    let command = Command::Cancel {
                        job: id,
                        at_ms: now_ms(),
                    };
                    match node.propose_command(&command).await.map_err(raft_status)? {
                        Applied::Updated(job) | Applied::Unchanged(job) => {
                            Ok(pb::StopJobResponse {
                                job: Some(job_to_proto(&job)),
                            })
                        }
                        Applied::Refused { .. } => {
                            Err(Status::not_found(format!("no job with id {id}")))
                        }
                        other => Err(Status::internal(format!(
                            "unexpected apply result {other:?}"
                        ))),
                    }
                }
            },
            |mut client, req| async move { client.stop_job(req).await },
        )
        .await
    }

    async fn get_job_output(
        &self,
        request: Request<pb::GetJobOutputRequest>,
    ) -> Result<Response<pb::GetJobOutputResponse>, Status> {
        let caller = authorize(&self.node, &request, Action::ReadJobs)?;
        let forwarded = request.metadata().get(FORWARDED).is_some();
        let (metadata, _, mut req) = request.into_parts();
        let id = parse_job_id(&req.id)?;
        let job = self.known_job(&id).await?;
        caller.check_job(&job)?;
        let Some(attempt) = pick_attempt(&job, req.attempt)? else {
            return Ok(Response::new(pb::GetJobOutputResponse {
                chunks: Vec::new(),
                attempt: 0,
                source: "none".into(),
            }));
        };
        req.attempt = attempt.number;
        let max_bytes = match req.max_bytes {
            0 => 1 << 20,
            n => (n as usize).min(4 << 20),
        };
        if attempt.node != self.node.config.node_id && !forwarded {
            match self.holder_client(attempt.node) {
                Ok(mut client) => {
                    let mut forward = Request::new(req.clone());
                    forward
                        .metadata_mut()
                        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
                    forward_identity(&self.node, &metadata, forward.metadata_mut());
                    match client.get_job_output(forward).await {
                        Ok(response) => return Ok(response),
                        Err(status) => tracing::debug!(
                            node = attempt.node,
                            "output holder unreachable: {}",
                            status.message()
                        ),
                    }
                }
                Err(e) => {
                    tracing::debug!(node = attempt.node, "no address for the output holder: {e}")
                }
            }
            return Ok(Response::new(committed_tail(attempt)));
        }
        let chunks = self
            .node
            .store
            .read_output(&id, attempt.number, req.after_seq, max_bytes)
            .map_err(|e| Status::internal(e.to_string()))?;
        if chunks.is_empty() && !attempt.output_tail.is_empty() && req.after_seq.is_none() {
            // This node ran it but lost the output (e.g. its data dir was
            // replaced): the committed tail is what is left.
            return Ok(Response::new(committed_tail(attempt)));
        }
        Ok(Response::new(pb::GetJobOutputResponse {
            chunks: chunks
                .into_iter()
                .map(|c| chunk_to_proto(c, attempt.number))
                .collect(),
            attempt: attempt.number,
            source: "node".into(),
        }))
    }

    type StreamJobOutputStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::OutputChunk, Status>> + Send + 'static>,
    >;

    async fn stream_job_output(
        &self,
        request: Request<pb::StreamJobOutputRequest>,
    ) -> Result<Response<Self::StreamJobOutputStream>, Status> {
        let caller = authorize(&self.node, &request, Action::ReadJobs)?;
        let forwarded = request.metadata().get(FORWARDED).is_some();
        let (metadata, _, req) = request.into_parts();
        let id = parse_job_id(&req.id)?;
        let job = self.known_job(&id).await?;
        caller.check_job(&job)?;
        if req.follow && req.attempt == 0 && !forwarded {
            // Follow the job, not one attempt: each attempt's output in
            // turn, through its retries, until the job ends.
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            let service = self.clone();
            tokio::spawn(async move { service.follow_job(id, req.after_seq, metadata, tx).await });
            return Ok(Response::new(Box::pin(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            )));
        }
        let job = if req.follow {
            self.wait_for_attempt(&id, req.attempt).await?
        } else {
            job
        };
        let Some(attempt) = pick_attempt(&job, req.attempt)?.cloned() else {
            return Ok(Response::new(Box::pin(futures::stream::empty())));
        };
        Ok(Response::new(
            self.attempt_output(
                id,
                &attempt,
                req.after_seq,
                req.follow,
                forwarded,
                &metadata,
            )
            .await,
        ))
    }

    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        authorize(&self.node, &request, Action::ReadCluster)?;
        self.consistent_read(request.get_ref().consistent).await?;
        let nodes = node_infos(&self.node)?;
        Ok(Response::new(pb::ListNodesResponse { nodes }))
    }

    async fn drain_node(
        &self,
        request: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<pb::DrainNodeResponse>, Status> {
        authorize(&self.node, &request, Action::OperateNodes)?;
        self.write(
            request,
            move |node, req| async move {
                let known = |node: &Node| {
                    node.store
                        .node(req.id)
                        .map(|n| n.is_some())
                        .map_err(|e| Status::internal(e.to_string()))
                };
                let known = known(&node)? || {
                    node.read_barrier().await.map_err(raft_status)?;
                    known(&node)?
                };
                if !known {
                    return Err(Status::not_found(format!(
                        "no node {} in the node table (it has never heartbeated)",
                        req.id
                    )));
                }
                let now = now_ms();
                let drain = (!req.disable).then(|| Drain {
                    since_ms: now,
                    deadline_ms: (req.deadline_ms > 0).then(|| {
                        now.saturating_add(i64::try_from(req.deadline_ms).unwrap_or(i64::MAX))
                    }),
                });
                let command = Command::SetDrain {
                    node: req.id,
                    drain,
                    at_ms: now,
                };
                match node.propose_command(&command).await.map_err(raft_status)? {
                    Applied::Node(_) => {
                        let info = node_infos(&node)?.into_iter().find(|n| n.id == req.id);
                        Ok(pb::DrainNodeResponse { node: info })
                    }
                    Applied::Refused { .. } => Err(Status::not_found(format!(
                        "no node {} in the node table (it has never heartbeated)",
                        req.id
                    ))),
                    other => Err(Status::internal(format!(
                        "unexpected apply result {other:?}"
                    ))),
                }
            },
            |mut client, req| async move { client.drain_node(req).await },
        )
        .await
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        authorize(&self.node, &request, Action::OperateRaft)?;
        let to = request.get_ref().to;
        if !self.node.status().membership.is_voter(to) {
            return Err(Status::invalid_argument(format!(
                "node {to} is not a voter"
            )));
        }
        self.write(
            request,
            move |node, req| {
                async move {
                    node.transfer_leader(req.to).await.map_err(raft_status)?;
                    let done = node
                        .wait_status(LEADER_WAIT, |s| s.leader == Some(req.to))
                        .await;
                    if !done {
                        return Err(Status::unavailable(format!(
                            "node {} did not take over within {LEADER_WAIT:?}; check that it is up and caught up",
                            req.to
                        )));
                    }
                    Ok(pb::TransferLeaderResponse { leader_id: req.to })
                }
            },
            |mut client, req| async move { client.transfer_leader(req).await },
        )
        .await
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
        authorize(&self.node, &request, Action::ManageTokens)?;
        let req = request.get_ref();
        acl::validate_name(&req.name).map_err(Status::invalid_argument)?;
        let role: acl::Role = req.role.parse().map_err(Status::invalid_argument)?;
        self.node.admit_new_work().map_err(raft_status)?;
        self.write(
            request,
            move |node, req| async move {
                let (token, secret) = mint_token(req.name.clone(), role);
                let (applied, unconfirmed) =
                    propose_acl(&node, Command::AclCreateToken { token }).await?;
                match applied {
                    Applied::Token(token) => Ok(pb::AclTokenSecret {
                        token: Some(token_to_proto(&token)),
                        secret,
                        unconfirmed_nodes: unconfirmed,
                    }),
                    Applied::Refused { reason } => Err(Status::aborted(reason)),
                    other => Err(Status::internal(format!(
                        "unexpected apply result {other:?}"
                    ))),
                }
            },
            |mut client, req| async move { client.create_token(req).await },
        )
        .await
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        authorize(&self.node, &request, Action::ManageTokens)?;
        let tokens = self
            .node
            .store
            .tokens()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.iter().map(token_to_proto).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        authorize(&self.node, &request, Action::ManageTokens)?;
        if request.get_ref().accessor.is_empty() {
            return Err(Status::invalid_argument(
                "name the token by its accessor id",
            ));
        }
        self.write(
            request,
            move |node, req| async move {
                let not_found =
                    || Status::not_found(format!("no token with accessor {}", req.accessor));
                // Unknown accessors are refused without a log entry (after
                // a barrier, as a new leader may lag its predecessor).
                let known = |node: &Node| {
                    node.store
                        .token(&req.accessor)
                        .map(|t| t.is_some())
                        .map_err(|e| Status::internal(e.to_string()))
                };
                if !known(&node)? {
                    node.read_barrier().await.map_err(raft_status)?;
                    if !known(&node)? {
                        return Err(not_found());
                    }
                }
                let command = Command::AclRevokeToken {
                    accessor: req.accessor.clone(),
                };
                let (applied, unconfirmed) = propose_acl(&node, command).await?;
                match applied {
                    Applied::Revoked(token) => Ok(pb::RevokeTokenResponse {
                        token: Some(token_to_proto(&token)),
                        unconfirmed_nodes: unconfirmed,
                    }),
                    Applied::Refused { .. } => Err(not_found()),
                    other => Err(Status::internal(format!(
                        "unexpected apply result {other:?}"
                    ))),
                }
            },
            |mut client, req| async move { client.revoke_token(req).await },
        )
        .await
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::AclToken>, Status> {
        let caller: Caller = authorize(&self.node, &request, Action::ReadCluster)?;
        Ok(Response::new(match &caller.token {
            Some(token) => token_to_proto(token),
            None => pb::AclToken {
                accessor: String::new(),
                name: "anonymous".into(),
                role: caller.role.as_str().into(),
                created_at_ms: 0,
            },
        }))
    }

    type WatchJobsStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::JobEvent, Status>> + Send + 'static>,
    >;

    async fn watch_jobs(
        &self,
        request: Request<pb::WatchJobsRequest>,
    ) -> Result<Response<Self::WatchJobsStream>, Status> {
        let caller = authorize(&self.node, &request, Action::ReadJobs)?;
        let req = request.into_inner();
        let job = match req.job_id.as_str() {
            "" => None,
            id => Some(parse_job_id(id)?),
        };
        if let Some(id) = &job {
            if let Some(job) = self
                .node
                .store
                .get_job(id)
                .map_err(|e| Status::internal(e.to_string()))?
            {
                caller.check_job(&job)?;
            }
        }
        let scope = caller.list_scope().map(str::to_string);
        // Served from this node's own applies: any node, no forwarding.
        let from = (req.from_index > 0).then_some(req.from_index);
        let subscription = self
            .node
            .events
            .subscribe(from)
            .map_err(super::watch::watch_status)?;
        Ok(Response::new(Box::pin(super::watch::event_stream(
            subscription,
            job,
            scope,
        ))))
    }
}

/// Adds `req.id` as a learner (unless it is one already), waits for it to
/// catch up with the log, then promotes it, the safe order: a new voter that
/// lags would otherwise stall commits until it caught up.
async fn add_peer_here(
    node: &Node,
    req: pb::AddPeerRequest,
) -> Result<pb::MembershipResponse, Status> {
    let status = node.status();
    if status.membership.is_voter(req.id) {
        return Err(Status::already_exists(format!(
            "node {} is already a voter; if it lost its data dir, remove it first \
             (`drover operator raft remove-peer --id {}`), then add it again",
            req.id, req.id
        )));
    }
    let mut last = None;
    if !status.membership.contains(req.id) {
        let info = PeerInfo {
            raft_addr: req.raft_addr.clone(),
            api_addr: req.api_addr.clone(),
        };
        last = Some(
            node.change_membership(ConfChange::AddLearner { id: req.id, info })
                .await
                .map_err(raft_status)?,
        );
    }
    if req.learner_only {
        return membership_response(node, last.unwrap_or(Applied::Noop)).await;
    }
    let id = req.id;
    let caught_up = node
        .wait_status(CATCH_UP_WAIT, |s| {
            s.role == Role::Leader
                && s.progress
                    .get(&id)
                    .is_some_and(|m| *m + 16 >= s.commit && *m > 0)
        })
        .await;
    if !caught_up {
        return Err(Status::deadline_exceeded(format!(
            "node {id} was added as a learner but has not caught up within {CATCH_UP_WAIT:?}; \
             check it is running and reachable at {}, then run add-peer again to promote it",
            req.raft_addr
        )));
    }
    let applied = node
        .change_membership(ConfChange::Promote { id })
        .await
        .map_err(raft_status)?;
    membership_response(node, applied).await
}

/// Answers a membership change with the membership it produced. The status
/// the loop publishes can trail the apply by one turn, so wait (briefly) for
/// it to show that membership before reporting progress and leader from it.
async fn membership_response(
    node: &Node,
    applied: Applied,
) -> Result<pb::MembershipResponse, Status> {
    if let Applied::ConfChange(membership) = &applied {
        node.wait_status(Duration::from_secs(2), |s| s.membership == *membership)
            .await;
    }
    let mut status = node.status();
    if let Applied::ConfChange(membership) = applied {
        status.membership = membership;
    }
    Ok(pb::MembershipResponse {
        members: members_to_proto(node, &status),
        index: status.applied,
    })
}

fn members_to_proto(node: &Node, status: &RaftStatus) -> Vec<pb::Member> {
    let member = |id: &NodeId, info: &PeerInfo, suffrage: &str| pb::Member {
        disk_low: node.disk_low(*id),
        id: *id,
        raft_addr: info.raft_addr.clone(),
        api_addr: info.api_addr.clone(),
        suffrage: suffrage.to_string(),
        match_index: status.progress.get(id).copied().unwrap_or(0),
        is_leader: status.leader == Some(*id),
        last_contact_ms: status
            .last_contact
            .get(id)
            .filter(|_| *id != status.node_id)
            .map(|at| u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX)),
    };
    let voters = status
        .membership
        .voters
        .iter()
        .map(|(id, info)| member(id, info, "voter"));
    let learners = status
        .membership
        .learners
        .iter()
        .map(|(id, info)| member(id, info, "learner"));
    voters.chain(learners).collect()
}

fn storage_to_proto(report: &SpaceReport) -> pb::StorageStatus {
    pb::StorageStatus {
        state: report.level.as_str().to_string(),
        free_bytes: report.free_bytes,
        reserve_bytes: report.reserve_bytes,
        total_bytes: report.total_bytes,
        path: report.path.display().to_string(),
    }
}

/// The name a role has in every API and CLI output.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "pre-candidate",
    }
}

/// Rows a filtered ListJobs reads per page at most: a page may come back
/// short (even empty) with a token to continue, so a rare filter never
/// makes one call scan the whole table.
const MAX_FILTER_SCAN: usize = 10_000;

/// ListJobs filters.
struct JobFilter {
    states: Vec<crate::jobs::JobState>,
    labels: Vec<(String, String)>,
    node: u64,
    /// Accessor id of the submitting token.
    owner: Option<String>,
}

impl JobFilter {
    fn from_request(req: &pb::ListJobsRequest) -> Result<JobFilter, Status> {
        use crate::jobs::JobState;
        const ALL: [JobState; 8] = [
            JobState::Queued,
            JobState::Assigned,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::TimedOut,
            JobState::Cancelled,
            JobState::Lost,
        ];
        let states = req
            .states
            .iter()
            .map(|name| {
                ALL.into_iter()
                    .find(|s| s.as_str().eq_ignore_ascii_case(name))
                    .ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "unknown state `{name}` (one of QUEUED, ASSIGNED, RUNNING, SUCCEEDED, FAILED, TIMED_OUT, CANCELLED, LOST)"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(JobFilter {
            states,
            labels: req
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            node: req.node,
            owner: (!req.owner.is_empty()).then(|| req.owner.clone()),
        })
    }

    fn is_empty(&self) -> bool {
        self.states.is_empty() && self.labels.is_empty() && self.node == 0 && self.owner.is_none()
    }

    fn matches(&self, job: &Job) -> bool {
        (self.states.is_empty() || self.states.contains(&job.state))
            && self
                .labels
                .iter()
                .all(|(k, v)| job.spec.labels.get(k) == Some(v))
            && (self.node == 0 || job.current_attempt().is_some_and(|a| a.node == self.node))
            && self
                .owner
                .as_ref()
                .is_none_or(|owner| job.owner.as_ref() == Some(owner))
    }
}

/// One page of a filtered listing, and where the next starts (if anywhere).
fn filtered_page(
    node: &Node,
    mut after: Option<JobId>,
    page_size: usize,
    filter: &JobFilter,
) -> Result<(Vec<Job>, Option<JobId>), Status> {
    let mut page = Vec::new();
    let mut scanned = 0;
    while scanned < MAX_FILTER_SCAN {
        let batch = node
            .store
            .list_jobs(after.as_ref(), 500)
            .map_err(|e| Status::internal(e.to_string()))?;
        let Some(last) = batch.last().map(|j| j.id) else {
            return Ok((page, None)); // the end of the table
        };
        for job in batch {
            scanned += 1;
            after = Some(job.id);
            if filter.matches(&job) {
                page.push(job);
                if page.len() == page_size {
                    return Ok((page, after));
                }
            }
        }
        after = Some(last);
    }
    Ok((page, after))
}

/// The attempt a request names (0 = the latest), if it exists yet.
fn find_attempt(job: &Job, number: u32) -> Option<&crate::jobs::Attempt> {
    match number {
        0 => job.current_attempt(),
        n => job.attempts.iter().find(|a| a.number == n),
    }
}

/// The attempt a request names (0 = the latest); `None` if the job has none.
fn pick_attempt(job: &Job, number: u32) -> Result<Option<&crate::jobs::Attempt>, Status> {
    match number {
        0 => Ok(job.current_attempt()),
        n => job
            .attempts
            .iter()
            .find(|a| a.number == n)
            .map(Some)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "job {} has no attempt {n} (it has {})",
                    job.id,
                    job.attempts.len()
                ))
            }),
    }
}

fn chunk_to_proto(chunk: crate::store::StoredChunk, attempt: u32) -> pb::OutputChunk {
    use crate::executor::OutputStream;
    pb::OutputChunk {
        seq: chunk.seq,
        stream: match chunk.stream {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
            OutputStream::Notice => "notice",
        }
        .to_string(),
        data: chunk.data,
        attempt,
    }
}

/// The output tail committed with an attempt's result: what is left when
/// the node that ran it is unreachable.
fn committed_tail(attempt: &crate::jobs::Attempt) -> pb::GetJobOutputResponse {
    let chunks = if attempt.output_tail.is_empty() {
        Vec::new()
    } else {
        vec![pb::OutputChunk {
            seq: 0,
            stream: "tail".into(),
            data: attempt.output_tail.clone(),
            attempt: attempt.number,
        }]
    };
    pb::GetJobOutputResponse {
        chunks,
        attempt: attempt.number,
        source: "committed_tail".into(),
    }
}

/// Stored output of a local attempt, then (with `follow`) live chunks until
/// the attempt ends. A slow client never slows the job: the hub re-reads
/// from the store for followers that fall behind.
fn async_stream_of(
    node: Arc<Node>,
    id: JobId,
    attempt: u32,
    after_seq: Option<u64>,
    follow: bool,
) -> impl futures::Stream<Item = Result<pb::OutputChunk, Status>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        // The attempt may be assigned here but not started yet: wait for
        // its writer (or its end) before subscribing.
        if follow {
            let mut applied = node.applied_watch();
            loop {
                if node.output.is_live(id, attempt) {
                    break;
                }
                let active = node
                    .store
                    .get_job(&id)
                    .ok()
                    .flatten()
                    .is_some_and(|j| j.active_on().is_some_and(|(_, a)| a == attempt));
                if !active {
                    break;
                }
                // Woken by the Started report's apply, or re-checked shortly.
                let _ = tokio::time::timeout(Duration::from_millis(200), applied.changed()).await;
            }
        }
        let mut sub = node.output.subscribe(id, attempt, after_seq, follow);
        while let Some(item) = sub.next().await {
            let item = item
                .map(|c| chunk_to_proto(c, attempt))
                .map_err(|e| Status::internal(e.to_string()));
            if tx.send(item).await.is_err() {
                return; // the client went away
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The node table with each node's use, as of the local table.
fn node_infos(node: &Node) -> Result<Vec<pb::NodeInfo>, Status> {
    let internal = |e: crate::store::StoreError| Status::internal(e.to_string());
    let records = node.store.nodes().map_err(internal)?;
    let reserved = node.store.reserved_by_node().map_err(internal)?;
    let membership = node.status().membership;
    let mut out = Vec::with_capacity(records.len());
    for record in &records {
        let used = reserved.get(&record.id).copied().unwrap_or_default();
        let api_addr = membership
            .peer(record.id)
            .map(|p| p.api_addr.clone())
            .unwrap_or_default();
        out.push(node_to_proto(record, used, api_addr));
    }
    Ok(out)
}

/// `host:port` with a non-empty host and a numeric port.
fn is_host_port(addr: &str) -> bool {
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

/// How long a token change waits for the other members to apply it.
const ACL_PROPAGATION_WAIT: Duration = Duration::from_secs(3);

/// A new token and its secret (the only copy of the secret).
fn mint_token(name: String, role: acl::Role) -> (Token, String) {
    let secret = acl::new_secret();
    let token = mint_token_with_hash(name, role, acl::hash_secret(&secret));
    (token, secret)
}

/// A new token whose secret the caller holds (only its hash is stored).
fn mint_token_with_hash(name: String, role: acl::Role, secret_hash: [u8; 32]) -> Token {
    Token {
        accessor: acl::new_accessor(),
        name,
        role,
        secret_hash,
        created_at_ms: now_ms(),
    }
}

/// Proposes a token change (on the leader), then waits until every other
/// member has applied it, so a revoked token is refused everywhere once
/// the call returns. Returns the members that did not confirm in time.
async fn propose_acl(node: &Node, command: Command) -> Result<(Applied, Vec<u64>), Status> {
    let applied = node.propose_command(&command).await.map_err(raft_status)?;
    let index = node.store.applied_index();
    let unconfirmed = node.wait_cluster_applied(index, ACL_PROPAGATION_WAIT).await;
    if !unconfirmed.is_empty() {
        tracing::warn!(
            ?unconfirmed,
            index,
            "a token change is not yet applied on every member"
        );
    }
    Ok((applied, unconfirmed))
}

/// Carries the caller's token on a call this node makes on its behalf
/// (forwarding to the leader, fetching output from the node holding it), so
/// the other node checks the same caller.
fn parse_job_id(id: &str) -> Result<JobId, Status> {
    id.parse::<JobId>().map_err(|_| {
        Status::invalid_argument(format!("`{id}` is not a job id (26-character ULID)"))
    })
}

fn no_leader() -> Status {
    Status::unavailable(format!(
        "no leader elected within {LEADER_WAIT:?} (is a quorum of nodes up?); retry shortly"
    ))
}

const NOT_LEADER_TEXT: &str = "this node is not the leader";

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

fn is_not_leader(status: &Status) -> bool {
    status.message().starts_with(NOT_LEADER_TEXT)
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
