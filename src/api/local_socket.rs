//! The client API on a unix socket of the node's machine: whoever may open
//! it (mode 0600, the node's user) is local and trusted to bootstrap the
//! ACL system (see `api::grpc::bootstrap`). Every other call over it goes
//! through the same token checks as over TCP.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Longest socket path the kernel takes (sun_path is 108 bytes with NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A bound socket; its file is removed when dropped (at shutdown).
pub struct LocalSocket {
    /// The listener, taken by the server.
    pub listener: Option<UnixListener>,
    path: PathBuf,
}

impl Drop for LocalSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket at `path`. A stale file from a killed node is
/// replaced; a socket another process still serves is an error (two nodes
/// on one data directory). A path too long for a unix socket is skipped
/// with a warning: the node runs without its local door.
pub fn bind(path: &Path) -> anyhow::Result<Option<LocalSocket>> {
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        tracing::warn!(
            path = %path.display(),
            "listen.socket: path longer than {MAX_SOCKET_PATH} bytes, no local socket (set a shorter listen.socket)"
        );
        return Ok(None);
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                anyhow::bail!(
                    "listen.socket {} is served by another process (another node on this data directory?)",
                    path.display()
                );
            }
            std::fs::remove_file(path).map_err(|e| {
                anyhow::anyhow!("cannot replace the stale socket {} (listen.socket): {e}", path.display())
            })?;
        }
        Ok(_) => anyhow::bail!(
            "listen.socket {} exists and is not a socket: move it away or set another listen.socket",
            path.display()
        ),
        Err(_) => {}
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            anyhow::anyhow!("cannot create {} for listen.socket: {e}", parent.display())
        })?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (listen.socket): {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        anyhow::anyhow!(
            "cannot restrict {} to its owner (listen.socket): {e}",
            path.display()
        )
    })?;
    Ok(Some(LocalSocket {
        listener: Some(listener),
        path: path.to_path_buf(),
    }))
}
