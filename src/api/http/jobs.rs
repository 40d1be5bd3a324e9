//! `/v1/jobs`: submit, get, list, stop, and output (JSON pages or SSE).

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use utoipa::IntoParams;

use super::events::{accepts_event_stream, event_json, last_event_id};
use super::extract::{Auth, Body, ReadQuery, P, Q};
use super::problem::Problem;
use super::{respond, AppState, Svc};
use crate::api::json::{JobJson, JobPageJson, OutputChunkJson, OutputJson, SubmitJobJson};
use crate::proto::v1 as pb;
use crate::proto::v1::drover_server::Drover as _;

/// Paging through the job list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Jobs per page: 0 or missing = 100, at most 1000.
    pub page_size: u32,
    /// `next_page_token` of the previous page; missing for the first page.
    pub page_token: String,
    /// Linearizable read (confirmed with a quorum first).
    pub consistent: bool,
    /// Only jobs in these states, comma-separated (`QUEUED,RUNNING`).
    pub state: String,
    /// Only jobs with all these labels, comma-separated `KEY=VALUE` pairs.
    pub label: String,
    /// Only jobs whose latest attempt is on this node; 0 = any.
    pub node: u64,
    /// Only jobs submitted with this token (accessor id). A submitter token
    /// always sees only its own.
    pub owner: String,
    /// Newest first (default: oldest first, in submission order).
    pub newest_first: bool,
    /// Only jobs whose id starts with this (case-insensitive).
    pub id_prefix: String,
}

/// Which output to fetch, and whether to follow it live.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
#[into_params(parameter_in = Query)]
pub struct OutputQuery {
    /// Attempt number; 0 or missing = the latest.
    pub attempt: u32,
    /// Only chunks after this seq (also taken from SSE `Last-Event-ID`).
    pub after_seq: Option<u64>,
    /// Most bytes in one JSON answer: 0 = 1 MiB, at most 4 MiB.
    pub max_bytes: u32,
    /// Answer with a Server-Sent Events stream that lasts until the attempt
    /// ends (also chosen by `Accept: text/event-stream`).
    pub follow: bool,
}

pub(super) fn job_of(job: Option<pb::Job>) -> Result<pb::Job, Problem> {
    job.ok_or_else(|| Problem::internal("the service answered without a job"))
}

