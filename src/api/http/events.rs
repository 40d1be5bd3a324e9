//! `GET /v1/events`: the job event log as Server-Sent Events, an adapter
//! over the gRPC WatchJobs stream (as every route is over its method).

use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{AppState, Auth, Problem, Q};
use crate::api::json::JobEventJson;
use crate::proto::v1 as pb;
use crate::proto::v1::drover_server::Drover as _;
use axum::http::header;
use serde::Serialize;

/// Where a watch starts and which job it follows.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Events of the entries after this log index (the `index` of a job
    /// list); 0 or missing = from now. A `Last-Event-ID` header (sent by a
    /// reconnecting EventSource) takes precedence.
    pub from_index: u64,
    /// Only this job's events (a job id); missing = every job.
    pub job_id: String,
}

/// Job state changes as Server-Sent Events: `event: job` with a job event
/// as JSON (`index`, `kind`, `job_id`, `state`, `attempt`, `node`, `reason`,
/// `at_ms`, `last_in_entry`), in log order, first those of every entry after
/// `from_index`, then live. The last event of each entry carries `id:` its
/// index, so a reconnecting client resumes with `Last-Event-ID` and misses
/// nothing. List first and watch from the list's `index`. 410
/// (`out-of-range`) when this node no longer holds the events after that
/// index: list again and watch from the new index; mid-stream (the watcher
/// fell too far behind, the node installed a snapshot) the same problem
/// comes as one `event: error`, which ends the stream.
#[utoipa::path(
    get, path = "/v1/events", tag = "jobs",
    params(EventsQuery),
    responses(
        (status = 200, description = "A live SSE stream of `job` events", content_type = "text/event-stream", body = String),
        (status = 410, description = "The events after `from_index` are no longer held here: list again", body = Problem, content_type = "application/problem+json"),
        (status = "4XX", description = "Bad job id, too many watches", body = Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "The node stopped", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn job_events(
    State(state): State<AppState>,
    auth: Auth,
    Q(query): Q<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let request = pb::WatchJobsRequest {
        from_index: last_event_id(&headers).unwrap_or(query.from_index),
        job_id: query.job_id,
    };
    // A bad id or a compacted index is answered as a problem before the
    // stream starts.
    let events = state
        .service
        .watch_jobs(auth.request(request))
        .await?
        .into_inner();
    let mut closing = state.closing.clone();
    let closed = async move {
        let _ = closing.wait_for(|closing| *closing).await;
    };
    // The gRPC stream ends after its one error, so this does too. A slow
    // client is read no faster than it consumes (see `event_stream`).
    let events = events
        .map(|item| {
            Ok::<Event, Infallible>(match item {
                Ok(event) => {
                    let sse = event_json("job", &JobEventJson::from(&event));
                    match event.last_in_entry {
                        true => sse.id(event.index.to_string()),
                        false => sse,
                    }
                }
                Err(status) => event_json("error", &Problem::from(status)),
            })
        })
        .take_until(closed);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

pub(super) fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// A reconnecting EventSource resumes after the last chunk it saw.
pub(super) fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// One SSE event carrying `value` as JSON.
pub(super) fn event_json<T: Serialize>(name: &str, value: &T) -> Event {
    let data = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_string());
    Event::default().event(name).data(data)
}
