//! The REST API under `/v1`: a thin adapter over the gRPC service.
//!
//! Every route turns its JSON body and query into the `drover.v1` request
//! message, calls the same [`DroverService`] method the gRPC front end
//! serves (in process, one shared instance), and turns the response, or the
//! `tonic::Status`, into HTTP. No operation is implemented here, so REST and
//! gRPC cannot disagree on validation, leader forwarding or errors.
//!
//! Errors are `application/problem+json` (RFC 9457) with a stable `type` per
//! gRPC code ([`problem_for_code`]). The OpenAPI document is generated from
//! the handlers' annotations, and the router is built from the same
//! annotations, so the document covers every route by construction.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::grpc::{DroverService, LEADER_ADDR};
use super::json::{
    ClusterStatusJson, CreateTokenJson, DrainJson, JobJson, JobPageJson, NodeJson, NodeListJson,
    OutputChunkJson, OutputJson, RevokedTokenJson, SubmitJobJson, TokenJson, TokenListJson,
    TokenSecretJson,
};
use crate::proto::v1 as pb;
use crate::proto::v1::drover_server::Drover as _;

mod events;

/// Largest request body accepted: a job spec is far smaller, and the bound
/// keeps one client from making the node buffer arbitrary amounts.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Bound on a request's header block (HTTP/1 read buffer, HTTP/2 header
/// list). hyper answers 431 beyond it.
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// A client that has not sent its headers within this time is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight requests (open SSE streams never
/// finish on their own) before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// SSE events buffered per client before the producer waits for it.
const SSE_BUFFER: usize = 16;
/// `/v1/ready` answers 503 while this node's applied index trails its
/// commit index by more than this many entries (catching up).
const READY_MAX_LAG: u64 = 1000;
/// Response header carrying the leader's API address (from the gRPC
/// response metadata `x-drover-leader`).
pub const LEADER_HEADER: &str = "x-drover-leader";
/// Prefix of every problem `type`.
pub const PROBLEM_BASE: &str = "https://drover.dev/problems/";

/// The one gRPC service instance every route calls.
type Svc = Arc<DroverService>;

/// What handlers share: the service, and a flag raised at shutdown so open
/// SSE streams end at once instead of holding shutdown for its full grace.
#[derive(Clone)]
pub struct AppState {
    service: Svc,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl axum::extract::FromRef<AppState> for Svc {
    fn from_ref(state: &AppState) -> Svc {
        state.service.clone()
    }
}

// ---------------------------------------------------------------------------
// Problems (RFC 9457)
// ---------------------------------------------------------------------------

/// An error as `application/problem+json`. `type` is stable per kind of
/// error (one per gRPC code, plus HTTP-only ones like payload-too-large), so
/// clients branch on it rather than on `detail`, which is for humans.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// `https://drover.dev/problems/<kind>`, e.g. `.../invalid-argument`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code, repeated.
    pub status: u16,
    /// What went wrong in this case (the gRPC status message).
    pub detail: String,
}

impl Problem {
    /// A problem of kind `slug` with status and title.
    fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            problem_type: format!("{PROBLEM_BASE}{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }

    fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            detail,
        )
    }

    /// An extractor's rejection (bad JSON, wrong content type, body too
    /// large, bad query or path), never axum's plain-text default.
    fn from_rejection(status: StatusCode, detail: String) -> Problem {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
                status,
                "payload-too-large",
                "Request body too large",
                format!("{detail} (the limit is {MAX_BODY_BYTES} bytes)"),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
                status,
                "unsupported-media-type",
                "Unsupported media type",
                detail,
            ),
            s if s.is_server_error() => Problem::internal(detail),
            // 400 and axum's 422 for well-formed JSON of the wrong shape:
            // both are invalid input, as gRPC's INVALID_ARGUMENT.
            _ => {
                let (status, slug, title) = problem_for_code(tonic::Code::InvalidArgument);
                Problem::new(status, slug, title, detail)
            }
        }
    }
}

