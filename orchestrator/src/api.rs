//! The REST API: routes, auth, JSON errors, OpenAPI document.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use utoipa::OpenApi;

use slotpack_proto::http_error::{json_body, query, with_json_errors, ApiError};
use slotpack_proto::protocol::ProgramAction;

use crate::access::{Grant, Quota};
use crate::api_types::*;
use crate::auth::{presented_token, AuthVia};
use crate::classes::{ClassInfo, ClassList, ClassSpec};
use crate::openapi::ErrorAnswers;
use crate::proxy;
use crate::service::{token_hash, Caller, Orchestrator, ServiceError};

mod admin_routes;
mod pool_routes;
mod stream_routes;
mod tenant_hosts;
use admin_routes::*;
use pool_routes::*;

/// Shared state of the handlers (cheap to clone: one reference count).
#[derive(Clone)]
pub struct App(Arc<AppInner>);

/// What [`App`] shares.
pub struct AppInner {
    /// The orchestrator.
    pub svc: Arc<Orchestrator>,
    /// The reverse proxy to the tenants.
    pub proxy: proxy::Proxy,
}

impl App {
    /// State for one API worker, with its own proxy client.
    pub fn new(svc: Arc<Orchestrator>) -> Self {
        let proxy = proxy::Proxy::new(svc.port_guard());
        App(Arc::new(AppInner { svc, proxy }))
    }
}

impl std::ops::Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let (status, code) = match &e {
            ServiceError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ServiceError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ServiceError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ServiceError::Quota(_) => (StatusCode::FORBIDDEN, "quota_exceeded"),
            e if e.is_unavailable() => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let message = if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            // The whole chain goes to the log; the caller learns nothing of it.
            let chain = proxy::error_chain(&e);
            tracing::error!(error = %chain, "internal error");
            "internal error; see the server log".to_string()
        } else {
            e.to_string()
        };
        ApiError::new(status, code, message)
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The OpenAPI document, generated from the handlers and types below.
#[derive(OpenApi)]
#[openapi(
    info(title = "slotpack", description = "Packs tenant processes into shared pool containers."),
    paths(create_tenant, list_tenants, get_tenant, update_tenant, delete_tenant, volume_in, volume_out, tenant_action, tenant_logs,
          proxy_doc, pool_status, health_check, cleanup, bot_info, list_classes, metrics_targets, put_class, delete_class,
          create_token, list_tokens, revoke_token, revoke_owner_tokens, tenant_hosts::open_session,
          proxy_root_doc, events, stream_routes::events_stream, dashboard_doc, dashboard_script_doc, dashboard_style_doc, healthz, metrics_doc, openapi_doc),
    components(schemas(CreateTenant, Resources, Tenant, TenantCreated, TenantEnvelope, TenantList,
                       Placement, CreateToken, TokenCreated, TokenList, TokenRow, tenant_hosts::SessionCreated, PoolStatus, PoolInfo, HealthSummary,
                       Count, HealthReport, PoolHealth, BotHealth, CleanupResult, CleanupRequest, BotInfo, Connection,
                       ClassSpec, ClassInfo, ClassList, TargetGroup, ErrorDoc, ErrorDetailDoc)),
    modifiers(&BearerAuth, &ErrorAnswers),
)]
pub struct ApiDoc;

struct BearerAuth;
impl utoipa::Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// Error body (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ErrorDoc {
    success: bool,
    error: ErrorDetailDoc,
}

/// Error code and message (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ErrorDetailDoc {
    code: String,
    message: String,
}

