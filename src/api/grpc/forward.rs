//! Where a call runs: here when this node leads, otherwise forwarded to
//! the leader (or to the node holding an attempt's output), once, with the
//! caller's identity (see `api::auth::forward_identity`).

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::{DroverService, LEADER_WAIT};

use crate::api::auth::forward_identity;
use crate::node::Node;
use crate::proto::v1::drover_client::DroverClient;
use crate::raft::NodeId;

/// Metadata key marking a request already forwarded once, so two nodes with
/// stale views never bounce a request between them.
pub(super) const FORWARDED: &str = "x-drover-forwarded";

/// Metadata key carrying the leader's API address in every write response.
pub(crate) const LEADER_ADDR: &str = "x-drover-leader";

/// Metadata key carrying the leader's REST address (`advertise.http`) in
/// every write response, when it has a REST listener; the REST adapter
/// names it in `X-Drover-Leader`.
pub(crate) const LEADER_HTTP: &str = "x-drover-leader-http";

/// Metadata key carrying, in a write's response, the index the leader had
/// applied when it answered: a follower that forwarded the write waits until
/// it has applied that far too, so the caller's next read on it (say, the
/// output of the job it just submitted) sees the write.
pub(super) const APPLIED_INDEX: &str = "x-drover-applied-index";

/// Deadline of a call forwarded to the leader: long enough for AddPeer's
/// catch-up wait; a dead leader is noticed sooner by the HTTP/2 keepalive.
pub(super) const FORWARD_TIMEOUT: Duration = Duration::from_secs(150);

pub(super) fn no_leader() -> Status {
    Status::unavailable(format!(
        "no leader elected within {LEADER_WAIT:?} (is a quorum of nodes up?); retry shortly"
    ))
}

pub(super) const NOT_LEADER_TEXT: &str = "this node is not the leader";

/// A forwarded call that could not even reach the leader (it just died,
/// say) was not run: say so, so a client may retry it safely once the
/// cluster has elected another; any other answer is the leader's own.
fn leader_gone(status: Status, node: &Node) -> Status {
    let refused = status.code() == tonic::Code::Unavailable
        && [
            "tcp connect error",
            "error trying to connect",
            "Connection refused",
        ]
        .iter()
        .any(|t| status.message().contains(t));
    if !refused {
        return status;
    }
    let leader = node
        .leader()
        .map_or("the leader".to_string(), |(id, addr)| {
            format!("the leader (node {id} at {addr})")
        });
    Status::unavailable(format!(
        "{leader} cannot be reached, so the call was not run (the leader may have just \
         failed: another is elected within seconds); retry shortly"
    ))
}

pub(super) fn is_not_leader(status: &Status) -> bool {
    status.message().starts_with(NOT_LEADER_TEXT)
}

impl DroverService {
    /// Where a write must go: `None` = here (this node leads), `Some` = the
    /// leader's client. Waits for an election, bounded.
    pub(super) async fn route<T>(
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

    pub(super) fn client(&self, to: NodeId, addr: &str) -> Result<DroverClient<Channel>, Status> {
        let channel = self
            .node
            .channels
            .get(to, addr, FORWARD_TIMEOUT)
            .map_err(Status::internal)?;
        Ok(DroverClient::new(channel))
    }

    /// Runs a write here if this node leads, otherwise forwards it. Retries
    /// once if leadership moved between routing and proposing.
    pub(super) async fn write<Req, Resp, Local, LocalFut, Fwd, FwdFut>(
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
                    let response = forward(client, forwarded)
                        .await
                        .map_err(|status| leader_gone(status, &self.node))?;
                    self.learn_leader_http(response.metadata());
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
    pub(super) fn with_leader<T>(&self, mut response: Response<T>, forwarded: bool) -> Response<T> {
        if let Some((leader, addr)) = self.node.leader() {
            if let Ok(value) = addr.parse() {
                response.metadata_mut().insert(LEADER_ADDR, value);
            }
            let http = if self.node.is_leader() {
                self.node.config.advertised_http()
            } else {
                self.known_leader_http(leader)
            };
            if let Some(value) = http.and_then(|a| a.parse().ok()) {
                response.metadata_mut().insert(LEADER_HTTP, value);
            }
        }
        if forwarded {
            let applied = self.node.applied_index().to_string();
            if let Ok(value) = applied.parse() {
                response.metadata_mut().insert(APPLIED_INDEX, value);
            }
        }
        response
    }

    /// Remembers the REST address a leader's answer named (a lock poisoned
    /// by a panic elsewhere only costs the header).
    fn learn_leader_http(&self, metadata: &tonic::metadata::MetadataMap) {
        let addr = metadata.get(LEADER_HTTP).and_then(|v| v.to_str().ok());
        let leader = self.node.leader().map(|(id, _)| id);
        if let (Some(addr), Some(leader), Ok(mut known)) = (addr, leader, self.leader_http.lock()) {
            *known = Some((leader, addr.to_string()));
        }
    }

    /// The REST address learned for `leader`, if that is still whom it was
    /// learned from.
    fn known_leader_http(&self, leader: NodeId) -> Option<String> {
        let known = self.leader_http.lock().ok()?;
        known
            .as_ref()
            .filter(|(id, _)| *id == leader)
            .map(|(_, addr)| addr.clone())
    }

    /// A client for the node that holds an attempt's output.
    pub(super) fn holder_client(&self, holder: NodeId) -> Result<DroverClient<Channel>, Status> {
        let addr = self
            .node
            .status()
            .membership
            .peer(holder)
            .map(|p| p.api_addr.clone())
            .ok_or_else(|| Status::unavailable(format!("node {holder} is not a member")))?;
        self.client(holder, &addr)
    }
}
