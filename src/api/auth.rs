//! The access check every client call makes first: who is calling (from
//! the bearer token in the metadata) and whether their role allows the
//! call. gRPC and REST share it, because REST calls the gRPC methods with
//! the request's `Authorization` header copied into the metadata.

use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::acl::{self, Action, Role, Token};
use crate::jobs::Job;
use crate::node::Node;

/// Metadata key (and HTTP header) carrying `Bearer SECRET`.
pub const AUTHORIZATION: &str = "authorization";

/// Who made a call, as far as the check could tell.
#[derive(Clone, Debug)]
pub struct Caller {
    /// What they may do. Admin for anonymous callers when ACLs are off.
    pub role: Role,
    /// The token they presented, if it is valid.
    pub token: Option<Token>,
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
/// owner). With
/// ACLs on, no token or an unknown one is UNAUTHENTICATED and a role
/// without the right is PERMISSION_DENIED. Looks only at this node's
/// replica: token changes wait until every reachable node has applied them.
pub fn authorize(node: &Node, metadata: &MetadataMap, action: Action) -> Result<Caller, Status> {
    let enabled = node.config.acl.enabled;
    let secret = match bearer(metadata) {
        Ok(secret) => secret,
        Err(status) if enabled => return Err(status),
        Err(_) => None,
    };
    let token = match secret {
        Some(secret) => node
            .store
            .token_by_hash(&acl::hash_secret(secret))
            .map_err(|e| Status::internal(e.to_string()))?,
        None => None,
    };
    if !enabled {
        return Ok(Caller {
            role: Role::Admin,
            token,
        });
    }
    let Some(token) = token else {
        return Err(match secret {
            None => Status::unauthenticated(
                "this cluster requires a token: pass --token or set DROVER_TOKEN (HTTP: `Authorization: Bearer <secret>`)",
            ),
            Some(_) => Status::unauthenticated("the token is not valid (unknown or revoked)"),
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
    })
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
