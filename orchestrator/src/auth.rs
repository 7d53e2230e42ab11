//! Where a request carries slotpack's own token, shared by the API's auth
//! and the proxy (which forwards the tenant's own credentials only when
//! slotpack's came in a header or cookie of its own).

use axum::http::{header, HeaderMap};

/// The cookie that may carry slotpack's token (for browsers using a
/// tenant's web UI through the proxy).
pub const TOKEN_COOKIE: &str = "slotpack_token";

/// Where the caller put its slotpack token. With [`AuthVia::Own`] (the
/// `X-Slotpack-Token` header or the `slotpack_token` cookie) the request's
/// `Authorization` and `X-API-Key` are the tenant's own and are proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVia {
    /// `Authorization: Bearer` or `X-API-Key` (both are slotpack's).
    Standard,
    /// `X-Slotpack-Token` or the `slotpack_token` cookie.
    Own,
}

/// The slotpack token of a request and where it was: `X-Slotpack-Token`,
/// the `slotpack_token` cookie, `Authorization: Bearer`, `X-API-Key`.
pub fn presented_token(h: &HeaderMap) -> (Option<&str>, AuthVia) {
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    if let Some(t) = text("x-slotpack-token") {
        return (Some(t), AuthVia::Own);
    }
    let cookie = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('='));
    if let Some(t) = cookie {
        return (Some(t), AuthVia::Own);
    }
    let bearer = text("authorization").and_then(|v| v.strip_prefix("Bearer "));
    (bearer.or(text("x-api-key")), AuthVia::Standard)
}
