//! The HTTP/1.1 server both of the host's APIs run on: an accept loop that serves at most
//! `max_connections` at once, closes connections whose headers are slower than
//! `header_read_timeout` (slow clients and idle keep-alives alike), and on shutdown stops
//! accepting and lets requests in flight finish for up to `drain_timeout`.

use crate::config::HttpConfig;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {field} = {addr}: {source}")]
pub struct ListenError {
    field: &'static str,
    addr: SocketAddr,
    source: std::io::Error,
}

/// A bound listening socket and its connection slots, kept across restarts of the
/// accept loop (so connections still open from before count against the cap).
#[derive(Clone)]
pub struct Listener {
    socket: Arc<TcpListener>,
    slots: Arc<Semaphore>,
    pub addr: SocketAddr,
}

impl Listener {
    /// Binds `addr` with room for `max_connections`; errors name the config field it
    /// came from.
    pub async fn bind(
        field: &'static str,
        addr: SocketAddr,
        max_connections: usize,
    ) -> Result<Self, ListenError> {
        let error = |source| ListenError {
            field,
            addr,
            source,
        };
        let socket = TcpListener::bind(addr).await.map_err(error)?;
        let addr = socket.local_addr().map_err(error)?;
        Ok(Self {
            socket: Arc::new(socket),
            slots: Arc::new(Semaphore::new(max_connections)),
            addr,
        })
    }
}

/// Serves `app` on `listener` until `shutdown`, then drains.
pub async fn serve(
    listener: Listener,
    app: Router,
    config: &HttpConfig,
    shutdown: CancellationToken,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        // Headers are capped by the parser: 64 KiB in all, at most 100 of them.
        .max_buf_size(64 << 10)
        .max_headers(100);
    let graceful = GracefulShutdown::new();
    let mut connections: JoinSet<()> = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        // A slot first: past the cap, clients wait in the kernel's backlog, unaccepted.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = listener.slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.socket.accept() => accepted,
        };
        let (stream, _peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listen = %listener.addr, %error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        connections.spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    let drain = config.drain_timeout;
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(listen = %listener.addr, ?drain, "requests still in flight after http.drain_timeout; closing them");
        connections.abort_all();
    }
}
