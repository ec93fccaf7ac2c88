//! The Runtime API one execution environment polls (SEMANTICS.md §5), and its request-id book.
//!
//! Each environment gets its own listener on 127.0.0.1, so the port alone tells which
//! environment is calling; the book then accepts `/response` and `/error` only for the request
//! id that environment was handed, and only once (RELIABILITY.md §5). Everything a worker sends
//! is hostile input: bodies are capped at 6 MB, headers and documents are validated, and a bad
//! request is refused with 4xx — it never panics and never completes another invocation.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use impulse_config::SYNC_PAYLOAD_LIMIT;

use crate::wall_clock::epoch_millis;
use crate::{LambdaError, LogTail};

/// `/next` response header: the request id.
pub(super) const REQUEST_ID: &str = "lambda-runtime-aws-request-id";
/// `/next` response header: the deadline, in Unix epoch milliseconds.
pub(super) const DEADLINE_MS: &str = "lambda-runtime-deadline-ms";
/// `/next` response header: the invoked function's ARN.
pub(super) const FUNCTION_ARN: &str = "lambda-runtime-invoked-function-arn";
/// `/next` response header: the X-Ray trace header.
pub(super) const TRACE_ID: &str = "lambda-runtime-trace-id";
/// `/next` response header, echoed by newer runtimes on `/response` and `/error`: one delivery.
pub(super) const INVOCATION_ID: &str = "lambda-runtime-invocation-id";
/// `/error` and `/init/error` request header: the error type.
pub(super) const ERROR_TYPE: &str = "lambda-runtime-function-error-type";

/// The error type used when a worker names none (or an unusable one).
const UNHANDLED: &str = "Unhandled";
/// Longest error type kept from a worker; longer ones are cut.
const MAX_ERROR_TYPE: usize = 256;

/// Characters kept as they are in the request id a worker sees; the rest are percent-encoded so
/// the id fits both a header value and the `/invocation/{id}/…` path segment.
const ID_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One invocation handed to an environment.
#[derive(Debug)]
pub(super) struct Job {
    /// The invocation's request id, as the broker knows it.
    pub(super) request_id: Arc<str>,
    /// The event.
    pub(super) payload: Bytes,
    /// When the invocation times out.
    pub(super) deadline: Instant,
    /// The caller's client context, if any (compact JSON).
    pub(super) client_context: Option<HeaderValue>,
    /// Where the worker's log lines go, when the caller asked for them.
    pub(super) log_tail: Option<LogTail>,
    /// Where the worker's answer goes.
    pub(super) reply: oneshot::Sender<Reply>,
}

/// What a worker answered for its current invocation.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reply {
    /// `/response`: the result.
    Response(Bytes),
    /// `/error`: a function error.
    Error {
        /// The error type (header, else the document's `errorType`, else `Unhandled`).
        error_type: String,
        /// Lambda's error document.
        payload: Bytes,
    },
    /// A `/response` body over 6 MB.
    TooLarge,
}

/// How an environment's init phase ended, as its worker told it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum InitSignal {
    /// The worker called `/next`.
    Ready,
    /// The worker called `/init/error`.
    Failed {
        /// The error type.
        error_type: String,
        /// Lambda's error document.
        payload: Bytes,
    },
}

/// Why a worker's `/response` or `/error` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Not the id of the invocation this environment is running (unknown, stale or answered).
    InvalidRequestId,
}

/// The invocation an environment is running.
#[derive(Debug)]
struct Current {
    request_id: Arc<str>,
    invocation_id: String,
    reply: oneshot::Sender<Reply>,
}

/// Request-id bookkeeping for one environment: at most one invocation is answerable, once.
#[derive(Debug, Default)]
pub(super) struct Book {
    init: Option<oneshot::Sender<InitSignal>>,
    current: Option<Current>,
    /// The request id of the latest delivery, kept after its answer so late log lines still
    /// carry it.
    last_request_id: Option<Arc<str>>,
    /// The latest delivery's log tail, if its caller asked for one; kept with its request id.
    last_log_tail: Option<LogTail>,
}

impl Book {
    fn new(init: oneshot::Sender<InitSignal>) -> Self {
        Self {
            init: Some(init),
            ..Self::default()
        }
    }

