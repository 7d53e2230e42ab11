//! Reverse proxy to a tenant's port, from `/api/tenants/{id}/proxy/{*path}`
//! (the API's origin) or from the tenant's own host: any method, bodies
//! streamed both ways, websocket (and other) upgrades tunnelled. Our own
//! credentials never reach the tenant, a tenant's `Set-Cookie` for our
//! cookie names is dropped, and what the path proxy serves is sandboxed
//! (`Content-Security-Policy: sandbox`), so a tenant's page never runs as
//! the API's origin. Every stream ends when its `end` future resolves.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;

use crate::auth::{is_our_cookie, sets_our_cookie, AuthVia};
use crate::proxy::route_table::RouteTable;

pub mod route_table;
mod upstreams;

/// The routes whose ports are checked at connect time (local backend as
/// root), see [`check_port`].
pub type PortGuard = Option<Arc<RwLock<RouteTable>>>;

/// `Err` if another user than the tenant's slot user listens on `port`:
/// a tenant squatting a neighbour's port never receives its traffic.
/// Checked per new upstream connection (kept-alive ones are reused).
pub fn check_port(guard: &PortGuard, port: u16) -> Result<(), String> {
    let Some(routes) = guard else { return Ok(()) };
    let want = routes
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .uid_of_port(port);
    match want.and_then(|uid| slotpack_proto::procfs::foreign_listener(port, uid)) {
        Some(other) => Err(format!(
            "port {port} is held by uid {other}, not by the tenant's slot user"
        )),
        None => Ok(()),
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What the path proxy's answers carry: the document is sandboxed (an
/// opaque origin: no script, no access to the API origin's storage).
pub const SANDBOX_CSP: &str = "sandbox";

/// How a request reached the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `/api/tenants/{id}/proxy/...` on the API's origin: the prefix is
    /// cut, and answers are sandboxed.
    Prefix,
    /// The tenant's own host: the path goes as it is.
    Host,
}

/// What the proxy tells a tenant about the original request.
struct Forwarded<'a> {
    client: Option<std::net::IpAddr>,
    /// `/api/tenants/{id}/proxy`: where the tenant's `/` is, for its links
    /// (none on a tenant host).
    prefix: Option<&'a str>,
    via: AuthVia,
}

/// The headers a tenant receives: no hop-by-hop ones (see [`strip`]); none
/// of slotpack's credentials (the `slotpack_token` cookie and
/// `X-Slotpack-Token` always; `Authorization` and `X-API-Key` unless the
/// caller authenticated with one of those two, which makes them the
/// tenant's own); and `X-Forwarded-For/-Proto/-Host/-Prefix`.
fn to_tenant(h: &mut HeaderMap, keep_upgrade: bool, fwd: &Forwarded) {
    strip(h, keep_upgrade);
    h.remove("x-slotpack-token");
    if fwd.via == AuthVia::Standard {
        h.remove(header::AUTHORIZATION);
        h.remove("x-api-key");
    }
    if h.contains_key(header::COOKIE) {
        let cookies: Vec<String> = h
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .map(str::trim)
            .filter(|c| !c.is_empty() && !is_our_cookie(c.split('=').next().unwrap_or_default()))
            .map(str::to_string)
            .collect();
        h.remove(header::COOKIE);
        if let Ok(v) = HeaderValue::from_str(&cookies.join("; ")) {
            if !cookies.is_empty() {
                h.insert(header::COOKIE, v);
            }
        }
    }
    if let Some(ip) = fwd.client {
        let chain = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(before) => format!("{before}, {ip}"),
            None => ip.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&chain) {
            h.insert("x-forwarded-for", v);
        }
    }
    if !h.contains_key("x-forwarded-proto") {
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if let Some(host) = h.get(header::HOST).cloned() {
        h.entry("x-forwarded-host").or_insert(host);
    }
    if let Some(Ok(v)) = fwd.prefix.map(HeaderValue::from_str) {
        h.insert("x-forwarded-prefix", v);
    }
}

/// The headers a client receives from a tenant: no hop-by-hop ones, no
/// `Set-Cookie` for our cookie names, and on the path proxy the sandbox.
fn from_tenant(h: &mut HeaderMap, mode: Mode) {
    strip(h, false);
    if h.get_all(header::SET_COOKIE)
        .iter()
        .any(|v| sets_our_cookie(v.as_bytes()))
    {
        let keep: Vec<HeaderValue> = h
            .get_all(header::SET_COOKIE)
            .iter()
            .filter(|v| !sets_our_cookie(v.as_bytes()))
            .cloned()
            .collect();
        h.remove(header::SET_COOKIE);
        for v in keep {
            h.append(header::SET_COOKIE, v);
        }
    }
    if mode == Mode::Prefix {
        // Added to any policy of the tenant's: every policy given applies.
        h.append(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(SANDBOX_CSP),
        );
    }
}

