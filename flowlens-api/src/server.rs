//! EDGE: the listener. `axum::serve` sets no timer on hyper, so a client that sends a
//! request head one byte a minute holds its connection (and a task) forever, and it
//! accepts connections without bound. This loop serves the same router with hyper's
//! HTTP/1 builder, a header-read timeout, a write deadline (a client that stops
//! reading loses its connection), caps on open connections in all and per client
//! address (the ones over them are closed as they arrive, and counted), the peer address for the per-address limit
//! (`ConnectInfo`), WebSocket upgrades, and a graceful shutdown that lets requests in
//! progress finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

use crate::config::ApiConfig;
use crate::slots::{KeyCounts, KeySlot};
use crate::telemetry::CONNECTIONS_REFUSED;

/// A connection whose writes must make progress: a write (or flush) that stays
/// pending for `timeout` fails, so hyper closes the connection. Without it a client
/// that stops reading keeps its connection, and its slot, for as long as it likes.
struct WriteDeadline<T> {
    inner: T,
    timeout: Duration,
    pending_since: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            pending_since: None,
        }
    }

    /// After an inner write or flush: clears the deadline on progress, starts it on
    /// the first pending poll, and turns it into an error once it has passed.
    fn watch<R>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        polled: std::task::Poll<std::io::Result<R>>,
    ) -> std::task::Poll<std::io::Result<R>> {
        use std::task::Poll;
        if polled.is_ready() {
            self.pending_since = None;
            return polled;
        }
        let timeout = self.timeout;
        let deadline = self
            .pending_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client did not read the response",
            )));
        }
        Poll::Pending
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for WriteDeadline<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for WriteDeadline<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }
}

/// How long a shutdown waits for requests in progress.
const DRAIN: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` resolves, then lets connections finish
/// their current request (at most [`DRAIN`]).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: &ApiConfig,
    shutdown: impl Future<Output = ()>,
) {
    let limits = &config.limits;
    let max = limits.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let per_address = KeyCounts::default();
    // A load balancer's connections carry many clients: not capped per address.
    let trusted: Vec<ipnetwork::IpNetwork> = config
        .rate_limiting
        .trusted_proxies
        .iter()
        .filter_map(|r| r.parse().ok())
        .collect();
    let write_timeout = Duration::from_secs(limits.write_timeout_seconds);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_read_timeout_seconds))
        .keep_alive(true);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, most likely: back off rather than spin.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let address = if trusted.iter().any(|n| n.contains(peer.ip())) {
            None
        } else {
            let key = crate::guard::address_key(peer.ip());
            let Some(slot) = KeySlot::take(&per_address, &key, limits.max_connections_per_address)
            else {
                metrics::counter!(CONNECTIONS_REFUSED, "reason" => "per_address").increment(1);
                drop(stream);
                continue;
            };
            Some(slot)
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics::counter!(CONNECTIONS_REFUSED, "reason" => "max_connections").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
        let builder = builder.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let io = WriteDeadline::new(TokioIo::new(stream), write_timeout);
            let conn = builder.serve_connection(io, service).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %peer, "connection ended");
                    }
                }
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop((permit, address));
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open {} s after shutdown; closing",
            DRAIN.as_secs()
        );
    }
}
