//! Lambda's Invoke API: `POST /2015-03-31/functions/{function}/invocations`.
//!
//! `X-Amz-Invocation-Type: RequestResponse` (the default) runs the function and returns its
//! result; a function error still answers 200, with `X-Amz-Function-Error` set and Lambda's
//! error document as the body. `DryRun` checks the function exists and answers 204.
//!
//! The function may be qualified (`name:2`, `name:live`, an ARN with a qualifier, or
//! `?Qualifier=`): a version or an alias runs, and `X-Amz-Executed-Version` says which version.
//!
//! With `[auth]` configured, the caller must be a principal allowed to invoke the function
//! (its role, then the function's policy); see `crate::auth`.

use std::collections::HashMap;
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use impulse_config::{ASYNC_PAYLOAD_LIMIT, SYNC_PAYLOAD_LIMIT};
use impulse_invoker::{Invocation, InvokeError, Name};

use super::error::ApiError;
use super::{enqueue, throttled, AppState};
use crate::auth::{Action, RequestHead};
use crate::functions::CallError;

/// The trigger label the Invoke API's invocations carry in metrics.
const INVOKE_TRIGGER: &str = "invoke";

pub(super) async fn invoke(
    State(state): State<AppState>,
    Path(function): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Unknown callers are refused before the body is read.
    let credential = state.auth.identify(&headers).map_err(ApiError::from)?;
    let invocation_type = headers
        .get("x-amz-invocation-type")
        .map(|v| v.to_str().unwrap_or_default())
        .unwrap_or("RequestResponse");
    let limit = match invocation_type {
        "RequestResponse" | "DryRun" => SYNC_PAYLOAD_LIMIT,
        "Event" => ASYNC_PAYLOAD_LIMIT,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                format!(
                    "X-Amz-Invocation-Type must be RequestResponse, Event or DryRun, not {other:?}."
                ),
            ))
        }
    };
    let body = read_body(body, limit).await?;
    let (name, qualifier) = parse_function_name(&function);
    // A signature covers the body; the function's existence is only told to those who may
    // invoke it.
    let head = RequestHead {
        method: &method,
        uri: &uri,
        headers: &headers,
    };
    let principal = credential
        .confirm(&head, &body, SystemTime::now())
        .map_err(ApiError::from)?;
    state
        .auth
        .authorize(principal.as_ref(), Action::Invoke { function: name })
        .map_err(ApiError::from)?;

    let qualifier = qualifier_of(qualifier, &query)?;
    let Some(function) = state.functions.resolve(name, qualifier) else {
        return Err(ApiError::not_found(&qualified_arn(name, qualifier)));
    };
    if invocation_type == "DryRun" {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let payload = json_payload(body)?;
    let request_id = crate::request_id::new();
    if invocation_type == "Event" {
        enqueue(&state, &request_id, function, INVOKE_TRIGGER, payload).await?;
        let mut response = StatusCode::ACCEPTED.into_response();
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-amzn-requestid", value);
        }
        return Ok(response);
    }

    let log_tail = super::log_result::requested(&headers, invocation_type);
    let invocation = Invocation {
        request_id: request_id.clone(),
        function: function.name,
        trigger: Name::new(INVOKE_TRIGGER),
        payload,
        deadline: None,
        client_context: client_context(&headers)?,
        log_tail: log_tail.clone(),
    };
    let started = tokio::time::Instant::now();
    // A synchronous caller is never queued: admitted now, or 429 at once.
    let routed = function.route();
    let executed_version = HeaderValue::from_str(routed.version())
        .unwrap_or_else(|_| HeaderValue::from_static("$LATEST"));
    let mut response = match routed.call_now(invocation).await {
        Ok(response) => json_response(response.payload),
        Err(CallError::NotAdmitted(throttle)) => return Err(throttled(throttle)),
        Err(CallError::Failed(err)) => error_response(&err, &request_id, name)?,
    };
    let headers = response.headers_mut();
    headers.insert("x-amz-executed-version", executed_version);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("x-amzn-requestid", value);
    }
    if let Some(tail) = log_tail {
        let version = headers
            .get("x-amz-executed-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("$LATEST");
        if let Some(value) = super::log_result::header(&tail, &request_id, version, started).await {
            headers.insert("x-amz-log-result", value);
        }
    }
    Ok(response)
}

/// Accepts what Lambda accepts: a name, `name:qualifier`, a full or partial function ARN.
pub(super) fn parse_function_name(raw: &str) -> (&str, Option<&str>) {
    let rest = raw.split_once(":function:").map_or(raw, |(_, rest)| rest);
    match rest.split_once(':') {
        Some((name, qualifier)) => (name, Some(qualifier)),
        None => (rest, None),
    }
}

