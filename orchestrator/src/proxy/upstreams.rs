//! Kept-alive HTTP/1 connections to tenants, of one API worker.
//!
//! Instead of hyper-util's pooled client, which per request hashes a pool
//! key, boxes its futures and spawns a task that waits for the connection
//! to be free again: a connection goes back to its address's idle list when
//! the answer's body has been read to its end (an answer cut short closes
//! its connection), and a reused one is checked to be ready first; a
//! request a closed connection did not take is sent on the next one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::{check_port, PortGuard};

/// Most idle connections kept per tenant address.
const MOST_IDLE: usize = 256;
/// How long a new connection to a tenant may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Idle = Arc<Mutex<HashMap<SocketAddr, Vec<SendRequest<Body>>>>>;

/// The idle connections of one worker, by tenant address.
#[derive(Default)]
pub struct Upstreams {
    idle: Idle,
}

impl Upstreams {
    /// Send `req` (origin-form URI, `Host` set) to `target` on an idle
    /// connection, or a new one (after the port check of `guard`). The
    /// answer's body gives the connection back when read to its end.
    pub async fn send(
        &self,
        guard: &PortGuard,
        target: SocketAddr,
        mut req: hyper::Request<Body>,
    ) -> Result<hyper::Response<ReturningBody>, String> {
        loop {
            let Some(mut conn) = self.take(target) else {
                break;
            };
            if conn.ready().await.is_err() {
                continue;
            }
            match conn.try_send_request(req).await {
                Ok(resp) => return Ok(self.lend(resp, conn, target)),
                Err(mut e) => match e.take_message() {
                    // Not sent: the connection was closing; the next one.
                    Some(back) => req = back,
                    None => return Err(format!("unreachable: {}", e.into_error())),
                },
            }
        }
        let mut conn = connect(guard, target).await?;
        let resp = conn
            .send_request(req)
            .await
            .map_err(|e| format!("unreachable: {}", super::error_chain(&e)))?;
        Ok(self.lend(resp, conn, target))
    }

    fn take(&self, target: SocketAddr) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&target)?;
        while let Some(c) = list.pop() {
            if !c.is_closed() {
                return Some(c);
            }
        }
        None
    }

    fn lend(
        &self,
        resp: hyper::Response<Incoming>,
        conn: SendRequest<Body>,
        target: SocketAddr,
    ) -> hyper::Response<ReturningBody> {
        resp.map(|inner| {
            let mut body = ReturningBody {
                inner,
                lease: Some((conn, target, self.idle.clone())),
            };
            if hyper::body::Body::is_end_stream(&body.inner) {
                body.give_back();
            }
            body
        })
    }
}

/// A new HTTP/1 connection to the tenant at `target`, after the port check
/// of `guard`, within [`CONNECT_TIMEOUT`]; its driver runs in a task of its
/// own and may hand the connection over to an upgrade (a tunnel).
pub async fn connect(guard: &PortGuard, target: SocketAddr) -> Result<SendRequest<Body>, String> {
    check_port(guard, target.port())?;
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target))
        .await
        .map_err(|_| format!("unreachable: no connection within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("unreachable: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (conn, driver) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("unreachable: {e}"))?;
    tokio::spawn(async move {
        let _ = driver.with_upgrades().await;
    });
    Ok(conn)
}

/// A tenant's answer body that gives its connection back at its end.
pub struct ReturningBody {
    inner: Incoming,
    lease: Option<(SendRequest<Body>, SocketAddr, Idle)>,
}

impl ReturningBody {
    fn give_back(&mut self) {
        let Some((conn, target, idle)) = self.lease.take() else {
            return;
        };
        let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(target).or_default();
        list.retain(|c| !c.is_closed());
        if list.len() < MOST_IDLE {
            list.push(conn);
        }
    }
}

impl hyper::body::Body for ReturningBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A tenant on loopback that answers `per_conn` requests on each
    /// connection and then closes it without saying so (as a server whose
    /// keep-alive timeout ran out); returns its address and a count of the
    /// connections it took.
    async fn tenant(per_conn: usize) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    for _ in 0..per_conn {
                        let mut got = Vec::new();
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                    }
                });
            }
        });
        (addr, conns)
    }

    async fn get(u: &Upstreams, addr: SocketAddr) -> String {
        use http_body_util::BodyExt;
        let req = hyper::Request::builder()
            .uri("/")
            .header(hyper::header::HOST, addr.to_string())
            .body(Body::empty())
            .unwrap();
        let resp = u.send(&None, addr, req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_connection_is_reused_once_its_answer_is_read() {
        rt().block_on(async {
            let (addr, conns) = tenant(100).await;
            let u = Upstreams::default();
            for _ in 0..5 {
                assert_eq!(get(&u, addr).await, "ok");
            }
            assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
        });
    }

    #[test]
    fn a_connection_the_tenant_closed_is_not_an_error() {
        rt().block_on(async {
            let (addr, conns) = tenant(1).await;
            let u = Upstreams::default();
            for _ in 0..4 {
                assert_eq!(get(&u, addr).await, "ok");
                // Let the close arrive, or not: either way the next works.
                tokio::task::yield_now().await;
            }
            assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 4);
        });
    }
}