/// The HTTP status, problem slug and title for a gRPC code. The slugs are
/// part of the API: they never change meaning.
pub fn problem_for_code(code: tonic::Code) -> (StatusCode, &'static str, &'static str) {
    use tonic::Code;
    match code {
        Code::InvalidArgument => (
            StatusCode::BAD_REQUEST,
            "invalid-argument",
            "Invalid argument",
        ),
        // A watch from an index whose events this node no longer holds.
        Code::OutOfRange => (StatusCode::GONE, "out-of-range", "Out of range; list again"),
        Code::NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found"),
        Code::AlreadyExists => (StatusCode::CONFLICT, "already-exists", "Already exists"),
        Code::FailedPrecondition => (
            StatusCode::CONFLICT,
            "failed-precondition",
            "Failed precondition",
        ),
        Code::Aborted => (StatusCode::CONFLICT, "aborted", "Aborted; retry"),
        Code::ResourceExhausted => (
            StatusCode::TOO_MANY_REQUESTS,
            "resource-exhausted",
            "Resource exhausted",
        ),
        Code::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Unavailable",
        ),
        Code::DeadlineExceeded => (
            StatusCode::GATEWAY_TIMEOUT,
            "deadline-exceeded",
            "Deadline exceeded",
        ),
        Code::PermissionDenied => (
            StatusCode::FORBIDDEN,
            "permission-denied",
            "Permission denied",
        ),
        Code::Unauthenticated => (
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Unauthenticated",
        ),
        Code::Cancelled => (StatusCode::INTERNAL_SERVER_ERROR, "cancelled", "Cancelled"),
        Code::Unknown => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "unknown",
            "Outcome unknown",
        ),
        Code::Unimplemented => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "unimplemented",
            "Not implemented",
        ),
        Code::DataLoss => (StatusCode::INTERNAL_SERVER_ERROR, "data-loss", "Data loss"),
        Code::Internal | Code::Ok => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
        ),
    }
}

impl From<tonic::Status> for Problem {
    fn from(status: tonic::Status) -> Problem {
        if status.code() == tonic::Code::ResourceExhausted
            && status
                .metadata()
                .contains_key(crate::api::grpc::STORAGE_FULL)
        {
            return Problem::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient-storage",
                "Insufficient storage",
                status.message(),
            );
        }
        let (http, slug, title) = problem_for_code(status.code());
        Problem::new(http, slug, title, status.message())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            )],
            body,
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"drover\""),
            );
        }
        if matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

// ---------------------------------------------------------------------------
// Extractors whose rejections are problems
// ---------------------------------------------------------------------------

/// A JSON request body (`Content-Type: application/json`, unknown fields
/// refused by the target type), rejected as a problem.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Problem> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// Like [`Body`], but a request with no body at all (no content type, no
/// length) gets `T::default()`: for bodies whose every field is optional.
pub struct OptionalBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalBody<T> {
    type Rejection = Problem;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Problem> {
        let headers = req.headers();
        let no_length = headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0");
        let chunked = headers.contains_key(header::TRANSFER_ENCODING);
        if !headers.contains_key(header::CONTENT_TYPE) && no_length && !chunked {
            return Ok(OptionalBody(T::default()));
        }
        Body::<T>::from_request(req, state)
            .await
            .map(|Body(v)| OptionalBody(v))
    }
}

fn json_rejection(rejection: JsonRejection) -> Problem {
    let detail = match &rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "expected a request with `Content-Type: application/json`".to_string()
        }
        other => other.body_text(),
    };
    Problem::from_rejection(rejection.status(), detail)
}

/// Query parameters (unknown ones refused by the target type), rejected as
/// a problem.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Q(v))
            .map_err(|r: QueryRejection| Problem::from_rejection(r.status(), r.body_text()))
    }
}

/// Path parameters, rejected as a problem.
pub struct P<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for P<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| P(v))
            .map_err(|r: PathRejection| Problem::from_rejection(r.status(), r.body_text()))
    }
}

