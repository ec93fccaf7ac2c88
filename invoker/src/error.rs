//! Invocation errors, classified the way Lambda's retry rules need them (SEMANTICS.md §2).

use std::time::Duration;

use bytes::Bytes;

/// Why an attempt did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The function ran and reported an error: it said so, or its HTTP endpoint answered 5xx.
    /// `payload` is Lambda's error document for the caller.
    #[error("the function returned an error ({error_type})")]
    Function {
        /// A stable error type (`Unhandled`, `HttpStatus500`, …).
        error_type: String,
        /// Lambda's `{"errorType", "errorMessage"}` document.
        payload: Bytes,
    },
    /// The function did not finish before its deadline.
    #[error("task timed out after {:.2} seconds", .after.as_secs_f64())]
    Timeout {
        /// How long the attempt was allowed.
        after: Duration,
    },
    /// The target refused for load (HTTP 429).
    #[error("the function's endpoint is throttling")]
    Throttled,
    /// The target could not be reached, or the connection broke.
    #[error("the function's endpoint is unreachable: {0}")]
    System(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The request can never succeed as sent (a 4xx other than 429, a payload too large).
    #[error("the function's endpoint rejected the request with status {status}: {message}")]
    Permanent {
        /// The HTTP status the target answered.
        status: u16,
        /// What it said, shortened.
        message: String,
    },
}

/// The retry class of an error; it picks the retry budget, never the error's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Function errors and timeouts: retried up to `max_retry_attempts`.
    Function,
    /// Throttles: retried with backoff until the event is too old.
    Throttle,
    /// System errors: retried with backoff until the event is too old.
    System,
    /// Never retried.
    Permanent,
}

impl InvokeError {
    /// The retry class.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Function { .. } | Self::Timeout { .. } => ErrorClass::Function,
            Self::Throttled => ErrorClass::Throttle,
            Self::System(_) => ErrorClass::System,
            Self::Permanent { .. } => ErrorClass::Permanent,
        }
    }

    /// A stable code for metrics labels and logs.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::Function { .. } => "function_error",
            Self::Timeout { .. } => "timeout",
            Self::Throttled => "throttled",
            Self::System(_) => "system_error",
            Self::Permanent { .. } => "permanent",
        }
    }
}
