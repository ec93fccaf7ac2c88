//! Lambda-style API errors: a status, an `x-amzn-ErrorType` header and `{"Type", "Message"}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error of the Invoke API, shaped like Lambda's so AWS SDKs parse it.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    /// Lambda's exception name, e.g. `ResourceNotFoundException`.
    error_type: &'static str,
    message: String,
    /// Extra detail for throttles (`Reason`), as Lambda sends it.
    reason: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        error_type: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error_type,
            message: message.into(),
            reason: None,
        }
    }

    pub(crate) fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// A Lambda API operation Impulse does not implement.
    pub(crate) fn unknown_operation(method: &axum::http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!("Impulse does not implement this Lambda API operation: {method} {path}"),
        )
    }

    pub(crate) fn not_found(function: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!("Function not found: {function}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Lambda says `User` for the caller's mistakes and `Service` for its own.
        let kind = if self.status.is_server_error() {
            "Service"
        } else {
            "User"
        };
        let mut body = json!({ "Type": kind, "Message": self.message, "message": self.message });
        if let Some(reason) = self.reason {
            body["Reason"] = json!(reason);
        }
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().insert(
            "x-amzn-errortype",
            HeaderValue::from_static(self.error_type),
        );
        response
    }
}
