//! The web dashboard at `/ui/`: a few static files compiled into the
//! binary (no CDN, nothing fetched at build or run time), served with a
//! `Content-Security-Policy` that lets the page talk to its own origin
//! only. The page is a client of the REST API like any other: it sends
//! the token the user signed in with, so ACLs decide what it may do.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::problem::Problem;
use super::AppState;

/// Where the dashboard lives.
pub const UI_PATH: &str = "/ui/";

/// The page may load and call only its own origin; no inline script or
/// style, no plugins, no framing by another site, no `<base>` tricks.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'self'; object-src 'none'";

/// Each file of the dashboard: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("ui/index.html"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("ui/app.css"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/api.js"),
    ),
    (
        "views.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/views.js"),
    ),
    (
        "jobs.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/jobs.js"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/app.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("ui/favicon.svg"),
    ),
];

/// The dashboard's routes (outside `/v1`: not part of the API document).
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent(UI_PATH) }))
        .route(UI_PATH, get(|| async { asset_response("index.html") }))
        .route("/ui/{file}", get(asset))
}

async fn asset(Path(file): Path<String>) -> Response {
    asset_response(&file)
}

fn asset_response(file: &str) -> Response {
    let Some((_, content_type, body)) = ASSETS.iter().find(|(name, _, _)| *name == file) else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("the dashboard has no file {file:?}"),
        )
        .into_response();
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // A new binary may serve new files under the same names: revalidate.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The page's own policy; `guard::security_headers` adds the others.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    (StatusCode::OK, headers, *body).into_response()
}

#[cfg(test)]
mod tests {
    use super::ASSETS;

    /// The policy forbids inline code: a `<script>` body, an inline
    /// handler or a `style=` attribute would silently do nothing.
    #[test]
    fn the_page_holds_no_inline_script_or_style() {
        let (_, _, html) = ASSETS[0];
        for banned in [
            "<script>",
            "onclick=",
            "onload=",
            "style=",
            "<style",
            "javascript:",
        ] {
            assert!(!html.contains(banned), "index.html contains {banned}");
        }
        for (name, _, text) in ASSETS {
            for remote in ["http://", "https://", "//cdn"] {
                let hit = text
                    .lines()
                    .find(|l| l.contains(remote) && !l.contains("www.w3.org/2000/svg"));
                assert!(hit.is_none(), "{name} names another origin: {hit:?}");
            }
        }
    }
}