/// Build the router.
pub fn router(app: App) -> Router {
    let authed = Router::new()
        .route("/api/tenants", post(create_tenant).get(list_tenants))
        .route(
            "/api/tenants/{id}",
            get(get_tenant).put(update_tenant).delete(delete_tenant),
        )
        .route("/api/tenants/{id}/{action}", post(tenant_action))
        .route("/api/tenants/{id}/logs", get(tenant_logs))
        .route(
            "/api/tenants/{id}/volume",
            get(volume_out)
                .put(volume_in)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_VOLUME_ARCHIVE)),
        )
        .route("/api/pool/status", get(pool_status))
        .route("/api/pool/health-check", post(health_check))
        .route("/api/pool/cleanup", post(cleanup))
        .route("/api/pool/bot/{instance_id}", get(bot_info))
        .route("/api/pool/classes", get(list_classes))
        .route("/api/pool/metrics-targets", get(metrics_targets))
        .route(
            "/api/pool/classes/{name}",
            put(put_class).delete(delete_class),
        )
        .route(
            "/api/tenants/{id}/session",
            post(tenant_hosts::open_session),
        )
        .route(
            "/api/tokens",
            post(create_token)
                .get(list_tokens)
                .delete(revoke_owner_tokens),
        )
        .route("/api/tokens/{id}", delete(revoke_token))
        .route("/api/events", get(events))
        .route("/api/events/stream", get(stream_routes::events_stream))
        .route_layer(middleware::from_fn_with_state(app.clone(), auth));
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/dashboard", get(crate::dashboard::page))
        .route("/dashboard/app.js", get(crate::dashboard::script))
        .route("/dashboard/app.css", get(crate::dashboard::style))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .merge(authed);
    // The body limit binds the JSON extractors only (proxied requests never
    // reach this router: see [`ApiService`]).
    with_json_errors(router).with_state(app)
}

/// The whole API as one service: a request for a tenant's host, or for
/// `/api/tenants/{id}/proxy[/...]` (any method), goes straight to the
/// proxy (authenticated as every route is); everything else to the
/// [`router`]. Proxied requests, the hot path, pass no routing table and no
/// middleware stack.
#[derive(Clone)]
pub struct ApiService {
    app: App,
    router: Router,
}

impl ApiService {
    /// The service of one API worker.
    pub fn new(app: App) -> Self {
        let router = router(app.clone());
        ApiService { app, router }
    }

    /// Answer one request.
    pub async fn call(self, req: hyper::Request<hyper::body::Incoming>) -> Response {
        use tower_service::Service;
        let req = req.map(Body::new);
        if let Some(id) =
            crate::auth::tenant_of_host(req.headers(), &self.app.svc.cfg().tenant_domain)
        {
            return tenant_hosts::serve(self.app, id, req).await;
        }
        if is_proxy_path(req.uri().path()) {
            return proxy_route(self.app, req).await;
        }
        let mut router = self.router;
        match router.call(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }
}

/// Whether `path` is `/api/tenants/{id}/proxy` or below it.
fn is_proxy_path(path: &str) -> bool {
    let mut parts = path.splitn(6, '/');
    let lead: [Option<&str>; 5] = std::array::from_fn(|_| parts.next());
    matches!(lead, [Some(""), Some("api"), Some("tenants"), Some(id), Some("proxy")] if !id.is_empty())
}

/// Who a request is from, put into its extensions next to the [`Caller`]:
/// the credential (what revocation ends) and the quota of creates.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The token (or admin) the request came with.
    pub grant: Grant,
    /// The quota of an owner token; `None` for the admin.
    pub quota: Option<Quota>,
}

/// Resolve the caller from its token: `Authorization: Bearer`,
/// `X-API-Key` or `X-Slotpack-Token` (never a cookie).
fn resolve_caller(
    svc: &Orchestrator,
    headers: &HeaderMap,
) -> Result<(Caller, Credential, AuthVia), ApiError> {
    let (token, via) = presented_token(headers);
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let admin = || {
        let c = Credential {
            grant: Grant::Admin,
            quota: None,
        };
        Ok((Caller::Admin, c, via))
    };
    match (token.map(str::trim), &svc.cfg().admin_token) {
        (_, None) if svc.cfg().insecure_dev => admin(),
        (None, _) => Err(unauthorized(
            "missing Authorization: Bearer <token> (or X-API-Key, or X-Slotpack-Token)",
        )),
        (Some(t), Some(a))
            if slotpack_proto::auth::constant_time_eq(t.as_bytes(), a.as_bytes()) =>
        {
            admin()
        }
        (Some(t), _) => {
            let hash = token_hash(t);
            match svc.access().token(&hash) {
                Some((owner, q)) => {
                    let c = Credential {
                        grant: Grant::Token(hash),
                        quota: Some(q.over(svc.default_quota())),
                    };
                    Ok((Caller::Owner(owner), c, via))
                }
                None => Err(unauthorized("unknown token")),
            }
        }
    }
}

