//! AclBootstrap: the first admin token, granted only to whoever proves to
//! be the operator, never to whoever asks first over the network.
//!
//! Two proofs count (like Consul's initial management token, plus a local
//! door): the secret provisioned in `acl.bootstrap_token_file`, presented
//! as the call's token (it becomes the admin token), or a call over the
//! node's unix socket (`listen.socket`, mode 0600), which mints a new
//! secret. A follower checks the proof itself and forwards the grant (the
//! token's hash) to the leader under its own node certificate; without TLS
//! it forwards the presented secret and the leader checks it again.

use std::path::Path;

use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

use super::{mint_token_with_hash, propose_acl, raft_status, DroverService};
use crate::acl::{self, hex, unhex};
use crate::api::auth::{bearer, calling_node};
use crate::api::convert::token_to_proto;
use crate::jobs::Command;
use crate::node::writes::Change;
use crate::proto::v1 as pb;

/// Metadata key of a forwarded bootstrap: the SHA-256 (hex) of the secret
/// the forwarding node granted. Accepted only from a member node over
/// mutual TLS.
const BOOTSTRAP_GRANT: &str = "x-drover-bootstrap-grant";

/// Shortest provisioned secret accepted: it guards the whole cluster.
pub const MIN_BOOTSTRAP_SECRET: usize = 32;

/// What the caller proved: the hash the admin token gets, and the secret
/// to show them (none when a forwarding node holds it).
struct Grant {
    hash: [u8; 32],
    secret: Option<String>,
    /// Minted here for a socket caller (no provisioned secret exists).
    minted: bool,
}

/// Reads and checks the provisioned secret: the file's text, trimmed; at
/// least [`MIN_BOOTSTRAP_SECRET`] characters, no whitespace inside.
pub fn read_bootstrap_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read acl.bootstrap_token_file {}: {e}",
            path.display()
        )
    })?;
    let secret = text.trim();
    if secret.chars().count() < MIN_BOOTSTRAP_SECRET || secret.contains(char::is_whitespace) {
        return Err(format!(
            "acl.bootstrap_token_file {}: the secret must be one word of at least \
             {MIN_BOOTSTRAP_SECRET} characters (e.g. drv_ and 64 random hex digits)",
            path.display()
        ));
    }
    Ok(secret.to_string())
}

fn already() -> Status {
    Status::failed_precondition(
        "the ACL system is already bootstrapped; ask an admin for a token (`drover acl token create`)",
    )
}

/// Equal without an early exit: the time a wrong guess takes tells nothing.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the socket's peer is the user the node runs as (the socket
/// file's owner) or root: mode 0600 says so too, this holds even for a
/// connection made in the instant between bind and chmod.
fn same_user(info: &UdsConnectInfo, socket: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(peer) = info.peer_cred.map(|c| c.uid()) else {
        return false;
    };
    let owner = std::fs::metadata(socket).map(|m| m.uid()).ok();
    peer == 0 || Some(peer) == owner
}

impl DroverService {
    /// What this call proves, or why it proves nothing.
    fn bootstrap_grant<T>(&self, request: &Request<T>) -> Result<Grant, Status> {
        let node = &self.node;
        if let Some(value) = request.metadata().get(BOOTSTRAP_GRANT) {
            let Some(from) = calling_node(node, request) else {
                tracing::warn!(remote = ?request.remote_addr(), "a forwarded bootstrap without a member node's certificate refused");
                return Err(Status::permission_denied(format!(
                    "{BOOTSTRAP_GRANT} is accepted only from a member node over mutual TLS"
                )));
            };
            let hash = value.to_str().ok().and_then(unhex).ok_or_else(|| {
                Status::invalid_argument(format!("{BOOTSTRAP_GRANT} is not a hash"))
            })?;
            tracing::info!(from, "bootstrap granted by node {from}");
            return Ok(Grant {
                hash,
                secret: None,
                minted: false,
            });
        }
        let presented = bearer(request.metadata())?;
        let provisioned = match &node.config.acl.bootstrap_token_file {
            Some(path) => Some(read_bootstrap_secret(path).map_err(|why| {
                tracing::error!("{why}");
                Status::failed_precondition(format!(
                    "this node cannot check the bootstrap secret: {why}"
                ))
            })?),
            None => None,
        };
        if let (Some(provisioned), Some(presented)) = (&provisioned, presented) {
            let hash = acl::hash_secret(presented);
            if same(&hash, &acl::hash_secret(provisioned)) {
                return Ok(Grant {
                    hash,
                    secret: Some(presented.to_string()),
                    minted: false,
                });
            }
        }
        if let Some(info) = request.extensions().get::<UdsConnectInfo>() {
            if !same_user(info, &node.config.socket_path()) {
                return Err(Status::permission_denied(
                    "bootstrap over the socket is for the node's own user (or root)",
                ));
            }
            // Local and the node's own user.
            let (secret, minted) = match &provisioned {
                Some(provisioned) => (provisioned.clone(), false),
                None => (acl::new_secret(), true),
            };
            return Ok(Grant {
                hash: acl::hash_secret(&secret),
                secret: Some(secret),
                minted,
            });
        }
        let socket = node.config.socket_path();
        tracing::warn!(remote = ?request.remote_addr(), "acl bootstrap without the provisioned secret refused");
        Err(Status::permission_denied(match (&provisioned, presented) {
            (Some(_), Some(_)) => "the token sent is not the bootstrap secret of acl.bootstrap_token_file".to_string(),
            (Some(_), None) => "bootstrap needs the secret of acl.bootstrap_token_file: pass it as the token (--token or DROVER_TOKEN)".to_string(),
            (None, _) => format!(
                "bootstrap needs the node's local socket (drover acl bootstrap --address unix://{}) \
                 or a secret provisioned in acl.bootstrap_token_file",
                socket.display()
            ),
        }))
    }

