//! Binds the listeners and starts the gRPC servers (and the REST API, when
//! `listen.http` is set); the node's own loops and its shutdown order are
//! `node::run`'s.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use tokio::net::TcpListener;

use super::accept::{accept, Limited};
use super::grpc::DroverService;
use crate::node::peer_service::PeerService;
use crate::node::run::Listeners;
use crate::node::wire::MAX_RPC_BYTES;
use crate::node::Node;
use crate::proto::raft::raft_peer_server::RaftPeerServer;
use crate::proto::v1::drover_server::DroverServer;
use crate::tls::{tls_incoming, Listener};

/// A gRPC server running until its shutdown signal (plaintext or TLS: two
/// incoming types, one future type).
type Serving = std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// Largest client request accepted (a job spec is far smaller).
const MAX_CLIENT_MESSAGE: usize = 4 << 20;

/// Binds every listener first (so a port in use fails fast with its address),
/// then serves until `shutdown` resolves.
pub async fn serve(
    node: Arc<Node>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let api_addr = node.config.listen.api;
    let raft_addr = node.config.listen.raft;
    let api_listener = TcpListener::bind(api_addr)
        .await
        .map_err(|e| cannot_listen(api_addr, "listen.api", e))?;
    let raft_listener = TcpListener::bind(raft_addr)
        .await
        .map_err(|e| cannot_listen(raft_addr, "listen.raft", e))?;
    let http_listener = match node.config.listen.http {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| cannot_listen(addr, "listen.http", e))?,
        ),
        None => None,
    };
    if let Some(path) = &node.config.acl.bootstrap_token_file {
        super::grpc::read_bootstrap_secret(path).map_err(|why| anyhow::anyhow!(why))?;
    }
    let mut socket = super::local_socket::bind(&node.config.socket_path())?;
    // One service instance for both front ends: REST calls the same methods.
    let service = Arc::new(DroverService::new(node.clone()));
    let peer = PeerService {
        cluster_id: node.config.cluster_id.clone(),
        node_id: node.config.node_id,
        inputs: node.inputs(),
        node: node.clone(),
    };
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut stop_api = stop_tx.subscribe();
    let mut stop_raft = stop_tx.subscribe();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::v1::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| anyhow::anyhow!("cannot build the gRPC reflection service: {e}"))?;
    // Older grpcurl and other tools still ask the v1alpha service.
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| anyhow::anyhow!("cannot build the gRPC reflection service: {e}"))?;
    let limits = &node.config.limits;
    let streams = Some(limits.max_streams_per_connection);
    let api_router = tonic::transport::Server::builder()
        .max_concurrent_streams(streams)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(
            DroverServer::from_arc(service.clone()).max_decoding_message_size(MAX_CLIENT_MESSAGE),
        );
    let api_stop = async move {
        let _ = stop_api.recv().await;
    };
    let api_accepted = accept(api_listener, "client API", limits);
    let api: Serving = match &node.tls {
        Some(tls) => Box::pin(api_router.serve_with_incoming_shutdown(
            tls_incoming(api_accepted, tls.clone(), Listener::Api, "client API"),
            api_stop,
        )),
        None => Box::pin(api_router.serve_with_incoming_shutdown(plain(api_accepted), api_stop)),
    };
    let socket_task = socket
        .as_mut()
        .and_then(|s| s.listener.take())
        .map(|listener| {
            let mut stop = stop_tx.subscribe();
            let router = tonic::transport::Server::builder().add_service(
                DroverServer::from_arc(service.clone())
                    .max_decoding_message_size(MAX_CLIENT_MESSAGE),
            );
            let serving = router.serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                async move {
                    let _ = stop.recv().await;
                },
            );
            tokio::spawn(async move {
                let _ = serving.await;
            })
        });
    let raft_router = tonic::transport::Server::builder()
        .max_concurrent_streams(streams)
        .add_service(
            RaftPeerServer::new(peer)
                .max_decoding_message_size(MAX_RPC_BYTES)
                .max_encoding_message_size(MAX_RPC_BYTES),
        );
    let raft_stop = async move {
        let _ = stop_raft.recv().await;
    };
    let raft_accepted = accept(raft_listener, "peer port", limits);
    let raft: Serving = match &node.tls {
        Some(tls) => Box::pin(raft_router.serve_with_incoming_shutdown(
            tls_incoming(raft_accepted, tls.clone(), Listener::Peer, "peer port"),
            raft_stop,
        )),
        None => Box::pin(raft_router.serve_with_incoming_shutdown(plain(raft_accepted), raft_stop)),
    };
    let http_task = http_listener.map(|listener| {
        let serving = super::http::serve(
            listener,
            limits.clone(),
            node.tls.clone(),
            service.clone(),
            node.config.acl.cors_origins.clone(),
            node.config.advertise.http.clone(),
            stop_tx.subscribe(),
        );
        tokio::spawn(async move {
            let _ = serving.await;
        })
    });
    let (grpc, rest) = match node.tls {
        Some(_) => ("grpc+tls", "https"),
        None => ("grpc", "rest"),
    };
    let http_text = match node.config.listen.http {
        Some(addr) => format!(", http {addr} ({rest})"),
        None => String::new(),
    };
    println!(
        "drover node {} listening: api {} ({grpc}), raft {}{}",
        node.config.node_id, api_addr, raft_addr, http_text
    );
    tracing::info!(%api_addr, %raft_addr, http_addr = ?node.config.listen.http, node_id = node.config.node_id, "listening");
    if node.transport_security() == "insecure-plaintext" {
        tracing::warn!(
            "tls.insecure_plaintext: listening beyond loopback WITHOUT TLS; anyone who reaches \
             these ports can change the cluster's state"
        );
    }
    let mut tasks = vec![
        tokio::spawn(async move {
            let _ = api.await;
        }),
        tokio::spawn(async move {
            let _ = raft.await;
        }),
    ];
    tasks.extend(http_task);
    tasks.extend(socket_task);
    let listeners = Listeners {
        stop: stop_tx,
        tasks,
        held_until_stopped: Box::new(socket),
    };
    crate::node::run::run(node, listeners, shutdown).await
}

/// Why a listener could not be bound, and what to do about a port in use
/// (most often a node already running there: a dev node on 7700-7702).
fn cannot_listen(addr: std::net::SocketAddr, key: &str, e: std::io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "; another process listens there (a Drover node already running? `drover \
             operator raft list-peers --address` that port tells): stop it, or give this \
             node other ports"
        }
        std::io::ErrorKind::PermissionDenied => "; ports below 1024 need privileges",
        _ => "",
    };
    anyhow::anyhow!("cannot listen on {addr} ({key}): {e}{hint}")
}

/// Admitted plaintext connections as tonic's `serve_with_incoming` takes
/// them.
fn plain(
    accepted: tokio_stream::wrappers::ReceiverStream<Limited>,
) -> impl futures::Stream<Item = std::io::Result<Limited>> {
    accepted.map(Ok)
}