    /// Ends init with `signal`; false if init had already ended.
    fn end_init(&mut self, signal: InitSignal) -> bool {
        match self.init.take() {
            Some(init) => {
                if init.send(signal).is_err() {
                    // The starter gave up (init timeout); the environment is being killed.
                }
                true
            }
            None => false,
        }
    }

    /// Records that `request_id` was handed to the worker as delivery `invocation_id`.
    fn deliver(
        &mut self,
        request_id: Arc<str>,
        invocation_id: String,
        log_tail: Option<LogTail>,
        reply: oneshot::Sender<Reply>,
    ) {
        self.last_request_id = Some(request_id.clone());
        self.last_log_tail = log_tail;
        // A previous invocation still open here would have no way to finish; dropping its
        // reply tells its caller so. (The pool never hands a busy environment a second job.)
        self.current = Some(Current {
            request_id,
            invocation_id,
            reply,
        });
    }

    /// Whether an answer for `request_id` (with the echoed `invocation_id`, if the worker sent
    /// one) would be accepted now. An empty request id reached the worker as the invocation id
    /// (see [`wire_request_id`]), so that is the id its answer names.
    fn check(&self, request_id: &str, invocation_id: Option<&str>) -> Result<(), Refusal> {
        let Some(current) = &self.current else {
            return Err(Refusal::InvalidRequestId);
        };
        let as_delivered = if current.request_id.is_empty() {
            current.invocation_id.as_str()
        } else {
            &current.request_id
        };
        if as_delivered == request_id && invocation_id.is_none_or(|id| id == current.invocation_id)
        {
            Ok(())
        } else {
            Err(Refusal::InvalidRequestId)
        }
    }

    /// Takes the reply channel of the current invocation if `request_id` (and `invocation_id`)
    /// name it; afterwards no answer for it is accepted.
    fn complete(
        &mut self,
        request_id: &str,
        invocation_id: Option<&str>,
    ) -> Result<oneshot::Sender<Reply>, Refusal> {
        self.check(request_id, invocation_id)?;
        match self.current.take() {
            Some(current) => Ok(current.reply),
            None => Err(Refusal::InvalidRequestId),
        }
    }
}

/// The state one environment's Runtime API serves.
#[derive(Debug)]
pub(super) struct RuntimeApi {
    function_arn: HeaderValue,
    jobs: tokio::sync::Mutex<mpsc::Receiver<Job>>,
    book: Mutex<Book>,
    /// The worker's exit, once it is reaped (`Some`).
    exited: watch::Receiver<Option<String>>,
}

impl RuntimeApi {
    /// An API that takes invocations from `jobs`, reports the end of init on `init`, and
    /// learns from `exited` that its worker is gone.
    pub(super) fn new(
        function_arn: HeaderValue,
        jobs: mpsc::Receiver<Job>,
        init: oneshot::Sender<InitSignal>,
        exited: watch::Receiver<Option<String>>,
    ) -> Self {
        Self {
            function_arn,
            jobs: tokio::sync::Mutex::new(jobs),
            book: Mutex::new(Book::new(init)),
            exited,
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // The book is only ever left consistent; a panic elsewhere must not wedge the API.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The request id of the latest invocation handed to the worker and, if its caller asked
    /// for one, its log tail (for log lines).
    pub(super) fn last_request(&self) -> (Option<Arc<str>>, Option<LogTail>) {
        let book = self.book();
        (book.last_request_id.clone(), book.last_log_tail.clone())
    }

    /// Pretends `request_id` was delivered (tests of log forwarding).
    #[cfg(test)]
    pub(super) fn set_last_request_id(&self, request_id: &str) {
        self.book().last_request_id = Some(Arc::from(request_id));
    }

    /// The Runtime API routes, under `/2018-06-01`.
    pub(super) fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{request_id}/response",
                post(response),
            )
            .route(
                "/2018-06-01/runtime/invocation/{request_id}/error",
                post(error),
            )
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(self)
    }
}

// === handlers ===

