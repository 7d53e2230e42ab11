//! The pools' slot-agents as the service sees them: the [`Agents`] trait
//! (every call the service makes), and [`AgentClient`], its HTTP/1 client.
//! An agent's error answer is parsed once, here, into a typed
//! [`AgentError`]: nobody re-reads its body.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use slotpack_proto::protocol::{ProgramAction, ProgramSpec, ProgramStatus};

/// Errors talking to an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No answer (connect failure, timeout, broken connection).
    #[error("agent at {0} unreachable: {1}")]
    Unreachable(SocketAddr, String),
    /// The agent refused the request (400): a spec it cannot run, said in
    /// its own words (the caller's to fix).
    #[error("agent at {addr} refused it: {message}")]
    Refused {
        /// Agent address.
        addr: SocketAddr,
        /// The agent's message.
        message: String,
    },
    /// The agent has no such program (404).
    #[error("agent at {addr}: {message}")]
    NotFound {
        /// Agent address.
        addr: SocketAddr,
        /// The agent's message.
        message: String,
    },
    /// The agent answered with any other error.
    #[error("agent at {addr} answered {status}: {message}")]
    Status {
        /// Agent address.
        addr: SocketAddr,
        /// Status code.
        status: StatusCode,
        /// The agent's message (its body when not the error envelope).
        message: String,
    },
    /// The answer was not the expected JSON.
    #[error("agent at {0} answered malformed JSON: {1}")]
    Malformed(SocketAddr, String),
}

impl AgentError {
    /// Whether the agent said the program does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, AgentError::NotFound { .. })
    }

    /// The error of an agent's answer with `status` and `body`.
    fn of_answer(addr: SocketAddr, status: StatusCode, body: &[u8]) -> Self {
        let message = serde_json::from_slice::<slotpack_proto::protocol::ErrorBody>(body)
            .map_or_else(
                |_| String::from_utf8_lossy(body).into_owned(),
                |b| b.error.message,
            );
        match status {
            StatusCode::BAD_REQUEST => AgentError::Refused { addr, message },
            StatusCode::NOT_FOUND => AgentError::NotFound { addr, message },
            status => AgentError::Status {
                addr,
                status,
                message,
            },
        }
    }
}

/// What a program's removal does with its tenant's data (home, volumes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// Keep it: the tenant lives on elsewhere (a move).
    Keep,
    /// Remove it: the tenant itself is deleted.
    Purge,
}

impl Data {
    /// The agent's query parameter for it, after `sep` (none to keep).
    fn query(self, sep: char) -> String {
        match self {
            Data::Keep => String::new(),
            Data::Purge => format!("{sep}purge=true"),
        }
    }
}

/// Every call the service makes to an agent; [`AgentClient`] makes them
/// over HTTP, the service's tests use a recording fake.
pub trait Agents: Send + Sync {
    /// `GET /v1/health`.
    fn health<'a>(
        &'a self,
        ep: &'a Endpoint,
    ) -> BoxFuture<'a, Result<slotpack_proto::protocol::Health, AgentError>>;
    /// Every program and its state.
    fn list<'a>(
        &'a self,
        ep: &'a Endpoint,
    ) -> BoxFuture<'a, Result<Vec<ProgramStatus>, AgentError>>;
    /// One program's state.
    fn get<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
    ) -> BoxFuture<'a, Result<ProgramStatus, AgentError>>;
    /// Create or replace a program (no change if it holds `spec` already).
    fn put<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        spec: &'a ProgramSpec,
    ) -> BoxFuture<'a, Result<ProgramStatus, AgentError>>;
    /// Store a program without starting it (stopped; its volumes can be
    /// filled first).
    fn put_stopped<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        spec: &'a ProgramSpec,
    ) -> BoxFuture<'a, Result<ProgramStatus, AgentError>>;
    /// Put a tar (one top folder, as `docker cp` makes it) into a stopped
    /// program's volume at `path`.
    fn volume_in<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        path: &'a str,
        archive: Bytes,
    ) -> BoxFuture<'a, Result<(), AgentError>>;
    /// A program's volume at `path` as such a tar, every entry owned by
    /// `owner` (uid, gid) when given.
    fn volume_out<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        path: &'a str,
        owner: Option<(u32, u32)>,
    ) -> BoxFuture<'a, Result<Bytes, AgentError>>;
    /// Stop and remove a program, waiting up to `stop_timeout`; a missing
    /// one counts as removed. `data` says whether its tenant's data goes.
    fn delete<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        stop_timeout: Duration,
        data: Data,
    ) -> BoxFuture<'a, Result<(), AgentError>>;
    /// Begin removing a program; whether it is gone already.
    fn begin_delete<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        data: Data,
    ) -> BoxFuture<'a, Result<bool, AgentError>>;
    /// Begin stopping a program.
    fn begin_stop<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), AgentError>>;
    /// Start, stop or restart a program (a stop waits up to `stop_timeout`).
    fn action<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        action: ProgramAction,
        stop_timeout: Duration,
    ) -> BoxFuture<'a, Result<ProgramStatus, AgentError>>;
    /// A program's log: its last lines, or what came after a cursor.
    fn logs<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        read: LogRead,
    ) -> BoxFuture<'a, Result<LogChunk, AgentError>>;
}