/// `ANY /api/tenants/{id}/proxy/{*path}` and `.../proxy`: the caller's
/// tenant, reached through [`proxy::Proxy`], after the same auth as every
/// route.
async fn proxy_route(app: App, mut req: Request) -> Response {
    let (caller, cred, via) = match resolve_caller(&app.svc, req.headers()) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    use tracing::Instrument;
    let span = tracing::debug_span!("request", method = %req.method(), path = req.uri().path());
    req.extensions_mut().insert(via);
    let id = proxy::tenant_of(req.uri().path()).to_string();
    proxy_to(&app, &caller, cred.grant, id, proxy::Mode::Prefix, req)
        .instrument(span)
        .await
}

/// Proxy `req` to tenant `id` for `caller`: counted; a tenant that does not
/// answer is a 502 in the JSON envelope; the answer ends when `grant`
/// no longer holds, or the tenant is deleted, stopped or moved.
async fn proxy_to(
    app: &App,
    caller: &Caller,
    grant: Grant,
    id: String,
    mode: proxy::Mode,
    req: Request,
) -> Response {
    // Subscribed before the route is read, so no change is missed.
    let changes = app.svc.access().subscribe();
    let (target, generation) = match app.svc.proxy_target(caller, &id) {
        Ok(t) => t,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let end = ending(app.svc.clone(), changes, grant, id.clone(), generation);
    match app.proxy.forward(&id, target, mode, req, end).await {
        Ok(resp) => {
            app.svc.metrics().proxied(Some(resp.status().as_u16()));
            resp
        }
        Err(msg) => {
            app.svc.metrics().proxied(None);
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                format!("tenant {id}: {msg}"),
            )
            .into_response()
        }
    }
}

/// Resolves once `grant` no longer holds for tenant `id` at route
/// `generation`; checked at each change the orchestrator signals.
fn ending(
    svc: Arc<Orchestrator>,
    mut changes: tokio::sync::watch::Receiver<u64>,
    grant: Grant,
    id: String,
    generation: u64,
) -> proxy::Ending {
    Box::pin(async move {
        loop {
            if !svc.still_authorised(&grant, &id, generation) {
                svc.metrics().streams_ended.inc();
                return;
            }
            access_changed(&mut changes).await;
        }
    })
}

/// Resolves at the next change of tokens or sessions (never, if none can
/// come): what every open stream rechecks its grant at.
async fn access_changed(rx: &mut tokio::sync::watch::Receiver<u64>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The auth middleware: puts the [`Caller`] into the request's extensions.
async fn auth(State(app): State<App>, mut req: Request, next: Next) -> Response {
    match resolve_caller(&app.svc, req.headers()) {
        Ok((c, cred, via)) => {
            use tracing::Instrument;
            let span =
                tracing::debug_span!("request", method = %req.method(), path = req.uri().path());
            req.extensions_mut().insert(c);
            req.extensions_mut().insert(cred);
            req.extensions_mut().insert(via);
            next.run(req).instrument(span).await
        }
        Err(e) => e.into_response(),
    }
}

fn admin_only(c: &Caller) -> ApiResult<()> {
    match c {
        Caller::Admin => Ok(()),
        Caller::Owner(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "admin token required",
        )),
    }
}

/// Create and place a tenant.
#[utoipa::path(post, path = "/api/tenants", params(StartQuery), request_body = CreateTenant,
    responses((status = 201, body = TenantCreated), (status = 200, description = "the same request was already accepted", body = TenantCreated),
              (status = 400, body = ErrorDoc), (status = 409, body = ErrorDoc), (status = 503, body = ErrorDoc)),
    security(("bearer" = []), ("apiKey" = [])))]
async fn create_tenant(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Extension(cred): Extension<Credential>,
    q: Result<Query<StartQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let start = query(q)?.start.unwrap_or(true);
    let req: CreateTenant = json_body(body, "JSON body")?;
    let (tenant, created) = app
        .svc
        .create_tenant_as(&caller, cred.quota, req, start)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let placement = tenant.placement.clone();
    Ok((
        status,
        Json(TenantCreated {
            success: true,
            tenant,
            placement,
        }),
    )
        .into_response())
}

