//! Health pings: a TCP connect, or an HTTP GET that must answer 2xx.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protocol::PingKind;

/// Outcome of one ping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PingResult {
    /// It succeeded within the timeout.
    pub ok: bool,
    /// Time taken.
    pub latency: Duration,
}

/// Ping `addr` once, giving up after `timeout`.
pub async fn ping(kind: PingKind, addr: SocketAddr, path: &str, timeout: Duration) -> PingResult {
    let start = Instant::now();
    let ok = tokio::time::timeout(timeout, attempt(kind, addr, path))
        .await
        .unwrap_or(false);
    PingResult {
        ok,
        latency: start.elapsed(),
    }
}

async fn attempt(kind: PingKind, addr: SocketAddr, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    if kind == PingKind::Tcp {
        return true;
    }
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: slot-agent\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    // The status line is all we need: "HTTP/1.x 2xx".
    let mut buf = [0u8; 16];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    is_2xx_status_line(&buf[..n])
}

/// A kept connection serves at most this many pings: at least every
/// tenth ping is a fresh connect, which proves the program still accepts
/// (one that stops accepting but answers its open connection is found
/// within ten pings plus its failure threshold).
pub const FRESH_EVERY: u32 = 10;

/// Pings one program again and again. An HTTP ping keeps its connection
/// open for the next one (while the answer allows it and for at most
/// [`FRESH_EVERY`] pings), so a ping costs one request, not a TCP handshake
/// whose loopback work the kernel charges to the pinger. A TCP ping is a
/// fresh connect each time.
#[derive(Debug)]
pub struct Pinger {
    kind: PingKind,
    addr: SocketAddr,
    path: String,
    kept: Option<(TcpStream, u32)>,
}

/// What one request on a connection gave.
enum Exchange {
    /// An answer: whether it was 2xx, and whether the connection may be reused.
    Answer { ok: bool, keep: bool },
    /// The connection was closed or broke before any answer.
    Broken,
}

impl Pinger {
    /// A pinger of `addr` (`path` for HTTP).
    pub fn new(kind: PingKind, addr: SocketAddr, path: &str) -> Pinger {
        Pinger {
            kind,
            addr,
            path: path.to_string(),
            kept: None,
        }
    }

    /// Ping once, giving up after `timeout` (a failure drops the kept connection).
    pub async fn ping(&mut self, timeout: Duration) -> PingResult {
        let start = Instant::now();
        let ok = tokio::time::timeout(timeout, self.attempt())
            .await
            .unwrap_or(false);
        if !ok {
            self.kept = None;
        }
        PingResult {
            ok,
            latency: start.elapsed(),
        }
    }

    async fn attempt(&mut self) -> bool {
        if self.kind == PingKind::Tcp {
            return TcpStream::connect(self.addr).await.is_ok();
        }
        if let Some((mut s, served)) = self.kept.take() {
            if served < FRESH_EVERY {
                match exchange(&mut s, self.addr, &self.path).await {
                    Exchange::Answer { ok, keep } => {
                        if ok && keep {
                            self.kept = Some((s, served + 1));
                        }
                        return ok;
                    }
                    // The program closed an idle connection: ask afresh.
                    Exchange::Broken => {}
                }
            }
        }
        let Ok(mut s) = TcpStream::connect(self.addr).await else {
            return false;
        };
        match exchange(&mut s, self.addr, &self.path).await {
            Exchange::Answer { ok, keep } => {
                if ok && keep {
                    self.kept = Some((s, 1));
                }
                ok
            }
            Exchange::Broken => false,
        }
    }
}