async fn next(State(api): State<Arc<RuntimeApi>>) -> Response {
    api.book().end_init(InitSignal::Ready);
    // One `/next` at a time: a second poll waits behind the first, as in a classic environment.
    let mut jobs = api.jobs.lock().await;
    loop {
        let Some(job) = jobs.recv().await else {
            // The environment is being torn down. Lambda leaves `/next` unanswered and stops
            // the worker with SIGTERM, then SIGKILL: an answer would reach a runtime client
            // that cannot handle one (`lambda_runtime` panics on a 410). Once the worker is
            // gone nobody reads this, but the task ends.
            let mut exited = api.exited.clone();
            // An error means the supervisor is gone, which also means the worker is.
            exited.wait_for(Option::is_some).await.ok();
            return refusal(
                StatusCode::GONE,
                "EnvironmentStopped",
                "The execution environment is shutting down.",
            );
        };
        if job.reply.is_closed() {
            // Its caller gave up before the worker asked; the environment is being killed.
            continue;
        }
        let invocation_id = random_hex::<2>();
        let wire_id = wire_request_id(&job.request_id, &invocation_id);
        let mut headers = HeaderMap::new();
        let values = [
            (REQUEST_ID, wire_id),
            (DEADLINE_MS, epoch_millis(job.deadline).to_string()),
            (TRACE_ID, trace_id()),
            (INVOCATION_ID, invocation_id.clone()),
        ];
        for (name, value) in values {
            // Every value above is ASCII alphanumerics and `-._~%=;`: always a valid header.
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        headers.insert(
            HeaderName::from_static(FUNCTION_ARN),
            api.function_arn.clone(),
        );
        if let Some(client_context) = job.client_context {
            headers.insert(
                HeaderName::from_static(crate::CLIENT_CONTEXT_HEADER),
                client_context,
            );
        }
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        api.book()
            .deliver(job.request_id, invocation_id, job.log_tail, job.reply);
        return (StatusCode::OK, headers, job.payload).into_response();
    }
}

async fn response(
    State(api): State<Arc<RuntimeApi>>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let invocation_id = header_str(&headers, INVOCATION_ID);
    if let Err(refused) = api.book().check(&request_id, invocation_id) {
        return refused.into_response();
    }
    let reply = match read_capped(&headers, body).await {
        Ok(body) => Reply::Response(body),
        Err(BodyError::TooLarge) => Reply::TooLarge,
        Err(BodyError::Broken) => return broken_body(),
    };
    let too_large = reply == Reply::TooLarge;
    let sender = match api.book().complete(&request_id, invocation_id) {
        Ok(sender) => sender,
        Err(refused) => return refused.into_response(),
    };
    if sender.send(reply).is_err() {
        // The caller is gone (the environment is then being killed); nothing to tell it.
    }
    if too_large {
        return refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &format!("The response exceeds the maximum payload size ({SYNC_PAYLOAD_LIMIT} bytes)."),
        );
    }
    accepted()
}

async fn error(
    State(api): State<Arc<RuntimeApi>>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let invocation_id = header_str(&headers, INVOCATION_ID);
    if let Err(refused) = api.book().check(&request_id, invocation_id) {
        return refused.into_response();
    }
    let body = match read_capped(&headers, body).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => return too_large_error(),
        Err(BodyError::Broken) => return broken_body(),
    };
    let (error_type, payload) = error_document(header_str(&headers, ERROR_TYPE), &body);
    let sender = match api.book().complete(&request_id, invocation_id) {
        Ok(sender) => sender,
        Err(refused) => return refused.into_response(),
    };
    let reply = Reply::Error {
        error_type,
        payload,
    };
    if sender.send(reply).is_err() {
        // The caller is gone (the environment is then being killed); nothing to tell it.
    }
    accepted()
}

async fn init_error(
    State(api): State<Arc<RuntimeApi>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_capped(&headers, body).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => return too_large_error(),
        Err(BodyError::Broken) => return broken_body(),
    };
    let (error_type, payload) = error_document(header_str(&headers, ERROR_TYPE), &body);
    if api.book().end_init(InitSignal::Failed {
        error_type,
        payload,
    }) {
        accepted()
    } else {
        refusal(
            StatusCode::FORBIDDEN,
            "InvalidStateTransition",
            "Init has already ended.",
        )
    }
}

