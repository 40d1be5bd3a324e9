//! `/v1/acl`: bootstrap, tokens, who am I.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::extract::{Auth, Body, P};
use super::problem::Problem;
use super::{respond, Svc};
use crate::api::json::{
    CreateTokenJson, RevokedTokenJson, TokenJson, TokenListJson, TokenSecretJson,
};
use crate::proto::v1 as pb;
use crate::proto::v1::drover_server::Drover as _;

/// Creates the first admin token. Needs no token; works once per cluster
/// (then 409 `failed-precondition`).
#[utoipa::path(
    post, path = "/v1/acl/bootstrap", tag = "acl",
    responses(
        (status = 201, description = "The bootstrap token and its secret (shown once)", body = TokenSecretJson),
        (status = "4XX", description = "Already bootstrapped", body = Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "No leader, timeout, …", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn acl_bootstrap(State(svc): State<Svc>, auth: Auth) -> Result<Response, Problem> {
    let (metadata, message, _) = svc
        .acl_bootstrap(auth.request(pb::AclBootstrapRequest {}))
        .await?
        .into_parts();
    Ok(respond(
        StatusCode::CREATED,
        &metadata,
        &TokenSecretJson::from(&message),
    ))
}

/// Creates a token (admin). The secret is in this response only.
#[utoipa::path(
    post, path = "/v1/acl/tokens", tag = "acl",
    request_body(content = CreateTokenJson, content_type = "application/json"),
    responses(
        (status = 201, description = "The token and its secret (shown once)", body = TokenSecretJson),
        (status = "4XX", description = "Bad name or role, no token, not an admin", body = Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "No leader, timeout, …", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn create_token(
    State(svc): State<Svc>,
    auth: Auth,
    Body(body): Body<CreateTokenJson>,
) -> Result<Response, Problem> {
    let request = pb::CreateTokenRequest {
        name: body.name,
        role: body.role,
    };
    let (metadata, message, _) = svc.create_token(auth.request(request)).await?.into_parts();
    Ok(respond(
        StatusCode::CREATED,
        &metadata,
        &TokenSecretJson::from(&message),
    ))
}

/// Every token, without secrets (admin).
#[utoipa::path(
    get, path = "/v1/acl/tokens", tag = "acl",
    responses(
        (status = 200, description = "Every token", body = TokenListJson),
        (status = "4XX", description = "No token, not an admin", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn list_tokens(State(svc): State<Svc>, auth: Auth) -> Result<Response, Problem> {
    let (metadata, message, _) = svc
        .list_tokens(auth.request(pb::ListTokensRequest {}))
        .await?
        .into_parts();
    let list = TokenListJson {
        tokens: message.tokens.iter().map(TokenJson::from).collect(),
    };
    Ok(respond(StatusCode::OK, &metadata, &list))
}

/// Revokes a token (admin): refused on every reachable node once this
/// answers.
#[utoipa::path(
    delete, path = "/v1/acl/tokens/{accessor}", tag = "acl",
    params(("accessor" = String, Path, description = "The token's accessor id")),
    responses(
        (status = 200, description = "The revoked token", body = RevokedTokenJson),
        (status = "4XX", description = "Unknown accessor, no token, not an admin", body = Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "No leader, timeout, …", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn revoke_token(
    State(svc): State<Svc>,
    auth: Auth,
    P(accessor): P<String>,
) -> Result<Response, Problem> {
    let (metadata, message, _) = svc
        .revoke_token(auth.request(pb::RevokeTokenRequest { accessor }))
        .await?
        .into_parts();
    let revoked = RevokedTokenJson {
        token: TokenJson::from(&message.token.unwrap_or_default()),
        unconfirmed_nodes: message.unconfirmed_nodes,
    };
    Ok(respond(StatusCode::OK, &metadata, &revoked))
}

/// The caller's own token (`anonymous` without ACLs and without a token).
#[utoipa::path(
    get, path = "/v1/acl/token/self", tag = "acl",
    responses(
        (status = 200, description = "The caller's token", body = TokenJson),
        (status = 401, description = "No valid token (ACLs on)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn who_am_i(State(svc): State<Svc>, auth: Auth) -> Result<Response, Problem> {
    let (metadata, message, _) = svc
        .who_am_i(auth.request(pb::WhoAmIRequest {}))
        .await?
        .into_parts();
    Ok(respond(
        StatusCode::OK,
        &metadata,
        &TokenJson::from(&message),
    ))
}
