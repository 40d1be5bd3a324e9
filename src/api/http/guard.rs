//! What every REST request passes before a handler sees it, so that a web
//! page the operator happens to visit cannot use the operator's browser
//! against a node: POSTs only as JSON (never a CORS-free "simple" request),
//! a `Host` allowlist on a loopback listener (DNS rebinding), and the
//! standard security headers on every answer.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::Problem;

/// Every POST must say `Content-Type: application/json`, even one with
/// nothing to say (send `{}`): a page can POST to another origin without
/// asking first (no CORS preflight) only as a form or plain text, so this
/// one rule keeps every page from stopping jobs, draining nodes or
/// bootstrapping ACLs through a browser that can reach the node.
pub(super) async fn require_json(request: Request, next: Next) -> Response {
    if request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if json {
        return next.run(request).await;
    }
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        "Unsupported media type",
        "a POST needs `Content-Type: application/json` (send `{}` when there is nothing to say), \
         so that no web page can make it cross-origin without a CORS preflight",
    )
    .into_response()
}

/// The host names a listener answers to; `None`: any (a listener that is
/// reachable from the network is reached by whatever name DNS gives it).
#[derive(Clone, Debug, Default)]
pub struct AllowedHosts(Option<Vec<String>>);

impl AllowedHosts {
    /// On loopback: `localhost`, loopback addresses and the advertised
    /// host only. A page on `evil.example` whose DNS answer flips to
    /// 127.0.0.1 then still sends `Host: evil.example`, and is refused.
    pub fn for_listener(loopback: bool, advertised: Option<&str>) -> AllowedHosts {
        if !loopback {
            return AllowedHosts(None);
        }
        let mut names = vec!["localhost".to_string()];
        if let Some(host) = advertised.map(host_of) {
            names.push(host.to_ascii_lowercase());
        }
        AllowedHosts(Some(names))
    }

    fn allows(&self, host: &str) -> bool {
        let Some(names) = &self.0 else {
            return true;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return ip.is_loopback() || names.iter().any(|n| n == host);
        }
        let host = host.to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host);
        names
            .iter()
            .any(|n| n == host || host.ends_with(".localhost"))
    }
}

/// `host` of `host:port`, `[v6]:port`, `[v6]` or a bare host.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
        _ => authority,
    }
}

/// Refuses a request whose `Host` (or HTTP/2 authority) this listener does
/// not answer to; one without either comes from no browser and passes.
pub(super) async fn check_host(
    State(hosts): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    let authority = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
    match authority {
        Some(authority) if !hosts.allows(host_of(&authority)) => Problem::new(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected-request",
            "Misdirected request",
            format!(
                "this node's REST API listens on loopback and answers only for localhost and \
                 loopback addresses (and advertise.http), not `Host: {authority}`: a page whose \
                 DNS name now points at 127.0.0.1 (DNS rebinding) is refused"
            ),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

/// The headers every answer carries unless its handler set its own (the
/// dashboard sets a policy for its page).
pub(super) async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let fixed = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
    ];
    for (name, value) in fixed {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_listener_answers_only_for_loopback_names() {
        let hosts = AllowedHosts::for_listener(true, Some("drover.lan:7702"));
        for ok in [
            "127.0.0.1",
            "127.0.0.2",
            "localhost",
            "LOCALHOST",
            "app.localhost",
            "::1",
            "[::1]",
            "drover.lan",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "10.0.0.1",
            "localhost.evil.example",
            "drover.lan.evil",
        ] {
            assert!(!hosts.allows(refused), "{refused}");
        }
        assert!(AllowedHosts::for_listener(false, None).allows("anything.example"));
    }

    #[test]
    fn host_of_strips_ports_and_brackets() {
        assert_eq!(host_of("127.0.0.1:7702"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7702"), "::1");
        assert_eq!(host_of("[::1]"), "::1");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}
