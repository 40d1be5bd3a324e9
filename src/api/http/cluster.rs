//! `/v1/cluster` and `/v1/nodes`: status, the node table, drain.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::extract::{Auth, OptionalBody, ReadQuery, P, Q};
use super::problem::Problem;
use super::{respond, Svc};
use crate::api::json::{ClusterStatusJson, DrainJson, NodeJson, NodeListJson};
use crate::proto::v1 as pb;
use crate::proto::v1::drover_server::Drover as _;

/// Which node's view `/v1/cluster` answers with.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, default)]
#[into_params(parameter_in = Query)]
pub struct ViewQuery {
    /// The leader's view (asked through this node): every member's
    /// replication progress and last contact. Default: this node's own.
    pub leader_view: bool,
}

/// This node's view of the cluster: members, role, term, indexes, leader
/// (`?leader_view=true`: the leader's).
#[utoipa::path(
    get, path = "/v1/cluster", tag = "cluster",
    params(ViewQuery),
    responses(
        (status = 200, description = "Cluster status", body = ClusterStatusJson),
        (status = "5XX", description = "Internal error", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn cluster_status(
    State(svc): State<Svc>,
    auth: Auth,
    Q(ViewQuery { leader_view }): Q<ViewQuery>,
) -> Result<Response, Problem> {
    let request = pb::GetClusterStatusRequest { leader_view };
    let (metadata, message, _) = svc
        .get_cluster_status(auth.request(request))
        .await?
        .into_parts();
    Ok(respond(
        StatusCode::OK,
        &metadata,
        &ClusterStatusJson::from(&message),
    ))
}

/// The node table with each node's use.
#[utoipa::path(
    get, path = "/v1/nodes", tag = "cluster",
    params(ReadQuery),
    responses(
        (status = 200, description = "Every node", body = NodeListJson),
        (status = "4XX", description = "Bad query", body = Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "No quorum for a consistent read, …", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn list_nodes(
    State(svc): State<Svc>,
    auth: Auth,
    Q(query): Q<ReadQuery>,
) -> Result<Response, Problem> {
    let request = pb::ListNodesRequest {
        consistent: query.consistent,
    };
    let (metadata, message, _) = svc.list_nodes(auth.request(request)).await?.into_parts();
    let nodes = NodeListJson {
        nodes: message.nodes.iter().map(NodeJson::from).collect(),
    };
    Ok(respond(StatusCode::OK, &metadata, &nodes))
}

/// Start (or with `disable`, end) draining a node: no new work; at the
/// deadline, jobs still running there are stopped and re-queued.
#[utoipa::path(
    post, path = "/v1/nodes/{id}/drain", tag = "cluster",
    params(("id" = u64, Path, description = "Node id")),
    request_body(content = DrainJson, content_type = "application/json", description = "Optional"),
    responses(
        (status = 200, description = "The node after the change was committed", body = NodeJson,
            headers(("X-Drover-Leader" = String, description = "The leader's API address"))),
        (status = "4XX", description = "Bad id, unknown node", body = Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "No leader, timeout, …", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn drain_node(
    State(svc): State<Svc>,
    auth: Auth,
    P(id): P<u64>,
    OptionalBody(body): OptionalBody<DrainJson>,
) -> Result<Response, Problem> {
    let request = pb::DrainNodeRequest {
        id,
        disable: body.disable.unwrap_or(false),
        deadline_ms: body.deadline_ms.unwrap_or(0),
    };
    let (metadata, message, _) = svc.drain_node(auth.request(request)).await?.into_parts();
    let node = message
        .node
        .ok_or_else(|| Problem::internal("the service answered without the node"))?;
    Ok(respond(StatusCode::OK, &metadata, &NodeJson::from(&node)))
}
