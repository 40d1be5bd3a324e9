//! The CLI's channel to a cluster: every address of `--address`, tried in
//! turn. A call goes to the address that answered last; when that node
//! cannot be reached, or answers that nothing was done because there is no
//! leader yet (an election) or it is shutting down, the call goes to the
//! next address, waiting a bounded time for an election to end. Only
//! answers that guarantee nothing happened are retried, so a retry never
//! runs a write twice. Answers that are not gRPC at all (the REST port, a
//! web server) and silence are turned into errors that say what to do.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::Channel;
use tower::{Service, ServiceExt as _};

use super::failure::{source_chain, UNREACHABLE};

/// How long a call keeps trying the addresses (through an election: a
/// healthy cluster elects within a few seconds).
pub const RETRY_FOR: Duration = Duration::from_secs(15);

/// Unavailable answers of a node after which nothing was done: the write
/// was never proposed, the read never served. Any other answer is final.
const NOTHING_DONE: [&str; 5] = [
    "this node is not the leader",
    "no leader elected",
    "no leader could confirm the read",
    "the node is shutting down",
    "retry shortly",
];

/// One address of the list and its (lazily connected) channel.
#[derive(Clone)]
struct Target {
    address: String,
    channel: Channel,
}

/// The channels to every address, and which one answered last.
#[derive(Clone)]
pub struct Failover {
    targets: Arc<Vec<Target>>,
    current: Arc<AtomicUsize>,
    /// Whether the CLI speaks TLS (it words connection failures).
    tls: bool,
    /// Whether misses are retried (the CLI) or answered as they are (a
    /// test's client, which wants to see each answer).
    retry: bool,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Failover {
    /// Over `(address, channel)` pairs, in the order given (at least one).
    pub fn new(targets: Vec<(String, Channel)>, tls: bool) -> Failover {
        Failover {
            tls,
            retry: true,
            targets: Arc::new(
                targets
                    .into_iter()
                    .map(|(address, channel)| Target { address, channel })
                    .collect(),
            ),
            current: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// Why one address did not serve a call.
enum Miss {
    /// Nothing reached it (refused, no route, TLS refused): try the next.
    Unreachable(String),
    /// It answered that nothing was done: try the next, then wait.
    NothingDone(tonic::Status),
}

impl Service<http::Request<Body>> for Failover {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.call_any(request).await })
    }
}

impl Failover {
    /// Over one channel, every answer passed on as it is: no retry, no
    /// rewording (what a test's client wants).
    pub fn single(address: String, channel: Channel) -> Failover {
        Failover {
            retry: false,
            ..Failover::new(vec![(address, channel)], false)
        }
    }

