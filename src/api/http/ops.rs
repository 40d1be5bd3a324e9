//! Health, readiness, metrics and the OpenAPI document: probes and
//! scrapers call them without a token.

use super::problem::Problem;
use super::{openapi, Svc};
use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::problem::*;

/// `/v1/ready` answers 503 while this node's applied index trails its
/// commit index by more than this many entries (catching up).
pub(super) const READY_MAX_LAG: u64 = 1000;

/// `GET /v1/health`: the process is up and serving HTTP.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthJson {
    /// Always "ok".
    pub status: String,
}

/// `GET /v1/ready`: this node knows a leader and has applied the log.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadyJson {
    /// Always true (a node that is not ready answers 503 with a problem).
    pub ready: bool,
    /// This node.
    pub node_id: u64,
    /// The leader this node knows.
    pub leader_id: u64,
    /// Highest log index this node knows committed.
    pub commit_index: u64,
    /// Highest log index this node has applied to its table.
    pub applied_index: u64,
}

/// `GET /`: a browser is sent on to the dashboard (302 to `/ui/`); the
/// body says where everything is, for a person or a tool that knows only
/// the node's address and does not follow redirects.
#[utoipa::path(
    get, path = "/", tag = "ops", security(()),
    responses((status = 302, description = "To the dashboard (`Location: /ui/`); the body says where everything is", content_type = "application/json", body = Object))
)]
pub(super) async fn index() -> Response {
    let paths = [
        ("ui", super::ui::UI_PATH),
        ("api", "/v1"),
        ("openapi", "/v1/openapi.json"),
        ("health", "/v1/health"),
        ("ready", "/v1/ready"),
        ("metrics", "/metrics"),
    ];
    let mut index: serde_json::Map<String, serde_json::Value> = paths
        .into_iter()
        .map(|(name, path)| (name.to_string(), path.into()))
        .collect();
    index.insert("name".into(), "drover".into());
    index.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    (
        StatusCode::FOUND,
        [(
            header::LOCATION,
            HeaderValue::from_static(super::ui::UI_PATH),
        )],
        Json(serde_json::Value::from(index)),
    )
        .into_response()
}

/// Liveness: 200 while the process serves HTTP, whatever the cluster does.
#[utoipa::path(
    get, path = "/v1/health", tag = "ops", security(()),
    responses((status = 200, description = "The process is up", body = HealthJson))
)]
pub(super) async fn health() -> Json<HealthJson> {
    Json(HealthJson {
        status: "ok".into(),
    })
}

/// Readiness: 200 once this node knows a leader and has applied the log
/// (within [`READY_MAX_LAG`] entries of its commit index) and its disk is
/// above its free-space reserve, else 503.
#[utoipa::path(
    get, path = "/v1/ready", tag = "ops", security(()),
    responses(
        (status = 200, description = "Ready to serve", body = ReadyJson),
        (status = 503, description = "No leader known, still catching up, or the disk below its reserve", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn ready(State(svc): State<Svc>) -> Result<Response, Problem> {
    // Probes carry no token: readiness reads the status directly.
    let status = svc.cluster_status();
    let unavailable = |detail: String| {
        let (http, slug, title) = problem_for_code(tonic::Code::Unavailable);
        Problem::new(http, slug, title, detail)
    };
    if status.leader_id == 0 {
        return Err(unavailable(format!(
            "node {} knows no leader (election in progress or no quorum)",
            status.node_id
        )));
    }
    if let Some(disk) = status.storage.as_ref().filter(|d| d.state != "ok") {
        // Not ready for new work: a load balancer should send it elsewhere.
        return Err(unavailable(format!(
            "node {}: the disk holding {} is {} ({} bytes free, reserve {} bytes): it refuses new \
             writes until space is freed there",
            status.node_id,
            disk.path,
            if disk.state == "low" {
                "below its free-space reserve"
            } else {
                "nearly full"
            },
            disk.free_bytes,
            disk.reserve_bytes
        )));
    }
    let lag = status.commit_index.saturating_sub(status.applied_index);
    if status.applied_index == 0 || lag > READY_MAX_LAG {
        return Err(unavailable(format!(
            "node {} is catching up: applied {} of {} committed entries",
            status.node_id, status.applied_index, status.commit_index
        )));
    }
    let body = ReadyJson {
        ready: true,
        node_id: status.node_id,
        leader_id: status.leader_id,
        commit_index: status.commit_index,
        applied_index: status.applied_index,
    };
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// Prometheus metrics of this node (OpenMetrics text). Served without
/// authentication, like the probes: scrapers carry no token, and the values
/// are counts and indexes, never job contents.
#[utoipa::path(
    get, path = "/metrics", tag = "ops", security(()),
    responses((
        status = 200,
        description = "Every metric of this node (see the README's Observability section)",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8",
        body = String
    ))
)]
pub(super) async fn metrics(State(svc): State<Svc>) -> Result<Response, Problem> {
    match svc.render_metrics() {
        Ok(text) => Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::node::metrics::CONTENT_TYPE),
            )],
            text,
        )
            .into_response()),
        Err(e) => Err(Problem::internal(format!("cannot render the metrics: {e}"))),
    }
}

/// This API's OpenAPI 3 document, generated from the handlers.
#[utoipa::path(
    get, path = "/v1/openapi.json", tag = "ops", security(()),
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json", body = Object))
)]
pub(super) async fn openapi_json() -> Result<Response, Problem> {
    static DOCUMENT: OnceLock<Result<String, String>> = OnceLock::new();
    let document = DOCUMENT.get_or_init(|| openapi().to_json().map_err(|e| e.to_string()));
    match document {
        Ok(text) => Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            text.clone(),
        )
            .into_response()),
        Err(e) => Err(Problem::internal(format!(
            "cannot render the OpenAPI document: {e}"
        ))),
    }
}
