//! The agent's HTTP API: routes, bearer auth, JSON errors, SSE and metrics.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::store::RunGoal;
use crate::supervisor::{lock, Shared, SupervisorError};
use slotpack_proto::auth::constant_time_eq;
use slotpack_proto::http_error::{json_body, query, with_json_errors, ApiError};
use slotpack_proto::protocol::{Health, ProgramSpec, ProgramState};

/// State of the HTTP layer.
#[derive(Clone)]
pub struct Api {
    /// The supervisor.
    pub sup: Shared,
    /// The bearer token.
    pub token: Arc<str>,
    /// What the sandbox enforces (see [`crate::sandbox::Sandbox::describe`]).
    pub sandbox: Arc<str>,
}

impl From<SupervisorError> for ApiError {
    fn from(e: SupervisorError) -> Self {
        let (status, code) = match &e {
            SupervisorError::Invalid(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            SupervisorError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            SupervisorError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            SupervisorError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            SupervisorError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            eprintln!("slot-agent: {e}");
        }
        ApiError::new(status, code, e.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Build the router.
pub fn router(api: Api) -> Router {
    let protected = Router::new()
        .route("/v1/programs", get(list))
        .route(
            "/v1/programs/{id}",
            get(get_one).put(put_one).delete(delete_one),
        )
        .route("/v1/programs/{id}/start", post(start))
        .route("/v1/programs/{id}/stop", post(stop))
        .route("/v1/programs/{id}/restart", post(restart))
        .route("/v1/programs/{id}/logs", get(logs))
        .route("/v1/programs/{id}/volume", get(get_volume).put(put_volume))
        .route("/v1/events", get(events))
        .route_layer(middleware::from_fn_with_state(api.clone(), auth));
    let router = Router::new()
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .merge(protected);
    with_json_errors(router).with_state(api)
}

async fn auth(State(api): State<Api>, headers: HeaderMap, req: Request, next: Next) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if constant_time_eq(t.trim().as_bytes(), api.token.as_bytes()) => {
            next.run(req).await
        }
        Some(_) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "wrong token").into_response()
        }
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing Authorization: Bearer <token>",
        )
        .into_response(),
    }
}

fn checked_id(id: &str) -> ApiResult<()> {
    if slotpack_proto::protocol::is_valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid program id {id:?}: want ^[a-z0-9][a-z0-9_-]{{0,62}}$"),
        ))
    }
}

async fn health(State(api): State<Api>) -> Json<Health> {
    let s = lock(&api.sup);
    Json(Health {
        status: "ok".into(),
        programs: s.len(),
        uptime_seconds: s.uptime().as_secs(),
        sandbox: api.sandbox.to_string(),
    })
}

async fn list(State(api): State<Api>) -> impl IntoResponse {
    Json(lock(&api.sup).list())
}

async fn get_one(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<Response> {
    checked_id(&id)?;
    Ok(Json(lock(&api.sup).get(&id)?).into_response())
}

/// PUT's query: `start=false` stores a new program without starting it
/// (stopped; its volumes can be filled first).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutQuery {
    start: Option<bool>,
}

async fn put_one(
    State(api): State<Api>,
    Path(id): Path<String>,
    q: Result<Query<PutQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    checked_id(&id)?;
    let goal = if query(q)?.start.unwrap_or(true) {
        RunGoal::Running
    } else {
        RunGoal::Stopped
    };
    let spec: ProgramSpec = json_body(body, "program spec")?;
    let mut s = lock(&api.sup);
    let created = s.put_as(&id, spec, goal)?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(s.get(&id)?)).into_response())
}

/// `?wait=false` on DELETE and stop: answer once the stop has begun
/// (DELETE: 202 while it stops, 204 if it is already gone) instead of once
/// the program is down.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    wait: Option<bool>,
}

/// DELETE's query: `wait` (see [`WaitQuery`]) and `purge=true`, which
/// removes the tenant's data (home, volumes) too; without it the data is
/// kept for the tenant's next slot.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    wait: Option<bool>,
    purge: Option<bool>,
}

