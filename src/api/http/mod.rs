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

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Serialize;
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::grpc::{DroverService, LEADER_ADDR, LEADER_HTTP};

mod acl;
mod cluster;
mod events;
mod extract;
mod guard;
mod jobs;
mod ops;
mod problem;
mod ui;

use extract::*;
pub use problem::{problem_for_code, Problem, PROBLEM_BASE};

/// Largest request body accepted: a job spec is far smaller, and the bound
/// keeps one client from making the node buffer arbitrary amounts.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Bound on a request's header block (HTTP/1 read buffer, HTTP/2 header
/// list). hyper answers 431 beyond it.
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// How long shutdown waits for in-flight requests (open SSE streams never
/// finish on their own) before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Response header carrying the leader's REST address (`advertise.http`,
/// from the gRPC response metadata `x-drover-leader-http`); absent while
/// this node has not learned it.
pub const LEADER_HEADER: &str = "x-drover-leader";
/// Response header carrying the leader's gRPC API address.
pub const LEADER_GRPC_HEADER: &str = "x-drover-leader-grpc";

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

/// A JSON response with the leader's address copied from the gRPC metadata.
fn respond<T: Serialize>(
    status: StatusCode,
    metadata: &tonic::metadata::MetadataMap,
    body: &T,
) -> Response {
    let mut response = (status, Json(body)).into_response();
    for (key, header) in [
        (LEADER_HTTP, LEADER_HEADER),
        (LEADER_ADDR, LEADER_GRPC_HEADER),
    ] {
        let value = metadata
            .get(key)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| HeaderValue::from_str(v).ok());
        if let Some(value) = value {
            response.headers_mut().insert(header, value);
        }
    }
    response
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
    modifiers(&TokenAuth),
    tags(
        (name = "jobs", description = "Submit, read, list, stop jobs; their output"),
        (name = "cluster", description = "Cluster status and the node table"),
        (name = "acl", description = "Tokens and their roles"),
        (name = "ops", description = "Health, readiness, metrics, this document"),
    )
)]
struct ApiDoc;

/// Every operation takes an ACL token as a bearer token (those that need
/// none say `security(())`), and the server is the node answering, so a
/// generated client sends the token and calls the node it was fetched from.
struct TokenAuth;

impl utoipa::Modify for TokenAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "An ACL token's secret (`drover acl token create`); needed when acl.enabled",
            ))
            .build();
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("token", SecurityScheme::Http(scheme));
        doc.security = Some(vec![SecurityRequirement::new(
            "token",
            Vec::<String>::new(),
        )]);
        doc.servers = Some(vec![utoipa::openapi::Server::new("/")]);
    }
}

/// Routes and document from the same annotations: a route cannot be served
/// without appearing in the document, nor documented without being served.
fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(jobs::submit_job, jobs::list_jobs))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::stop_job))
        .routes(routes!(jobs::job_output))
        .routes(routes!(events::job_events))
        .routes(routes!(cluster::cluster_status))
        .routes(routes!(cluster::cluster_events))
        .routes(routes!(cluster::list_nodes))
        .routes(routes!(cluster::drain_node))
        .routes(routes!(acl::acl_bootstrap))
        .routes(routes!(acl::create_token, acl::list_tokens))
        .routes(routes!(acl::revoke_token))
        .routes(routes!(acl::who_am_i))
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi_json))
        .routes(routes!(ops::index))
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
    hosts: guard::AllowedHosts,
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
        .expose_headers([
            axum::http::HeaderName::from_static(LEADER_HEADER),
            axum::http::HeaderName::from_static(LEADER_GRPC_HEADER),
        ])
        .max_age(Duration::from_secs(600));
    router
        .merge(ui::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(guard::require_json))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(hosts),
            guard::check_host,
        ))
        .layer(axum::middleware::from_fn(guard::security_headers))
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

/// The accepted connections of the REST listener, with the client's
/// address.
type Connections =
    std::pin::Pin<Box<dyn futures::Stream<Item = (Box<dyn Io>, std::net::SocketAddr)> + Send>>;

/// Serves the REST API over `service` on the admitted connections of its
/// listener (already bound, so a port in use failed before) until `stop`
/// fires; then ends live streams and lets in-flight requests finish for up
/// to [`SHUTDOWN_GRACE`]. Header size, header and body read time and
/// HTTP/2 streams per connection are bounded (`[limits]`).
pub async fn serve(
    listener: TcpListener,
    limits: crate::config::LimitsConfig,
    tls: Option<Arc<crate::tls::TlsIdentity>>,
    service: Arc<DroverService>,
    cors_origins: Vec<String>,
    advertised: Option<String>,
    mut stop: tokio::sync::broadcast::Receiver<()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection)
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let accepted = crate::api::accept::accept(listener, "REST API", &limits);
    let hosts = guard::AllowedHosts::for_listener(loopback, advertised.as_deref());
    let router = router(service, closing, &cors_origins, hosts).layer(
        tower_http::timeout::RequestBodyTimeoutLayer::new(limits.read_timeout),
    );
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // One stream of connections, plaintext or TLS (handshakes done off the
    // accept loop by `tls_incoming`), served the same way.
    let mut incoming: Connections = match tls {
        Some(identity) => Box::pin(
            crate::tls::tls_incoming(accepted, identity, crate::tls::Listener::Https, "https")
                .filter_map(|r| async move {
                    let tls = r.ok()?;
                    let peer = tls.get_ref().0.peer();
                    Some((Box::new(tls) as Box<dyn Io>, peer))
                }),
        ),
        None => Box::pin(accepted.map(|s| {
            let peer = s.peer();
            (Box::new(s) as Box<dyn Io>, peer)
        })),
    };
    loop {
        let next = tokio::select! {
            next = incoming.next() => next,
            _ = stop.recv() => break,
        };
        let Some((io, peer)) = next else {
            break;
        };
        // Every request knows its client (rate limits, caps per address).
        let service = tower::ServiceBuilder::new()
            .map_request(move |mut request: axum::http::Request<_>| {
                request.extensions_mut().insert(ClientAddr(peer));
                request
            })
            .service(router.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
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
