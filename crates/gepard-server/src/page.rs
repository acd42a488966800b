//! The Optimization page: one HTML document, its script and its stylesheet, compiled into
//! the binary so the page works offline and needs no build step.
//!
//! The page is public (it holds no data); everything it shows comes from the API with the
//! key the user gives it. A strict Content-Security-Policy allows only these same-origin
//! files and same-origin requests, so even a value that slipped into the DOM unescaped could
//! not run script or send data elsewhere.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const APP_CSS: &str = include_str!("page/app.css");

/// The policy every page response carries: same-origin script, style and requests only,
/// no inline script or handlers, no framing, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The page's script, for tests that check which API routes it calls.
pub fn script() -> &'static str {
    APP_JS
}

fn page_response(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The key lives in the URL fragment at most, which browsers never send; this
            // keeps even the page's own address out of other sites' logs.
            (header::REFERRER_POLICY, "no-referrer"),
            // Always revalidate: after an upgrade the page and the API must match.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the Optimization page.
pub async fn index() -> Response {
    page_response("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /assets/{path}`: the page's script and stylesheet; anything else is a 404.
pub async fn asset(Path(path): Path<String>) -> Response {
    match path.as_str() {
        "app.js" => page_response("text/javascript; charset=utf-8", APP_JS),
        "app.css" => page_response("text/css; charset=utf-8", APP_CSS),
        _ => ApiError::not_found(format!("no asset `{path}`")).into_response(),
    }
}
