//! Tokens: create, list, revoke, who am I. Token changes wait until every
//! reachable member has applied them.

use std::time::Duration;

use tonic::{Request, Response, Status};

use super::{raft_status, DroverService};

use crate::acl::{self, Action, Token};
use crate::api::auth::Caller;
use crate::api::convert::token_to_proto;
use crate::jobs::Command;
use crate::node::writes::Change;
use crate::node::{now_ms, Node};
use crate::proto::v1 as pb;

/// How long a token change waits for the other members to apply it.
pub(super) const ACL_PROPAGATION_WAIT: Duration = Duration::from_secs(3);

/// A new token and its secret (the only copy of the secret).
pub(super) fn mint_token(name: String, role: acl::Role) -> (Token, String) {
    let secret = acl::new_secret();
    let token = mint_token_with_hash(name, role, acl::hash_secret(&secret));
    (token, secret)
}

/// A new token whose secret the caller holds (only its hash is stored).
pub(super) fn mint_token_with_hash(name: String, role: acl::Role, secret_hash: [u8; 32]) -> Token {
    Token {
        accessor: acl::new_accessor(),
        name,
        role,
        secret_hash,
        created_at_ms: now_ms(),
    }
}

/// Proposes a token change (on the leader), then waits until every other
/// member has applied it, so a revoked token is refused everywhere once
/// the call returns. Returns the members that did not confirm in time.
pub(super) async fn propose_acl(
    node: &Node,
    command: Command,
) -> Result<(Change<Token>, Vec<u64>), Status> {
    let applied = node.change_token(command).await.map_err(raft_status)?;
    let index = node.applied_index();
    let unconfirmed = node.wait_cluster_applied(index, ACL_PROPAGATION_WAIT).await;
    if !unconfirmed.is_empty() {
        tracing::warn!(
            ?unconfirmed,
            index,
            "a token change is not yet applied on every member"
        );
    }
    Ok((applied, unconfirmed))
}

impl DroverService {
    pub(super) async fn token_create(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::AclTokenSecret>, Status> {
        self.authorize(&request, Action::ManageTokens)?;
        let req = request.get_ref();
        acl::validate_name(&req.name).map_err(Status::invalid_argument)?;
        let role: acl::Role = req.role.parse().map_err(Status::invalid_argument)?;
        self.node.admit_new_work().map_err(raft_status)?;
        self.write(
            request,
            move |node, req| async move {
                let (token, secret) = mint_token(req.name.clone(), role);
                let (applied, unconfirmed) =
                    propose_acl(&node, Command::AclCreateToken { token }).await?;
                match applied {
                    Change::Done(token) => Ok(pb::AclTokenSecret {
                        token: Some(token_to_proto(&token)),
                        secret,
                        unconfirmed_nodes: unconfirmed,
                    }),
                    Change::Refused(reason) => Err(Status::aborted(reason)),
                }
            },
            |mut client, req| async move { client.create_token(req).await },
        )
        .await
    }

    pub(super) async fn token_list(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.authorize(&request, Action::ManageTokens)?;
        let tokens = self
            .node
            .tokens()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.iter().map(token_to_proto).collect(),
        }))
    }

    pub(super) async fn token_revoke(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        self.authorize(&request, Action::ManageTokens)?;
        if request.get_ref().accessor.is_empty() {
            return Err(Status::invalid_argument(
                "name the token by its accessor id",
            ));
        }
        self.write(
            request,
            move |node, req| async move {
                let not_found =
                    || Status::not_found(format!("no token with accessor {}", req.accessor));
                // Unknown accessors are refused without a log entry (after
                // a barrier, as a new leader may lag its predecessor).
                let known = |node: &Node| {
                    node.token(&req.accessor)
                        .map(|t| t.is_some())
                        .map_err(|e| Status::internal(e.to_string()))
                };
                if !known(&node)? {
                    node.read_barrier().await.map_err(raft_status)?;
                    if !known(&node)? {
                        return Err(not_found());
                    }
                }
                let command = Command::AclRevokeToken {
                    accessor: req.accessor.clone(),
                };
                let (applied, unconfirmed) = propose_acl(&node, command).await?;
                match applied {
                    Change::Done(token) => Ok(pb::RevokeTokenResponse {
                        token: Some(token_to_proto(&token)),
                        unconfirmed_nodes: unconfirmed,
                    }),
                    Change::Refused(_) => Err(not_found()),
                }
            },
            |mut client, req| async move { client.revoke_token(req).await },
        )
        .await
    }

    pub(super) async fn whoami(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::AclToken>, Status> {
        let caller: Caller = self.authorize(&request, Action::ReadCluster)?;
        Ok(Response::new(match &caller.token {
            Some(token) => token_to_proto(token),
            None => pb::AclToken {
                accessor: String::new(),
                name: "anonymous".into(),
                role: caller.role.as_str().into(),
                created_at_ms: 0,
            },
        }))
    }
}