/// The qualifier of a call: the one in the function name, or the `Qualifier` query parameter;
/// both may be given only if they agree (Lambda's rule).
pub(super) fn qualifier_of<'a>(
    from_name: Option<&'a str>,
    query: &'a HashMap<String, String>,
) -> Result<Option<&'a str>, ApiError> {
    match (from_name, query.get("Qualifier").map(String::as_str)) {
        (Some(derived), Some(given)) if derived != given => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            "The derived qualifier from the function name does not match the specified \
             qualifier.",
        )),
        (derived, given) => Ok(given.or(derived)),
    }
}

/// The ARN a not-found error names: the function's, with the qualifier asked for.
pub(super) fn qualified_arn(name: &str, qualifier: Option<&str>) -> String {
    match qualifier {
        Some(qualifier) => impulse_invoker::record::version_arn(name, qualifier),
        None => impulse_invoker::record::unqualified_arn(name),
    }
}

/// Reads the body: at most `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            format!("Request must be smaller than {limit} bytes for the InvokeFunction operation"),
        )
    })
}

/// Lambda's largest `X-Amz-Client-Context`, base64 included.
const MAX_CLIENT_CONTEXT: usize = 3583;

/// `X-Amz-Client-Context`: base64 of a JSON object, passed to the function decoded (as compact
/// JSON, which is always a valid header value). Lambda passes it to synchronous invocations.
fn client_context(headers: &HeaderMap) -> Result<Option<HeaderValue>, ApiError> {
    use base64::Engine as _;
    let Some(raw) = headers.get("x-amz-client-context") else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            format!(
                "Client context must be a valid Base64-encoded JSON object of at most \
                 {MAX_CLIENT_CONTEXT} bytes."
            ),
        )
    };
    if raw.len() > MAX_CLIENT_CONTEXT {
        return Err(invalid());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw.as_bytes())
        .map_err(|_| invalid())?;
    let context: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&decoded).map_err(|_| invalid())?;
    let compact = serde_json::to_string(&context).map_err(|_| invalid())?;
    // serde_json escapes every control character but DEL, which a header value cannot hold.
    let compact = compact.replace('\u{7f}', "\\u007f");
    HeaderValue::from_bytes(compact.as_bytes())
        .map(Some)
        .map_err(|_| invalid())
}

/// The payload: valid JSON; an empty body is `{}` as in Lambda.
fn json_payload(bytes: Bytes) -> Result<Bytes, ApiError> {
    if bytes.is_empty() {
        return Ok(Bytes::from_static(b"{}"));
    }
    let invalid = |reason: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            format!("Could not parse request body into json: {reason}"),
        )
    };
    // JSON text is UTF-8 (RFC 8259 §8.1), inside strings too; serde_json checks strings only
    // when it keeps them, which a validation pass does not.
    let text = std::str::from_utf8(&bytes).map_err(|err| {
        invalid(format!(
            "invalid UTF-8 at byte {} of the payload",
            err.valid_up_to()
        ))
    })?;
    serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|err| invalid(err.to_string()))?;
    Ok(bytes)
}

fn json_response(payload: Bytes) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        payload,
    )
        .into_response()
}

/// Function errors and timeouts are results (200 with `X-Amz-Function-Error`), as in Lambda;
/// everything else is an API error.
fn error_response(
    err: &InvokeError,
    request_id: &str,
    function: &str,
) -> Result<Response, ApiError> {
    tracing::warn!(function, request_id, error_code = err.error_code(), error = %err, "Invocation failed.");
    match err {
        InvokeError::Function { .. } | InvokeError::Timeout { .. } => {
            // Lambda reports every function error as Unhandled; `Handled` is the one other
            // value an HTTP function may declare.
            let header = match err {
                InvokeError::Function { error_type, .. } if error_type == "Handled" => "Handled",
                _ => "Unhandled",
            };
            let mut response = json_response(err.document(request_id));
            response
                .headers_mut()
                .insert("x-amz-function-error", HeaderValue::from_static(header));
            Ok(response)
        }
        InvokeError::Throttled => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            "Rate Exceeded.",
        )
        .with_reason("FunctionEndpointThrottled")),
        InvokeError::Permanent { status: 413, .. } => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            "The function's endpoint refused the payload as too large.",
        )),
        err @ (InvokeError::System(_) | InvokeError::Permanent { .. }) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "ServiceException",
            format!("The function {function} could not be invoked: {err}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_function_name;

    #[test]
    fn function_names_and_arns() {
        assert_eq!(parse_function_name("hello"), ("hello", None));
        assert_eq!(
            parse_function_name("hello:$LATEST"),
            ("hello", Some("$LATEST"))
        );
        assert_eq!(
            parse_function_name("arn:aws:lambda:us-east-1:123456789012:function:hello"),
            ("hello", None)
        );
        assert_eq!(
            parse_function_name("123456789012:function:hello:prod"),
            ("hello", Some("prod"))
        );
    }
}