async fn delete_one(
    State(api): State<Api>,
    Path(id): Path<String>,
    q: Result<Query<DeleteQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    checked_id(&id)?;
    let q = query(q)?;
    let wait = q.wait.unwrap_or(true);
    let limit = {
        let mut s = lock(&api.sup);
        s.api_delete_begin(&id, q.purge.unwrap_or(false))?;
        s.max_stop_timeout(Some(&id))
    };
    if !wait {
        let gone = lock(&api.sup).get(&id).is_err();
        return Ok(if gone {
            StatusCode::NO_CONTENT
        } else {
            StatusCode::ACCEPTED
        });
    }
    let (sup, i) = (api.sup.clone(), id.clone());
    wait_until(&api.sup, limit, move || lock(&sup).is_down(&i)).await;
    lock(&api.sup).api_delete_finish(&id);
    Ok(StatusCode::NO_CONTENT)
}

async fn start(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<Response> {
    checked_id(&id)?;
    let mut s = lock(&api.sup);
    s.api_start(&id)?;
    Ok(Json(s.get(&id)?).into_response())
}

async fn stop(
    State(api): State<Api>,
    Path(id): Path<String>,
    q: Result<Query<WaitQuery>, QueryRejection>,
) -> ApiResult<Response> {
    checked_id(&id)?;
    let wait = query(q)?.wait.unwrap_or(true);
    let limit = {
        let mut s = lock(&api.sup);
        s.api_stop(&id)?;
        s.max_stop_timeout(Some(&id))
    };
    if !wait {
        return Ok(Json(lock(&api.sup).get(&id)?).into_response());
    }
    let (sup, i) = (api.sup.clone(), id.clone());
    wait_until(&api.sup, limit, move || lock(&sup).is_down(&i)).await;
    Ok(Json(lock(&api.sup).get(&id)?).into_response())
}

async fn restart(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<Response> {
    checked_id(&id)?;
    let (old_pid, limit) = {
        let mut s = lock(&api.sup);
        let old = s.get(&id)?.pid;
        s.api_restart(&id)?;
        (old, s.max_stop_timeout(Some(&id)))
    };
    let (sup, i) = (api.sup.clone(), id.clone());
    wait_until(&api.sup, limit, move || {
        lock(&sup)
            .get(&i)
            .is_ok_and(|st| st.pid != old_pid && st.state != ProgramState::Stopping)
    })
    .await;
    Ok(Json(lock(&api.sup).get(&id)?).into_response())
}

/// Wait for `done` to hold, re-checking on every state change, for at most
/// `limit` plus a second of grace.
async fn wait_until(sup: &Shared, limit: Duration, done: impl Fn() -> bool) {
    let mut rx = lock(sup).subscribe();
    let deadline = tokio::time::Instant::now() + limit + Duration::from_secs(1);
    while !done() {
        if tokio::time::timeout_at(deadline, rx.recv()).await.is_err() {
            return;
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TailQuery {
    tail: Option<u64>,
    /// A cursor (`X-Log-Cursor` of an earlier answer): what came after it.
    after: Option<String>,
}

/// The most bytes one `?after=` answer carries.
const LOG_CHUNK: usize = 1 << 20;

async fn logs(
    State(api): State<Api>,
    Path(id): Path<String>,
    q: Result<Query<TailQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    checked_id(&id)?;
    let q = query(q)?;
    let n = q.tail.unwrap_or(100);
    slotpack_proto::protocol::in_range("tail", n, &slotpack_proto::protocol::RANGES.tail_lines)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m))?;
    let n = n as usize;
    let path = {
        let s = lock(&api.sup);
        s.get(&id)?;
        s.logs_dir().join(format!("{id}.log"))
    };
    let (text, cursor) = match q.after.as_deref() {
        Some(c) => {
            let from = crate::logs::Cursor::parse(c).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "after: not a log cursor",
                )
            })?;
            crate::logs::read_after(&path, from, LOG_CHUNK).map_err(SupervisorError::from)?
        }
        None => {
            // The end is read first: a line written meanwhile comes twice
            // to a follower, never not at all.
            let end = crate::logs::end(&path).map_err(SupervisorError::from)?;
            (
                crate::logs::tail(&path, n).map_err(SupervisorError::from)?,
                end,
            )
        }
    };
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::HeaderName::from_static("x-log-cursor"),
                cursor.to_string(),
            ),
        ],
        text,
    )
        .into_response())
}

