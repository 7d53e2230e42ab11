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
}
