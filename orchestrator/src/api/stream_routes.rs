//! The streaming routes: `GET /api/events/stream` (server-sent events)
//! and `GET /api/tenants/{id}/logs?follow=true` (chunked text). Each is
//! bounded per credential (`SLOTPACK_MAX_STREAMS_PER_CLIENT`: beyond it a
//! 429 with `Retry-After`) and ends when its credential is revoked, as a
//! proxy stream does.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream;

use super::*;
use crate::access::Grant;
use crate::db::EventRow;
use crate::service::LogPlace;
use crate::streams::StreamPermit;

/// How often a log follower asks the agent for more.
const LOG_POLL: Duration = Duration::from_millis(250);
/// New events are gathered this long before a stream reads them, so a
/// burst costs one query per client, not one per event.
const EVENT_COALESCE: Duration = Duration::from_millis(20);
/// Events read per query.
const EVENT_BATCH: u32 = 500;
/// A comment line keeps idle streams open through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `?backlog=` of the event stream.
const BACKLOG: std::ops::RangeInclusive<u64> = 0..=1000;

/// One stream slot for the credential, or the 429 that says why not.
pub(super) fn stream_permit(app: &App, grant: &Grant) -> Result<StreamPermit, Box<Response>> {
    let key = match grant {
        Grant::Admin => "admin",
        Grant::Token(h) => h.as_str(),
    };
    let slots = app.svc.stream_slots();
    slots.try_open(key).ok_or_else(|| {
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!(
                "this credential holds {} open streams already (SLOTPACK_MAX_STREAMS_PER_CLIENT); close one first",
                slots.max()
            ),
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        Box::new(r)
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    tenant: Option<String>,
    backlog: Option<u64>,
}

/// What an event stream holds between its messages.
struct EventFeed {
    app: App,
    caller: Caller,
    grant: Grant,
    tenant: Option<String>,
    after: i64,
    queued: VecDeque<EventRow>,
    signal: tokio::sync::watch::Receiver<i64>,
    access: tokio::sync::watch::Receiver<u64>,
    _permit: StreamPermit,
}

impl EventFeed {
    /// The next event, waiting for one; `None` ends the stream.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(e) = self.queued.pop_front() {
                self.after = e.seq;
                let data = serde_json::to_string(&e).unwrap_or_default();
                let ev = Event::default().id(e.seq.to_string()).data(data);
                return Some((Ok(ev), self));
            }
            if !self.app.svc.access().valid(&self.grant) {
                self.app.svc.metrics().streams_ended.inc();
                return None;
            }
            // Marked seen before reading, so an event written meanwhile
            // wakes the next wait.
            let latest = *self.signal.borrow_and_update();
            if latest > self.after {
                let rows = self
                    .app
                    .svc
                    .events_after(
                        &self.caller,
                        self.after,
                        self.tenant.as_deref(),
                        EVENT_BATCH,
                    )
                    .ok()?;
                match rows.last() {
                    Some(_) => self.queued.extend(rows),
                    // None of them is the caller's: skip past them.
                    None => self.after = latest,
                }
                continue;
            }
            tokio::select! {
                r = self.signal.changed() => {
                    if r.is_err() {
                        return None;
                    }
                    tokio::time::sleep(EVENT_COALESCE).await;
                }
                _ = access_changed(&mut self.access) => {}
            }
        }
    }
}

/// Lifecycle events as they happen (server-sent events): each message's
/// `id` is the event's `seq`, its `data` the event as JSON. Admin: every
/// event; owner: its own tenants'. Resumes after `Last-Event-ID`; else
/// starts with the latest `backlog` (0 to 1000, default 0).
#[utoipa::path(get, path = "/api/events/stream",
    params(("tenant" = Option<String>, Query, description = "only this tenant's events"),
           ("backlog" = Option<u32>, Query, description = "the latest N events first (0 to 1000; not with Last-Event-ID)"),
           ("Last-Event-ID" = Option<i64>, Header, description = "resume after this event's seq")),
    responses((status = 200, content_type = "text/event-stream", description = "id: <seq>, data: {seq, at, kind, tenant, pool, detail}"),
              (status = 400, body = ErrorDoc), (status = 429, body = ErrorDoc)),
    security(("bearer" = []), ("apiKey" = [])))]
