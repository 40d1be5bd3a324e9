//! Where every channel a node opens to another node is made (peer
//! transport, reports and heartbeats, forwarded calls, output reads), so
//! TLS is configured once: with `[tls]`, each is HTTPS, verifies that the
//! other side holds the certificate of the node it means to reach, and
//! shows this node's own certificate (the one in force when the channel is
//! made: a channel made before a certificate reload keeps the old one,
//! which stays valid until it expires).

use std::sync::Arc;

use tonic::transport::Endpoint;

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
