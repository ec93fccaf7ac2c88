//! What a function is called with, and what it returns.

use bytes::Bytes;
use impulse_connectors::contract::Name;
use serde::Serialize;
use tokio::time::Instant;

/// The header that carries an invocation's client context to the function, in the Runtime API
/// and to http targets.
pub const CLIENT_CONTEXT_HEADER: &str = "lambda-runtime-client-context";

/// One attempt to run a function on an event.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Unique per attempt chain; sent to the function as its request id.
    pub request_id: String,
    /// The configured function name (a metrics label).
    pub function: Name,
    /// The configured trigger name, or `invoke` for the Invoke API (a metrics label).
    pub trigger: Name,
    /// The JSON event.
    pub payload: Bytes,
    /// The caller's absolute deadline, if it has one (an event's remaining age budget).
    /// The function's own timeout still applies; the earlier of the two wins.
    pub deadline: Option<Instant>,
    /// Lambda's `ClientContext` (compact JSON), from a synchronous Invoke API caller: sent to
    /// the function as `Lambda-Runtime-Client-Context`.
    pub client_context: Option<http::HeaderValue>,
    /// Where the function's log lines go when the caller asked for them (`LogType: Tail`);
    /// `None` otherwise, and then nothing is kept.
    pub log_tail: Option<crate::LogTail>,
}

/// A function's successful result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationResponse {
    /// The result payload, as the function returned it.
    pub payload: Bytes,
}

/// Lambda's error document: `{"errorType": …, "errorMessage": …}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LambdaError<'a> {
    /// A stable error type such as `Sandbox.Timedout`.
    pub error_type: &'a str,
    /// A human-readable message.
    pub error_message: &'a str,
}

impl LambdaError<'_> {
    /// The document as JSON bytes.
    pub fn to_bytes(&self) -> Bytes {
        // A struct of two strings always serialises.
        Bytes::from(serde_json::to_vec(self).expect("two strings serialise"))
    }
}