/// The caller's `Authorization` header, handed to the gRPC method as
/// metadata so REST and gRPC make the same access check.
#[derive(Clone, Default)]
pub struct Auth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Auth(parts.headers.get(header::AUTHORIZATION).map(
            |value| {
                // Not representable as metadata (non-visible bytes): passed on
                // as a value the check refuses with a clear message.
                tonic::metadata::MetadataValue::try_from(value.as_bytes())
                    .unwrap_or_else(|_| tonic::metadata::MetadataValue::from_static("invalid"))
            },
        )))
    }
}

impl Auth {
    /// The gRPC request carrying this caller's token.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert(super::auth::AUTHORIZATION, value.clone());
        }
        request
    }
}

// ---------------------------------------------------------------------------
// Query shapes
// ---------------------------------------------------------------------------

/// `?consistent=true` serves the read linearizably (ReadIndex through the
/// leader) instead of from this node's possibly stale table.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// Linearizable read (confirmed with a quorum first).
    pub consistent: bool,
}

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

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

/// A JSON response with the leader's address copied from the gRPC metadata.
fn respond<T: Serialize>(
    status: StatusCode,
    metadata: &tonic::metadata::MetadataMap,
    body: &T,
) -> Response {
    let mut response = (status, Json(body)).into_response();
    let leader = metadata
        .get(LEADER_ADDR)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| HeaderValue::from_str(v).ok());
    if let Some(leader) = leader {
        response.headers_mut().insert(LEADER_HEADER, leader);
    }
    response
}

fn job_of(job: Option<pb::Job>) -> Result<pb::Job, Problem> {
    job.ok_or_else(|| Problem::internal("the service answered without a job"))
}

