//! `/api/tokens` and `/api/events` (admin).

use super::*;

/// Create an owner token (admin), with its own quotas if given.
#[utoipa::path(post, path = "/api/tokens", request_body = CreateToken,
    responses((status = 201, body = TokenCreated), (status = 400, body = ErrorDoc), (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc)),
    security(("bearer" = []), ("apiKey" = [])))]
pub(super) async fn create_token(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    admin_only(&caller)?;
    let req: CreateToken = json_body(body, "JSON body")?;
    Ok((StatusCode::CREATED, Json(app.svc.create_token(&req)?)).into_response())
}

/// Every owner token (admin): id (hash prefix), owner, creation time, its
/// quotas and what the owner uses now.
#[utoipa::path(get, path = "/api/tokens", responses((status = 200, body = TokenList), (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc)), security(("bearer" = [])))]
pub(super) async fn list_tokens(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<TokenList>> {
    admin_only(&caller)?;
    Ok(Json(TokenList {
        success: true,
        tokens: app.svc.tokens()?,
    }))
}

/// Revoke an owner token by its id (admin); its next request answers 401.
#[utoipa::path(delete, path = "/api/tokens/{id}", params(("id" = String, Path, description = "the id GET /api/tokens lists")),
    responses((status = 200, description = "revoked"), (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc), (status = 404, body = ErrorDoc)), security(("bearer" = [])))]
pub(super) async fn revoke_token(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    admin_only(&caller)?;
    let owner = app.svc.revoke_token(&id)?;
    Ok(Json(serde_json::json!({
        "success": true,
        "message": format!("token {id} of {owner} revoked")
    })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct OwnerQuery {
    /// The owner whose tokens all go.
    owner: String,
}

/// Revoke every token of an owner (admin): each next request answers 401,
/// and what they hold open through the proxy ends.
#[utoipa::path(delete, path = "/api/tokens", params(OwnerQuery),
    responses((status = 200, description = "revoked"), (status = 400, body = ErrorDoc), (status = 401, body = ErrorDoc), (status = 403, body = ErrorDoc), (status = 404, body = ErrorDoc)), security(("bearer" = [])))]
pub(super) async fn revoke_owner_tokens(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<OwnerQuery>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    admin_only(&caller)?;
    let owner = query(q)?.owner;
    let n = app.svc.revoke_owner_tokens(&owner)?;
    Ok(Json(serde_json::json!({
        "success": true,
        "message": format!("{n} tokens of {owner} revoked")
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    tenant: Option<String>,
    limit: Option<u64>,
}

/// The lifecycle log: latest events, oldest first (an owner's: its
/// tenants' events only).
#[utoipa::path(get, path = "/api/events", params(("tenant" = Option<String>, Query), ("limit" = Option<u32>, Query)),
    responses((status = 200, description = "{success, events: [{seq, at, kind, tenant, pool, detail}]}")), security(("bearer" = [])))]
pub(super) async fn events(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let q = query(q)?;
    let limit = ranged("limit", q.limit.unwrap_or(100), &EVENTS_LIMIT)?;
    let ev = app
        .svc
        .latest_events(&caller, q.tenant.as_deref(), limit as u32)?;
    Ok(Json(serde_json::json!({"success": true, "events": ev})))
}