async fn events(
    State(api): State<Api>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let rx = lock(&api.sup).subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    let data = serde_json::to_string(&ev).unwrap_or_default();
                    return Some((Ok(Event::default().event("state").data(data)), rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn metrics(State(api): State<Api>) -> Response {
    let text = crate::metrics::render(&lock(&api.sup));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The volume routes' query: the volume's `path`; for a GET, `owner`
/// (`UID:GID`) to give every entry of the archive.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeQuery {
    path: String,
    owner: Option<String>,
}

/// Largest archive a volume takes in one PUT (64 GiB; the disk bounds it
/// before that).
const MAX_IMPORT: u64 = 64 << 30;

fn io_error(e: std::io::Error) -> ApiError {
    match e.kind() {
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
        }
        std::io::ErrorKind::NotFound => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// `PUT /v1/programs/{id}/volume?path=P`: a tar (one top folder, as
/// `docker cp` makes it) into the stopped program's volume at P.
async fn put_volume(
    State(api): State<Api>,
    Path(id): Path<String>,
    q: Result<Query<VolumeQuery>, QueryRejection>,
    body: axum::body::Body,
) -> ApiResult<StatusCode> {
    use futures_util::StreamExt;
    use std::io::Write;
    checked_id(&id)?;
    let q = query(q)?;
    let (data, uid) = lock(&api.sup).volume_access(&id, &q.path, true)?;
    std::fs::create_dir_all(data.dir(&id)).map_err(io_error)?;
    let tmp = data.dir(&id).join(".import.tar");
    // Written as it comes (each chunk a short write to the page cache).
    let mut file = std::fs::File::create(&tmp).map_err(io_error)?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
        total += chunk.len() as u64;
        if total > MAX_IMPORT {
            let _ = std::fs::remove_file(&tmp);
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("a volume archive is at most {MAX_IMPORT} bytes"),
            ));
        }
        file.write_all(&chunk).map_err(io_error)?;
    }
    drop(file);
    let path = q.path.clone();
    let at = tmp.clone();
    let r = tokio::task::spawn_blocking(move || data.import(&id, &path, &at, uid))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let _ = std::fs::remove_file(&tmp);
    r.map_err(io_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/programs/{id}/volume?path=P[&owner=UID:GID]`: the volume at P
/// as a tar (one top folder named as P's last part).
async fn get_volume(
    State(api): State<Api>,
    Path(id): Path<String>,
    q: Result<Query<VolumeQuery>, QueryRejection>,
) -> ApiResult<Response> {
    checked_id(&id)?;
    let q = query(q)?;
    let owner = q
        .owner
        .as_deref()
        .map(slotpack_proto::protocol::parse_owner)
        .transpose()
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m))?
        .map(|(u, g)| (u64::from(u), u64::from(g)));
    let (data, _) = lock(&api.sup).volume_access(&id, &q.path, false)?;
    let tmp = data.dir(&id).join(".export.tar");
    let at = tmp.clone();
    let path = q.path.clone();
    let r = tokio::task::spawn_blocking(move || data.export(&id, &path, &at, owner))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let bytes = match r {
        Ok(()) => std::fs::read(&tmp).map_err(io_error),
        Err(e) => Err(io_error(e)),
    };
    let _ = std::fs::remove_file(&tmp);
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], bytes?).into_response())
}
