//! `/api/pool/*`: status, health checks, cleanup, bot lookup, pool classes
//! and the Prometheus targets.

use super::*;

/// Pools, their tenants and health (admin).
#[utoipa::path(get, path = "/api/pool/status", responses((status = 200, body = PoolStatus), (status = 403, body = ErrorDoc)), security(("bearer" = [])))]
pub(super) async fn pool_status(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<PoolStatus>> {
    admin_only(&caller)?;
    Ok(Json(app.svc.pool_status().await?))
}

/// Run one health tick now (admin).
#[utoipa::path(post, path = "/api/pool/health-check", responses((status = 200, body = HealthReport)), security(("bearer" = [])))]
pub(super) async fn health_check(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<HealthReport>> {
    admin_only(&caller)?;
    Ok(Json(app.svc.health_tick().await))
}

/// Remove empty pools (admin). Pools the database has no row for are
/// never removed by this alone: only those named in `orphans` (as the
/// health report and status list them) are.
#[utoipa::path(post, path = "/api/pool/cleanup", request_body(content = Option<CleanupRequest>),
    responses((status = 200, body = CleanupResult), (status = 400, body = ErrorDoc)), security(("bearer" = [])))]
pub(super) async fn cleanup(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<CleanupResult>> {
    admin_only(&caller)?;
    let empty = body
        .as_ref()
        .is_ok_and(|b| b.iter().all(u8::is_ascii_whitespace));
    let req: CleanupRequest = if empty {
        CleanupRequest::default()
    } else {
        json_body(body, "JSON body")?
    };
    if req.orphans.len() > 100 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "orphans: at most 100 names".to_string(),
        ));
    }
    let orphans = if req.orphans.is_empty() {
        0
    } else {
        app.svc.remove_orphans(&req.orphans).await?
    };
    let n = app.svc.cleanup().await?;
    Ok(Json(CleanupResult {
        success: true,
        removed_pools: n + orphans,
        message: if orphans == 0 {
            format!("Cleaned up {n} empty pool containers")
        } else {
            format!("Cleaned up {n} empty pool containers and {orphans} orphaned pools")
        },
    }))
}

/// Where a tenant can be reached.
#[utoipa::path(get, path = "/api/pool/bot/{instanceId}", params(("instanceId" = String, Path)),
    responses((status = 200, body = BotInfo), (status = 404, body = ErrorDoc)), security(("bearer" = [])))]
pub(super) async fn bot_info(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<BotInfo>> {
    Ok(Json(app.svc.bot_info(&caller, &id)?))
}

/// Pool classes: the image and size of each class's pools (any caller, so
/// that owners can choose a `poolClass`).
#[utoipa::path(get, path = "/api/pool/classes", responses((status = 200, body = ClassList)), security(("bearer" = []), ("apiKey" = [])))]
pub(super) async fn list_classes(State(app): State<App>) -> ApiResult<Json<ClassList>> {
    Ok(Json(app.svc.classes()?))
}

/// Every pool's agent as a Prometheus target (admin): the response format
/// of Prometheus' `http_sd_configs`, so one scrape job finds every agent.
#[utoipa::path(get, path = "/api/pool/metrics-targets", responses((status = 200, body = [TargetGroup])), security(("bearer" = []), ("apiKey" = [])))]
pub(super) async fn metrics_targets(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<TargetGroup>>> {
    admin_only(&caller)?;
    Ok(Json(app.svc.metrics_targets()?))
}

/// Define or change a pool class (admin): 201 when new, 200 when replaced.
/// Running pools keep their image and size; new pools of the class take
/// the new ones. The image must be on the engine (docker backend).
#[utoipa::path(put, path = "/api/pool/classes/{name}", params(("name" = String, Path)), request_body = ClassSpec,
    responses((status = 201, body = ClassList), (status = 200, body = ClassList)), security(("bearer" = []), ("apiKey" = [])))]
pub(super) async fn put_class(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    admin_only(&caller)?;
    let spec: ClassSpec = json_body(body, "JSON body")?;
    let created = app.svc.put_class(&name, spec, false).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(app.svc.classes()?)).into_response())
}

/// Remove a pool class (admin); 409 while pools of it exist.
#[utoipa::path(delete, path = "/api/pool/classes/{name}", params(("name" = String, Path)),
    responses((status = 200, body = ClassList)), security(("bearer" = []), ("apiKey" = [])))]
pub(super) async fn delete_class(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<ClassList>> {
    admin_only(&caller)?;
    if !slotpack_proto::protocol::is_valid_id(&name) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid class name {name:?}: want ^[a-z0-9][a-z0-9_-]{{0,62}}$"),
        ));
    }
    app.svc.delete_class(&name)?;
    Ok(Json(app.svc.classes()?))
}