/// Which part of a program's log to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRead {
    /// The last lines.
    Tail(usize),
    /// What was written after this cursor (an earlier chunk's).
    After(String),
}

/// A piece of a program's log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogChunk {
    /// The text.
    pub bytes: Bytes,
    /// Where a follower reads on from (the agent's `X-Log-Cursor`).
    pub cursor: Option<String>,
}

// The trait's methods call the inherent ones of the same name (inherent
// methods win name resolution).
impl Agents for AgentClient {
    fn health<'a>(
        &'a self,
        ep: &'a Endpoint,
    ) -> BoxFuture<'a, Result<slotpack_proto::protocol::Health, AgentError>> {
        Box::pin(AgentClient::health(self, ep))
    }
    fn list<'a>(
        &'a self,
        ep: &'a Endpoint,
    ) -> BoxFuture<'a, Result<Vec<ProgramStatus>, AgentError>> {
        Box::pin(AgentClient::list(self, ep))
    }
    fn get<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
    ) -> BoxFuture<'a, Result<ProgramStatus, AgentError>> {
        Box::pin(AgentClient::get(self, ep, id))
    }
    fn put<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        spec: &'a ProgramSpec,
    ) -> BoxFuture<'a, Result<ProgramStatus, AgentError>> {
        Box::pin(AgentClient::put(self, ep, id, spec))
    }
    fn put_stopped<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        spec: &'a ProgramSpec,
    ) -> BoxFuture<'a, Result<ProgramStatus, AgentError>> {
        Box::pin(AgentClient::put_stopped(self, ep, id, spec))
    }
    fn volume_in<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        path: &'a str,
        archive: Bytes,
    ) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(AgentClient::volume_in(self, ep, id, path, archive))
    }
    fn volume_out<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        path: &'a str,
        owner: Option<(u32, u32)>,
    ) -> BoxFuture<'a, Result<Bytes, AgentError>> {
        Box::pin(AgentClient::volume_out(self, ep, id, path, owner))
    }
    fn delete<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        stop_timeout: Duration,
        data: Data,
    ) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(AgentClient::delete(self, ep, id, stop_timeout, data))
    }
    fn begin_delete<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        data: Data,
    ) -> BoxFuture<'a, Result<bool, AgentError>> {
        Box::pin(AgentClient::begin_delete(self, ep, id, data))
    }
    fn begin_stop<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), AgentError>> {
        Box::pin(AgentClient::begin_stop(self, ep, id))
    }
    fn action<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        action: ProgramAction,
        stop_timeout: Duration,
    ) -> BoxFuture<'a, Result<ProgramStatus, AgentError>> {
        Box::pin(AgentClient::action(self, ep, id, action, stop_timeout))
    }
    fn logs<'a>(
        &'a self,
        ep: &'a Endpoint,
        id: &'a str,
        read: LogRead,
    ) -> BoxFuture<'a, Result<LogChunk, AgentError>> {
        Box::pin(AgentClient::logs(self, ep, id, read))
    }
}