/// Remove from `h` the hop-by-hop headers and those named in `Connection`;
/// keep `Upgrade` (with `Connection: upgrade`) when tunnelling.
fn strip(h: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        // `Connection: upgrade` names the header a tunnel must keep.
        if !(keep_upgrade && n == header::UPGRADE) {
            h.remove(n);
        }
    }
    for n in HOP_BY_HOP {
        if !(keep_upgrade && n == "upgrade") {
            h.remove(n);
        }
    }
    if keep_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The tenant id of a `/api/tenants/{id}/proxy...` path, as sent (nothing
/// is decoded: a tenant id has no character that needs encoding, so an
/// encoded one matches no tenant).
pub fn tenant_of(raw_path: &str) -> &str {
    raw_path.split('/').nth(3).unwrap_or("")
}

/// The proxy of one API worker: its own upstream client and the port check
/// of tunnelled connections. Pure HTTP: which tenant a caller may reach,
/// the JSON error envelope and the metrics are the API's.
pub struct Proxy {
    upstreams: upstreams::Upstreams,
    guard: PortGuard,
}

impl Proxy {
    /// A proxy with its own upstream connection pool; `guard` (the local
    /// backend as root) checks who listens on a port before connecting.
    pub fn new(guard: PortGuard) -> Self {
        Self {
            upstreams: upstreams::Upstreams::default(),
            guard,
        }
    }

    /// Forward `req` to the tenant `id` at `target`: a
    /// `/api/tenants/{id}/proxy/...` request (raw path kept) or one for the
    /// tenant's host. The answer (a body, a tunnel) ends when `end`
    /// resolves. `Err` says why the tenant did not answer.
    pub async fn forward(
        &self,
        id: &str,
        target: SocketAddr,
        mode: Mode,
        req: Request,
        end: Ending,
    ) -> Result<Response, String> {
        let path_q = match mode {
            Mode::Prefix => {
                let query = req
                    .uri()
                    .query()
                    .map(|q| format!("?{q}"))
                    .unwrap_or_default();
                format!("{}{query}", upstream_path(req.uri().path()))
            }
            Mode::Host => req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        };
        let prefix = format!("/api/tenants/{id}/proxy");
        let fwd = Forwarded {
            client: req
                .extensions()
                .get::<crate::server::Client>()
                .map(|c| c.addr.ip()),
            prefix: (mode == Mode::Prefix).then_some(prefix.as_str()),
            via: req
                .extensions()
                .get::<AuthVia>()
                .copied()
                .unwrap_or(AuthVia::Standard),
        };
        if req.headers().contains_key(header::UPGRADE) {
            tunnel(&self.guard, target, &path_q, &fwd, mode, req, end).await
        } else {
            plain(self, target, &path_q, &fwd, mode, req, end).await
        }
    }
}

/// What ends a proxied stream: resolves when its grant no longer holds.
pub type Ending = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A tenant's answer body that ends (with an error, so the client sees the
/// stream cut, not completed) once `end` resolves.
struct EndingBody<B> {
    inner: B,
    end: Ending,
    ended: bool,
}

impl<B> hyper::body::Body for EndingBody<B>
where
    B: hyper::body::Body<Data = axum::body::Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = axum::body::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        if self.ended {
            return Poll::Ready(None);
        }
        if self.end.as_mut().poll(cx).is_ready() {
            self.ended = true;
            return Poll::Ready(Some(Err("what authorised this stream ended".into())));
        }
        std::pin::Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The tenant's part of a proxied path, exactly as the client sent it
/// (still percent-encoded: `%2F`, `%20`, `%3F` reach the tenant unchanged):
/// what follows `/api/tenants/{id}/proxy`, or `/`.
pub fn upstream_path(raw: &str) -> String {
    // "", "api", "tenants", id, "proxy", rest
    match raw.splitn(6, '/').nth(5) {
        Some(rest) => format!("/{rest}"),
        None => "/".to_string(),
    }
}

async fn plain(
    app: &Proxy,
    target: SocketAddr,
    path_q: &str,
    fwd: &Forwarded<'_>,
    mode: Mode,
    req: Request,
    mut end: Ending,
) -> Result<Response, String> {
    let (mut parts, body) = req.into_parts();
    to_tenant(&mut parts.headers, false, fwd);
    parts.uri = path_q.parse().map_err(|e| format!("bad path: {e}"))?;
    parts.version = hyper::Version::HTTP_11;
    if !parts.headers.contains_key(header::HOST) {
        let host = HeaderValue::from_str(&target.to_string()).map_err(|e| e.to_string())?;
        parts.headers.insert(header::HOST, host);
    }
    let asked = app
        .upstreams
        .send(&app.guard, target, hyper::Request::from_parts(parts, body));
    let resp = tokio::select! {
        r = asked => r?,
        _ = &mut end => return Err(ENDED.to_string()),
    };
    let (mut parts, body) = resp.into_parts();
    from_tenant(&mut parts.headers, mode);
    let body = EndingBody {
        inner: body,
        end,
        ended: false,
    };
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// Why a request ended before its tenant answered.
const ENDED: &str = "ended: its token was revoked, or the tenant was deleted, stopped or moved";

/// An error and its sources, `: `-joined (hyper's own text hides the cause).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Upgrades: a dedicated HTTP/1 connection; after `101` both sides are
/// joined byte for byte.
async fn tunnel(
    guard: &PortGuard,
    target: SocketAddr,
    path_q: &str,
    fwd: &Forwarded<'_>,
    mode: Mode,
    mut req: Request,
    end: Ending,
) -> Result<Response, String> {
    let client_side = hyper::upgrade::on(&mut req);
    let mut sender = upstreams::connect(guard, target).await?;
    let mut up = hyper::Request::builder()
        .method(req.method().clone())
        .uri(path_q)
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    *up.headers_mut() = req.headers().clone();
    to_tenant(up.headers_mut(), true, fwd);
    up.headers_mut().insert(
        header::HOST,
        HeaderValue::from_str(&target.to_string()).map_err(|e| e.to_string())?,
    );
    let mut resp = sender.send_request(up).await.map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = resp.into_parts();
        from_tenant(&mut parts.headers, mode);
        return Ok(Response::from_parts(parts, Body::new(body)));
    }
    let tenant_side = hyper::upgrade::on(&mut resp);
    // The connection's place in the caps stays taken while the tunnel runs.
    let permit = req.extensions().get::<crate::server::Client>().cloned();
    tokio::spawn(async move {
        let _permit = permit;
        let joined = async {
            if let (Ok(a), Ok(b)) = tokio::join!(client_side, tenant_side) {
                let _ =
                    tokio::io::copy_bidirectional(&mut TokioIo::new(a), &mut TokioIo::new(b)).await;
            }
        };
        // Both sides close when what authorised the tunnel ends.
        tokio::select! { _ = joined => {}, _ = end => {} }
    });
    let mut headers = resp.headers().clone();
    let keep_upgrade = headers.get(header::UPGRADE).cloned();
    from_tenant(&mut headers, mode);
    if let Some(u) = keep_upgrade {
        headers.insert(header::UPGRADE, u);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let mut out = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    *out.headers_mut().expect("a fresh builder") = headers;
    out.body(Body::empty()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_path_is_the_raw_rest() {
        assert_eq!(upstream_path("/api/tenants/a/proxy"), "/");
        assert_eq!(upstream_path("/api/tenants/a/proxy/"), "/");
        assert_eq!(upstream_path("/api/tenants/a/proxy/x/y"), "/x/y");
        assert_eq!(
            upstream_path("/api/tenants/a/proxy/a%2Fb/c%20d%3Fe"),
            "/a%2Fb/c%20d%3Fe"
        );
    }

    #[test]
    fn credentials_and_hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer admin"),
        );
        h.insert(
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_static("k"),
        );
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert(
            HeaderName::from_static("x-private"),
            HeaderValue::from_static("1"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let fwd = Forwarded {
            client: None,
            prefix: Some("/p"),
            via: AuthVia::Standard,
        };
        let mut f = h.clone();
        to_tenant(&mut f, false, &fwd);
        let names: Vec<&str> = f.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            ["content-type", "x-forwarded-proto", "x-forwarded-prefix"]
        );
        let mut u = h.clone();
        // What clients send: `Connection: Upgrade` names the header to keep.
        u.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        to_tenant(&mut u, true, &fwd);
        assert_eq!(u.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(u.get(header::CONNECTION).unwrap(), "upgrade");
        assert!(!u.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn a_tenants_answer_loses_our_cookies_and_is_sandboxed_on_the_api_origin() {
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("slotpack_session=stolen; Path=/"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("slotpack_token=x; Path=/"),
        );
        h.append(header::SET_COOKIE, HeaderValue::from_static("theme=dark"));
        let mut p = h.clone();
        from_tenant(&mut p, Mode::Prefix);
        let cookies: Vec<_> = p.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["theme=dark"]);
        assert_eq!(p.get(header::CONTENT_SECURITY_POLICY).unwrap(), SANDBOX_CSP);
        from_tenant(&mut h, Mode::Host);
        assert_eq!(h.get_all(header::SET_COOKIE).iter().count(), 1);
        assert!(!h.contains_key(header::CONTENT_SECURITY_POLICY));
    }

    #[test]
    fn with_slotpacks_own_header_the_tenants_credentials_pass() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dTpw"),
        );
        h.insert("x-slotpack-token", HeaderValue::from_static("admin"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; slotpack_token=admin; slotpack_session=s; b=2"),
        );
        h.insert(header::HOST, HeaderValue::from_static("front:8088"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.9"));
        let fwd = Forwarded {
            client: Some([127, 0, 0, 1].into()),
            prefix: Some("/api/tenants/t/proxy"),
            via: AuthVia::Own,
        };
        to_tenant(&mut h, false, &fwd);
        assert_eq!(h.get(header::AUTHORIZATION).unwrap(), "Basic dTpw");
        assert!(!h.contains_key("x-slotpack-token"));
        assert_eq!(h.get(header::COOKIE).unwrap(), "a=1; b=2");
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.9, 127.0.0.1");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "front:8088");
        assert_eq!(h.get("x-forwarded-prefix").unwrap(), "/api/tenants/t/proxy");
    }
}
