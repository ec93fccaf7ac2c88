//! HTTP/1 connections to one `http://` endpoint, each driven by the task whose request it
//! carries.
//!
//! hyper's pooled client runs every connection as a task of its own: a request goes to that
//! task through a channel and its answer comes back through another, so each call wakes a
//! second task, often on the other thread, and back. Here the caller polls the connection
//! itself while its request is out: the socket's readiness wakes the caller directly. An idle
//! connection is nobody's task; it waits in the pool, unpolled, until a request takes it.
//!
//! A server that closed an idle connection is noticed when the next request goes out on it:
//! hyper sees the close before it writes, and hands the request back unwritten; it is then
//! sent on a fresh connection, as hyper's pooled client does. A request that was written is
//! never sent twice. A connection whose request was abandoned (the caller's future dropped, a
//! body over the limit, an error) is closed, never returned to the pool. A sweep every
//! [`SWEEP_INTERVAL`] closes idle connections that the server closed or that sat idle for
//! [`IDLE_TIMEOUT`], so a function called rarely holds no half-closed sockets.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower::Service as _;

/// How long a connection may sit idle in the pool before it is closed, as hyper's pooled
/// client's default.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often idle connections are checked for a close by the server or the idle timeout.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

type Body = Full<Bytes>;

/// Why a request got no answer.
#[derive(Debug)]
pub(super) enum PoolError {
    /// No connection could be opened.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed, or the request was refused by hyper.
    Http(hyper::Error),
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(_) => f.write_str("cannot connect"),
            Self::Http(_) => f.write_str("the connection failed"),
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect(e) => Some(&**e),
            Self::Http(e) => Some(e),
        }
    }
}

/// One endpoint's idle connections, most recently used last.
pub(super) struct ConnectionPool {
    connector: HttpConnector,
    /// What the connector dials.
    uri: http::Uri,
    /// Shared with the sweep, which ends once the pool is dropped.
    idle: Arc<Mutex<Vec<Idle>>>,
}

struct Idle {
    connection: PooledConnection,
    since: Instant,
}

/// A connection and its request handle.
pub(super) struct PooledConnection {
    sender: SendRequest<Body>,
    /// `None` once it ended (closed by the server, or failed).
    connection: Option<Connection<TokioIo<TcpStream>, Body>>,
}

impl ConnectionPool {
    /// A pool dialling the authority of `uri` (an `http://` URI), with `TCP_NODELAY`. Made
    /// outside a Tokio runtime, it has no sweep: idle connections then close only when a
    /// request finds them stale.
    pub(super) fn new(uri: http::Uri) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let idle = Arc::new(Mutex::new(Vec::new()));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(&idle)));
        }
        Self {
            connector,
            uri,
            idle,
        }
    }

    /// Sends `request` and returns its response head, with the connection that carries its
    /// body: drive the body's reading with [`PooledConnection::drive`], then give the
    /// connection back with [`ConnectionPool::put_back`].
    pub(super) async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<(http::Response<hyper::body::Incoming>, PooledConnection), PoolError> {
        let Some(mut connection) = self.checkout() else {
            return self.send_on_new_connection(request).await;
        };
        let sent = connection.sender.try_send_request(request);
        let sent = connection.drive(sent).await;
        match sent {
            Ok(response) => Ok((response, connection)),
            Err(mut refused) => {
                // Unwritten (the idle connection was closed under it): a fresh one may carry it.
                let Some(request) = refused.take_message() else {
                    return Err(PoolError::Http(refused.into_error()));
                };
                self.send_on_new_connection(request).await
            }
        }
    }

    async fn send_on_new_connection(
        &self,
        request: http::Request<Body>,
    ) -> Result<(http::Response<hyper::body::Incoming>, PooledConnection), PoolError> {
        let mut connection = self.connect().await?;
        let sent = connection.sender.send_request(request);
        let response = connection.drive(sent).await.map_err(PoolError::Http)?;
        Ok((response, connection))
    }

    /// Returns a connection whose exchange completed to the pool (the sweep closes it once it
    /// has been idle too long).
    pub(super) fn put_back(&self, connection: PooledConnection) {
        if !connection.still_open() {
            return;
        }
        let idle = Idle {
            connection,
            since: Instant::now(),
        };
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(idle);
    }

    /// The most recently used idle connection still open, if any.
    fn checkout(&self) -> Option<PooledConnection> {
        loop {
            let Idle { connection, since } = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()?;
            if since.elapsed() < IDLE_TIMEOUT && connection.still_open() {
                return Some(connection);
            }
        }
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    async fn connect(&self) -> Result<PooledConnection, PoolError> {
        let stream = self
            .connector
            .clone()
            .call(self.uri.clone())
            .await
            .map_err(|e| PoolError::Connect(Box::new(e)))?;
        let (sender, connection) = http1::handshake(stream).await.map_err(PoolError::Http)?;
        Ok(PooledConnection {
            sender,
            connection: Some(connection),
        })
    }
}

impl PooledConnection {
    /// Runs `work` (a request's answer, or its body) while polling the connection that
    /// carries it, in this task.
    pub(super) async fn drive<F: Future>(&mut self, work: F) -> F::Output {
        let mut work = pin!(work);
        poll_fn(|cx| {
            // The connection first: it writes the request and reads the answer that `work`
            // then finds ready.
            self.poll_connection(cx);
            work.as_mut().poll(cx)
        })
        .await
    }

    /// Polls the connection; drops it once it ended (which fails whatever still waited on
    /// it).
    fn poll_connection(&mut self, cx: &mut Context<'_>) {
        if let Some(connection) = &mut self.connection {
            if Pin::new(connection).poll(cx).is_ready() {
                self.connection = None;
            }
        }
    }

    /// Whether an idle connection is still open, after a poll that lets hyper see a close the
    /// runtime has already received.
    fn poll_open(&mut self) -> bool {
        self.poll_connection(&mut Context::from_waker(Waker::noop()));
        self.still_open()
    }

    /// Whether an idle connection may take a request. A close that hyper has not seen yet is
    /// seen when the request goes out, which hands the request back unwritten.
    fn still_open(&self) -> bool {
        self.connection.is_some() && !self.sender.is_closed()
    }
}

/// Every [`SWEEP_INTERVAL`] until the pool is dropped, closes the idle connections that the
/// server closed or that sat idle for [`IDLE_TIMEOUT`].
async fn sweep(idle: Weak<Mutex<Vec<Idle>>>) {
    let mut every = tokio::time::interval_at(Instant::now() + SWEEP_INTERVAL, SWEEP_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(idle) = idle.upgrade() else {
            return;
        };
        let now = Instant::now();
        let closed: Vec<Idle> = idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extract_if(.., |i| {
                now.duration_since(i.since) >= IDLE_TIMEOUT || !i.connection.poll_open()
            })
            .collect();
        // Closed outside the lock.
        drop(closed);
    }
}

#[cfg(test)]
mod tests;
