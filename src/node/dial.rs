//! Where every channel a node opens to another node is made (peer
//! transport, reports and heartbeats, forwarded calls, output reads), so
//! TLS is configured once: with `[tls]`, each is HTTPS, verifies that the
//! other side holds the certificate of the node it means to reach, and
//! shows this node's own certificate (the one in force when the channel is
//! made: a channel made before a certificate reload keeps the old one,
//! which stays valid until it expires).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::raft::NodeId;
use crate::tls::TlsIdentity;

/// Makes the endpoints of a node's outbound channels (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Dialer {
    tls: Option<Arc<TlsIdentity>>,
}

impl Dialer {
    /// Plaintext without `tls`, mutual TLS with it.
    pub fn new(tls: Option<Arc<TlsIdentity>>) -> Dialer {
        Dialer { tls }
    }

    /// An endpoint for node `to` listening at `addr` (host:port).
    pub fn endpoint(&self, to: NodeId, addr: &str) -> Result<Endpoint, String> {
        let scheme = match self.tls {
            Some(_) => "https",
            None => "http",
        };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("bad address {addr} of node {to}: {e}"))?;
        let endpoint = match &self.tls {
            Some(tls) => endpoint
                .tls_config(tls.current().tls.client_config(to))
                .map_err(|e| format!("cannot set up TLS to node {to}: {e}"))?,
            None => endpoint,
        };
        Ok(endpoint.tcp_nodelay(true))
    }
}

/// The channels a node keeps to other nodes, one per address, made on
/// first use and shared by every caller: forwarded calls and output reads
/// (API ports), reports and heartbeats (peer ports).
#[derive(Debug)]
pub struct Channels {
    dialer: Dialer,
    open: Mutex<HashMap<String, Channel>>,
}

impl Channels {
    /// None open yet; each is made by `dialer`.
    pub fn new(dialer: Dialer) -> Channels {
        Channels {
            dialer,
            open: Mutex::default(),
        }
    }

    /// The channel to node `to` at `addr`. A new one bounds each call by
    /// `timeout`; a cached one keeps the bound it was made with (an address
    /// serves one purpose: an API port is dialled to forward, a peer port
    /// to report). Channels connect lazily and reconnect by themselves.
    pub fn get(&self, to: NodeId, addr: &str, timeout: Duration) -> Result<Channel, String> {
        // A panic elsewhere while holding the lock leaves the map intact:
        // keep using it.
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = open.get(addr) {
            return Ok(channel.clone());
        }
        let channel = self
            .dialer
            .endpoint(to, addr)?
            .connect_timeout(Duration::from_secs(2))
            .timeout(timeout)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        open.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}
