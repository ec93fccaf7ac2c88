//! The `http` function target: POST the event to an endpoint; the response body is the result.
//!
//! Classification of the endpoint's answer (SEMANTICS.md §2):
//!
//! | answer | result |
//! |---|---|
//! | 2xx | success; the body is the result |
//! | 2xx with `X-Amz-Function-Error` | function error; the body is the error document |
//! | 5xx | function error |
//! | 429 | throttle |
//! | other 4xx (413 included), and 3xx (redirects are not followed) | permanent |
//! | connect refused, reset, broken body, TLS failure | system error |
//!
//! Each request carries `Lambda-Runtime-Aws-Request-Id` and `Lambda-Runtime-Deadline-Ms`, the
//! headers a Runtime-API function would see, so an HTTP function can log the id and budget
//! its work. A function with an execution role also sends the role's `headers` (marked
//! sensitive) on every request.
//!
//! `http://` endpoints are posted to over hyper's HTTP/1 connections directly ([`plain`]: no
//! per-request URL parsing, no redirect layer; [`pool`]: each connection driven by the call
//! it carries); `https://` endpoints go over reqwest and rustls ([`tls`]). Credentials in an
//! endpoint URL (`https://user:password@host/…`) are taken out of the URL once, at
//! construction, and sent as HTTP Basic authentication: the URL that reqwest sees, and so
//! every error it words, holds none.

mod plain;
mod pool;
mod tls;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use tower::Service;

use impulse_config::{redact_url, HttpTlsConfig, SYNC_PAYLOAD_LIMIT};

pub use tls::TlsError;

use crate::role::ResolvedRole;
use crate::wall_clock::epoch_millis;
use crate::{Invocation, InvocationResponse, Invoke, InvokeError, LambdaError};

/// The header an HTTP function sets to say its 2xx body is an error (`Unhandled` or `Handled`).
pub const FUNCTION_ERROR_HEADER: &str = "x-amz-function-error";

// Built once: a name given as a string is parsed on every use, and copied to the heap when
// it is sent.
const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("lambda-runtime-aws-request-id");
const DEADLINE_HEADER: HeaderName = HeaderName::from_static("lambda-runtime-deadline-ms");
const FUNCTION_ERROR: HeaderName = HeaderName::from_static(FUNCTION_ERROR_HEADER);
const CLIENT_CONTEXT: HeaderName = HeaderName::from_static(crate::CLIENT_CONTEXT_HEADER);

/// A function reached over HTTP, through a shared connection pool.
#[derive(Debug, Clone)]
pub struct HttpFunction {
    client: reqwest::Client,
    /// Shared: the service is cloned for every call, and each request needs its own `Url`
    /// anyway, so only one copy per call is made, not two. Never holds userinfo.
    endpoint: Arc<reqwest::Url>,
    /// The execution role's headers, built once; `None` when there are none, so that a
    /// function without a role pays nothing per request for the feature.
    role_headers: Option<HeaderMap>,
    /// `Basic …` from the endpoint URL's userinfo, marked sensitive; `None` for most endpoints.
    authorization: Option<HeaderValue>,
    /// Set for `http://` endpoints: they are posted to through hyper directly, not `client`.
    /// Shared: a hyper client is large, and this struct is cloned with the service.
    plain: Option<Arc<plain::PlainEndpoint>>,
}

/// An endpoint that cannot be used as an `http` target. Its message shows the endpoint with
/// any password replaced by `***`.
#[derive(Debug, thiserror::Error)]
#[error("invalid function endpoint {endpoint:?}: {reason}")]
pub struct EndpointError {
    /// Redacted.
    endpoint: String,
    reason: String,
}