/// The caller's tenants (all for the admin).
#[utoipa::path(get, path = "/api/tenants", responses((status = 200, body = TenantList)), security(("bearer" = [])))]
async fn list_tenants(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<TenantList>> {
    Ok(Json(TenantList {
        success: true,
        tenants: app.svc.list_tenants(&caller).await?,
    }))
}

/// Give a tenant a new spec: the full create body, same id. It restarts
/// with it, in the same slot if it still fits its pool, else in another;
/// its home and volumes stay.
#[utoipa::path(put, path = "/api/tenants/{id}", params(("id" = String, Path)), request_body = CreateTenant,
    responses((status = 200, body = TenantEnvelope), (status = 400, body = ErrorDoc), (status = 403, body = ErrorDoc),
              (status = 404, body = ErrorDoc), (status = 409, body = ErrorDoc), (status = 503, body = ErrorDoc)),
    security(("bearer" = []), ("apiKey" = [])))]
async fn update_tenant(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Extension(cred): Extension<Credential>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<TenantEnvelope>> {
    let req: CreateTenant = json_body(body, "JSON body")?;
    Ok(Json(TenantEnvelope {
        success: true,
        tenant: app.svc.update_tenant(&caller, cred.quota, &id, req).await?,
    }))
}

/// One tenant with its live state.
#[utoipa::path(get, path = "/api/tenants/{id}", params(("id" = String, Path)),
    responses((status = 200, body = TenantEnvelope), (status = 404, body = ErrorDoc)), security(("bearer" = [])))]
async fn get_tenant(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<TenantEnvelope>> {
    Ok(Json(TenantEnvelope {
        success: true,
        tenant: app.svc.get_tenant(&caller, &id).await?,
    }))
}

/// Stop the tenant and free its slot.
#[utoipa::path(delete, path = "/api/tenants/{id}", params(("id" = String, Path)),
    responses((status = 200, description = "deleted"), (status = 404, body = ErrorDoc), (status = 503, body = ErrorDoc)), security(("bearer" = [])))]
async fn delete_tenant(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    app.svc.delete_tenant(&caller, &id).await?;
    Ok(Json(
        serde_json::json!({"success": true, "message": format!("tenant {id} deleted")}),
    ))
}

/// `start`, `stop` or `restart` a tenant.
#[utoipa::path(post, path = "/api/tenants/{id}/{action}", params(("id" = String, Path), ("action" = String, Path, description = "start, stop or restart")),
    responses((status = 200, body = TenantEnvelope), (status = 404, body = ErrorDoc)), security(("bearer" = [])))]
async fn tenant_action(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<Json<TenantEnvelope>> {
    let Some(action) = ProgramAction::parse(&action) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no action {action:?}: want start, stop or restart"),
        ));
    };
    Ok(Json(TenantEnvelope {
        success: true,
        tenant: app.svc.act(&caller, &id, action).await?,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TailQuery {
    tail: Option<u64>,
    follow: Option<bool>,
}

/// `?limit=` of the events.
const EVENTS_LIMIT: std::ops::RangeInclusive<u64> = 1..=10_000;

/// `v` if it lies in `r`, else a 400 naming the parameter and the range.
fn ranged(name: &str, v: u64, r: &std::ops::RangeInclusive<u64>) -> ApiResult<u64> {
    slotpack_proto::protocol::in_range(name, v, r)
        .map(|_| v)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m))
}

/// `POST /api/tenants?start=false`: place the tenant, stopped.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct StartQuery {
    /// `false`: placed but not started (fill its volumes, then start it).
    start: Option<bool>,
}

/// The volume routes' query.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct VolumeQuery {
    /// The volume's path (one of the tenant's `volumes`).
    path: String,
    /// GET only: `UID:GID` to own every entry of the archive.
    owner: Option<String>,
}

/// Largest volume archive one PUT takes (1 GiB; it is held in memory).
const MAX_VOLUME_ARCHIVE: usize = 1 << 30;

/// Put a tar (one top folder, as `docker cp` makes it) into a stopped
/// tenant's volume: files of the same name are replaced, others kept,
/// everything becomes the slot user's.
#[utoipa::path(put, path = "/api/tenants/{id}/volume", params(("id" = String, Path), VolumeQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "a tar archive (application/x-tar is taken too: the body is not read by its type)"),
    responses((status = 204, description = "filled"), (status = 404, body = ErrorDoc), (status = 409, body = ErrorDoc)),
    security(("bearer" = [])))]
