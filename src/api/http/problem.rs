//! Errors as `application/problem+json` (RFC 9457): one stable `type` per
//! gRPC code, so REST clients can tell a refusal from an outage.

use super::MAX_BODY_BYTES;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Prefix of every problem `type`.
pub const PROBLEM_BASE: &str = "https://drover.dev/problems/";

/// An error as `application/problem+json`. `type` is stable per kind of
/// error (one per gRPC code, plus HTTP-only ones like payload-too-large), so
/// clients branch on it rather than on `detail`, which is for humans.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// `https://drover.dev/problems/<kind>`, e.g. `.../invalid-argument`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code, repeated.
    pub status: u16,
    /// What went wrong in this case (the gRPC status message).
    pub detail: String,
    /// For invalid input: the request field at fault, as the spec names it
    /// (`resources.cpu_millis`, `env`), so a form can mark that field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds to wait before retrying, sent as `Retry-After` (not in the
    /// body); 1 for an unavailable or exhausted answer that names none.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem of kind `slug` with status and title.
    pub(super) fn new(
        status: StatusCode,
        slug: &str,
        title: &str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            problem_type: format!("{PROBLEM_BASE}{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            retry_after: None,
        }
    }

    pub(super) fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            detail,
        )
    }

    /// An extractor's rejection (bad JSON, wrong content type, body too
    /// large, bad query or path), never axum's plain-text default.
    pub(super) fn from_rejection(status: StatusCode, detail: String) -> Problem {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
                status,
                "payload-too-large",
                "Request body too large",
                format!("{detail} (the limit is {MAX_BODY_BYTES} bytes)"),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
                status,
                "unsupported-media-type",
                "Unsupported media type",
                detail,
            ),
            s if s.is_server_error() => Problem::internal(detail),
            // 400 and axum's 422 for well-formed JSON of the wrong shape:
            // both are invalid input, as gRPC's INVALID_ARGUMENT.
            _ => {
                let (status, slug, title) = problem_for_code(tonic::Code::InvalidArgument);
                Problem::new(status, slug, title, detail)
            }
        }
    }
}

/// The HTTP status, problem slug and title for a gRPC code. The slugs are
/// part of the API: they never change meaning.
pub fn problem_for_code(code: tonic::Code) -> (StatusCode, &'static str, &'static str) {
    use tonic::Code;
    match code {
        Code::InvalidArgument => (
            StatusCode::BAD_REQUEST,
            "invalid-argument",
            "Invalid argument",
        ),
        // A watch from an index whose events this node no longer holds.
        Code::OutOfRange => (StatusCode::GONE, "out-of-range", "Out of range; list again"),
        Code::NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found"),
        Code::AlreadyExists => (StatusCode::CONFLICT, "already-exists", "Already exists"),
        Code::FailedPrecondition => (
            StatusCode::CONFLICT,
            "failed-precondition",
            "Failed precondition",
        ),
        Code::Aborted => (StatusCode::CONFLICT, "aborted", "Aborted; retry"),
        Code::ResourceExhausted => (
            StatusCode::TOO_MANY_REQUESTS,
            "resource-exhausted",
            "Resource exhausted",
        ),
        Code::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Unavailable",
        ),
        Code::DeadlineExceeded => (
            StatusCode::GATEWAY_TIMEOUT,
            "deadline-exceeded",
            "Deadline exceeded",
        ),
        Code::PermissionDenied => (
            StatusCode::FORBIDDEN,
            "permission-denied",
            "Permission denied",
        ),
        Code::Unauthenticated => (
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Unauthenticated",
        ),
        Code::Cancelled => (StatusCode::INTERNAL_SERVER_ERROR, "cancelled", "Cancelled"),
        Code::Unknown => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "unknown",
            "Outcome unknown",
        ),
        Code::Unimplemented => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "unimplemented",
            "Not implemented",
        ),
        Code::DataLoss => (StatusCode::INTERNAL_SERVER_ERROR, "data-loss", "Data loss"),
        Code::Internal | Code::Ok => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
        ),
    }
}

impl From<tonic::Status> for Problem {
    fn from(status: tonic::Status) -> Problem {
        if status.code() == tonic::Code::ResourceExhausted
            && status
                .metadata()
                .contains_key(crate::api::grpc::STORAGE_FULL)
        {
            return Problem::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient-storage",
                "Insufficient storage",
                status.message(),
            );
        }
        let (http, slug, title) = problem_for_code(status.code());
        let mut problem = Problem::new(http, slug, title, status.message());
        problem.retry_after = crate::api::rate::retry_after(&status);
        if status.code() == tonic::Code::InvalidArgument {
            problem.field = field_named(status.message());
        }
        problem
    }
}

/// The field a validation message is about: every message of the spec's
/// checks names it first, in backticks (`` `resources.pids` 0 is outside
/// … ``); `args[2]` names `args`.
fn field_named(message: &str) -> Option<String> {
    let rest = message.strip_prefix('`')?;
    let name = &rest[..rest.find('`')?];
    let name = name.split('[').next().unwrap_or(name);
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.');
    plain.then(|| name.to_string())
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            )],
            body,
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"drover\""),
            );
        }
        if matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            let seconds = HeaderValue::from(self.retry_after.unwrap_or(1));
            response.headers_mut().insert(header::RETRY_AFTER, seconds);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::field_named;

    #[test]
    fn a_validation_message_names_its_field() {
        let cases = [
            (
                "`resources.cpu_millis` 0 is outside 1..=64000",
                Some("resources.cpu_millis"),
            ),
            ("`args[2]` contains a NUL byte", Some("args")),
            ("`env` name \"1A\" must be letters", Some("env")),
            ("`01ABC` is not a job id", None),
            ("no leader elected", None),
            ("`unterminated", None),
        ];
        for (message, field) in cases {
            assert_eq!(field_named(message).as_deref(), field, "{message}");
        }
    }
}
