//! TLS for every listener and every outbound channel, with rustls (ring
//! provider) only.
//!
//! One [`NodeTls`] per node, loaded from `[tls]` at start: it builds the
//! acceptors of the three listeners and the client side of every channel a
//! node opens to another (peer transport, forwarding, reports, output
//! reads), so TLS is configured in one place:
//!
//! - the peer port always requires a client certificate of the cluster's
//!   CA; the peer service then checks that the certificate names the node
//!   that sends (see [`identity::node_of`]);
//! - the client gRPC API requires one when `tls.verify_client` (default);
//! - the REST API when `tls.verify_https_client` (default off: browsers
//!   and curl carry tokens);
//! - a node dialing another verifies that its certificate carries
//!   `node-<id>.<cluster>.drover` for the node it means to reach, and shows
//!   its own node certificate.

pub mod certs;
pub mod identity;
mod incoming;
mod reload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

pub use self::incoming::{tls_incoming, HANDSHAKE_TIMEOUT};
pub use self::reload::{Listener, Loaded, TlsIdentity};
pub use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::raft::NodeId;

/// Why TLS could not be set up; names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path} ({key}): {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} ({key}) holds no usable {what}: {detail}")]
    Invalid {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error("{0}")]
    Setup(String),
}

/// The node's CA, certificate and key, as loaded at start.
pub struct NodeTls {
    cluster_id: String,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    verify_client: bool,
    verify_https_client: bool,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

/// The crypto provider of every TLS endpoint of the node.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl NodeTls {
    /// Loads `[tls]` (None when it is not configured). Refuses a key that
    /// does not match the certificate and a certificate the CA did not sign.
    pub fn load(config: &TlsConfig, cluster_id: &str) -> Result<Option<NodeTls>, TlsError> {
        let (Some(ca_file), Some(cert_file), Some(key_file)) =
            (&config.ca_file, &config.cert_file, &config.key_file)
        else {
            return Ok(None);
        };
        identity::check_cluster_name(cluster_id).map_err(TlsError::Setup)?;
        let ca_pem = read("tls.ca_file", ca_file)?;
        let cert_pem = read("tls.cert_file", cert_file)?;
        let key_pem = read("tls.key_file", key_file)?;
        let mut roots = RootCertStore::empty();
        for ca in certs_of("tls.ca_file", ca_file, &ca_pem)? {
            roots.add(ca).map_err(|e| TlsError::Invalid {
                key: "tls.ca_file",
                path: ca_file.clone(),
                what: "CA certificate",
                detail: e.to_string(),
            })?;
        }
        let chain = certs_of("tls.cert_file", cert_file, &cert_pem)?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Invalid {
                key: "tls.key_file",
                path: key_file.clone(),
                what: "private key",
                detail: e.to_string(),
            })?;
        let tls = NodeTls {
            cluster_id: cluster_id.to_string(),
            ca_pem,
            cert_pem,
            key_pem,
            roots: Arc::new(roots),
            chain,
            key,
            verify_client: config.verify_client,
            verify_https_client: config.verify_https_client,
        };
        // Build a config once now, so a bad key or chain fails the start
        // with its file named rather than the first handshake.
        tls.server_config(true, &[])
            .map_err(|detail| TlsError::Invalid {
                key: "tls.key_file",
                path: key_file.clone(),
                what: "key for tls.cert_file",
                detail,
            })?;
        tls.check_own_chain().map_err(|detail| TlsError::Invalid {
            key: "tls.cert_file",
            path: cert_file.clone(),
            what: "certificate signed by tls.ca_file",
            detail,
        })?;
        Ok(Some(tls))
    }

    /// The node certificate's subject and expiry (Unix seconds).
    pub fn leaf_summary(&self) -> (String, i64) {
        self.chain
            .first()
            .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
            .map(|(_, cert)| {
                (
                    cert.subject().to_string(),
                    cert.validity().not_after.timestamp(),
                )
            })
            .unwrap_or_else(|| ("(unreadable)".into(), 0))
    }

    /// The peer port: mutual TLS, always.
    pub fn peer_acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        self.acceptor(true, &[b"h2"])
    }

    /// The client gRPC API: a client certificate when `tls.verify_client`.
    pub fn api_acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        self.acceptor(self.verify_client, &[b"h2"])
    }

    /// The REST API: a client certificate when `tls.verify_https_client`.
    pub fn https_acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        self.acceptor(self.verify_https_client, &[b"h2", b"http/1.1"])
    }

    /// The client side of a channel to node `to`: the CA, this node's
    /// certificate, and `to`'s node name to verify.
    pub fn client_config(&self, to: NodeId) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
            .domain_name(identity::node_name(to, &self.cluster_id))
    }

    /// What a peer will check of this node's certificate: signed by the
    /// CA, valid now, fit for client authentication.
    fn check_own_chain(&self) -> Result<(), String> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| e.to_string())?;
        let (leaf, intermediates) = self.chain.split_first().ok_or("no certificate")?;
        verifier
            .verify_client_cert(leaf, intermediates, rustls::pki_types::UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn acceptor(&self, client_auth: bool, alpn: &[&[u8]]) -> Result<TlsAcceptor, TlsError> {
        let config = self
            .server_config(client_auth, alpn)
            .map_err(TlsError::Setup)?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    fn server_config(&self, client_auth: bool, alpn: &[&[u8]]) -> Result<ServerConfig, String> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if client_auth {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
                    .build()
                    .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| e.to_string())?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

fn read(key: &'static str, path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

fn certs_of(
    key: &'static str,
    path: &Path,
    pem: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |detail: String| TlsError::Invalid {
        key,
        path: path.to_path_buf(),
        what: "certificate",
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid("no PEM CERTIFICATE block".into()));
    }
    Ok(certs)
}