async fn volume_in(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<VolumeQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    let q = query(q)?;
    let archive = body.map_err(|e| ApiError::new(e.status(), "bad_request", e.body_text()))?;
    app.svc.volume_in(&caller, &id, &q.path, archive).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A tenant's volume as a tar (one top folder named as the path's last
/// part), each entry owned by `owner` when given.
#[utoipa::path(get, path = "/api/tenants/{id}/volume", params(("id" = String, Path), VolumeQuery),
    responses((status = 200, content_type = "application/x-tar", body = Vec<u8>), (status = 404, body = ErrorDoc)),
    security(("bearer" = [])))]
async fn volume_out(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<VolumeQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let owner = q
        .owner
        .as_deref()
        .map(slotpack_proto::protocol::parse_owner)
        .transpose()
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m))?;
    let tar = app.svc.volume_out(&caller, &id, &q.path, owner).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from(tar),
    )
        .into_response())
}

/// The tenant's last log lines (stdout and stderr); with `follow=true`,
/// then the log as it grows (chunked), until the client leaves, the tenant
/// is deleted or the token revoked.
#[utoipa::path(get, path = "/api/tenants/{id}/logs", params(("id" = String, Path), ("tail" = Option<usize>, Query), ("follow" = Option<bool>, Query)),
    responses((status = 200, content_type = "text/plain", body = String), (status = 404, body = ErrorDoc), (status = 429, body = ErrorDoc)), security(("bearer" = [])))]
async fn tenant_logs(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Extension(cred): Extension<Credential>,
    Path(id): Path<String>,
    q: Result<Query<TailQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let tail = ranged(
        "tail",
        q.tail.unwrap_or(100),
        &slotpack_proto::protocol::RANGES.tail_lines,
    )?;
    if q.follow == Some(true) {
        return stream_routes::follow_logs(app, caller, cred, id, tail as usize).await;
    }
    let text = app.svc.logs(&caller, &id, tail as usize).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from(text),
    )
        .into_response())
}

/// Any method and path, forwarded to the tenant's port (bodies streamed;
/// websockets upgraded); the answer carries `Content-Security-Policy: sandbox`.
#[utoipa::path(method(get, post, put, delete, patch, head, options), path = "/api/tenants/{id}/proxy/{path}", params(("id" = String, Path), ("path" = String, Path)),
    responses((status = 200, description = "the tenant's answer"), (status = 401, body = ErrorDoc), (status = 404, body = ErrorDoc), (status = 502, body = ErrorDoc)), security(("bearer" = []), ("apiKey" = [])))]
#[allow(dead_code)]
async fn proxy_doc() {}

/// The tenant's `/`, as `.../proxy/` (any method, as the path above).
#[utoipa::path(method(get, post, put, delete, patch, head, options), path = "/api/tenants/{id}/proxy", params(("id" = String, Path)),
    responses((status = 200, description = "the tenant's answer"), (status = 401, body = ErrorDoc), (status = 404, body = ErrorDoc), (status = 502, body = ErrorDoc)), security(("bearer" = []), ("apiKey" = [])))]
#[allow(dead_code)]
async fn proxy_root_doc() {}

/// The operator's page (HTML; it asks for a token and calls this API).
#[utoipa::path(get, path = "/dashboard", responses((status = 200, content_type = "text/html", description = "the page")))]
#[allow(dead_code)]
async fn dashboard_doc() {}

/// The page's script.
#[utoipa::path(get, path = "/dashboard/app.js", responses((status = 200, content_type = "text/javascript", description = "the script")))]
#[allow(dead_code)]
async fn dashboard_script_doc() {}

/// The page's style sheet.
#[utoipa::path(get, path = "/dashboard/app.css", responses((status = 200, content_type = "text/css", description = "the style sheet")))]
#[allow(dead_code)]
async fn dashboard_style_doc() {}

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, content_type = "application/json", description = "the OpenAPI 3.1 document")))]
#[allow(dead_code)]
async fn openapi_doc() {}

/// Liveness of the orchestrator.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "{\"status\":\"ok\"}")))]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain", body = String)))]
#[allow(dead_code)]
async fn metrics_doc() {}

