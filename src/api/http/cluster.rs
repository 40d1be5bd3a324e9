//! `/v1/cluster` and `/v1/nodes`: status, the node table, drain.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use futures::StreamExt as _;

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
    /// This node's own view (its role, its indexes, its disk, what it
    /// knows of the others) instead of the leader's.
    pub local: bool,
    /// The leader's view: the default; kept so older callers still work.
    pub leader_view: bool,
}

/// The cluster as the leader sees it (asked through this node): members
/// with their replication progress and last contact, term, indexes. While
/// no leader answers, and with `?local=true`, this node's own view (a
/// follower leaves `match_index` null and knows only the leader's last
/// contact); `node_id` and `role` say whose view it is.
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
    Q(ViewQuery { local, .. }): Q<ViewQuery>,
) -> Result<Response, Problem> {
    let (_, answer) = view(&svc, &auth, local).await?;
    let (metadata, message, _) = answer.into_parts();
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
            headers(("X-Drover-Leader" = String, description = "The leader's REST address (host:port), once this node knows it"), ("X-Drover-Leader-Grpc" = String, description = "The leader's gRPC API address"))),
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

/// How often the cluster stream looks at the cluster.
const CLUSTER_PUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How long the stream waits for the leader's view before it sends this
/// node's own (a leader that just died must not stall the stream).
const LEADER_VIEW_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// One `cluster` event of [`cluster_events`].
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ClusterEventJson {
    /// True when `status` is the leader's view (match indexes and last
    /// contacts of every member); false when no leader answered and this
    /// is the streaming node's own view.
    pub leader_view: bool,
    pub status: ClusterStatusJson,
    /// The node table as the streaming node has applied it.
    pub nodes: Vec<NodeJson>,
}

/// The cluster as Server-Sent Events: one `cluster` event at once, then
/// another whenever it changed, looked at every second: the leader's view
/// of every member (or, while no leader answers, this node's own, marked
/// `leader_view: false`) and the node table. The dashboard's overview
/// follows it instead of polling. An `error` event (a problem) ends it.
#[utoipa::path(
    get, path = "/v1/cluster/events", tag = "cluster",
    responses(
        (status = 200, description = "A live SSE stream of `cluster` events (data: ClusterEventJson)", content_type = "text/event-stream", body = String),
        (status = "4XX", description = "Not allowed to read the cluster", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn cluster_events(
    axum::extract::State(state): axum::extract::State<super::AppState>,
    auth: Auth,
) -> Result<Response, Problem> {
    use axum::response::sse::{KeepAlive, Sse};
    use axum::response::IntoResponse;
    let svc: Svc = axum::extract::FromRef::from_ref(&state);
    // Refused callers get a problem, not a stream.
    let first = cluster_event(&svc, &auth).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(super::jobs::SSE_BUFFER);
    let mut closing = state.closing.clone();
    tokio::spawn(async move {
        let pump = async {
            let mut last = String::new();
            let mut next = Ok(first);
            loop {
                match next {
                    Ok(event) => {
                        let text = serde_json::to_string(&event).unwrap_or_default();
                        if text != last {
                            let sse = axum::response::sse::Event::default()
                                .event("cluster")
                                .data(text.clone());
                            if tx.send(sse).await.is_err() {
                                return;
                            }
                            last = text;
                        }
                    }
                    Err(problem) => {
                        let _ = tx.send(super::events::event_json("error", &problem)).await;
                        return;
                    }
                }
                tokio::time::sleep(CLUSTER_PUSH_EVERY).await;
                next = cluster_event(&svc, &auth).await;
            }
        };
        tokio::select! {
            _ = pump => {}
            _ = tx.closed() => {}
            _ = closing.wait_for(|closing| *closing) => {}
        }
    });
    let events =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The leader's view (asked through this node) unless `local`; this
/// node's own when no leader answers within [`LEADER_VIEW_WAIT`] (an
/// election, no quorum, a leader that just died). True when it is the
/// leader's.
async fn view(
    svc: &Svc,
    auth: &Auth,
    local: bool,
) -> Result<(bool, tonic::Response<pb::ClusterStatus>), Problem> {
    let ask = |leader_view| {
        svc.get_cluster_status(auth.request(pb::GetClusterStatusRequest { leader_view }))
    };
    if !local {
        match tokio::time::timeout(LEADER_VIEW_WAIT, ask(true)).await {
            Ok(Ok(answer)) if answer.get_ref().role == "leader" => return Ok((true, answer)),
            Ok(Err(status)) if status.code() != tonic::Code::Unavailable => {
                return Err(status.into())
            }
            _ => {}
        }
    }
    Ok((false, ask(false).await?))
}

/// The leader's view if it answers in time, else this node's own; with
/// the node table.
async fn cluster_event(svc: &Svc, auth: &Auth) -> Result<ClusterEventJson, Problem> {
    let (leader_view, status) = view(svc, auth, false).await?;
    let nodes = svc
        .list_nodes(auth.request(pb::ListNodesRequest { consistent: false }))
        .await?
        .into_inner();
    Ok(ClusterEventJson {
        leader_view,
        status: ClusterStatusJson::from(status.get_ref()),
        nodes: nodes.nodes.iter().map(NodeJson::from).collect(),
    })
}
