//! The API's HTTP/1.1 server: listeners, connection caps and timeouts, so
//! that no client (a tenant flooding the proxy) takes the descriptors or
//! the attention the others need.
//!
//! - At most `max_connections` open at once and `per_client` from one
//!   address; past either, the connection gets one `503` with
//!   `Retry-After: 1` (written without waiting) and is closed.
//! - A connection must send its first byte within the header timeout, and
//!   a whole request head within it (hyper's header read timeout, which
//!   also closes kept-alive connections idle that long).
//! - A connection upgraded to a tunnel (websocket) keeps its place in the
//!   caps until the tunnel ends: its [`ConnPermit`] travels with the request.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

pub mod coarse_timer;

/// Caps on open connections, shared by every API worker.
#[derive(Debug)]
pub struct ConnLimits {
    max_total: usize,
    per_client: usize,
    total: AtomicUsize,
    by_client: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicUsize,
}

/// A place in the [`ConnLimits`], given back when the last clone drops.
#[derive(Debug)]
pub struct ConnPermit {
    limits: Arc<ConnLimits>,
    client: IpAddr,
}

impl ConnLimits {
    /// Caps of `max_total` connections in all and `per_client` per address.
    pub fn new(max_total: usize, per_client: usize) -> Arc<Self> {
        Arc::new(ConnLimits {
            max_total: max_total.max(1),
            per_client: per_client.max(1),
            total: AtomicUsize::new(0),
            by_client: Mutex::new(HashMap::new()),
            refused: AtomicUsize::new(0),
        })
    }

    /// A place for a connection from `client`, or `None` past a cap.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Option<ConnPermit> {
        let mut by = self.by_client.lock().unwrap_or_else(|e| e.into_inner());
        let mine = by.get(&client).copied().unwrap_or(0);
        if mine >= self.per_client || self.total.load(Relaxed) >= self.max_total {
            self.refused.fetch_add(1, Relaxed);
            return None;
        }
        by.insert(client, mine + 1);
        self.total.fetch_add(1, Relaxed);
        Some(ConnPermit {
            limits: self.clone(),
            client,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Relaxed)
    }

    /// Connections refused by a cap since the start.
    pub fn refused(&self) -> usize {
        self.refused.load(Relaxed)
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut by = self
            .limits
            .by_client
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                by.remove(&self.client);
            }
        }
        self.limits.total.fetch_sub(1, Relaxed);
    }
}

/// What every request of a connection carries in its extensions: the
/// client's address (for `X-Forwarded-For`) and the connection's place in
/// the caps (held on by a tunnel that outlives the connection).
#[derive(Debug, Clone)]
pub struct Client {
    /// The peer address.
    pub addr: SocketAddr,
    /// The connection's permit.
    pub permit: Arc<ConnPermit>,
}

/// The answer to a connection past a cap.
static OVER_CAP: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let body = r#"{"success":false,"error":{"code":"unavailable","message":"too many open connections; retry later"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// Raise the descriptor soft limit to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// The cap on connections that `fds` descriptors afford: each proxied
/// connection may hold two (client and tenant), and 256 stay for the
/// database, agents and logs.
pub fn affordable_connections(fds: u64) -> usize {
    (fds.saturating_sub(256) / 2).max(16) as usize
}

/// `workers` listeners on `addr` sharing one port with `SO_REUSEPORT`, so
/// every worker accepts on its own socket. Refused with a clear error when
/// anything else holds the address: it is first bound alone (no
/// `SO_REUSEPORT`), which fails against any listener there, ours or not.
pub fn listeners(addr: SocketAddr, workers: usize) -> anyhow::Result<Vec<std::net::TcpListener>> {
    let probe = std::net::TcpListener::bind(addr).map_err(|e| {
        let who = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another process listens there: another slotpack serve, or set SLOTPACK_LISTEN)"
        } else {
            ""
        };
        anyhow::anyhow!("cannot listen on {addr}: {e}{who}")
    })?;
    // Bind the group on the probe's port (`:0` picks one for all).
    let addr = probe.local_addr()?;
    drop(probe);
    (0..workers.max(1))
        .map(|_| reuseport_listener(addr).with_context(|| format!("listening on {addr}")))
        .collect()
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    Ok(sock.into())
}

