//! Binds the listeners and runs the gRPC servers (and the REST API, when
//! `listen.http` is set) until shutdown.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use super::grpc::DroverService;
use crate::node::peer_service::PeerService;
use crate::node::wire::MAX_RPC_BYTES;
use crate::node::Node;
use crate::proto::raft::raft_peer_server::RaftPeerServer;
use crate::proto::v1::drover_server::DroverServer;
use crate::tls::{tls_incoming, Listener, TlsIdentity};

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
        .map_err(|e| anyhow::anyhow!("cannot listen on {api_addr} (listen.api): {e}"))?;
    let raft_listener = TcpListener::bind(raft_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {raft_addr} (listen.raft): {e}"))?;
    let http_listener = match node.config.listen.http {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (listen.http): {e}"))?,
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
    let api_router = tonic::transport::Server::builder()
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(
            DroverServer::from_arc(service.clone()).max_decoding_message_size(MAX_CLIENT_MESSAGE),
        );
    let api_stop = async move {
        let _ = stop_api.recv().await;
    };
    let api: Serving = match &node.tls {
        Some(tls) => Box::pin(api_router.serve_with_incoming_shutdown(
            tls_incoming(api_listener, tls.clone(), Listener::Api, "client API"),
            api_stop,
        )),
        None => Box::pin(api_router.serve_with_incoming_shutdown(incoming(api_listener), api_stop)),
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
            tokio::spawn(router.serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                async move {
                    let _ = stop.recv().await;
                },
            ))
        });
    let raft_router = tonic::transport::Server::builder().add_service(
        RaftPeerServer::new(peer)
            .max_decoding_message_size(MAX_RPC_BYTES)
            .max_encoding_message_size(MAX_RPC_BYTES),
    );
    let raft_stop = async move {
        let _ = stop_raft.recv().await;
    };
    let raft: Serving = match &node.tls {
        Some(tls) => Box::pin(raft_router.serve_with_incoming_shutdown(
            tls_incoming(raft_listener, tls.clone(), Listener::Peer, "peer port"),
            raft_stop,
        )),
        None => {
            Box::pin(raft_router.serve_with_incoming_shutdown(incoming(raft_listener), raft_stop))
        }
    };
    let http_task = http_listener.map(|listener| {
        tokio::spawn(super::http::serve(
            listener,
            node.tls.clone(),
            service.clone(),
            node.config.acl.cors_origins.clone(),
            stop_tx.subscribe(),
        ))
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
    let api_task = tokio::spawn(api);
    let raft_task = tokio::spawn(raft);
    let scheduler_task = tokio::spawn(crate::node::scheduler_loop::run(node.clone()));
    let tls_task = node.tls.clone().map(|tls| tokio::spawn(watch_tls(tls)));
    let worker_task = tokio::spawn(crate::node::worker::run(node.clone()));
    let failure = tokio::select! {
        _ = shutdown => None,
        reason = node.failure() => Some(reason),
    };
    if failure.is_none() {
        // A planned stop (SIGTERM, Ctrl-C): leave no leaderless gap. The
        // listeners still serve meanwhile, so the transfer can complete.
        node.hand_over_leadership(std::time::Duration::from_secs(5))
            .await;
    }
    let _ = stop_tx.send(());
    // Open watches would hold the graceful shutdown of the gRPC server
    // forever: end them (UNAVAILABLE; clients resume on another node).
    node.events.close();
    // Running containers are left running: a restarted node reattaches.
    scheduler_task.abort();
    if let Some(task) = tls_task {
        task.abort();
    }
    worker_task.abort();
    let _ = api_task.await;
    let _ = raft_task.await;
    if let Some(task) = http_task {
        let _ = task.await;
    }
    if let Some(task) = socket_task {
        let _ = task.await;
    }
    drop(socket);
    node.shutdown();
    match failure {
        None => Ok(()),
        Some(reason) => Err(anyhow::anyhow!("node stopped: {reason}")),
    }
}

/// How often the TLS files are checked for a change.
const TLS_POLL: std::time::Duration = std::time::Duration::from_secs(5);
/// A certificate this close to expiry is warned about (daily).
const TLS_EXPIRY_WARNING_SECS: i64 = 30 * 24 * 3600;

/// Reloads the TLS identity on SIGHUP and when its files change; warns
/// (at start, then daily) once the certificate is within 30 days of expiry.
async fn watch_tls(tls: Arc<TlsIdentity>) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!("cannot watch SIGHUP (certificates reload on file changes only): {e}");
            None
        }
    };
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        let loaded = tls.current();
        let left = loaded.not_after - crate::node::now_unix_secs();
        if left < TLS_EXPIRY_WARNING_SECS
            && last_warning.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(86_400))
        {
            last_warning = Some(std::time::Instant::now());
            tracing::warn!(
                subject = %loaded.subject,
                days_left = left / 86_400,
                "the TLS certificate expires soon: renew it (`drover tls cert create`), then SIGHUP"
            );
        }
        let signalled = tokio::select! {
            got = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            } => got.is_some(),
            _ = tokio::time::sleep(TLS_POLL) => false,
        };
        if !signalled && !tls.files_changed() {
            continue;
        }
        match tls.reload() {
            Ok(loaded) => {
                last_warning = None;
                tracing::info!(
                    subject = %loaded.subject,
                    expires_in_days = (loaded.not_after - crate::node::now_unix_secs()) / 86_400,
                    "TLS certificates reloaded: new connections use them"
                )
            }
            Err(e) => tracing::error!("TLS reload refused, the certificates in force stay: {e}"),
        }
    }
}

/// Accepted connections with Nagle off: Raft messages and small replies must
/// not wait for delayed ACKs (a 40 ms stall per round trip otherwise).
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}