// === responses ===

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::InvalidRequestId => refusal(
                StatusCode::BAD_REQUEST,
                "InvalidRequestID",
                "The request id is not the invocation this environment is running.",
            ),
        }
    }
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        r#"{"status":"OK"}"#,
    )
        .into_response()
}

fn refusal(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = LambdaError {
        error_type,
        error_message: message,
    }
    .to_bytes();
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn too_large_error() -> Response {
    refusal(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
        &format!("The error document exceeds {SYNC_PAYLOAD_LIMIT} bytes."),
    )
}

fn broken_body() -> Response {
    refusal(
        StatusCode::BAD_REQUEST,
        "InvalidRequestBody",
        "The request body could not be read.",
    )
}

// === parsing ===

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[derive(Debug, PartialEq, Eq)]
enum BodyError {
    TooLarge,
    Broken,
}

/// Reads a worker's body, refusing more than Lambda's 6 MB.
async fn read_capped(headers: &HeaderMap, body: Body) -> Result<Bytes, BodyError> {
    let declared = header_str(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > SYNC_PAYLOAD_LIMIT as u64) {
        return Err(BodyError::TooLarge);
    }
    match Limited::new(body, SYNC_PAYLOAD_LIMIT).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Broken),
    }
}

/// The error type and Lambda error document for a worker's `/error` or `/init/error`.
///
/// The type is the `Lambda-Runtime-Function-Error-Type` header when usable and more specific
/// than `Unhandled`, else the document's `errorType`, else `Unhandled`. A document that is a JSON object is passed on as the worker
/// wrote it (as Lambda does); anything else is replaced by a document describing it.
pub(super) fn error_document(header: Option<&str>, body: &[u8]) -> (String, Bytes) {
    let document = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body).ok();
    let from_body = document
        .as_ref()
        .and_then(|d| d.get("errorType"))
        .and_then(|t| t.as_str());
    // `Unhandled` says nothing (the Rust runtime sends it for every error): prefer the
    // document's own type then.
    let error_type = header
        .and_then(usable_error_type)
        .filter(|t| !t.eq_ignore_ascii_case(UNHANDLED))
        .or_else(|| from_body.and_then(usable_error_type))
        .unwrap_or(UNHANDLED)
        .to_owned();
    let payload = match document {
        Some(_) => Bytes::copy_from_slice(body),
        None => {
            let shown = String::from_utf8_lossy(&body[..body.len().min(1024)]);
            let message =
                format!("The runtime reported an error without a JSON error document: {shown}");
            LambdaError {
                error_type: &error_type,
                error_message: &message,
            }
            .to_bytes()
        }
    };
    (error_type, payload)
}

/// `value` trimmed and cut to [`MAX_ERROR_TYPE`] bytes, if it is printable ASCII and not empty.
fn usable_error_type(value: &str) -> Option<&str> {
    let value = value.trim();
    let printable = value.bytes().all(|b| (0x20..0x7f).contains(&b));
    // Printable ASCII: every byte index is a char boundary.
    (printable && !value.is_empty()).then(|| &value[..value.len().min(MAX_ERROR_TYPE)])
}

// === header values ===

/// The request id as the worker sees it: the broker's id, percent-encoded where it holds
/// characters unfit for a header or a path segment (an empty id becomes the delivery id).
/// axum decodes the path segment again, so answers are matched against the original id.
pub(super) fn wire_request_id(request_id: &str, invocation_id: &str) -> String {
    if request_id.is_empty() {
        return invocation_id.to_owned();
    }
    utf8_percent_encode(request_id, ID_SET).to_string()
}

/// A valid X-Ray trace header: `Root=1-<epoch secs, 8 hex>-<24 hex>;Parent=<16 hex>;Sampled=0`.
pub(super) fn trace_id() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    format!(
        "Root=1-{:08x}-{:08x}{:016x};Parent={:016x};Sampled=0",
        secs & 0xffff_ffff,
        fastrand::u32(..),
        fastrand::u64(..),
        fastrand::u64(..),
    )
}

/// `N` random 64-bit words as lowercase hex.
pub(super) fn random_hex<const N: usize>() -> String {
    (0..N)
        .map(|_| format!("{:016x}", fastrand::u64(..)))
        .collect()
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