/// Send one kept-alive GET and read its answer (head, and a body of a
/// stated length up to 64 KiB, so the connection is ready for the next).
async fn exchange(s: &mut TcpStream, addr: SocketAddr, path: &str) -> Exchange {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: slot-agent\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return Exchange::Broken;
    }
    let mut buf = [0u8; 2048];
    let mut n = 0;
    let head_end = loop {
        if let Some(i) = find(&buf[..n], b"\r\n\r\n") {
            break Some(i + 4);
        }
        if n == buf.len() {
            break None;
        }
        match s.read(&mut buf[n..]).await {
            Ok(0) | Err(_) if n == 0 => return Exchange::Broken,
            Ok(0) | Err(_) => break None,
            Ok(k) => n += k,
        }
    };
    let ok = is_2xx_status_line(&buf[..n]);
    let Some(end) = head_end else {
        // A head too long for us, or cut short: answered, not reusable.
        return Exchange::Answer { ok, keep: false };
    };
    let head = head_info(&buf[..end]);
    let Some(len) = head
        .content_length
        .filter(|l| *l <= 64 * 1024 && head.reusable)
    else {
        return Exchange::Answer { ok, keep: false };
    };
    // Read (and drop) the rest of the body.
    let mut left = len.saturating_sub(n - end);
    while left > 0 {
        let want = left.min(buf.len());
        match s.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => return Exchange::Answer { ok, keep: false },
            Ok(k) => left -= k,
        }
    }
    Exchange::Answer { ok, keep: true }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What a response head says about its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadInfo {
    /// `Content-Length`, if given.
    pub content_length: Option<usize>,
    /// HTTP/1.1 without `Connection: close` and without a chunked body.
    pub reusable: bool,
}

/// Read a response head (status line and headers).
pub fn head_info(head: &[u8]) -> HeadInfo {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let http11 = lines.next().is_some_and(|l| l.starts_with("HTTP/1.1 "));
    let mut content_length = None;
    let mut reusable = http11;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            content_length = v.parse().ok();
        } else if (k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"))
            || k.eq_ignore_ascii_case("transfer-encoding")
        {
            reusable = false;
        }
    }
    HeadInfo {
        content_length,
        reusable,
    }
}

/// Whether the bytes start an HTTP/1.x status line with a 2xx code.
pub fn is_2xx_status_line(b: &[u8]) -> bool {
    b.len() >= 12
        && b.starts_with(b"HTTP/1.")
        && b[8] == b' '
        && b[9] == b'2'
        && b[10].is_ascii_digit()
        && b[11].is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert!(is_2xx_status_line(b"HTTP/1.1 200 OK\r\n"));
        assert!(is_2xx_status_line(b"HTTP/1.0 204 No"));
        assert!(!is_2xx_status_line(b"HTTP/1.1 500 Err"));
        assert!(!is_2xx_status_line(b"HTTP/1.1 302 Fo"));
        assert!(!is_2xx_status_line(b"HTTP/1.1 2"));
        assert!(!is_2xx_status_line(b"SSH-2.0-OpenSSH"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn pings_a_real_listener() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let srv = tokio::spawn(async move {
            for answer in ["HTTP/1.1 200 OK\r\n\r\n", "HTTP/1.1 503 Busy\r\n\r\n"] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 256];
                let _ = s.read(&mut b).await;
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let t = Duration::from_secs(2);
        assert!(ping(PingKind::Http, addr, "/api/v1/ping", t).await.ok);
        assert!(!ping(PingKind::Http, addr, "/api/v1/ping", t).await.ok);
        srv.await.unwrap();
        // Nothing listens any more: tcp fails too.
        assert!(!ping(PingKind::Tcp, addr, "/", t).await.ok);
    }

    #[test]
    fn response_heads_say_whether_the_connection_may_be_reused() {
        let h = head_info(b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n");
        assert_eq!((h.content_length, h.reusable), (Some(17), true));
        let h = head_info(b"HTTP/1.1 200 OK\r\nconnection: Close\r\nContent-Length: 2\r\n\r\n");
        assert!(!h.reusable);
        assert!(!head_info(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n").reusable);
        assert!(!head_info(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").reusable);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_pinger_reuses_its_connection_and_reconnects_when_it_is_closed() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        // First connection: two answers, then closed; second: one 503.
        let srv = tokio::spawn(async move {
            let mut accepted = 0;
            let (mut s, _) = l.accept().await.unwrap();
            accepted += 1;
            for _ in 0..2 {
                let mut b = [0u8; 256];
                let _ = s.read(&mut b).await;
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npong")
                    .await
                    .unwrap();
            }
            drop(s);
            let (mut s, _) = l.accept().await.unwrap();
            accepted += 1;
            let mut b = [0u8; 256];
            let _ = s.read(&mut b).await;
            s.write_all(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            accepted
        });
        let t = Duration::from_secs(2);
        let mut p = Pinger::new(PingKind::Http, addr, "/api/v1/ping");
        assert!(p.ping(t).await.ok);
        assert!(p.ping(t).await.ok, "the kept connection answers again");
        // Closed by the program: a fresh connect, which answers 503.
        assert!(!p.ping(t).await.ok);
        assert_eq!(srv.await.unwrap(), 2, "two connections for three pings");
    }
}
