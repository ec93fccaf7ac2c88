//! Invocation errors, classified the way Lambda's retry rules need them (SEMANTICS.md §2).

use std::time::Duration;

use bytes::Bytes;

use crate::LambdaError;

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

    /// Lambda's error document for this failure: what a synchronous caller receives with
    /// `X-Amz-Function-Error`, and what a destination record carries as `responsePayload`.
    ///
    /// A function error is its own document. The others are `{"errorType", "errorMessage"}`
    /// with Lambda's error type: `Sandbox.Timedout` (and Lambda's message naming `request_id`)
    /// for a timeout, `TooManyRequestsException` for a throttling endpoint, `ServiceException`
    /// for an unreachable one, `RequestRejected` for a refused request.
    pub fn document(&self, request_id: &str) -> Bytes {
        let (error_type, message) = match self {
            Self::Function { payload, .. } => return payload.clone(),
            Self::Timeout { after } => (
                "Sandbox.Timedout",
                format!(
                    "RequestId: {request_id} Error: Task timed out after {:.2} seconds",
                    after.as_secs_f64()
                ),
            ),
            Self::Throttled => ("TooManyRequestsException", self.to_string()),
            Self::System(_) => ("ServiceException", self.to_string()),
            Self::Permanent { .. } => ("RequestRejected", self.to_string()),
        };
        LambdaError {
            error_type,
            error_message: &message,
        }
        .to_bytes()
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

impl ErrorClass {
    /// A stable label for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Function => "function",
            Self::Throttle => "throttle",
            Self::System => "system",
            Self::Permanent => "permanent",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(error: &InvokeError) -> serde_json::Value {
        serde_json::from_slice(&error.document("req-1")).expect("a JSON document")
    }

    #[test]
    fn one_error_document_per_failure() {
        let timeout = parsed(&InvokeError::Timeout {
            after: Duration::from_secs(3),
        });
        assert_eq!(timeout["errorType"], "Sandbox.Timedout");
        assert_eq!(
            timeout["errorMessage"],
            "RequestId: req-1 Error: Task timed out after 3.00 seconds"
        );
        assert_eq!(
            parsed(&InvokeError::Throttled)["errorType"],
            "TooManyRequestsException"
        );
        assert_eq!(
            parsed(&InvokeError::System("reset".into()))["errorType"],
            "ServiceException"
        );
        let function = InvokeError::Function {
            error_type: "Unhandled".into(),
            payload: Bytes::from_static(br#"{"errorType":"Boom"}"#),
        };
        assert_eq!(&function.document("r")[..], br#"{"errorType":"Boom"}"#);
    }
}
