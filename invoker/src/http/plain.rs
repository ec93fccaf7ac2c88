//! `http://` endpoints through hyper's HTTP/1 connections directly, one [`ConnectionPool`] per
//! function, each connection driven by the task whose request it carries.
//!
//! reqwest wraps every request in layers an invoker does not need, and their cost is per
//! request: its redirect layer turns the request's URI back into a string and parses it as a
//! URL on the way out, and parses the response's URI again on the way back (measured in
//! BENCHMARKS.md, S5), and it merges default headers into each request. Here the endpoint is
//! parsed once, at construction, and every request is built directly. What the endpoint sees
//! is what reqwest sent: `POST`, `host`, `accept: */*`, `content-type`, `content-length` and
//! the invoker's own headers. Redirects are not followed: a function answering 3xx gets the
//! 3xx classified like any other non-2xx answer. `https://` endpoints keep reqwest and its TLS
//! set-up.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;

use super::pool::ConnectionPool;
use super::{ReadError, TransportError};

/// A function's own connections to one `http://` endpoint.
pub(super) struct PlainEndpoint {
    pool: ConnectionPool,
    /// The request target: the endpoint's path and query (origin form), parsed once.
    path: http::Uri,
    /// The `host` header: the endpoint's authority, without the default port.
    host: HeaderValue,
    /// For transport errors: the endpoint without credentials.
    shown: Arc<str>,
}

impl std::fmt::Debug for PlainEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainEndpoint")
            .field("endpoint", &self.shown)
            .finish_non_exhaustive()
    }
}

impl PlainEndpoint {
    /// The client for `url` (already without userinfo); `None` unless it is `http://` and a
    /// valid URI (then reqwest keeps it).
    pub(super) fn new(url: &reqwest::Url) -> Option<Self> {
        if url.scheme() != "http" {
            return None;
        }
        let uri = http::Uri::try_from(url.as_str()).ok()?;
        let path = uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str)
            .parse()
            .ok()?;
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str()?),
            None => url.host_str()?.to_owned(),
        };
        Some(Self {
            pool: ConnectionPool::new(uri),
            path,
            host: HeaderValue::try_from(host).ok()?,
            shown: Arc::from(url.as_str()),
        })
    }

    /// `POST`s `payload` with `headers` (the invoker's, already built); the answer's status,
    /// headers and body, the body read up to `limit` bytes.
    pub(super) fn post(
        self: &Arc<Self>,
        headers: HeaderMap,
        payload: Bytes,
        limit: usize,
    ) -> impl std::future::Future<Output = Result<Answer, ReadError<TransportError>>> + Send + 'static
    {
        let mut request = http::Request::new(Full::new(payload));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.path.clone();
        *request.headers_mut() = headers;
        let sent_headers = request.headers_mut();
        sent_headers.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
        sent_headers.insert(http::header::HOST, self.host.clone());
        let endpoint = Arc::clone(self);
        async move {
            let (response, mut connection) = endpoint
                .pool
                .send(request)
                .await
                .map_err(|e| ReadError::Transport(transport(&endpoint.shown, &e)))?;
            let (parts, body) = response.into_parts();
            let body = connection
                .drive(read_capped(body, limit))
                .await
                .map_err(|e| e.map_transport(|e| transport(&endpoint.shown, &e)))?;
            endpoint.pool.put_back(connection);
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        }
    }
}

/// An endpoint's answer.
pub(super) struct Answer {
    pub(super) status: http::StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

/// Worded as reqwest words its own transport errors, naming the endpoint, with every cause.
fn transport(endpoint: &str, error: &(dyn std::error::Error + 'static)) -> TransportError {
    TransportError(super::with_causes(
        format!("error sending request for url ({endpoint})"),
        Some(error),
    ))
}

/// Reads `body`, refusing more than `limit` bytes.
async fn read_capped(mut body: Incoming, limit: usize) -> Result<Bytes, ReadError<hyper::Error>> {
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(ReadError::Transport)?.into_data() else {
            continue; // trailers
        };
        match (&mut first, &mut joined) {
            (None, None) => {
                if data.len() > limit {
                    return Err(ReadError::TooLarge);
                }
                first = Some(data);
            }
            (Some(_), None) => {
                let mut buffer = BytesMut::from(first.take().unwrap_or_default());
                if buffer.len() + data.len() > limit {
                    return Err(ReadError::TooLarge);
                }
                buffer.extend_from_slice(&data);
                joined = Some(buffer);
            }
            (_, Some(buffer)) => {
                if buffer.len() + data.len() > limit {
                    return Err(ReadError::TooLarge);
                }
                buffer.extend_from_slice(&data);
            }
        }
    }
    // A small answer comes in one frame: it is the body, without a copy.
    Ok(match (first, joined) {
        (_, Some(buffer)) => buffer.freeze(),
        (Some(first), None) => first,
        (None, None) => Bytes::new(),
    })
}
