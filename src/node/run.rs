//! A node's life once its listeners are up: its background loops (the
//! scheduler, the executor, certificate reloads) and the order it stops in.
//! The API layer binds and starts the listeners; this owns the rest, so the
//! sequence (hand over leadership, stop listening, end watches, stop the
//! Raft loop) is written once.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::Node;
use crate::tls::TlsIdentity;

/// The servers the API layer started for a node.
pub struct Listeners {
    /// Fired once to make every server stop accepting and finish.
    pub stop: broadcast::Sender<()>,
    /// The servers, each ending after `stop` fires.
    pub tasks: Vec<JoinHandle<()>>,
    /// Dropped only once every server has ended (e.g. the guard that
    /// removes the unix socket's file).
    pub held_until_stopped: Box<dyn Send>,
}

/// Runs `node` with its `listeners` until `shutdown` resolves (or the Raft
/// loop fails), then stops it in order. A planned stop hands leadership
/// over first; containers are left running (a restarted node reattaches).
pub async fn run(
    node: Arc<Node>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let scheduler_task = tokio::spawn(super::scheduler_loop::run(node.clone()));
    let tls_task = node.tls.clone().map(|tls| tokio::spawn(watch_tls(tls)));
    let worker_task = tokio::spawn(super::worker::run(node.clone()));
    let failure = tokio::select! {
        _ = shutdown => None,
        reason = node.failure() => Some(reason),
    };
    if failure.is_none() {
        // A planned stop (SIGTERM, Ctrl-C): leave no leaderless gap. The
        // listeners still serve meanwhile, so the transfer can complete.
        // A transfer takes a round trip; one the core gives up on (the
        // target died a moment ago) ends within an election timeout, so
        // waiting longer than two only delays the stop.
        let raft = &node.config.raft;
        let wait = (raft.tick * raft.election_ticks.saturating_mul(2)).clamp(
            std::time::Duration::from_secs(2),
            std::time::Duration::from_secs(5),
        );
        node.hand_over_leadership(wait).await;
    }
    let _ = listeners.stop.send(());
    tracing::info!("listeners closing; running containers are left running for the next start");
    // Open watches would hold the graceful shutdown of the gRPC server
    // forever: end them (UNAVAILABLE; clients resume on another node).
    node.events.close();
    scheduler_task.abort();
    if let Some(task) = tls_task {
        task.abort();
    }
    worker_task.abort();
    for task in listeners.tasks {
        let _ = task.await;
    }
    drop(listeners.held_until_stopped);
    node.shutdown();
    if failure.is_none() {
        tracing::info!("stopped");
    }
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
        let left = loaded.not_after - super::now_unix_secs();
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
                    expires_in_days = (loaded.not_after - super::now_unix_secs()) / 86_400,
                    "TLS certificates reloaded: new connections use them"
                )
            }
            Err(e) => tracing::error!("TLS reload refused, the certificates in force stay: {e}"),
        }
    }
}