/// Submit a job. Answered once the submission is committed by a quorum and
/// applied; a follower forwards it to the leader.
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs",
    request_body(content = SubmitJobJson, content_type = "application/json"),
    responses(
        (status = 201, description = "The job, committed", body = JobJson,
            headers(("X-Drover-Leader" = String, description = "The leader's REST address (host:port), once this node knows it"), ("X-Drover-Leader-Grpc" = String, description = "The leader's gRPC API address"),
                    ("Location" = String, description = "/v1/jobs/{id}"))),
        (status = "4XX", description = "Invalid input, full queue, …", body = Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "No leader, timeout, the disk below its reserve (507 insufficient-storage), …", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn submit_job(
    State(svc): State<Svc>,
    auth: Auth,
    Body(body): Body<SubmitJobJson>,
) -> Result<Response, Problem> {
    let request = pb::SubmitJobRequest {
        spec: Some(body.into()),
    };
    let (metadata, message, _) = svc.submit_job(auth.request(request)).await?.into_parts();
    let job = JobJson::from(&job_of(message.job)?);
    let mut response = respond(StatusCode::CREATED, &metadata, &job);
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// One job with every attempt.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id (ULID)"), ReadQuery),
    responses(
        (status = 200, description = "The job", body = JobJson),
        (status = "4XX", description = "Bad id, unknown job", body = Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "No quorum for a consistent read, …", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_job(
    State(svc): State<Svc>,
    auth: Auth,
    P(id): P<String>,
    Q(query): Q<ReadQuery>,
) -> Result<Response, Problem> {
    let request = pb::GetJobRequest {
        id,
        consistent: query.consistent,
    };
    let (metadata, message, _) = svc.get_job(auth.request(request)).await?.into_parts();
    Ok(respond(
        StatusCode::OK,
        &metadata,
        &JobJson::from(&job_of(message.job)?),
    ))
}

/// A page of jobs in submission order.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "One page", body = JobPageJson),
        (status = "4XX", description = "Bad page size or token", body = Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "No quorum for a consistent read, …", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn list_jobs(
    State(svc): State<Svc>,
    auth: Auth,
    Q(query): Q<ListQuery>,
) -> Result<Response, Problem> {
    let split = |list: &str| -> Vec<String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let labels = split(&query.label)
        .into_iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    Problem::from(tonic::Status::invalid_argument(format!(
                        "label {pair:?}: expected KEY=VALUE"
                    )))
                })
        })
        .collect::<Result<_, _>>()?;
    let request = pb::ListJobsRequest {
        page_size: query.page_size,
        page_token: query.page_token,
        consistent: query.consistent,
        states: split(&query.state),
        labels,
        node: query.node,
        owner: query.owner,
        newest_first: query.newest_first,
        id_prefix: query.id_prefix,
    };
    let (metadata, message, _) = svc.list_jobs(auth.request(request)).await?.into_parts();
    Ok(respond(
        StatusCode::OK,
        &metadata,
        &JobPageJson::from(&message),
    ))
}

/// Stop a job in any state (idempotent): a running attempt is killed
/// (SIGTERM, grace, SIGKILL) and the job ends CANCELLED.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/stop", tag = "jobs",
    params(("id" = String, Path, description = "Job id (ULID)")),
    responses(
        (status = 200, description = "The job after the stop was committed", body = JobJson,
            headers(("X-Drover-Leader" = String, description = "The leader's REST address (host:port), once this node knows it"), ("X-Drover-Leader-Grpc" = String, description = "The leader's gRPC API address"))),
        (status = "4XX", description = "Bad id, unknown job", body = Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "No leader, timeout, …", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn stop_job(
    State(svc): State<Svc>,
    auth: Auth,
    P(id): P<String>,
) -> Result<Response, Problem> {
    let (metadata, message, _) = svc
        .stop_job(auth.request(pb::StopJobRequest { id }))
        .await?
        .into_parts();
    Ok(respond(
        StatusCode::OK,
        &metadata,
        &JobJson::from(&job_of(message.job)?),
    ))
}

/// The output of one attempt. As JSON: what is stored so far. With
/// `?follow=true` or `Accept: text/event-stream`: a Server-Sent Events
/// stream of `chunk` events (data: an output chunk as JSON, id: its seq),
/// live until the attempt ends, then one `end` event (data: `{"attempt":
/// N}`). A failure mid-stream is one `error` event (data: a problem) and
/// the end of the stream.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/output", tag = "jobs",
    params(("id" = String, Path, description = "Job id (ULID)"), OutputQuery),
    responses(
        (status = 200, description = "Stored output, or a live SSE stream", content(
            (OutputJson = "application/json"),
            (String = "text/event-stream"),
        )),
        (status = "4XX", description = "Bad id, unknown job or attempt", body = Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "Internal error", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn job_output(
    State(state): State<AppState>,
    auth: Auth,
    P(id): P<String>,
    Q(query): Q<OutputQuery>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    if query.follow || accepts_event_stream(&headers) {
        let after_seq = query.after_seq.or_else(|| last_event_id(&headers));
        let request = pb::StreamJobOutputRequest {
            id,
            attempt: query.attempt,
            follow: true,
            after_seq,
        };
        // Bad ids and unknown jobs are answered as problems before the
        // stream starts; the stream itself may wait long for placement.
        let check = pb::GetJobRequest {
            id: request.id.clone(),
            consistent: false,
        };
        state.service.get_job(auth.request(check)).await?;
        return Ok(sse_of(state, auth, request).into_response());
    }
    let request = pb::GetJobOutputRequest {
        id,
        attempt: query.attempt,
        after_seq: query.after_seq,
        max_bytes: query.max_bytes,
    };
    let (metadata, message, _) = state
        .service
        .get_job_output(auth.request(request))
        .await?
        .into_parts();
    Ok(respond(
        StatusCode::OK,
        &metadata,
        &OutputJson::from(&message),
    ))
}

/// The gRPC output stream as SSE. Headers go out at once; a task calls
/// the service (which may first wait for the job to be placed) and pumps
/// chunks through a bounded channel, so a slow client holds at most
/// [`SSE_BUFFER`] events here. The task ends when the client goes away, or
/// at shutdown, without an `end` event: the attempt has not ended, and the
/// client should reconnect (to another node) with `Last-Event-ID`.
pub(super) fn sse_of(
    state: AppState,
    auth: Auth,
    request: pb::StreamJobOutputRequest,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(SSE_BUFFER);
    let AppState {
        service,
        mut closing,
    } = state;
    tokio::spawn(async move {
        let pump = async {
            let mut last_attempt = request.attempt;
            let job_id = request.id.clone();
            let call = service.stream_job_output(auth.request(request));
            let mut chunks = match call.await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    let _ = tx.send(event_json("error", &Problem::from(status))).await;
                    return;
                }
            };
            while let Some(item) = chunks.next().await {
                let event = match item {
                    Ok(chunk) => {
                        last_attempt = chunk.attempt;
                        event_json("chunk", &OutputChunkJson::from(&chunk))
                            .id(chunk.seq.to_string())
                    }
                    Err(status) => {
                        let _ = tx.send(event_json("error", &Problem::from(status))).await;
                        return;
                    }
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            if last_attempt == 0 {
                // No chunk named it: the latest attempt is the one followed.
                let get = pb::GetJobRequest {
                    id: job_id,
                    consistent: false,
                };
                if let Ok(response) = service.get_job(auth.request(get)).await {
                    let job = response.into_inner().job.unwrap_or_default();
                    last_attempt = job.attempts.last().map_or(0, |a| a.number);
                }
            }
            let end = serde_json::json!({ "attempt": last_attempt });
            let _ = tx.send(event_json("end", &end)).await;
        };
        tokio::select! {
            _ = pump => {}
            _ = tx.closed() => {} // the client went away
            _ = closing.wait_for(|closing| *closing) => {}
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok))
        .keep_alive(KeepAlive::default())
}

/// SSE events buffered per client before the producer waits for it.
pub(super) const SSE_BUFFER: usize = 16;