async fn metrics(State(app): State<App>) -> Response {
    let snap = app.svc.snapshot().await;
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        app.svc.metrics().render(&snap),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::AgentError;
    use crate::backend::BackendError;
    use crate::db::DbError;

    fn answer(e: ServiceError) -> (StatusCode, serde_json::Value) {
        let r = ApiError::from(e).into_response();
        let status = r.status();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let body = rt
            .block_on(axum::body::to_bytes(r.into_body(), 1 << 20))
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[test]
    fn proxy_paths_are_the_tenants_proxy_and_below() {
        for p in [
            "/api/tenants/a/proxy",
            "/api/tenants/a/proxy/",
            "/api/tenants/a/proxy/x/y",
        ] {
            assert!(is_proxy_path(p), "{p}");
        }
        for p in [
            "/api/tenants//proxy",
            "/api/tenants/a/proxyx",
            "/api/tenants/a/logs",
            "/api/tenants/a",
            "/api/tokens",
            "/x/api/tenants/a/proxy",
        ] {
            assert!(!is_proxy_path(p), "{p}");
        }
    }

    #[test]
    fn the_openapi_document_lists_every_route_and_method_of_the_router() {
        // The router's table (`router` above), as (path, methods).
        let all = ["get", "post", "put", "delete", "patch", "head", "options"];
        let routes: &[(&str, &[&str])] = &[
            ("/api/tenants", &["post", "get"]),
            ("/api/tenants/{id}", &["get", "put", "delete"]),
            ("/api/tenants/{id}/{action}", &["post"]),
            ("/api/tenants/{id}/logs", &["get"]),
            ("/api/tenants/{id}/volume", &["get", "put"]),
            ("/api/tenants/{id}/session", &["post"]),
            ("/api/tenants/{id}/proxy", &all),
            ("/api/tenants/{id}/proxy/{path}", &all),
            ("/api/pool/status", &["get"]),
            ("/api/pool/health-check", &["post"]),
            ("/api/pool/cleanup", &["post"]),
            ("/api/pool/bot/{instanceId}", &["get"]),
            ("/api/pool/classes", &["get"]),
            ("/api/pool/metrics-targets", &["get"]),
            ("/api/pool/classes/{name}", &["put", "delete"]),
            ("/api/tokens", &["post", "get", "delete"]),
            ("/api/tokens/{id}", &["delete"]),
            ("/api/events", &["get"]),
            ("/api/events/stream", &["get"]),
            ("/dashboard", &["get"]),
            ("/dashboard/app.js", &["get"]),
            ("/dashboard/app.css", &["get"]),
            ("/healthz", &["get"]),
            ("/metrics", &["get"]),
            ("/openapi.json", &["get"]),
        ];
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for (path, methods) in routes {
            for m in *methods {
                assert!(
                    doc["paths"][path][m].is_object(),
                    "{} {path} is not in the OpenAPI document",
                    m.to_uppercase()
                );
            }
        }
        let documented = doc["paths"].as_object().unwrap().len();
        assert_eq!(
            documented,
            routes.len(),
            "a documented path the router lacks"
        );
    }

    #[test]
    fn service_errors_map_to_statuses_and_keep_internals_out_of_answers() {
        let addr: std::net::SocketAddr = "127.0.0.1:8999".parse().unwrap();
        let (s, b) = answer(ServiceError::from(DbError::Conflict("port taken".into())));
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("conflict"))
        );
        assert_eq!(b["error"]["message"], "port taken");
        // The agent's own 400 is the caller's spec: its message, as a 400.
        let refused = AgentError::Refused {
            addr,
            message: "cannot run /x".into(),
        };
        let (s, b) = answer(ServiceError::from(refused));
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(b["error"]["message"], "cannot run /x");
        // An agent or backend that is not there: 503 saying so.
        let gone = ServiceError::from(AgentError::Unreachable(addr, "refused".into()));
        assert!(std::error::Error::source(&gone).is_some(), "source dropped");
        let (s, b) = answer(gone);
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unreachable"));
        let (s, _) = answer(ServiceError::from(BackendError::Other(
            "engine down".into(),
        )));
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        // A database failure keeps its source for the log, never shows it.
        let db = ServiceError::from(DbError::Io(std::io::Error::other("disk full")));
        let src = std::error::Error::source(&db).map(|e| e.to_string());
        assert_eq!(src.as_deref(), Some("database file: disk full"));
        let (s, b) = answer(db);
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(b["error"]["message"], "internal error; see the server log");
    }
}