    async fn call_any(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, BoxError> {
        let (parts, body) = request.into_parts();
        // Kept to send again: a unary request is one small message (a
        // restore's stream is the file, which the CLI holds anyway).
        let bytes = body.collect().await?.to_bytes();
        let deadline = Instant::now() + RETRY_FOR;
        let mut delay = Duration::from_millis(100);
        let n = self.targets.len();
        loop {
            let start = self.current.load(Ordering::Relaxed);
            let mut misses = Vec::new();
            for k in 0..n {
                let i = (start + k) % n;
                let target = &self.targets[i];
                let mut again = http::Request::builder()
                    .method(parts.method.clone())
                    .uri(parts.uri.clone())
                    .version(parts.version)
                    .body(Body::new(http_body_util::Full::new(bytes.clone())))?;
                *again.headers_mut() = parts.headers.clone();
                match self.call_one(target, again).await {
                    Ok(response) => {
                        self.current.store(i, Ordering::Relaxed);
                        return Ok(response);
                    }
                    Err(Ok(miss)) => misses.push((target.address.clone(), miss)),
                    Err(Err(final_error)) => return Err(final_error),
                }
            }
            // Every address refused the connection: no node is running
            // there (an election leaves the survivors answering).
            let none_up = misses
                .iter()
                .all(|(_, m)| matches!(m, Miss::Unreachable(_)));
            if none_up || Instant::now() + delay >= deadline {
                return Err(Box::new(give_up(misses)));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// One try at one address: the answer, a miss worth trying elsewhere,
    /// or an error that ends the call.
    async fn call_one(
        &self,
        target: &Target,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, Result<Miss, BoxError>> {
        let mut channel = target.channel.clone();
        let answer = match channel.ready().await {
            Ok(ready) => ready.call(request).await,
            Err(e) => Err(e),
        };
        if !self.retry {
            return answer.map_err(|e| Err(e.into()));
        }
        let response = match answer {
            Ok(response) => response,
            Err(e) => {
                let error: &(dyn std::error::Error + 'static) = &e;
                return Err(match classify(error, self.tls) {
                    Fault::Explained(why) => {
                        Err(Box::new(unreachable(format!("{}: {why}", target.address))))
                    }
                    Fault::Connect(why) => Ok(Miss::Unreachable(why)),
                    Fault::Timeout => Err(Box::new(unreachable(format!(
                        "no answer from {} in time: is it a Drover node's API port \
                         (listen.api)? Nothing was changed if it never got the call",
                        target.address
                    )))),
                    Fault::Other => Err(e.into()),
                });
            }
        };
        if !is_grpc(&response) {
            let kind = response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_string();
            return Err(Err(Box::new(unreachable(format!(
                "{} answered plain HTTP (content type {kind}), not gRPC: is it the REST \
                 port (listen.http)? The CLI talks to a node's API address (listen.api, \
                 port 7700 in dev mode)",
                target.address
            )))));
        }
        match trailers_only_status(&response) {
            Some(status)
                if status.code() == tonic::Code::Unavailable
                    && NOTHING_DONE.iter().any(|t| status.message().contains(t)) =>
            {
                Err(Ok(Miss::NothingDone(status)))
            }
            _ => Ok(response),
        }
    }
}

/// What went wrong on the way to a node.
enum Fault {
    /// A TLS setup that cannot work (wrong CA, expired, no client
    /// certificate): trying elsewhere would not help.
    Explained(String),
    /// The connection could not be made: the call never left.
    Connect(String),
    /// Made, but nothing came back in time.
    Timeout,
    /// Anything else (the call may have reached the node).
    Other,
}

fn classify(error: &(dyn std::error::Error + 'static), tls: bool) -> Fault {
    let mut source = Some(error);
    let mut innermost = error.to_string();
    let mut connect = false;
    while let Some(e) = source {
        if e.downcast_ref::<tonic::TimeoutExpired>().is_some() {
            return Fault::Timeout;
        }
        connect |= e.downcast_ref::<tonic::ConnectError>().is_some();
        innermost = e.to_string();
        source = e.source();
    }
    let text = source_chain(error);
    if let Some(why) = super::tls::explain_failure(&text, tls) {
        return Fault::Explained(why);
    }
    connect |= text.contains("tcp connect error") || text.contains("error trying to connect");
    match connect {
        true => Fault::Connect(innermost),
        false => Fault::Other,
    }
}

/// Whether the node answered as a gRPC server does.
fn is_grpc(response: &http::Response<Body>) -> bool {
    response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The status of an error answered before any message (a "trailers-only"
/// response: how a server refuses a call).
fn trailers_only_status(response: &http::Response<Body>) -> Option<tonic::Status> {
    tonic::Status::from_header_map(response.headers())
}

/// A status the CLI made itself: no node could serve the call.
fn unreachable(message: String) -> tonic::Status {
    let mut status = tonic::Status::unavailable(message);
    status.metadata_mut().insert(
        UNREACHABLE,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    status
}

/// The error after every address missed until the deadline: what each
/// one said, and what to do.
fn give_up(misses: Vec<(String, Miss)>) -> tonic::Status {
    let all_unreachable = misses
        .iter()
        .all(|(_, m)| matches!(m, Miss::Unreachable(_)));
    let each: Vec<String> = misses
        .into_iter()
        .map(|(address, miss)| match miss {
            Miss::Unreachable(why) => format!("{address}: {why}"),
            Miss::NothingDone(status) => format!("{address}: {}", status.message()),
        })
        .collect();
    let hint = match all_unreachable {
        true => "is a node running there? (`drover agent --dev` starts one on 127.0.0.1:7700)",
        false => "no leader for the whole wait: is a majority of the nodes up? Nothing was changed",
    };
    unreachable(format!(
        "cannot reach a Drover node that can serve this ({}); {hint}",
        each.join("; ")
    ))
}
