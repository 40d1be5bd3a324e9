//! The node's TLS identity, replaceable while it runs: on SIGHUP, and when
//! the files change on disk, the CA, certificate and key are loaded again.
//! New handshakes use the new ones at once; open connections carry on with
//! the old until they close, so a rotation costs no write and no leader
//! change. A file that does not load (a half-written certificate, a key of
//! another certificate) is refused with a log line and the identity in
//! force stays.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use tokio_rustls::TlsAcceptor;

use super::{NodeTls, TlsError};
use crate::config::TlsConfig;

/// Which listener an acceptor is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The peer port: mutual TLS, always.
    Peer,
    /// The client gRPC API (client certificate per `tls.verify_client`).
    Api,
    /// The REST API (client certificate per `tls.verify_https_client`).
    Https,
}

/// One loaded generation of the identity, with its acceptors built.
pub struct Loaded {
    /// The certificates and the client side of channels.
    pub tls: NodeTls,
    peer: TlsAcceptor,
    api: TlsAcceptor,
    https: TlsAcceptor,
    /// The node certificate's subject, for log lines.
    pub subject: String,
    /// When the node certificate expires (Unix seconds).
    pub not_after: i64,
}

impl Loaded {
    /// The acceptor of a listener.
    pub fn acceptor(&self, which: Listener) -> TlsAcceptor {
        match which {
            Listener::Peer => self.peer.clone(),
            Listener::Api => self.api.clone(),
            Listener::Https => self.https.clone(),
        }
    }
}

/// What the files looked like when last loaded (or tried).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp(Vec<Option<(SystemTime, u64)>>);

/// The reloadable identity (see the module docs).
pub struct TlsIdentity {
    config: TlsConfig,
    cluster_id: String,
    current: RwLock<Arc<Loaded>>,
    seen: RwLock<Stamp>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Loads `[tls]`; None when it is not configured.
    pub fn load(config: &TlsConfig, cluster_id: &str) -> Result<Option<TlsIdentity>, TlsError> {
        let seen = stamp(config);
        let Some(loaded) = load(config, cluster_id)? else {
            return Ok(None);
        };
        Ok(Some(TlsIdentity {
            config: config.clone(),
            cluster_id: cluster_id.to_string(),
            current: RwLock::new(Arc::new(loaded)),
            seen: RwLock::new(seen),
        }))
    }

    /// The identity in force.
    pub fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Whether a file changed since it was last loaded (or tried).
    pub fn files_changed(&self) -> bool {
        let now = stamp(&self.config);
        let seen = self.seen.read().unwrap_or_else(|p| p.into_inner());
        *seen != now
    }

    /// Loads the files again and puts them in force; on error the identity
    /// in force stays (and the same files are not tried again until they
    /// change or a SIGHUP asks).
    pub fn reload(&self) -> Result<Arc<Loaded>, TlsError> {
        *self.seen.write().unwrap_or_else(|p| p.into_inner()) = stamp(&self.config);
        let loaded = load(&self.config, &self.cluster_id)?
            .ok_or_else(|| TlsError::Setup("[tls] is no longer configured".into()))?;
        let loaded = Arc::new(loaded);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded.clone();
        Ok(loaded)
    }
}

fn load(config: &TlsConfig, cluster_id: &str) -> Result<Option<Loaded>, TlsError> {
    let Some(tls) = NodeTls::load(config, cluster_id)? else {
        return Ok(None);
    };
    let (subject, not_after) = tls.leaf_summary();
    Ok(Some(Loaded {
        peer: tls.peer_acceptor()?,
        api: tls.api_acceptor()?,
        https: tls.https_acceptor()?,
        tls,
        subject,
        not_after,
    }))
}

fn stamp(config: &TlsConfig) -> Stamp {
    let files: [&Option<PathBuf>; 3] = [&config.ca_file, &config.cert_file, &config.key_file];
    Stamp(
        files
            .iter()
            .map(|f| {
                let meta = std::fs::metadata(f.as_ref()?).ok()?;
                Some((meta.modified().ok()?, meta.len()))
            })
            .collect(),
    )
}