/// Where an agent listens and its token.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Address of the agent API.
    pub addr: SocketAddr,
    /// Bearer token.
    pub token: String,
}

/// A pooled HTTP/1 client for all agents.
#[derive(Clone)]
pub struct AgentClient {
    http: Client<CheckedConnector, Full<Bytes>>,
    timeout: Duration,
}

/// Connects to an agent only if its port is listened on by `owner` (as
/// root: our uid; a Docker port is published by the root daemon). A port
/// some other user listens on (a tenant squatting it) is never connected
/// to, so it never gets the token. Checked per new connection: a kept-alive
/// one stays with the listener it was checked against (reading
/// `/proc/net/tcp` per call cost 10-20 ms on a busy host).
#[derive(Clone)]
struct CheckedConnector {
    inner: HttpConnector,
    owner: Option<u32>,
}

impl tower_service::Service<hyper::Uri> for CheckedConnector {
    type Response = <HttpConnector as tower_service::Service<hyper::Uri>>::Response;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        let (owner, mut inner) = (self.owner, self.inner.clone());
        Box::pin(async move {
            let squatter = owner
                .zip(uri.port_u16())
                .and_then(|(o, port)| slotpack_proto::procfs::foreign_listener(port, o));
            if let Some(uid) = squatter {
                return Err(format!(
                    "the port is held by uid {uid}, not by an agent: its token is not sent"
                )
                .into());
            }
            inner.call(uri).await.map_err(Into::into)
        })
    }
}

