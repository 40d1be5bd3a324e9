//! Extractors: JSON bodies, queries and paths whose rejections are problem
//! documents, the bearer token handed on to the gRPC service, and the
//! `consistent` read switch.

use std::convert::Infallible;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query};
use axum::http::{header, request::Parts};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::IntoParams;

use super::problem::*;

/// A JSON request body (`Content-Type: application/json`, unknown fields
/// refused by the target type), rejected as a problem.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Problem> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// Like [`Body`], but a request with no body at all (no content type, no
/// length) gets `T::default()`: for bodies whose every field is optional.
pub struct OptionalBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalBody<T> {
    type Rejection = Problem;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Problem> {
        let headers = req.headers();
        let no_length = headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0");
        let chunked = headers.contains_key(header::TRANSFER_ENCODING);
        if !headers.contains_key(header::CONTENT_TYPE) && no_length && !chunked {
            return Ok(OptionalBody(T::default()));
        }
        Body::<T>::from_request(req, state)
            .await
            .map(|Body(v)| OptionalBody(v))
    }
}

pub(super) fn json_rejection(rejection: JsonRejection) -> Problem {
    let detail = match &rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "expected a request with `Content-Type: application/json`".to_string()
        }
        other => other.body_text(),
    };
    Problem::from_rejection(rejection.status(), detail)
}

/// Query parameters (unknown ones refused by the target type), rejected as
/// a problem.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Q(v))
            .map_err(|r: QueryRejection| Problem::from_rejection(r.status(), r.body_text()))
    }
}

/// Path parameters, rejected as a problem.
pub struct P<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for P<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| P(v))
            .map_err(|r: PathRejection| Problem::from_rejection(r.status(), r.body_text()))
    }
}

/// The address a REST request came from, put on every request by the
/// server's connection loop.
#[derive(Clone, Copy, Debug)]
pub(super) struct ClientAddr(pub std::net::SocketAddr);

/// The caller's `Authorization` header and address, handed to the gRPC
/// method as metadata and connection info so REST and gRPC make the same
/// access check and count against the same per-client limits.
#[derive(Clone, Default)]
pub struct Auth {
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    client: Option<std::net::SocketAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        let token = parts.headers.get(header::AUTHORIZATION).map(|value| {
            // Not representable as metadata (non-visible bytes): passed on
            // as a value the check refuses with a clear message.
            tonic::metadata::MetadataValue::try_from(value.as_bytes())
                .unwrap_or_else(|_| tonic::metadata::MetadataValue::from_static("invalid"))
        });
        let client = parts.extensions.get::<ClientAddr>().map(|a| a.0);
        Ok(Auth { token, client })
    }
}

impl Auth {
    /// The gRPC request carrying this caller's token and address.
    pub(super) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = &self.token {
            request
                .metadata_mut()
                .insert(crate::api::auth::AUTHORIZATION, value.clone());
        }
        if let Some(addr) = self.client {
            request
                .extensions_mut()
                .insert(tonic::transport::server::TcpConnectInfo {
                    local_addr: None,
                    remote_addr: Some(addr),
                });
        }
        request
    }
}

/// `?consistent=true` serves the read linearizably (ReadIndex through the
/// leader) instead of from this node's possibly stale table.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// Linearizable read (confirmed with a quorum first).
    pub consistent: bool,
}
