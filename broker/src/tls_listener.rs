//! TLS on the broker's listeners when `[server.tls]` is set: the acceptor, and the connection
//! type that [`crate::connections::serve`] serves.
//!
//! Each TCP connection is wrapped at once in a [`TlsConnection`] whose handshake runs on its
//! first read or write: in the connection's own task, so a slow client never holds up
//! `accept`, and under [`HANDSHAKE_TIMEOUT`], so a client that connects and says nothing
//! cannot hold the task.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use impulse_config::pem::{self, PemError};
use impulse_config::ServerTlsConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest a client may take to complete the TLS handshake after connecting.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why `[server.tls]` cannot be used. Names the setting and the file, never its contents.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServerTlsError {
    /// The certificate file cannot be read or parsed.
    #[error("server.tls.certificate: {0}")]
    Certificate(#[source] PemError),
    /// The key file cannot be read or parsed.
    #[error("server.tls.key: {0}")]
    Key(#[source] PemError),
    /// rustls refused the pair (they do not match, or the key type is not supported).
    #[error("server.tls: {0}")]
    Rejected(#[source] rustls::Error),
}

/// The acceptor for `tls`: reads the certificate chain and key. TLS 1.2 and 1.3 (rustls's safe
/// defaults, aws-lc-rs), HTTP/1.1 only, no client certificates.
pub(crate) fn acceptor(tls: &ServerTlsConfig) -> Result<TlsAcceptor, ServerTlsError> {
    let chain = pem::read_certificates(&tls.certificate).map_err(ServerTlsError::Certificate)?;
    let key = pem::read_private_key(&tls.key).map_err(ServerTlsError::Key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ServerTlsError::Rejected)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(ServerTlsError::Rejected)?;
    // The server speaks HTTP/1.1 only (axum is built with `http1`).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

// === impl TlsConnection ===

/// An accepted connection: handshaking until its first read or write completes the
/// handshake, then a TLS stream.
pub(crate) struct TlsConnection {
    peer: SocketAddr,
    state: State,
}

enum State {
    /// Both streams are boxed: each holds a rustls session of over a kilobyte, which would
    /// otherwise sit in every state.
    Handshake {
        accept: Box<tokio_rustls::Accept<TcpStream>>,
        deadline: Pin<Box<Sleep>>,
    },
    Ready(Box<TlsStream<TcpStream>>),
    /// The handshake failed or timed out; the socket is closed.
    Failed,
}

impl TlsConnection {
    /// `tcp` from `peer`, to be handshaken with `acceptor` on first use.
    pub(crate) fn new(acceptor: &TlsAcceptor, tcp: TcpStream, peer: SocketAddr) -> Self {
        Self {
            peer,
            state: State::Handshake {
                accept: Box::new(acceptor.accept(tcp)),
                // Counted from the accept, not from hyper's first read.
                deadline: Box::pin(tokio::time::sleep(HANDSHAKE_TIMEOUT)),
            },
        }
    }

    /// Drives the handshake; `Ready(Ok)` once the stream is usable.
    fn poll_handshake(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<&mut TlsStream<TcpStream>>> {
        if let State::Handshake { accept, deadline } = &mut self.state {
            let failure = match Pin::new(accept.as_mut()).poll(cx) {
                Poll::Ready(Ok(stream)) => {
                    self.state = State::Ready(Box::new(stream));
                    None
                }
                Poll::Ready(Err(error)) => Some(error),
                Poll::Pending => {
                    ready!(deadline.as_mut().poll(cx));
                    Some(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client did not complete the TLS handshake in time",
                    ))
                }
            };
            if let Some(error) = failure {
                // Dropping the handshake closes the socket.
                self.state = State::Failed;
                tracing::debug!(peer = %self.peer, error = %error, "TLS handshake failed.");
                return Poll::Ready(Err(error));
            }
        }
        match &mut self.state {
            State::Ready(stream) => Poll::Ready(Ok(stream)),
            // A handshake still in progress returned `Pending` above.
            State::Failed | State::Handshake { .. } => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            ))),
        }
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_handshake(cx))?;
        Pin::new(stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stream = ready!(self.get_mut().poll_handshake(cx))?;
        Pin::new(stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let stream = ready!(self.get_mut().poll_handshake(cx))?;
        Pin::new(stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        // What the stream will be; hyper asks once, before the handshake.
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_handshake(cx))?;
        Pin::new(stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.state {
            // Nothing was said yet: closing needs no handshake (graceful shutdown of an idle
            // connection).
            State::Handshake { .. } | State::Failed => {
                this.state = State::Failed;
                Poll::Ready(Ok(()))
            }
            State::Ready(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests;
