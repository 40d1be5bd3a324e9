//! TLS over admitted connections: each handshake runs in its own task
//! (bounded in time), so a slow or silent client never holds up the next
//! accept; finished handshakes are handed to the server in order.
//! Connection bounds are `api::accept`'s, checked before any handshake.

use std::time::Duration;

use std::sync::Arc;
use tokio::sync::mpsc;

use futures::StreamExt;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use super::{Listener, TlsIdentity};
use crate::api::accept::Limited;

/// A client must finish its handshake within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes done but not yet taken by the server.
const READY_QUEUE: usize = 64;

/// The TLS connections over `accepted`, as a stream for tonic's
/// `serve_with_incoming`, each handshake with the identity in force when it
/// starts (so a reload takes effect at the next connection). Failed
/// handshakes (plaintext, an unknown CA, no client certificate) are logged
/// with the peer address and dropped; accepting ends when the server drops
/// the stream.
pub fn tls_incoming(
    mut accepted: ReceiverStream<Limited>,
    identity: Arc<TlsIdentity>,
    which: Listener,
    what: &'static str,
) -> ReceiverStream<std::io::Result<TlsStream<Limited>>> {
    let (tx, rx) = mpsc::channel(READY_QUEUE);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                next = accepted.next() => match next {
                    Some(stream) => stream,
                    None => return,
                },
                _ = tx.closed() => return,
            };
            let peer = stream.peer();
            let acceptor = identity.current().acceptor(which);
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, "{what}: TLS handshake refused: {e}"),
                    Err(_) => tracing::info!(%peer, "{what}: TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