    /// AclBootstrap (see the module doc).
    pub(super) async fn bootstrap(
        &self,
        request: Request<pb::AclBootstrapRequest>,
    ) -> Result<Response<pb::AclTokenSecret>, Status> {
        self.node.admit_new_work().map_err(raft_status)?;
        let bootstrapped = || {
            self.node
                .acl_bootstrapped()
                .map_err(|e| Status::internal(e.to_string()))
        };
        if bootstrapped()? {
            return Err(already());
        }
        let grant = self.bootstrap_grant(&request)?;
        if grant.minted && self.node.tls.is_none() && !self.node.is_leader() {
            // Without TLS nothing can carry the grant to the leader safely.
            let leader = self.node.leader().map(|(id, _)| id);
            return Err(Status::failed_precondition(format!(
                "this node does not lead and the cluster runs without TLS: run the bootstrap \
                 on the leader's socket (node {}) or provision acl.bootstrap_token_file",
                leader.map_or("unknown".into(), |id| id.to_string())
            )));
        }
        let hash = grant.hash;
        let secret = grant.secret.clone().unwrap_or_default();
        let with_tls = self.node.tls.is_some();
        self.write(
            request,
            move |node, _req| {
                let secret = secret.clone();
                async move {
                    let token = mint_token_with_hash("bootstrap".into(), acl::Role::Admin, hash);
                    let (applied, unconfirmed) =
                        propose_acl(&node, Command::AclBootstrap { token }).await?;
                    match applied {
                        Change::Done(token) => Ok(pb::AclTokenSecret {
                            token: Some(token_to_proto(&token)),
                            secret,
                            unconfirmed_nodes: unconfirmed,
                        }),
                        Change::Refused(_) => Err(already()),
                    }
                }
            },
            move |mut client, mut forwarded| {
                let metadata = forwarded.metadata_mut();
                if with_tls {
                    if let Ok(value) = hex(&hash).parse() {
                        metadata.insert(BOOTSTRAP_GRANT, value);
                    }
                } else if let Some(secret) = &grant.secret {
                    // Without TLS the leader checks the provisioned secret
                    // itself (a socket caller here did not send it).
                    if let Ok(value) = format!("Bearer {secret}").parse() {
                        metadata.insert(crate::api::auth::AUTHORIZATION, value);
                    }
                }
                let secret = grant.secret.clone();
                async move {
                    let mut response = client.acl_bootstrap(forwarded).await?;
                    if let Some(secret) = secret {
                        response.get_mut().secret = secret;
                    }
                    Ok(response)
                }
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_travels_as_hex_and_back() {
        let hash = acl::hash_secret("drv_x");
        assert_eq!(unhex(&hex(&hash)), Some(hash));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(&"g".repeat(64)), None);
    }

    #[test]
    fn a_provisioned_secret_must_be_long_and_one_word() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bootstrap.token");
        std::fs::write(&path, "short\n").expect("write");
        assert!(read_bootstrap_secret(&path)
            .unwrap_err()
            .contains("at least 32"));
        std::fs::write(&path, format!("{} {}\n", "a".repeat(20), "b".repeat(20))).expect("write");
        assert!(read_bootstrap_secret(&path).is_err());
        let good = format!("drv_{}", "ab".repeat(32));
        std::fs::write(&path, format!("{good}\n")).expect("write");
        assert_eq!(read_bootstrap_secret(&path).as_deref(), Ok(good.as_str()));
        assert!(read_bootstrap_secret(&dir.path().join("missing"))
            .unwrap_err()
            .contains("cannot read"));
    }
}