/// Serve HTTP/1.1 (with upgrades) on `listener` until `stop` turns true,
/// then let open connections finish their requests (each ends after the
/// request in flight), waiting at most 10 s.
pub async fn serve_http1<A, F>(
    listener: std::net::TcpListener,
    app: A,
    limits: Arc<ConnLimits>,
    header_timeout: Option<Duration>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()>
where
    A: Fn(hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + 'static,
    F: std::future::Future<Output = axum::response::Response> + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::server::graceful::GracefulShutdown;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    // HTTP/1.1 only: no protocol sniffing per connection.
    let mut http = auto::Builder::new(TokioExecutor::new()).http1_only();
    if let Some(t) = header_timeout {
        let timer = coarse_timer::CoarseTimer::default();
        tokio::spawn(timer.clone().run());
        http.http1().timer(timer).header_read_timeout(t);
    }
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(stop.clone()) => break,
        };
        let Some(permit) = limits.admit(peer.ip()) else {
            // One write into an empty send buffer: never waits on the client.
            let _ = tcp.try_write(&OVER_CAP);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let client = Client {
            addr: peer,
            permit: Arc::new(permit),
        };
        let app = app.clone();
        let (http, watcher) = (http.clone(), graceful.watcher());
        tokio::spawn(async move {
            // hyper's header timer starts with a first byte: a connection
            // that sends nothing is closed here.
            // (`peek` waits for a real byte; `readable` may wake at once.)
            if let Some(t) = header_timeout {
                match tokio::time::timeout(t, tcp.peek(&mut [0u8; 1])).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return,
                }
            }
            let service = hyper::service::service_fn(move |mut req| {
                req.extensions_mut().insert(client.clone());
                let answer = app(req);
                async move { Ok::<_, std::convert::Infallible>(answer.await) }
            });
            let conn = http.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            let _ = watcher.watch(conn.into_owned()).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10 s: closing them");
    }
    Ok(())
}

/// Resolves once the stop flag is true (or its sender is gone).
async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// The lock that keeps one `serve` per data dir: `serve.lock` there, held
/// (`flock`) for the life of the process, with the holder's pid inside.
#[derive(Debug)]
pub struct DataDirLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl DataDirLock {
    /// Take the lock of `dir`, or fail naming the pid that holds it.
    pub fn take(dir: &std::path::Path) -> anyhow::Result<Self> {
        use std::io::{Read, Seek, Write};
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data dir {}", dir.display()))?;
        let path = dir.join("serve.lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut lock =
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((mut f, _)) => {
                    let mut pid = String::new();
                    let _ = f.read_to_string(&mut pid);
                    anyhow::bail!(
                        "another slotpack serve (pid {}) holds the data dir {} ({}); \
                         stop it first, or give this one its own SLOTPACK_DATA_DIR",
                        pid.trim(),
                        dir.display(),
                        path.display()
                    );
                }
            };
        lock.set_len(0)?;
        lock.rewind()?;
        writeln!(lock, "{}", std::process::id())?;
        lock.flush()?;
        Ok(DataDirLock { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_client_and_in_total_and_free_on_drop() {
        let l = ConnLimits::new(3, 2);
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let a1 = l.admit(a).unwrap();
        let a2 = l.admit(a).unwrap();
        assert!(l.admit(a).is_none(), "third from one client");
        let b1 = l.admit(b).unwrap();
        assert!(l.admit(b).is_none(), "past the total");
        assert_eq!((l.open(), l.refused()), (3, 2));
        drop(a1);
        let a3 = l.admit(a).unwrap();
        drop((a2, a3, b1));
        assert_eq!(l.open(), 0);
        assert!(l.by_client.lock().unwrap().is_empty());
    }

    #[test]
    fn the_over_cap_answer_is_well_formed() {
        let text = std::str::from_utf8(&OVER_CAP).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "unavailable");
    }

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = std::env::temp_dir().join(format!("slotpack-lock-{}", std::process::id()));
        let first = DataDirLock::take(&dir).unwrap();
        let err = DataDirLock::take(&dir).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        DataDirLock::take(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_taken_address_is_a_clear_error_and_the_group_shares_only_among_itself() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = listeners(other.local_addr().unwrap(), 2).unwrap_err();
        assert!(err.to_string().contains("another process listens"), "{err}");
        let ours = listeners("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = ours[0].local_addr().unwrap();
        assert_eq!(ours[1].local_addr().unwrap(), addr);
        // A second group on the same address (a second serve) is refused.
        assert!(listeners(addr, 2).is_err());
    }
}

#[cfg(test)]
mod serving_tests {
    use super::*;

    /// Serve a trivial router on a fresh listener with a 300 ms header timeout.
    fn serving() -> (
        SocketAddr,
        tokio::sync::watch::Sender<bool>,
        tokio::runtime::Runtime,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let l = listeners("127.0.0.1:0".parse().unwrap(), 1)
            .unwrap()
            .remove(0);
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let app = |_req| async { axum::response::IntoResponse::into_response("ok") };
        let limits = ConnLimits::new(100, 100);
        rt.spawn(serve_http1(
            l,
            app,
            limits,
            Some(Duration::from_millis(300)),
            rx,
        ));
        (addr, tx, rt)
    }

    #[test]
    fn a_connection_that_sends_nothing_is_closed() {
        let (addr, _stop, rt) = serving();
        std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
        use std::io::Read;
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 8];
        // Closed (0 bytes), not a read timeout.
        assert_eq!(c.read(&mut b).unwrap(), 0);
    }
}
