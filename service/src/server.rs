//! The HTTP/1.1 accept loop. We run hyper directly rather than `axum::serve` so that an upgraded
//! connection yields its plain `TcpStream` (the hub writes to it without a task in between),
//! and so that every connection, upgraded or not, is tracked and drained with one deadline.

use std::pin::pin;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A request's headers must arrive within this (slow clients cannot hold connections open).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pending connections the kernel queues for us. The runtime's default (1024) overflows when
/// thousands of clients reconnect at once after a deploy, and an overflow costs each dropped
/// client a retransmission timeout of a second or more.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with a backlog sized for reconnect storms.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts connections until `stop`; every connection task is spawned on `tracker`. On `stop`,
/// idle keep-alive connections close and busy ones finish their response first.
pub async fn accept_loop(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    // Requests off a socket (not Lambda's events, nor tests' `oneshot`) must name their host.
    let router = router.layer(axum::middleware::from_fn(crate::http::require_host));
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors or memory: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(router.clone());
        let stop = stop.clone();
        tracker.spawn(async move {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            let mut conn = pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                }
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}
