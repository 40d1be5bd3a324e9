//! Accepting connections within `limits.max_connections` per listener and
//! `limits.max_connections_per_address` per client address. A connection
//! over either bound is closed as soon as it is accepted (the client sees a
//! reset, not a hang), so idle or slow connections from one client cannot
//! use up the file descriptors and memory every other client needs. Each
//! admitted connection holds a [`Permit`] for its life, and must send its
//! first bytes (a TLS hello, an HTTP/2 preface, a request) within
//! `limits.read_timeout`, or it is closed: a silent connection cannot hold
//! its place for ever.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::config::LimitsConfig;

/// Accepted connections waiting for the server to take them.
const READY_QUEUE: usize = 64;
/// Least time between two warnings about refused connections.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The connection bounds of one listener.
#[derive(Debug)]
pub struct ConnectionLimit {
    what: &'static str,
    max_total: usize,
    max_per_address: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
    last_warning: Option<Instant>,
}

/// One admitted connection's place; dropping it frees the place.
#[derive(Debug)]
pub struct Permit {
    limit: Arc<ConnectionLimit>,
    address: IpAddr,
}

impl ConnectionLimit {
    /// At most `max_total` connections to the listener called `what`, and
    /// `max_per_address` from one address.
    pub fn new(what: &'static str, max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(ConnectionLimit {
            what,
            max_total,
            max_per_address,
            open: Mutex::new(Open::default()),
        })
    }

    /// A place for a connection from `peer`, or None when a bound is met.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Option<Permit> {
        // One host is one address, however it writes it (see `rate`).
        let address = super::rate::client_block(peer.ip());
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let from_address = open.by_address.get(&address).copied().unwrap_or(0);
        if open.total >= self.max_total || from_address >= self.max_per_address {
            let now = Instant::now();
            if open
                .last_warning
                .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
            {
                open.last_warning = Some(now);
                tracing::warn!(
                    %address,
                    open = open.total,
                    from_address,
                    "{}: connection refused (limits.max_connections {}, \
                     limits.max_connections_per_address {})",
                    self.what,
                    self.max_total,
                    self.max_per_address
                );
            }
            return None;
        }
        open.total += 1;
        *open.by_address.entry(address).or_default() += 1;
        Some(Permit {
            limit: self.clone(),
            address,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.limit.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_address.get_mut(&self.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_address.remove(&self.address);
            }
        }
    }
}

/// An admitted TCP connection and its place.
#[derive(Debug)]
pub struct Limited {
    stream: TcpStream,
    peer: SocketAddr,
    _permit: Permit,
    /// Until the client has sent something: when it must have.
    first_bytes_by: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Limited {
    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        let this = &mut *self;
        if let Some(deadline) = this.first_bytes_by.as_mut() {
            match &read {
                Poll::Ready(Ok(())) if buf.filled().len() > before => this.first_bytes_by = None,
                Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client sent nothing within limits.read_timeout",
                    )));
                }
                _ => {}
            }
        }
        read
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The same connection facts as a plain TCP stream, so a request's
/// `remote_addr()` and, under TLS, `peer_certs()` work as before.
impl Connected for Limited {
    type ConnectInfo = <TcpStream as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// The admitted connections of `listener`, called `what` in the log, within
/// `limits` (connections per listener and per address, first bytes within
/// `read_timeout`), with Nagle off (small replies must not wait for
/// delayed ACKs); accepted on a task of their own until the stream is
/// dropped.
pub fn accept(
    listener: TcpListener,
    what: &'static str,
    limits: &LimitsConfig,
) -> ReceiverStream<Limited> {
    let limit = ConnectionLimit::new(
        what,
        limits.max_connections,
        limits.max_connections_per_address,
    );
    let first_bytes = limits.read_timeout;
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
                    tracing::warn!("{}: accept failed: {e}", limit.what);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Over a bound: dropped here, which closes it.
            let Some(permit) = limit.admit(peer) else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let limited = Limited {
                stream,
                peer,
                _permit: permit,
                first_bytes_by: Some(Box::pin(tokio::time::sleep(first_bytes))),
            };
            if tx.send(limited).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_per_address_and_in_all_and_places_come_back() {
        let limit = ConnectionLimit::new("test", 3, 2);
        let a: SocketAddr = "127.0.0.2:1000".parse().expect("addr");
        let b: SocketAddr = "127.0.0.3:1000".parse().expect("addr");
        let a1 = limit.admit(a).expect("first from a");
        let _a2 = limit.admit(a).expect("second from a");
        assert!(limit.admit(a).is_none(), "a third from one address");
        let _b1 = limit.admit(b).expect("another address");
        assert!(limit.admit(b).is_none(), "over the total");
        drop(a1);
        assert_eq!(limit.open(), 2);
        limit.admit(a).expect("a place came back");
    }
}