impl HttpFunction {
    /// A target posting to `endpoint` (`http://` or `https://`) with `client`: clone
    /// [`HttpFunction::default_client`] for every function without TLS settings so they
    /// share its pool, or use [`HttpFunction::tls_client`].
    pub fn new(client: reqwest::Client, endpoint: &str) -> Result<Self, EndpointError> {
        let error = |reason: String| EndpointError {
            endpoint: redact_url(endpoint),
            reason,
        };
        // `url`'s parse errors name the problem, never the input.
        let mut url = reqwest::Url::parse(endpoint).map_err(|e| error(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(error(format!("unsupported scheme {:?}", url.scheme())));
        }
        let authorization = take_basic_auth(&mut url)
            .map_err(|()| error("the user name or password cannot be sent in a header".into()))?;
        Ok(Self {
            client,
            plain: plain::PlainEndpoint::new(&url).map(Arc::new),
            endpoint: Arc::new(url),
            authorization,
            role_headers: None,
        })
    }

    /// This target, sending the headers of execution role `role` on every request.
    pub fn with_role(mut self, role: &ResolvedRole) -> Self {
        self.role_headers = Some(role.headers().clone()).filter(|headers| !headers.is_empty());
        self
    }

    /// The client every `http` function without TLS settings shares: pooled connections, no
    /// proxy lookup; `https://` endpoints are verified against the system's roots.
    ///
    /// Plain `http://` requests take the same path as with a client built without TLS: the
    /// connector hands `http` URLs to its TCP connector untouched, and the TLS configuration
    /// is used only when an `https` connection is opened. Connections are pooled either way.
    pub fn default_client() -> reqwest::Client {
        let config = tls::client_config(None, None)
            .expect("a TLS configuration without files always builds (aws-lc-rs has TLS 1.2/1.3)");
        client(config).expect("a client with a prebuilt TLS configuration always builds")
    }

    /// A client of its own for an endpoint with TLS settings or whose execution `role` holds
    /// a client certificate: `ca_file` added to the system's roots, and the client
    /// certificate of either, when set. Reads the files of `tls`.
    pub fn tls_client(
        tls: Option<&HttpTlsConfig>,
        role: Option<&ResolvedRole>,
    ) -> Result<reqwest::Client, TlsError> {
        let config = tls::client_config(tls, role.and_then(ResolvedRole::client_certificate))?;
        client(config).map_err(TlsError::Client)
    }
}

/// Every `http` target's client settings, with `tls` for its `https://` connections.
fn client(tls: rustls::ClientConfig) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .no_proxy()
        // As for `http://` endpoints ([`plain`]): a function's answer is its result.
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .tls_backend_preconfigured(tls)
        .build()
}

