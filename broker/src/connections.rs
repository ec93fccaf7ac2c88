//! Serving a router on a listener, one HTTP/1.1 connection at a time, with the limits a server
//! facing untrusted clients needs: a header-read timeout, an idle timeout, a cap on open
//! connections, and a shutdown that waits for requests in flight but not for clients that
//! send nothing.
//!
//! hyper enforces the header-read timeout (from the connection's start, or from the first byte
//! of a later request). It has no idle timeout between requests, so each connection's task
//! keeps its own: the time since its last request finished. At shutdown every connection is
//! told to close after its current response; one with no request in flight a second later
//! (a half-sent header, a client that never reads) is dropped.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use impulse_config::ServerConfig;
use impulse_connectors::telemetry::{ConnectionLimit, ConnectionMetrics};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::tls_listener::TlsConnection;

/// How long a connection with no request in flight may stay once shutdown has begun.
const SHUTDOWN_LINGER: Duration = Duration::from_secs(1);

/// Wait after an accept error that is not about one connection (e.g. out of file
/// descriptors), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The per-connection limits of one listener, and the name its metrics carry.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) listener: &'static str,
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
}

impl Limits {
    /// The limits `server` configures, for the listener named `listener`.
    pub(crate) fn new(listener: &'static str, server: &ServerConfig) -> Self {
        Self {
            listener,
            header_read_timeout: server.header_read_timeout,
            idle_timeout: server.idle_timeout,
            max_connections: usize::try_from(server.max_connections).unwrap_or(usize::MAX),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then waits for the connections:
/// each finishes the response it is writing and closes; one without a request in flight is
/// dropped after [`SHUTDOWN_LINGER`]. With `tls` every connection is TLS. Handlers can
/// extract `ConnectInfo<SocketAddr>`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = Arc::new(limits);
    let metrics = ConnectionMetrics::new(limits.listener);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) if is_per_connection(&err) => continue,
            Err(err) => {
                tracing::warn!(listener = limits.listener, error = %err, "Cannot accept a connection.");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closing at once tells the client; leaving it in the backlog would not.
            metrics.refused();
            tracing::debug!(listener = limits.listener, %peer, "Connection refused: at max_connections.");
            continue;
        };
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %err, "Cannot set TCP_NODELAY.");
        }
        let router = router.clone();
        let limits = limits.clone();
        let metrics = metrics.clone();
        let stopping = stopping.clone();
        match &tls {
            None => connections.spawn(async move {
                serve_connection(tcp, peer, router, &limits, &metrics, stopping).await;
                drop(slot);
            }),
            Some(acceptor) => {
                let tls = TlsConnection::new(acceptor, tcp, peer);
                connections.spawn(async move {
                    serve_connection(tls, peer, router, &limits, &metrics, stopping).await;
                    drop(slot);
                })
            }
        };
    }
    drop(listener);
    // Receivers outlive this send only in connections; none left is fine.
    stop.send_replace(true);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Errors of `accept` that concern one connection only (it was reset before it was
/// accepted): the next accept is fine.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// What a connection's requests tell its task: how many are in flight, and when the last one
/// finished (milliseconds since the connection opened).
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn idle_since(&self) -> Instant {
        self.opened + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
    }
}

/// Counts a request in flight until dropped (its response is produced, or the request is
/// cancelled).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let elapsed = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.store(elapsed, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    limits: &Limits,
    metrics: &ConnectionMetrics,
    mut stopping: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    metrics.opened();
    let activity = Arc::new(Activity {
        opened: Instant::now(),
        in_flight: AtomicUsize::new(0),
        idle_since_ms: AtomicU64::new(0),
    });
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let in_flight = InFlight::begin(&requests);
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = router.clone().oneshot(request);
        async move {
            let response = response.await;
            drop(in_flight);
            response
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(io), service);
    let mut connection = pin!(connection);
    // Set once the connection was told to close: the time after which, with no request in
    // flight, it is dropped.
    let mut closing_by: Option<Instant> = None;
    loop {
        let check_at = match closing_by {
            Some(deadline) => deadline,
            None if activity.in_flight.load(Ordering::Acquire) > 0 => {
                Instant::now() + limits.idle_timeout
            }
            None => activity.idle_since() + limits.idle_timeout,
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    if err.is_timeout() {
                        metrics.timed_out(ConnectionLimit::HeaderReadTimeout);
                    }
                    tracing::debug!(listener = limits.listener, %peer, error = %err, "Connection closed with an error.");
                }
                break;
            }
            _ = stopping.wait_for(|stop| *stop), if closing_by.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing_by = Some(Instant::now() + SHUTDOWN_LINGER);
            }
            () = tokio::time::sleep_until(check_at) => {
                let idle = activity.in_flight.load(Ordering::Acquire) == 0;
                match closing_by {
                    // Told to close, yet still open with nothing in flight: a client that is
                    // sending a header slowly, or not reading. Dropping closes the socket.
                    Some(_) if idle => {
                        metrics.timed_out(ConnectionLimit::Shutdown);
                        break;
                    }
                    // A response is being produced; hyper closes after it.
                    Some(_) => closing_by = Some(Instant::now() + SHUTDOWN_LINGER),
                    None if idle && activity.idle_since() + limits.idle_timeout <= Instant::now() => {
                        metrics.timed_out(ConnectionLimit::IdleTimeout);
                        connection.as_mut().graceful_shutdown();
                        closing_by = Some(Instant::now() + SHUTDOWN_LINGER);
                    }
                    None => {}
                }
            }
        }
    }
    metrics.closed();
}

#[cfg(test)]
mod tests;
