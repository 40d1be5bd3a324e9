//! The access check every client call makes first: who is calling (from
//! the bearer token in the metadata) and whether their role allows the
//! call. gRPC and REST share it, because REST calls the gRPC methods with
//! the request's `Authorization` header copied into the metadata.

use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use super::rate::ClientKey;
use crate::acl::{self, Action, Role, Token};
use crate::jobs::Job;
use crate::node::Node;
use crate::raft::NodeId;

/// Metadata key (and HTTP header) carrying `Bearer SECRET`.
pub const AUTHORIZATION: &str = "authorization";

/// Metadata key carrying, on a call one node forwards to another over
/// mutual TLS, the accessor of the token its caller presented. The
/// forwarding node authenticates as itself (its node certificate) and never
/// resends the caller's secret; the receiver trusts the key only from a
/// member node's certificate.
pub const FORWARDED_CALLER: &str = "x-drover-caller";

/// Who made a call, as far as the check could tell.
#[derive(Clone, Debug)]
pub struct Caller {
    /// What they may do. Admin for anonymous callers when ACLs are off.
    pub role: Role,
    /// The token they presented, if it is valid.
    pub token: Option<Token>,
    /// Whose share of this node's rate and stream caps the call takes
    /// (see `api::rate`); None over the local socket and for calls a member
    /// node forwards.
    pub client: Option<ClientKey>,
}

impl Caller {
    /// The owner recorded on jobs this caller submits.
    pub fn owner(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.accessor.as_str())
    }

    /// Refuses a submitter access to a job it did not submit.
    pub fn check_job(&self, job: &Job) -> Result<(), Status> {
        if self.role.owns_only() && job.owner.as_deref() != self.owner() {
            return Err(Status::permission_denied(format!(
                "job {} was submitted with another token; a submitter token sees and stops only its own jobs",
                job.id
            )));
        }
        Ok(())
    }

    /// The owner a listing is restricted to, if any.
    pub fn list_scope(&self) -> Option<&str> {
        if self.role.owns_only() {
            Some(self.owner().unwrap_or_default())
        } else {
            None
        }
    }
}

/// The bearer secret in `metadata`, if any. A header that is present but is
/// not `Bearer <secret>` is refused rather than ignored, so a client that
/// thinks it is authenticated learns that it is not.
pub fn bearer(metadata: &MetadataMap) -> Result<Option<&str>, Status> {
    let Some(value) = metadata.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not valid text"))?;
    let secret = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Status::unauthenticated("the authorization header must be `Bearer <token secret>`")
        })?;
    Ok(Some(secret))
}

/// Checks a call. With ACLs off everything is allowed to everyone, but a
/// valid token, when given, still names the caller (so jobs record their
/// owner). With ACLs on, no token or an unknown one is UNAUTHENTICATED and
/// a role without the right is PERMISSION_DENIED. Looks only at this node's
/// replica: token changes wait until every reachable node has applied them.
/// A call forwarded by a member node names its caller by accessor
/// ([`FORWARDED_CALLER`]) instead of carrying the secret.
pub fn authorize<T>(node: &Node, request: &Request<T>, action: Action) -> Result<Caller, Status> {
    let enabled = node.config.acl.enabled;
    let forwarded = calling_node(node, request).is_some();
    let (presented, token) = match forwarded_caller(node, request, forwarded)? {
        Some(token) => (true, token),
        None => {
            let secret = match bearer(request.metadata()) {
                Ok(secret) => secret,
                Err(status) if enabled => return Err(status),
                Err(_) => None,
            };
            let token = match secret {
                Some(secret) => node
                    .token_by_hash(&acl::hash_secret(secret))
                    .map_err(|e| Status::internal(e.to_string()))?,
                None => None,
            };
            (secret.is_some(), token)
        }
    };
    let client = match (&token, forwarded) {
        (_, true) => None,
        (Some(token), false) => Some(ClientKey::Token(token.accessor.clone())),
        (None, false) => request.remote_addr().map(|a| ClientKey::address(a.ip())),
    };
    if !enabled {
        return Ok(Caller {
            role: Role::Admin,
            token,
            client,
        });
    }
    let Some(token) = token else {
        return Err(if presented {
            Status::unauthenticated("the token is not valid (unknown or revoked)")
        } else {
            Status::unauthenticated(
                "this cluster requires a token: pass --token or set DROVER_TOKEN (HTTP: `Authorization: Bearer <secret>`)",
            )
        });
    };
    if !token.role.allows(action) {
        return Err(Status::permission_denied(format!(
            "token `{}` (role {}) may not {}",
            token.name,
            token.role,
            describe(action)
        )));
    }
    Ok(Caller {
        role: token.role,
        token: Some(token),
        client,
    })
}

/// The caller a member node forwarded this call for: `Ok(None)` when the
/// call carries no [`FORWARDED_CALLER`], `Ok(Some(None))` when the named
/// token no longer exists here, PERMISSION_DENIED when anyone but a member
/// node (over mutual TLS, `from_member`) claims to speak for someone.
fn forwarded_caller<T>(
    node: &Node,
    request: &Request<T>,
    from_member: bool,
) -> Result<Option<Option<Token>>, Status> {
    let Some(value) = request.metadata().get(FORWARDED_CALLER) else {
        return Ok(None);
    };
    if !from_member {
        tracing::warn!(
            remote = ?request.remote_addr(),
            "a call naming its caller ({FORWARDED_CALLER}) without a member node's certificate refused"
        );
        return Err(Status::permission_denied(format!(
            "{FORWARDED_CALLER} is accepted only from a member node over mutual TLS"
        )));
    }
    let accessor = value
        .to_str()
        .map_err(|_| Status::invalid_argument(format!("{FORWARDED_CALLER} is not valid text")))?;
    node.token(accessor)
        .map(Some)
        .map_err(|e| Status::internal(e.to_string()))
}

/// The member node that made this call: the connection is mutual TLS and
/// its certificate is the node certificate of a member of this cluster.
/// `None` for everyone else (plaintext, a client certificate, another
/// cluster, a node that is not a member).
pub fn calling_node<T>(node: &Node, request: &Request<T>) -> Option<NodeId> {
    node.tls.as_ref()?;
    let certs = request.peer_certs()?;
    let leaf = certs.first()?;
    let id = crate::tls::identity::node_of(leaf, &node.config.cluster_id).ok()?;
    node.is_member(id).then_some(id)
}

/// Puts the caller's identity on a call this node forwards. With TLS this
/// node authenticates as itself and names the caller's token by accessor;
/// the secret stays here. Without TLS there is no node identity to rely
/// on, so the bearer token travels as the caller sent it.
pub fn forward_identity(node: &Node, from: &MetadataMap, to: &mut MetadataMap) {
    if node.tls.is_none() {
        if let Some(token) = from.get(AUTHORIZATION) {
            to.insert(AUTHORIZATION, token.clone());
        }
        return;
    }
    let Ok(Some(secret)) = bearer(from) else {
        return;
    };
    let Ok(Some(token)) = node.token_by_hash(&acl::hash_secret(secret)) else {
        return;
    };
    if let Ok(value) = token.accessor.parse() {
        to.insert(FORWARDED_CALLER, value);
    }
}

fn describe(action: Action) -> &'static str {
    match action {
        Action::SubmitJob => "submit jobs",
        Action::ReadJobs => "read jobs",
        Action::StopJob => "stop jobs",
        Action::ReadCluster => "read the cluster status",
        Action::OperateNodes => "drain nodes",
        Action::OperateRaft => "change the cluster membership or leadership",
        Action::ManageTokens => "manage tokens",
    }
}