/// Submit a job. Answered once the submission is committed by a quorum and
/// applied; a follower forwards it to the leader.
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs",
    request_body(content = SubmitJobJson, content_type = "application/json"),
    responses(
        (status = 201, description = "The job, committed", body = JobJson,
            headers(("X-Drover-Leader" = String, description = "The leader's API address"),
                    ("Location" = String, description = "/v1/jobs/{id}"))),
        (status = "4XX", description = "Invalid input, full queue, …", body = Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "No leader, timeout, the disk below its reserve (507 insufficient-storage), …", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn submit_job(
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
async fn get_job(
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
async fn list_jobs(
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
            headers(("X-Drover-Leader" = String, description = "The leader's API address"))),
        (status = "4XX", description = "Bad id, unknown job", body = Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "No leader, timeout, …", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn stop_job(
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
async fn job_output(
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

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// A reconnecting EventSource resumes after the last chunk it saw.
fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// One SSE event carrying `value` as JSON.
fn event_json<T: Serialize>(name: &str, value: &T) -> Event {
    let data = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_string());
    Event::default().event(name).data(data)
}

/// The gRPC output stream as SSE. Headers go out at once; a task calls
/// the service (which may first wait for the job to be placed) and pumps
/// chunks through a bounded channel, so a slow client holds at most
/// [`SSE_BUFFER`] events here. The task ends when the client goes away, or
/// at shutdown, without an `end` event: the attempt has not ended, and the
/// client should reconnect (to another node) with `Last-Event-ID`.
fn sse_of(
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

/// This node's view of the cluster: members, role, term, indexes, leader.
#[utoipa::path(
    get, path = "/v1/cluster", tag = "cluster",
    responses(
        (status = 200, description = "Cluster status", body = ClusterStatusJson),
        (status = "5XX", description = "Internal error", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn cluster_status(State(svc): State<Svc>, auth: Auth) -> Result<Response, Problem> {
    let (metadata, message, _) = svc
        .get_cluster_status(auth.request(pb::GetClusterStatusRequest {}))
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
async fn list_nodes(
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
async fn drain_node(
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

/// Creates the first admin token. Needs no token; works once per cluster
/// (then 409 `failed-precondition`).
#[utoipa::path(
    post, path = "/v1/acl/bootstrap", tag = "acl",
    responses(
        (status = 201, description = "The bootstrap token and its secret (shown once)", body = TokenSecretJson),
        (status = "4XX", description = "Already bootstrapped", body = Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "No leader, timeout, …", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn acl_bootstrap(State(svc): State<Svc>, auth: Auth) -> Result<Response, Problem> {
    let (metadata, message, _) = svc
        .acl_bootstrap(auth.request(pb::AclBootstrapRequest {}))
        .await?
        .into_parts();
    Ok(respond(
        StatusCode::CREATED,
        &metadata,
        &TokenSecretJson::from(&message),
    ))
}

/// Creates a token (admin). The secret is in this response only.
#[utoipa::path(
    post, path = "/v1/acl/tokens", tag = "acl",
    request_body(content = CreateTokenJson, content_type = "application/json"),
    responses(
        (status = 201, description = "The token and its secret (shown once)", body = TokenSecretJson),
        (status = "4XX", description = "Bad name or role, no token, not an admin", body = Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "No leader, timeout, …", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_token(
    State(svc): State<Svc>,
    auth: Auth,
    Body(body): Body<CreateTokenJson>,
) -> Result<Response, Problem> {
    let request = pb::CreateTokenRequest {
        name: body.name,
        role: body.role,
    };
    let (metadata, message, _) = svc.create_token(auth.request(request)).await?.into_parts();
    Ok(respond(
        StatusCode::CREATED,
        &metadata,
        &TokenSecretJson::from(&message),
    ))
}

/// Every token, without secrets (admin).
#[utoipa::path(
    get, path = "/v1/acl/tokens", tag = "acl",
    responses(
        (status = 200, description = "Every token", body = TokenListJson),
        (status = "4XX", description = "No token, not an admin", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_tokens(State(svc): State<Svc>, auth: Auth) -> Result<Response, Problem> {
    let (metadata, message, _) = svc
        .list_tokens(auth.request(pb::ListTokensRequest {}))
        .await?
        .into_parts();
    let list = TokenListJson {
        tokens: message.tokens.iter().map(TokenJson::from).collect(),
    };
    Ok(respond(StatusCode::OK, &metadata, &list))
}

/// Revokes a token (admin): refused on every reachable node once this
/// answers.
#[utoipa::path(
    delete, path = "/v1/acl/tokens/{accessor}", tag = "acl",
    params(("accessor" = String, Path, description = "The token's accessor id")),
    responses(
        (status = 200, description = "The revoked token", body = RevokedTokenJson),
        (status = "4XX", description = "Unknown accessor, no token, not an admin", body = Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "No leader, timeout, …", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn revoke_token(
    State(svc): State<Svc>,
    auth: Auth,
    P(accessor): P<String>,
) -> Result<Response, Problem> {
    let (metadata, message, _) = svc
        .revoke_token(auth.request(pb::RevokeTokenRequest { accessor }))
        .await?
        .into_parts();
    let revoked = RevokedTokenJson {
        token: TokenJson::from(&message.token.unwrap_or_default()),
        unconfirmed_nodes: message.unconfirmed_nodes,
    };
    Ok(respond(StatusCode::OK, &metadata, &revoked))
}

/// The caller's own token (`anonymous` without ACLs and without a token).
#[utoipa::path(
    get, path = "/v1/acl/token/self", tag = "acl",
    responses(
        (status = 200, description = "The caller's token", body = TokenJson),
        (status = 401, description = "No valid token (ACLs on)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn who_am_i(State(svc): State<Svc>, auth: Auth) -> Result<Response, Problem> {
    let (metadata, message, _) = svc
        .who_am_i(auth.request(pb::WhoAmIRequest {}))
        .await?
        .into_parts();
    Ok(respond(
        StatusCode::OK,
        &metadata,
        &TokenJson::from(&message),
    ))
}

/// Liveness: 200 while the process serves HTTP, whatever the cluster does.
#[utoipa::path(
    get, path = "/v1/health", tag = "ops",
    responses((status = 200, description = "The process is up", body = HealthJson))
)]
async fn health() -> Json<HealthJson> {
    Json(HealthJson {
        status: "ok".into(),
    })
}

/// Readiness: 200 once this node knows a leader and has applied the log
/// (within [`READY_MAX_LAG`] entries of its commit index) and its disk is
/// above its free-space reserve, else 503.
#[utoipa::path(
    get, path = "/v1/ready", tag = "ops",
    responses(
        (status = 200, description = "Ready to serve", body = ReadyJson),
        (status = 503, description = "No leader known, still catching up, or the disk below its reserve", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn ready(State(svc): State<Svc>) -> Result<Response, Problem> {
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
    get, path = "/metrics", tag = "ops",
    responses((
        status = 200,
        description = "Every metric of this node (see the README's Observability section)",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8",
        body = String
    ))
)]
async fn metrics(State(svc): State<Svc>) -> Result<Response, Problem> {
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
    get, path = "/v1/openapi.json", tag = "ops",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json", body = Object))
)]
async fn openapi_json() -> Result<Response, Problem> {
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

async fn no_route(uri: axum::http::Uri) -> Problem {
    let (status, slug, title) = problem_for_code(tonic::Code::NotFound);
    Problem::new(status, slug, title, format!("no route {}", uri.path()))
}

async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("{method} is not served on {}", uri.path()),
    )
}

// ---------------------------------------------------------------------------
// Router, document, server
// ---------------------------------------------------------------------------

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Drover REST API",
        version = "1",
        description = "JSON over HTTP, a thin adapter over the drover.v1 gRPC service. \
                       Errors are application/problem+json (RFC 9457)."
    ),
    components(schemas(Problem)),
    tags(
        (name = "jobs", description = "Submit, read, list, stop jobs; their output"),
        (name = "cluster", description = "Cluster status and the node table"),
        (name = "acl", description = "Tokens and their roles"),
        (name = "ops", description = "Health, readiness, metrics, this document"),
    )
)]
struct ApiDoc;

/// Routes and document from the same annotations: a route cannot be served
/// without appearing in the document, nor documented without being served.
fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(submit_job, list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(stop_job))
        .routes(routes!(job_output))
        .routes(routes!(events::job_events))
        .routes(routes!(cluster_status))
        .routes(routes!(list_nodes))
        .routes(routes!(drain_node))
        .routes(routes!(acl_bootstrap))
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
        .routes(routes!(who_am_i))
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

/// The OpenAPI 3 document of every route (served at `/v1/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().into_openapi()
}

/// The REST router over one shared gRPC service instance; live streams end
/// when `closing` turns true.
pub fn router(
    service: Arc<DroverService>,
    closing: tokio::sync::watch::Receiver<bool>,
    cors_origins: &[String],
) -> Router {
    let (router, _) = api_router().split_for_parts();
    let origins: Vec<HeaderValue> = cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    // Only the configured origins; none configured = no CORS headers at
    // all, so browsers refuse every cross-origin call.
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::AllowOrigin::list(origins))
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::POST,
            axum::http::Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .expose_headers([axum::http::HeaderName::from_static(LEADER_HEADER)])
        .max_age(Duration::from_secs(600));
    router
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(cors)
        // A bug that panics in a handler answers 500 problem+json instead
        // of dropping the connection; the node keeps serving.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_problem,
        ))
        .with_state(AppState { service, closing })
}

/// The answer to a request whose handler panicked.
fn panic_problem(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!(panic = %what, "an HTTP handler panicked");
    Problem::internal("the server hit an internal error handling this request (it was logged)")
        .into_response()
}

/// A connection the REST API serves: a TCP stream, or TLS over one.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The accepted connections of the REST listener.
type Connections =
    std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<Box<dyn Io>>> + Send>>;

/// Serves the REST API over `service` on `listener` (already bound, so a
/// port in use failed before) until `stop` fires; then ends live streams
/// and lets in-flight requests finish for up to [`SHUTDOWN_GRACE`]. Header
/// size and header read time are bounded.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<crate::tls::TlsIdentity>>,
    service: Arc<DroverService>,
    cors_origins: Vec<String>,
    mut stop: tokio::sync::broadcast::Receiver<()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let router = router(service, closing, &cors_origins);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // One stream of connections, plaintext or TLS (handshakes done off the
    // accept loop by `tls_incoming`), served the same way.
    let mut incoming: Connections = match tls {
        Some(identity) => Box::pin(
            crate::tls::tls_incoming(listener, identity, crate::tls::Listener::Https, "https")
                .map(|r| r.map(|s| Box::new(s) as Box<dyn Io>)),
        ),
        None => Box::pin(
            tokio_stream::wrappers::TcpListenerStream::new(listener).map(|r| {
                r.map(|s| {
                    let _ = s.set_nodelay(true);
                    Box::new(s) as Box<dyn Io>
                })
            }),
        ),
    };
    loop {
        let next = tokio::select! {
            next = incoming.next() => next,
            _ = stop.recv() => break,
        };
        let io = match next {
            Some(Ok(io)) => io,
            Some(Err(e)) => {
                // Out of file descriptors and the like: back off, go on.
                tracing::warn!("http accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            None => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("http connection ended: {e}");
            }
        });
    }
    drop(incoming);
    let _ = closing_tx.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_stable_problem() {
        use tonic::Code;
        let table = [
            (Code::InvalidArgument, 400, "invalid-argument"),
            (Code::NotFound, 404, "not-found"),
            (Code::AlreadyExists, 409, "already-exists"),
            (Code::FailedPrecondition, 409, "failed-precondition"),
            (Code::ResourceExhausted, 429, "resource-exhausted"),
            (Code::Unavailable, 503, "unavailable"),
            (Code::DeadlineExceeded, 504, "deadline-exceeded"),
            (Code::PermissionDenied, 403, "permission-denied"),
            (Code::Unauthenticated, 401, "unauthenticated"),
            (Code::Internal, 500, "internal"),
            (Code::Unknown, 500, "unknown"),
            (Code::OutOfRange, 410, "out-of-range"),
        ];
        for (code, status, slug) in table {
            let problem = Problem::from(tonic::Status::new(code, "why"));
            assert_eq!(problem.status, status, "{code:?}");
            assert_eq!(problem.problem_type, format!("{PROBLEM_BASE}{slug}"));
            assert_eq!(problem.detail, "why");
        }
        let full = Problem::from(crate::api::grpc::no_space(
            "the disk holding /d is full".into(),
        ));
        assert_eq!(full.status, 507);
        assert_eq!(
            full.problem_type,
            format!("{PROBLEM_BASE}insufficient-storage")
        );
        assert!(full.detail.contains("/d is full"), "{}", full.detail);
    }

    #[test]
    fn unavailable_carries_retry_after_and_problem_json() {
        let response = Problem::from(tonic::Status::unavailable("no leader")).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }

    #[test]
    fn document_is_openapi_3_with_every_route() {
        let doc: serde_json::Value =
            serde_json::from_str(&openapi().to_json().expect("render")).expect("parse");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        for (method, path) in [
            ("post", "/v1/jobs"),
            ("get", "/v1/jobs"),
            ("get", "/v1/jobs/{id}"),
            ("post", "/v1/jobs/{id}/stop"),
            ("get", "/v1/jobs/{id}/output"),
            ("get", "/v1/events"),
            ("get", "/v1/cluster"),
            ("get", "/v1/nodes"),
            ("post", "/v1/nodes/{id}/drain"),
            ("post", "/v1/acl/bootstrap"),
            ("post", "/v1/acl/tokens"),
            ("get", "/v1/acl/tokens"),
            ("delete", "/v1/acl/tokens/{accessor}"),
            ("get", "/v1/acl/token/self"),
            ("get", "/v1/health"),
            ("get", "/v1/ready"),
            ("get", "/metrics"),
            ("get", "/v1/openapi.json"),
        ] {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} missing"
            );
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_a_500_problem() {
        use tower::ServiceExt as _;
        let app = Router::new()
            .route(
                "/boom",
                axum::routing::get(|| async {
                    if true {
                        panic!("a bug");
                    }
                    "unreachable"
                }),
            )
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                panic_problem,
            ));
        let request = axum::http::Request::get("/boom")
            .body(axum::body::Body::empty())
            .expect("request");
        let response = app
            .oneshot(request)
            .await
            .expect("a response, not a dropped connection");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