pub(super) async fn events_stream(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Extension(cred): Extension<Credential>,
    headers: HeaderMap,
    q: Result<Query<StreamQuery>, QueryRejection>,
) -> Response {
    match open_events(app, caller, cred, headers, q) {
        Ok(r) => r,
        Err(r) => *r,
    }
}

fn open_events(
    app: App,
    caller: Caller,
    cred: Credential,
    headers: HeaderMap,
    q: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Response, Box<Response>> {
    let boxed = |e: ApiError| Box::new(e.into_response());
    let bad = |m: String| boxed(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m));
    let q = query(q).map_err(boxed)?;
    let backlog = ranged("backlog", q.backlog.unwrap_or(0), &BACKLOG).map_err(boxed)?;
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| bad("Last-Event-ID: not an event seq (a whole number)".into()))?,
        ),
    };
    let permit = stream_permit(&app, &cred.grant)?;
    let signal = app.svc.event_signal();
    let access = app.svc.access().subscribe();
    let (after, queued) = match resume {
        Some(seq) => (seq, VecDeque::new()),
        None => {
            let latest = *signal.borrow();
            let rows = if backlog > 0 {
                app.svc
                    .latest_events(&caller, q.tenant.as_deref(), backlog as u32)
                    .map_err(|e| boxed(ApiError::from(e)))?
            } else {
                Vec::new()
            };
            let after = rows.first().map_or(latest, |e| e.seq - 1);
            (after, rows.into())
        }
    };
    let feed = EventFeed {
        app,
        caller,
        grant: cred.grant,
        tenant: q.tenant,
        after,
        queued,
        signal,
        access,
        _permit: permit,
    };
    let events = stream::unfold(feed, EventFeed::next);
    let mut r = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    Ok(r)
}

/// What a log follower holds between its pieces.
struct LogFeed {
    app: App,
    caller: Caller,
    grant: Grant,
    id: String,
    place: LogPlace,
    first: Option<Bytes>,
    access: tokio::sync::watch::Receiver<u64>,
    _permit: StreamPermit,
}

impl LogFeed {
    /// The next piece of the log, waiting for one; `None` ends it (the
    /// tenant deleted, or the credential revoked).
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        if let Some(b) = self.first.take().filter(|b| !b.is_empty()) {
            return Some((Ok(b), self));
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(LOG_POLL) => {}
                _ = access_changed(&mut self.access) => {}
            }
            if !self.app.svc.access().valid(&self.grant) {
                self.app.svc.metrics().streams_ended.inc();
                return None;
            }
            match self
                .app
                .svc
                .log_piece(&self.caller, &self.id, Some(&self.place), 0)
                .await
            {
                Ok((bytes, place)) => {
                    self.place = place;
                    if !bytes.is_empty() {
                        return Some((Ok(bytes), self));
                    }
                }
                Err(ServiceError::NotFound(_)) => return None,
                // An agent restarting or a pool being remade: try again.
                Err(_) => {}
            }
        }
    }
}

/// `GET /api/tenants/{id}/logs?follow=true`: the last `tail` lines, then
/// the log as it grows (across the program's restarts and the tenant's
/// moves), until the client leaves, the tenant is deleted or the
/// credential is revoked.
pub(super) async fn follow_logs(
    app: App,
    caller: Caller,
    cred: Credential,
    id: String,
    tail: usize,
) -> Result<Response, ApiError> {
    let permit = match stream_permit(&app, &cred.grant) {
        Ok(p) => p,
        Err(r) => return Ok(*r),
    };
    let access = app.svc.access().subscribe();
    let (first, place) = app.svc.log_piece(&caller, &id, None, tail).await?;
    let feed = LogFeed {
        app,
        caller,
        grant: cred.grant,
        id,
        place,
        first: Some(first),
        access,
        _permit: permit,
    };
    let body = Body::from_stream(stream::unfold(feed, LogFeed::next));
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response())
}
