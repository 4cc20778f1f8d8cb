//! The accept loop: HTTP/1.1 connections with header limits, slow-client timeouts and graceful shutdown.

use std::time::Duration;

use axum::{Router, extract::ConnectInfo};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use crate::config::Config;

/// Serves `router` on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish (idle connections close at once).
///
/// `axum::serve` offers no header limits or header timeout, hence this loop
/// on hyper's HTTP/1.1 connection builder.
/// Most bytes a connection buffers while reading a request (the head, or
/// the part of a body not yet taken by the handler).
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// How many times `--max-header-bytes` hyper reads of a request head
/// before it answers 431 itself. Up to there the router's own check
/// (`edge::limit_request_head`) answers with the API's JSON error; past it,
/// hyper's bare 431 (no body) bounds what one connection buffers.
const HEAD_HARD_CAP_FACTOR: usize = 4;

pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: &Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let head_hard_cap = config.max_header_bytes.saturating_mul(HEAD_HARD_CAP_FACTOR);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        // Also bounds how long a keep-alive connection may sit idle: hyper
        // starts this clock whenever it waits for the next request head.
        .header_read_timeout(Duration::from_secs(config.header_read_timeout_secs))
        .max_header_size(head_hard_cap)
        .max_headers(config.max_headers)
        // hyper grows a connection's read buffer up to ~400 KB by default;
        // an upload's chunks are cut from it, so each upload left the
        // allocator holding blocks of every size on the way (measured with
        // mimalloc: +9 to +17 MiB of RSS for a 24 MiB upload, +0 to +4 with
        // this bound; docs/PERFORMANCE.md).
        .max_buf_size(READ_BUFFER_BYTES.max(head_hard_cap));

    let stopping = CancellationToken::new();
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    backoff_after_accept_error(err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Chat frames and small JSON answers must not wait for Nagle's algorithm.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "setting TCP_NODELAY failed");
        }
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let connection = http
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        let stopping = stopping.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stopping.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            // Timeouts, oversized heads and clients that hang up end here.
            if let Err(err) = result {
                tracing::debug!(%err, %peer, "connection closed with an error");
            }
        });
    }
    drop(listener);
    stopping.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Errors of one connection (reset before accept) are skipped; running out
/// of file descriptors would spin, so the loop pauses before trying again.
async fn backoff_after_accept_error(err: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        err.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(%err, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
