//! Limits on every listener, through real `drover agent` processes and
//! real sockets: calls per second per token and, for calls that fail the
//! access check, per client address (RESOURCE_EXHAUSTED / 429 with a retry
//! hint, others still served, admins not limited),
//! connections per client address (the next one is closed at once, another
//! address still connects), a silent connection closed after
//! `limits.read_timeout` on every listener, and header and body read
//! timeouts on REST.
//! Client addresses other than 127.0.0.1 are other loopback addresses.

mod common;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{wait_for, Cluster, RaftSettings};
use drover::proto::v1 as pb;
use http_body::Frame;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tonic::Code;

const ELECTION: Duration = Duration::from_secs(20);
/// An address of this machine's loopback other than 127.0.0.1.
const OTHER_CLIENT: [u8; 4] = [127, 0, 0, 2];

fn other_client() -> IpAddr {
    IpAddr::from(OTHER_CLIENT)
}

/// One node with ACLs on or off and `limits` in its `[limits]` section.
fn one_node(acl: bool, limits: &str) -> Cluster {
    Cluster::start(
        1,
        RaftSettings {
            acl,
            extra_config: format!("\n[limits]\n{limits}\n"),
            ..RaftSettings::default()
        },
    )
}

/// A list call as the client's token; its gRPC code.
async fn list(client: &mut common::Client) -> Result<(), tonic::Status> {
    client
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread")]
async fn one_token_over_its_rate_is_refused_with_a_hint_while_another_is_served() {
    let mut cluster = one_node(true, "rate = 5\nburst = 5");
    cluster.bootstrap_over_socket(ELECTION).await;
    let (_, alice) = cluster.create_token("alice", "submitter");
    let (_, bob) = cluster.create_token("bob", "submitter");
    let mut as_alice = cluster.client_with(0, Some(&alice)).await.expect("client");
    let mut as_bob = cluster.client_with(0, Some(&bob)).await.expect("client");

    // A burst of 5, then 5 a second: well within 20 quick calls the share
    // runs out.
    let mut refused = None;
    for _ in 0..20 {
        if let Err(status) = list(&mut as_alice).await {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("Alice was never limited");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("limits.rate"), "{refused:?}");
    assert!(refused.message().contains("retry in"), "{refused:?}");
    assert!(refused.metadata().contains_key("retry-after"));

    // Bob's share is his own.
    list(&mut as_bob).await.expect("another token is served");

    // Over REST, Alice gets 429 problem+json with Retry-After.
    let http = reqwest::Client::new();
    let response = http
        .get(format!("{}/v1/jobs", cluster.http_url(0)))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("GET /v1/jobs");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        response.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );

    // Her share fills again with time.
    wait_for("Alice's share to have room again", ELECTION, || async {
        let mut c = as_alice.clone();
        list(&mut c).await.ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_that_fail_the_access_check_are_limited_per_client_address() {
    let mut cluster = one_node(true, "rate = 5\nburst = 5");
    cluster.bootstrap_over_socket(ELECTION).await;
    // Guessing tokens from 127.0.0.1: 401 until the address's share is
    // spent, then 429.
    let url = format!("{}/v1/jobs", cluster.http_url(0));
    let from_here = reqwest::Client::new();
    let mut limited = false;
    for _ in 0..20 {
        let response = from_here
            .get(&url)
            .bearer_auth("drv_guessed")
            .send()
            .await
            .expect("GET");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert!(limited, "127.0.0.1 was never limited");
    // Another address has its own share.
    let from_elsewhere = reqwest::Client::builder()
        .local_address(other_client())
        .build()
        .expect("client");
    let response = from_elsewhere.get(&url).send().await.expect("GET");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // The admin's token runs the cluster and is not limited.
    let mut admin = cluster.client(0).await.expect("admin client");
    for _ in 0..20 {
        list(&mut admin)
            .await
            .expect("an admin is not rate limited");
    }
}

/// A TCP connection from `from` to `to`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind");
    socket.connect(to).await.expect("connect")
}

/// Whether the server speaks on `stream`: it sends an HTTP/2 preface and an
/// empty SETTINGS frame, and waits for the server's SETTINGS. False when
/// the server closed the connection instead.
async fn speaks_http2(stream: &mut TcpStream) -> bool {
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    if stream.write_all(&hello).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
        Ok(Ok(n)) => n > 0,
        Ok(Err(_)) => false,
        Err(_) => panic!("the server neither answered nor closed within 10 s"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_are_bounded_per_client_address_and_others_still_connect() {
    let cluster = one_node(false, "max_connections_per_address = 4");
    cluster.wait_leader(ELECTION).await;
    let api: SocketAddr = cluster.nodes[0].api.parse().expect("api address");

    // Four idle connections from one address are all it may hold.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = connect_from(other_client(), api).await;
        assert!(speaks_http2(&mut stream).await, "within the bound");
        held.push(stream);
    }
    let mut fifth = connect_from(other_client(), api).await;
    assert!(
        !speaks_http2(&mut fifth).await,
        "a fifth from the same address is closed"
    );

    // Another address is served as usual.
    let mut client = cluster.client(0).await.expect("client from 127.0.0.1");
    list(&mut client).await.expect("served");

    // A closed connection gives its place back.
    drop(held.pop());
    wait_for("a place to come free", ELECTION, || async {
        let mut stream = connect_from(other_client(), api).await;
        speaks_http2(&mut stream).await.then_some(stream)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_connections_slow_headers_and_slow_bodies_are_cut_off_and_write_nothing() {
    let cluster = one_node(false, "read_timeout = \"1s\"");
    cluster.wait_leader(ELECTION).await;
    let http: SocketAddr = cluster.nodes[0].http.parse().expect("http address");

    // Headers that never end: the connection is closed after the timeout.
    let mut stream = TcpStream::connect(http).await.expect("connect");
    let started = Instant::now();
    stream
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection was not closed within 10 s");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the timeout: {:?}",
        started.elapsed()
    );

    // A connection to the gRPC API that never says anything is closed too.
    let api: SocketAddr = cluster.nodes[0].api.parse().expect("api address");
    let mut silent = TcpStream::connect(api).await.expect("connect");
    let started = Instant::now();
    let mut nothing = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut nothing)).await;
    assert!(read.is_ok(), "a silent gRPC connection was kept over 10 s");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the timeout: {:?}",
        started.elapsed()
    );

    // A body that stops arriving: answered with an error, nothing written.
    let mut stream = TcpStream::connect(http).await.expect("connect");
    stream
        .write_all(
            b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"command\": \"echo",
        )
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer within 10 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );
    let mut client = cluster.client(0).await.expect("client");
    let jobs = common::all_jobs(&mut client, false).await.expect("list");
    assert!(jobs.is_empty(), "nothing was written: {jobs:?}");

    // A gRPC restore whose parts stop arriving: DEADLINE_EXCEEDED naming
    // the key, while the client still holds its stream open, and nothing
    // restored. Sent with plain HTTP/2 (tonic's client holds a client
    // stream back until it ends, so it cannot stall one).
    let (parts, rx) = tokio::sync::mpsc::channel::<Result<Frame<bytes::Bytes>, Infallible>>(1);
    let mut frame = vec![0u8];
    let message = [&[0x0a, 8][..], b"DROVBKUP"].concat(); // field 1, 8 bytes
    frame.extend((message.len() as u32).to_be_bytes());
    frame.extend(message);
    parts
        .send(Ok(Frame::data(frame.into())))
        .await
        .expect("first part");
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let request =
        axum::http::Request::post(format!("http://{api}/drover.v1.Drover/RestoreSnapshot"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(http_body_util::StreamBody::new(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .expect("request");
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(10), h2.request(request))
        .await
        .expect("no answer within 10 s while the stream stayed open")
        .expect("an HTTP/2 answer");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let header = |name: &str| {
        answer
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(header("grpc-status"), "4", "DEADLINE_EXCEEDED: {answer:?}");
    assert!(
        header("grpc-message").contains("limits.read_timeout"),
        "{answer:?}"
    );
    drop(parts);
    let jobs = common::all_jobs(&mut client, false).await.expect("list");
    assert!(jobs.is_empty(), "nothing was restored: {jobs:?}");
}
