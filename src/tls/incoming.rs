//! Accepting TLS connections off a listener: each handshake runs in its
//! own task (bounded in time), so a slow or silent client never holds up
//! the next accept; finished handshakes are handed to the server in order.

use std::time::Duration;

use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use super::{Listener, TlsIdentity};

/// A client must finish its handshake within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes done but not yet taken by the server.
const READY_QUEUE: usize = 64;

/// The TLS connections of `listener`, as a stream for tonic's
/// `serve_with_incoming`, each handshake with the identity in force when it
/// starts (so a reload takes effect at the next connection). Failed handshakes (plaintext, an unknown CA, no
/// client certificate) are logged with the peer address and dropped; the
/// accept loop ends when the server drops the stream.
pub fn tls_incoming(
    listener: TcpListener,
    identity: Arc<TlsIdentity>,
    which: Listener,
    what: &'static str,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(READY_QUEUE);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = tx.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off.
                    tracing::warn!("{what}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
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
