//! The agent's HTTP/1.1 server: the API router behind a cap on open
//! connections and timeouts, so that no client (a tenant flooding it, on a
//! backend where it can reach the agent) exhausts the agent's descriptors.
//!
//! - At most `max_connections` at once; past that a new connection is
//!   accepted and closed at once.
//! - A connection must send its first byte within `header_timeout`, and a
//!   whole request head within it (hyper's header read timeout).
//! - Between requests of a kept-alive connection the same limit applies.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service;

/// Limits of the agent's server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time to the first byte and to a whole request head.
    pub header_timeout: Duration,
}

/// Serve `app` on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    stop: impl std::future::Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    tokio::pin!(stop);
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    eprintln!("slot-agent: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => return,
        };
        // Answers go out at once: with Nagle, a kept-alive client's next
        // answer waited for the delayed ACK of the last (20-40 ms a call).
        let _ = tcp.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(tcp); // over the cap: closed at once
            continue;
        };
        let app = app.clone();
        let http = http.clone();
        let wait = limits.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            // A connection that never sends a byte is closed after the
            // header timeout (hyper's starts only with a first byte).
            // (`peek` waits for a real byte; `readable` may wake at once.)
            match tokio::time::timeout(wait, tcp.peek(&mut [0u8; 1])).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let service = hyper::service::service_fn(move |req| app.clone().call(req));
            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}
