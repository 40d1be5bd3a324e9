//! The cluster: status, membership (add, remove, hand over leadership) and
//! the node table (list, drain).

use std::time::Duration;

use tonic::{Request, Response, Status};

use super::{raft_status, DroverService, LEADER_WAIT};

use crate::acl::Action;
use crate::api::convert::node_to_proto;
use crate::jobs::{Command, Drain};
use crate::node::metrics::JobCounts;
use crate::node::writes::Change;
use crate::node::StorageReport;
use crate::node::{now_ms, Node, RaftStatus};
use crate::proto::v1 as pb;
use crate::raft::{ConfChange, Membership, NodeId, PeerInfo, Role};

/// How long AddPeer waits for a learner to catch up before promoting it.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(120);

/// Adds `req.id` as a learner (unless it is one already), waits for it to
/// catch up with the log, then promotes it, the safe order: a new voter that
/// lags would otherwise stall commits until it caught up.
pub(super) async fn add_peer_here(
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
        last = node
            .change_members(ConfChange::AddLearner { id: req.id, info })
            .await
            .map_err(raft_status)?;
    }
    if req.learner_only {
        return membership_response(node, last).await;
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
    let membership = node
        .change_members(ConfChange::Promote { id })
        .await
        .map_err(raft_status)?;
    membership_response(node, membership).await
}

/// Answers a membership change with the membership it produced. The status
/// the loop publishes can trail the apply by one turn, so wait (briefly) for
/// it to show that membership before reporting progress and leader from it.
pub(super) async fn membership_response(
    node: &Node,
    membership: Option<Membership>,
) -> Result<pb::MembershipResponse, Status> {
    if let Some(membership) = &membership {
        node.wait_status(Duration::from_secs(2), |s| s.membership == *membership)
            .await;
    }
    let mut status = node.status();
    if let Some(membership) = membership {
        status.membership = membership;
    }
    Ok(pb::MembershipResponse {
        members: members_to_proto(node, &status),
        index: status.applied,
    })
}

pub(super) fn members_to_proto(node: &Node, status: &RaftStatus) -> Vec<pb::Member> {
    let member = |id: &NodeId, info: &PeerInfo, suffrage: &str| pb::Member {
        disk_low: node.disk_low(*id),
        id: *id,
        raft_addr: info.raft_addr.clone(),
        api_addr: info.api_addr.clone(),
        suffrage: suffrage.to_string(),
        // Known only where it is tracked: the leader's progress table.
        match_index: match status.role {
            Role::Leader => status.progress.get(id).copied(),
            _ => None,
        },
        is_leader: status.leader == Some(*id),
        // A follower hears only from the leader: what it remembers of the
        // others is from an older term, not news of their health.
        last_contact_ms: status
            .last_contact
            .get(id)
            .filter(|_| *id != status.node_id)
            .filter(|_| status.role == Role::Leader || status.leader == Some(*id))
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

pub(super) fn storage_to_proto(report: &StorageReport) -> pb::StorageStatus {
    pb::StorageStatus {
        state: report.level.as_str().to_string(),
        free_bytes: report.free_bytes,
        reserve_bytes: report.reserve_bytes,
        total_bytes: report.total_bytes,
        path: report.path.display().to_string(),
    }
}

pub(super) fn job_counts_to_proto(
    counts: &JobCounts,
    by_state: &[(crate::jobs::JobState, u64)],
) -> pb::JobCounts {
    pb::JobCounts {
        total: counts.total,
        queued: counts.queued,
        active: counts.total.saturating_sub(counts.queued + counts.finished),
        finished: counts.finished,
        queue_capacity: counts.queue_capacity,
        state_bytes: counts.state_bytes,
        max_state_bytes: counts.max_state_bytes,
        by_state: by_state
            .iter()
            .map(|(state, n)| (state.as_str().to_string(), *n))
            .collect(),
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

/// The node table with each node's use, as of the local table.
pub(super) fn node_infos(node: &Node) -> Result<Vec<pb::NodeInfo>, Status> {
    let records = node.node_records().map_err(raft_status)?;
    let reserved = node.reserved_by_node().map_err(raft_status)?;
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
pub(super) fn is_host_port(addr: &str) -> bool {
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

impl DroverService {
    pub(super) async fn status(
        &self,
        request: Request<pb::GetClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        self.authorize(&request, Action::ReadCluster)?;
        let forwarded = request.metadata().contains_key(super::FORWARDED);
        if request.get_ref().leader_view && !forwarded && !self.node.is_leader() {
            if let Some(mut client) = self.route(&request).await? {
                let mut forward = Request::new(pb::GetClusterStatusRequest { leader_view: true });
                forward.metadata_mut().insert(
                    super::FORWARDED,
                    tonic::metadata::MetadataValue::from_static("1"),
                );
                crate::api::auth::forward_identity(
                    &self.node,
                    request.metadata(),
                    forward.metadata_mut(),
                );
                return client.get_cluster_status(forward).await;
            }
        }
        Ok(Response::new(self.cluster_status()))
    }

    pub(super) async fn add_member(
        &self,
        request: Request<pb::AddPeerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.authorize(&request, Action::OperateRaft)?;
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

    pub(super) async fn remove_member(
        &self,
        request: Request<pb::RemovePeerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.authorize(&request, Action::OperateRaft)?;
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
                    let membership = node
                        .change_members(ConfChange::Remove { id: req.id })
                        .await
                        .map_err(raft_status)?;
                    membership_response(&node, membership).await
                }
            },
            |mut client, req| async move { client.remove_peer(req).await },
        )
        .await
    }

    pub(super) async fn nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.authorize(&request, Action::ReadCluster)?;
        self.consistent_read(request.get_ref().consistent).await?;
        let nodes = node_infos(&self.node)?;
        Ok(Response::new(pb::ListNodesResponse { nodes }))
    }

    pub(super) async fn drain(
        &self,
        request: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<pb::DrainNodeResponse>, Status> {
        self.authorize(&request, Action::OperateNodes)?;
        self.write(
            request,
            move |node, req| async move {
                let known = |node: &Node| {
                    node.node_record(req.id)
                        .map(|n| n.is_some())
                        .map_err(raft_status)
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
                match node.change_node(command).await.map_err(raft_status)? {
                    Change::Done(_) => {
                        let info = node_infos(&node)?.into_iter().find(|n| n.id == req.id);
                        Ok(pb::DrainNodeResponse { node: info })
                    }
                    Change::Refused(_) => Err(Status::not_found(format!(
                        "no node {} in the node table (it has never heartbeated)",
                        req.id
                    ))),
                }
            },
            |mut client, req| async move { client.drain_node(req).await },
        )
        .await
    }

    pub(super) async fn hand_leadership_to(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        self.authorize(&request, Action::OperateRaft)?;
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
}