impl AgentClient {
    /// A client whose calls give up after `timeout` (stops may take longer:
    /// their own timeout is added by the caller).
    pub fn new(timeout: Duration) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(timeout));
        let owner = nix::unistd::geteuid()
            .is_root()
            .then_some(nix::unistd::geteuid().as_raw());
        Self {
            http: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(CheckedConnector { inner: conn, owner }),
            timeout,
        }
    }

    async fn call(
        &self,
        ep: &Endpoint,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        extra: Duration,
    ) -> Result<Bytes, AgentError> {
        self.call_raw(ep, method, path, body, extra)
            .await
            .map(|(_, _, b)| b)
    }

    /// A call without body whose success status matters, not its answer.
    async fn call_status(
        &self,
        ep: &Endpoint,
        method: Method,
        path: &str,
    ) -> Result<StatusCode, AgentError> {
        self.call_raw(ep, method, path, None, Duration::ZERO)
            .await
            .map(|(s, _, _)| s)
    }

    /// One call: the status, headers and body of a 2xx answer; any other
    /// is the typed [`AgentError`].
    async fn call_raw(
        &self,
        ep: &Endpoint,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        extra: Duration,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), AgentError> {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", ep.addr))
            .header("authorization", format!("Bearer {}", ep.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| AgentError::Unreachable(ep.addr, e.to_string()))?;
        let unreachable = |e: String| AgentError::Unreachable(ep.addr, e);
        let resp = tokio::time::timeout(self.timeout + extra, self.http.request(req))
            .await
            .map_err(|_| unreachable("timed out".into()))?
            .map_err(|e| unreachable(crate::proxy::error_chain(&e)))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = tokio::time::timeout(self.timeout + extra, resp.into_body().collect())
            .await
            .map_err(|_| unreachable("timed out reading".into()))?
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if status.is_success() {
            Ok((status, headers, bytes))
        } else {
            Err(AgentError::of_answer(ep.addr, status, &bytes))
        }
    }

    fn json<T: serde::de::DeserializeOwned>(ep: &Endpoint, b: &Bytes) -> Result<T, AgentError> {
        serde_json::from_slice(b).map_err(|e| AgentError::Malformed(ep.addr, e.to_string()))
    }

    /// `GET /v1/health`.
    pub async fn health(
        &self,
        ep: &Endpoint,
    ) -> Result<slotpack_proto::protocol::Health, AgentError> {
        let b = self
            .call(ep, Method::GET, "/v1/health", None, Duration::ZERO)
            .await?;
        Self::json(ep, &b)
    }

    /// `GET /v1/programs`.
    pub async fn list(&self, ep: &Endpoint) -> Result<Vec<ProgramStatus>, AgentError> {
        let b = self
            .call(ep, Method::GET, "/v1/programs", None, Duration::ZERO)
            .await?;
        Self::json(ep, &b)
    }

    /// `GET /v1/programs/{id}`.
    pub async fn get(&self, ep: &Endpoint, id: &str) -> Result<ProgramStatus, AgentError> {
        let b = self
            .call(
                ep,
                Method::GET,
                &format!("/v1/programs/{id}"),
                None,
                Duration::ZERO,
            )
            .await?;
        Self::json(ep, &b)
    }

    /// `PUT /v1/programs/{id}`.
    pub async fn put(
        &self,
        ep: &Endpoint,
        id: &str,
        spec: &ProgramSpec,
    ) -> Result<ProgramStatus, AgentError> {
        self.put_to(ep, &format!("/v1/programs/{id}"), spec).await
    }

    /// PUT `spec` to `path` (a program, with or without `?start=false`).
    async fn put_to(
        &self,
        ep: &Endpoint,
        path: &str,
        spec: &ProgramSpec,
    ) -> Result<ProgramStatus, AgentError> {
        let body =
            serde_json::to_vec(spec).map_err(|e| AgentError::Malformed(ep.addr, e.to_string()))?;
        let b = self
            .call(ep, Method::PUT, path, Some(body), stop_grace(spec))
            .await?;
        Self::json(ep, &b)
    }

    /// `DELETE /v1/programs/{id}`; a missing program counts as deleted.
    pub async fn delete(
        &self,
        ep: &Endpoint,
        id: &str,
        stop_timeout: Duration,
        data: Data,
    ) -> Result<(), AgentError> {
        match self
            .call(
                ep,
                Method::DELETE,
                &format!("/v1/programs/{id}{}", data.query('?')),
                None,
                stop_timeout,
            )
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// `DELETE /v1/programs/{id}?wait=false`: begin the deletion without
    /// waiting for the stop; returns whether the program is gone already.
    pub async fn begin_delete(
        &self,
        ep: &Endpoint,
        id: &str,
        data: Data,
    ) -> Result<bool, AgentError> {
        let path = format!("/v1/programs/{id}?wait=false{}", data.query('&'));
        match self.call_status(ep, Method::DELETE, &path).await {
            Ok(status) => Ok(status == StatusCode::NO_CONTENT),
            Err(e) if e.is_not_found() => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// `POST /v1/programs/{id}/stop?wait=false`: begin the stop only.
    pub async fn begin_stop(&self, ep: &Endpoint, id: &str) -> Result<(), AgentError> {
        let path = format!("/v1/programs/{id}/stop?wait=false");
        self.call_status(ep, Method::POST, &path).await.map(|_| ())
    }

    /// `POST /v1/programs/{id}/{action}` (start, stop, restart).
    pub async fn action(
        &self,
        ep: &Endpoint,
        id: &str,
        action: ProgramAction,
        stop_timeout: Duration,
    ) -> Result<ProgramStatus, AgentError> {
        let b = self
            .call(
                ep,
                Method::POST,
                &format!("/v1/programs/{id}/{}", action.as_str()),
                None,
                stop_timeout,
            )
            .await?;
        Self::json(ep, &b)
    }

    /// `PUT /v1/programs/{id}?start=false`.
    pub async fn put_stopped(
        &self,
        ep: &Endpoint,
        id: &str,
        spec: &ProgramSpec,
    ) -> Result<ProgramStatus, AgentError> {
        self.put_to(ep, &format!("/v1/programs/{id}?start=false"), spec)
            .await
    }

    /// `PUT /v1/programs/{id}/volume?path=P` with a tar.
    pub async fn volume_in(
        &self,
        ep: &Endpoint,
        id: &str,
        path: &str,
        archive: Bytes,
    ) -> Result<(), AgentError> {
        let q: String = form_urlencoded::byte_serialize(path.as_bytes()).collect();
        self.call_raw(
            ep,
            Method::PUT,
            &format!("/v1/programs/{id}/volume?path={q}"),
            Some(archive.to_vec()),
            VOLUME_TRANSFER,
        )
        .await
        .map(|_| ())
    }

    /// `GET /v1/programs/{id}/volume?path=P[&owner=U:G]`: a tar.
    pub async fn volume_out(
        &self,
        ep: &Endpoint,
        id: &str,
        path: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<Bytes, AgentError> {
        let q: String = form_urlencoded::byte_serialize(path.as_bytes()).collect();
        let owner = owner.map_or(String::new(), |(u, g)| format!("&owner={u}:{g}"));
        self.call(
            ep,
            Method::GET,
            &format!("/v1/programs/{id}/volume?path={q}{owner}"),
            None,
            VOLUME_TRANSFER,
        )
        .await
    }

    /// `GET /v1/programs/{id}/logs?tail=N` or `?after=CURSOR`.
    pub async fn logs(
        &self,
        ep: &Endpoint,
        id: &str,
        read: LogRead,
    ) -> Result<LogChunk, AgentError> {
        let query = match &read {
            LogRead::Tail(n) => format!("tail={n}"),
            LogRead::After(c) => format!("after={c}"),
        };
        let (_, headers, bytes) = self
            .call_raw(
                ep,
                Method::GET,
                &format!("/v1/programs/{id}/logs?{query}"),
                None,
                Duration::ZERO,
            )
            .await?;
        let cursor = headers
            .get("x-log-cursor")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(LogChunk { bytes, cursor })
    }
}

/// Extra time for a volume's content to go to or from an agent.
const VOLUME_TRANSFER: Duration = Duration::from_secs(600);

/// Extra time for calls that may wait for a stop.
pub fn stop_grace(spec: &ProgramSpec) -> Duration {
    Duration::from_millis(spec.stop.timeout_ms) + Duration::from_secs(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_another_user_listens_on_is_never_connected_to() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (a listener of another uid)");
            return;
        }
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        // A squatter: uid 65534 listens on a port and says which.
        let mut child = std::process::Command::new("python3")
            .args(["-c", "import socket,time\ns=socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\nprint(s.getsockname()[1], flush=True); time.sleep(60)"])
            .uid(65534)
            .gid(65534)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().unwrap();
        let ep = Endpoint {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            token: "secret".into(),
        };
        let r = AgentClient::new(Duration::from_secs(2)).health(&ep).await;
        let _ = child.kill();
        let _ = child.wait();
        match r {
            Err(AgentError::Unreachable(_, m)) => {
                assert!(m.contains("held by uid 65534"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_agents_error_answer_is_typed_once() {
        let addr: SocketAddr = "127.0.0.1:8999".parse().unwrap();
        let envelope =
            br#"{"success":false,"error":{"code":"bad_request","message":"cannot run /x"}}"#;
        match AgentError::of_answer(addr, StatusCode::BAD_REQUEST, envelope) {
            AgentError::Refused { message, .. } => assert_eq!(message, "cannot run /x"),
            e => panic!("{e:?}"),
        }
        let gone = AgentError::of_answer(addr, StatusCode::NOT_FOUND, b"{}");
        assert!(gone.is_not_found(), "{gone:?}");
        match AgentError::of_answer(addr, StatusCode::BAD_GATEWAY, b"plain words") {
            AgentError::Status {
                status, message, ..
            } => {
                assert_eq!(
                    (status, message.as_str()),
                    (StatusCode::BAD_GATEWAY, "plain words")
                )
            }
            e => panic!("{e:?}"),
        }
    }
}
