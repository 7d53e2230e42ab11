//! The operator's page at `/dashboard`: static files compiled into the
//! binary (no build step, nothing fetched). The page holds no secret: it
//! asks for a token and calls the API with it as a bearer header.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The page's HTML.
const INDEX: &str = include_str!("dashboard/index.html");
/// Its script.
const SCRIPT: &str = include_str!("dashboard/app.js");
/// Its style sheet.
const STYLE: &str = include_str!("dashboard/app.css");

/// What the page may do: only its own files and the API of this origin;
/// never framed, no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /dashboard`.
pub async fn page() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

/// `GET /dashboard/app.js`.
pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /dashboard/app.css`.
pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}
