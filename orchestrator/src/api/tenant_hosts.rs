//! Tenant hosts: `<id>.<SLOTPACK_TENANT_DOMAIN>` is tenant `<id>`'s own
//! origin, every path of it proxied to the tenant, so a tenant's page in a
//! browser never shares an origin with the API or with another tenant.
//!
//! A browser gets in with a session: the API (bearer token) answers
//! `POST /api/tenants/{id}/session` with a one-time URL on the tenant's
//! host; opening it sets the `slotpack_session` cookie there (host-only,
//! `HttpOnly`, `SameSite=Strict`; a session id, never the token) and
//! redirects to `/`. Scripts may use their token headers instead.

use super::*;
use crate::access::SESSION_LIFETIME;
use crate::auth::{cookie, SESSION_COOKIE};

/// The path of a tenant host that trades a one-time code for a session.
pub const SESSION_PATH: &str = "/.slotpack/session";

/// A request for tenant `id`'s host (see [`ApiService`](super::ApiService)).
pub(super) async fn serve(app: App, id: String, mut req: Request) -> Response {
    if req.uri().path() == SESSION_PATH {
        return redeem(&app, &id, req.uri().query().unwrap_or_default());
    }
    let unauthorized = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!(
                "no session for tenant {id}: POST /api/tenants/{id}/session with your token \
                 and open the url it answers (or send the token in a header)"
            ),
        )
        .into_response()
    };
    let (caller, grant, via) = if presented_token(req.headers()).0.is_some() {
        match resolve_caller(&app.svc, req.headers()) {
            Ok((c, cred, via)) => (c, cred.grant, via),
            Err(e) => return e.into_response(),
        }
    } else {
        let Some(grant) = cookie(req.headers(), SESSION_COOKIE)
            .and_then(|sid| app.svc.access().session(sid, &id))
        else {
            return unauthorized();
        };
        let caller = match &grant {
            Grant::Admin => Caller::Admin,
            Grant::Token(h) => match app.svc.access().token(h) {
                Some((owner, _)) => Caller::Owner(owner),
                None => return unauthorized(),
            },
        };
        (caller, grant, AuthVia::Own)
    };
    req.extensions_mut().insert(via);
    proxy_to(&app, &caller, grant, id, proxy::Mode::Host, req).await
}

/// `GET /.slotpack/session?code=...` on a tenant host: a good code sets
/// the session cookie and redirects to `/`.
fn redeem(app: &App, id: &str, query: &str) -> Response {
    let code = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("code="))
        .unwrap_or_default();
    let Some(sid) = app.svc.access().redeem(code, id) else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this session code is unknown, used or expired: ask POST /api/tenants/{id}/session for a new one",
        )
        .into_response();
    };
    let cookie = format!(
        "{SESSION_COOKIE}={sid}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_LIFETIME.as_secs()
    );
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, "/")
        .header(header::SET_COOKIE, cookie)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::empty())
        .unwrap_or_default()
}

/// `POST /api/tenants/{id}/session` answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionCreated {
    /// Always true.
    pub success: bool,
    /// Open this (once, within `expiresInSeconds`) in a browser: it sets the
    /// session cookie of the tenant's host and shows the tenant's `/`.
    pub url: String,
    /// How long the url is good for.
    pub expires_in_seconds: u64,
}

/// A one-time url that opens a browser session of the tenant's own host
/// (`<id>.<SLOTPACK_TENANT_DOMAIN>`), acting with the caller's token.
#[utoipa::path(post, path = "/api/tenants/{id}/session", params(("id" = String, Path)),
    responses((status = 200, body = SessionCreated), (status = 400, body = ErrorDoc), (status = 401, body = ErrorDoc), (status = 404, body = ErrorDoc)),
    security(("bearer" = []), ("apiKey" = [])))]
pub(super) async fn open_session(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Extension(cred): Extension<Credential>,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionCreated>> {
    let domain = &app.svc.cfg().tenant_domain;
    if domain.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "tenant hosts are off (SLOTPACK_TENANT_DOMAIN is empty)",
        ));
    }
    // Only a tenant the caller may reach.
    app.svc.proxy_target(&caller, &id)?;
    let code = app.svc.access().new_code(cred.grant, &id);
    let port = app.svc.cfg().listen.port();
    Ok(Json(SessionCreated {
        success: true,
        url: format!("http://{id}.{domain}:{port}{SESSION_PATH}?code={code}"),
        expires_in_seconds: crate::access::CODE_LIFETIME.as_secs(),
    }))
}