/// Takes the userinfo out of `url` and returns it as a sensitive `Basic` authorization value
/// (reqwest would do the same per request; once here, the URL it sees never holds it).
fn take_basic_auth(url: &mut reqwest::Url) -> Result<Option<HeaderValue>, ()> {
    if url.username().is_empty() && url.password().is_none() {
        return Ok(None);
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut credentials = decode(url.username());
    credentials.push(':');
    credentials.push_str(&url.password().map(decode).unwrap_or_default());
    url.set_username("")?;
    url.set_password(None)?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    let mut value = HeaderValue::try_from(format!("Basic {encoded}")).map_err(|_| ())?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// A request that failed in transport (connect, TLS handshake, a broken body), worded with
/// all its causes: reqwest's own message stops at "error sending request for url (…)", which
/// does not say whether the connection was refused or the certificate was not trusted. The
/// URL in it never holds credentials (see [`take_basic_auth`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(String);

impl From<reqwest::Error> for TransportError {
    fn from(error: reqwest::Error) -> Self {
        Self(with_causes(
            error.to_string(),
            std::error::Error::source(&error),
        ))
    }
}

/// `message` followed by the text of every cause in the chain from `cause`.
fn with_causes(
    mut message: String,
    mut cause: Option<&(dyn std::error::Error + 'static)>,
) -> String {
    while let Some(inner) = cause {
        let text = inner.to_string();
        // hyper and reqwest repeat a cause's text in their own; say it once.
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = inner.source();
    }
    message
}

fn transport(error: reqwest::Error) -> InvokeError {
    InvokeError::System(Box::new(TransportError::from(error)))
}

impl Service<Invocation> for HttpFunction {
    type Response = InvocationResponse;
    type Error = InvokeError;
    type Future = BoxFuture<'static, Result<InvocationResponse, InvokeError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The pool grows on demand; admission is the broker limiter's job.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, invocation: Invocation) -> Self::Future {
        self.invoke(invocation)
    }
}

impl Invoke for HttpFunction {
    type Future = BoxFuture<'static, Result<InvocationResponse, InvokeError>>;

    fn invoke(&self, invocation: Invocation) -> Self::Future {
        // The id's own allocation becomes the header value, without a copy.
        let request_id = match HeaderValue::from_maybe_shared(Bytes::from(invocation.request_id)) {
            Ok(request_id) => request_id,
            Err(e) => return Box::pin(std::future::ready(Err(InvokeError::System(Box::new(e))))),
        };
        // Validation keeps role headers apart from the ones set below.
        let mut headers = match &self.role_headers {
            Some(role_headers) => role_headers.clone(),
            None => HeaderMap::with_capacity(8),
        };
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(REQUEST_ID_HEADER, request_id);
        if let Some(authorization) = &self.authorization {
            headers.insert(http::header::AUTHORIZATION, authorization.clone());
        }
        if let Some(deadline) = invocation.deadline {
            // An integer straight into the header value (a `u128` through `Display` is slow).
            headers.insert(DEADLINE_HEADER, HeaderValue::from(epoch_millis(deadline)));
        }
        if let Some(client_context) = invocation.client_context {
            headers.insert(CLIENT_CONTEXT, client_context);
        }
        if let Some(plain) = &self.plain {
            let answer = plain.post(headers, invocation.payload, SYNC_PAYLOAD_LIMIT);
            return Box::pin(async move {
                let answer = match answer.await {
                    Ok(answer) => answer,
                    Err(ReadError::TooLarge) => return Err(too_large()),
                    Err(ReadError::Transport(e)) => return Err(InvokeError::System(Box::new(e))),
                };
                outcome(answer.status, declared_error(&answer.headers), answer.body)
            });
        }
        let request = self
            .client
            .post(reqwest::Url::clone(&self.endpoint))
            .headers(headers)
            .body(invocation.payload);
        Box::pin(async move {
            let response = request.send().await.map_err(transport)?;
            classify(response).await
        })
    }
}

/// The error type an endpoint declares with `X-Amz-Function-Error` on a 2xx answer.
fn declared_error(headers: &HeaderMap) -> Option<String> {
    headers
        .get(FUNCTION_ERROR)
        .map(|v| v.to_str().unwrap_or("Unhandled").to_owned())
}

fn too_large() -> InvokeError {
    function_error(
        "Function.ResponseSizeTooLarge",
        &format!("Response payload size exceeded maximum allowed payload size ({SYNC_PAYLOAD_LIMIT} bytes)."),
    )
}

async fn classify(mut response: reqwest::Response) -> Result<InvocationResponse, InvokeError> {
    let status = response.status();
    let declared_error = declared_error(response.headers());
    let body = match read_capped(&mut response).await {
        Ok(body) => body,
        Err(ReadError::TooLarge) => return Err(too_large()),
        Err(ReadError::Transport(e)) => return Err(transport(e)),
    };
    outcome(status, declared_error, body)
}

/// The result of an answer with `status`, the error type the endpoint declared, and `body`.
fn outcome(
    status: http::StatusCode,
    declared_error: Option<String>,
    body: Bytes,
) -> Result<InvocationResponse, InvokeError> {
    if status.is_success() {
        return match declared_error {
            None => Ok(InvocationResponse { payload: body }),
            Some(error_type) => Err(InvokeError::Function {
                error_type,
                payload: body,
            }),
        };
    }
    if status == http::StatusCode::TOO_MANY_REQUESTS {
        return Err(InvokeError::Throttled);
    }
    if status.is_server_error() {
        let error_type = format!("HttpStatus{}", status.as_u16());
        // Keep the endpoint's own error document when it wrote one; otherwise describe it.
        let payload = if is_json_object(&body) {
            body
        } else {
            let message = format!("The function's endpoint answered {status}.");
            LambdaError {
                error_type: &error_type,
                error_message: &message,
            }
            .to_bytes()
        };
        return Err(InvokeError::Function {
            error_type,
            payload,
        });
    }
    Err(InvokeError::Permanent {
        status: status.as_u16(),
        message: snippet(&body),
    })
}

fn function_error(error_type: &str, message: &str) -> InvokeError {
    InvokeError::Function {
        error_type: error_type.to_owned(),
        payload: LambdaError {
            error_type,
            error_message: message,
        }
        .to_bytes(),
    }
}

/// Why a body was not read: over Lambda's limit, or a transport failure.
enum ReadError<E = reqwest::Error> {
    TooLarge,
    Transport(E),
}

impl<E> ReadError<E> {
    fn map_transport<F>(self, f: impl FnOnce(E) -> F) -> ReadError<F> {
        match self {
            Self::TooLarge => ReadError::TooLarge,
            Self::Transport(e) => ReadError::Transport(f(e)),
        }
    }
}

/// Reads the body, refusing more than Lambda's 6 MB response limit.
async fn read_capped(response: &mut reqwest::Response) -> Result<Bytes, ReadError> {
    let mut next = async || response.chunk().await.map_err(ReadError::Transport);
    let Some(first) = next().await? else {
        return Ok(Bytes::new());
    };
    if first.len() > SYNC_PAYLOAD_LIMIT {
        return Err(ReadError::TooLarge);
    }
    // A small answer comes in one chunk: it is the body, without a copy.
    let Some(second) = next().await? else {
        return Ok(first);
    };
    let mut body = BytesMut::from(first);
    let mut chunk = Some(second);
    while let Some(more) = chunk {
        if body.len() + more.len() > SYNC_PAYLOAD_LIMIT {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&more);
        chunk = next().await?;
    }
    Ok(body.freeze())
}

fn is_json_object(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v.is_object())
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(256)]);
    text.trim().to_owned()
}

#[cfg(test)]
mod tests;
