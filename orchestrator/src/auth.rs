//! Where a request carries slotpack's credentials, shared by the API's
//! auth, the proxy and the tenant hosts.
//!
//! The API takes a token only from a header a page cannot make a browser
//! send by itself (`Authorization`, `X-API-Key`, `X-Slotpack-Token`):
//! no cookie authenticates an API route. The one cookie slotpack sets,
//! [`SESSION_COOKIE`], is a session of one tenant's own host
//! (`<id>.<SLOTPACK_TENANT_DOMAIN>`), `HttpOnly` and `SameSite=Strict`,
//! and is never passed to the tenant.

use axum::http::{header, HeaderMap};

/// The cookie of a tenant-host session (its value is a session id, never
/// a token).
pub const SESSION_COOKIE: &str = "slotpack_session";

/// Cookie names that are slotpack's: a tenant's `Set-Cookie` for one of
/// them is dropped, and none is passed to a tenant.
pub const OUR_COOKIES: [&str; 2] = [SESSION_COOKIE, "slotpack_token"];

/// Where the caller put its slotpack token. With [`AuthVia::Own`] (the
/// `X-Slotpack-Token` header, or a tenant-host session) the request's
/// `Authorization` and `X-API-Key` are the tenant's own and are proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVia {
    /// `Authorization: Bearer` or `X-API-Key` (both are slotpack's).
    Standard,
    /// `X-Slotpack-Token` or a tenant-host session cookie.
    Own,
}

/// The slotpack token of a request's headers and where it was:
/// `X-Slotpack-Token`, `Authorization: Bearer`, `X-API-Key`. Cookies are
/// not read.
pub fn presented_token(h: &HeaderMap) -> (Option<&str>, AuthVia) {
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    if let Some(t) = text("x-slotpack-token") {
        return (Some(t), AuthVia::Own);
    }
    let bearer = text("authorization").and_then(|v| v.strip_prefix("Bearer "));
    (bearer.or(text("x-api-key")), AuthVia::Standard)
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('='))
}

/// Whether a cookie `name` is one of [`OUR_COOKIES`] (in any case).
pub fn is_our_cookie(name: &str) -> bool {
    let name = name.trim();
    OUR_COOKIES
        .iter()
        .any(|ours| name.eq_ignore_ascii_case(ours))
}

/// Whether a `Set-Cookie` value sets one of [`OUR_COOKIES`].
pub fn sets_our_cookie(set_cookie: &[u8]) -> bool {
    let name = set_cookie.split(|b| *b == b'=').next().unwrap_or_default();
    is_our_cookie(&String::from_utf8_lossy(name))
}

/// The tenant id of a request for the host `<id>.<domain>[:port]`, if the
/// `Host` is one (case does not matter; `domain` empty: none is).
pub fn tenant_of_host(h: &HeaderMap, domain: &str) -> Option<String> {
    if domain.is_empty() {
        return None;
    }
    let host = h.get(header::HOST)?.to_str().ok()?;
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => host,
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let id = name
        .strip_suffix(&domain.to_ascii_lowercase())?
        .strip_suffix('.')?;
    slotpack_proto::protocol::is_valid_id(id).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn no_cookie_is_a_token() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("slotpack_token=admin; slotpack_session=s"),
        );
        assert_eq!(presented_token(&h).0, None);
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("s"));
        h.insert("x-api-key", HeaderValue::from_static("k"));
        assert_eq!(presented_token(&h), (Some("k"), AuthVia::Standard));
        h.insert("x-slotpack-token", HeaderValue::from_static("o"));
        assert_eq!(presented_token(&h), (Some("o"), AuthVia::Own));
    }

    #[test]
    fn tenant_hosts_are_ids_under_the_domain() {
        let host = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static(v));
            h
        };
        let of = |v, d| tenant_of_host(&host(v), d);
        assert_eq!(
            of("bot-1.localhost:8088", "localhost").as_deref(),
            Some("bot-1")
        );
        assert_eq!(of("BOT-1.LocalHost", "localhost").as_deref(), Some("bot-1"));
        assert_eq!(
            of("t.apps.example.com", "apps.example.com").as_deref(),
            Some("t")
        );
        assert_eq!(of("localhost:8088", "localhost"), None, "the API itself");
        assert_eq!(of("127.0.0.1:8088", "localhost"), None);
        assert_eq!(of("a.b.localhost", "localhost"), None, "not an id");
        assert_eq!(of("evillocalhost", "localhost"), None);
        assert_eq!(of("t.localhost", ""), None, "tenant hosts off");
    }

    #[test]
    fn our_cookie_names_are_known_in_any_case() {
        assert!(sets_our_cookie(b"slotpack_session=x; Path=/"));
        assert!(sets_our_cookie(b" Slotpack_Token=admin"));
        assert!(!sets_our_cookie(b"slotpack_sessionx=1"));
        assert!(!sets_our_cookie(b"theme=dark"));
    }
}
