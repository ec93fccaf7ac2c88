//! Lambda's invocation record, written to `on_success` and `on_failure` destinations.
//!
//! Impulse has no ARNs; `functionArn` is `arn:aws:lambda:local:000000000000:function:<name>:$LATEST`
//! — stable, and shaped like Lambda's so that tools parsing ARNs keep working.

use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

/// The `functionArn` Impulse reports for `function`.
pub fn function_arn(function: &str) -> String {
    format!("arn:aws:lambda:local:000000000000:function:{function}:$LATEST")
}

/// The parts of a record that differ between outcomes.
#[derive(Debug, Clone)]
pub struct RecordInput<'a> {
    /// The request id (the event's idempotency key).
    pub request_id: &'a str,
    /// The function's name.
    pub function: &'a str,
    /// `Success`, `RetriesExhausted` or `EventAgeExceeded`.
    pub condition: &'a str,
    /// Attempts made.
    pub approximate_invoke_count: u32,
    /// The event as the function received it.
    pub request_payload: &'a [u8],
    /// The function's result or error document, when there was one.
    pub response_payload: Option<&'a [u8]>,
    /// `Unhandled` for function errors and timeouts, absent on success.
    pub function_error: Option<&'a str>,
    /// When the outcome became final.
    pub timestamp: SystemTime,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    version: &'static str,
    timestamp: String,
    request_context: RequestContext<'a>,
    request_payload: Payload<'a>,
    response_context: ResponseContext<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_payload: Option<Payload<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestContext<'a> {
    request_id: &'a str,
    function_arn: String,
    condition: &'a str,
    approximate_invoke_count: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseContext<'a> {
    status_code: u16,
    executed_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_error: Option<&'a str>,
}

/// A payload embedded as JSON when it is JSON, as a string otherwise.
#[derive(Serialize)]
#[serde(untagged)]
enum Payload<'a> {
    Json(&'a RawValue),
    Text(std::borrow::Cow<'a, str>),
}

fn payload(bytes: &[u8]) -> Payload<'_> {
    match std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| serde_json::from_str::<&RawValue>(s).ok())
    {
        Some(raw) => Payload::Json(raw),
        None => Payload::Text(String::from_utf8_lossy(bytes)),
    }
}

/// Builds the record as JSON bytes.
pub fn invocation_record(input: &RecordInput<'_>) -> Bytes {
    let timestamp = chrono::DateTime::<chrono::Utc>::from(input.timestamp)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let record = Record {
        version: "1.0",
        timestamp,
        request_context: RequestContext {
            request_id: input.request_id,
            function_arn: function_arn(input.function),
            condition: input.condition,
            approximate_invoke_count: input.approximate_invoke_count,
        },
        request_payload: payload(input.request_payload),
        response_context: ResponseContext {
            status_code: 200,
            executed_version: "$LATEST",
            function_error: input.function_error,
        },
        response_payload: input.response_payload.map(payload),
    };
    // Strings, numbers and already-valid JSON fragments always serialise.
    Bytes::from(serde_json::to_vec(&record).expect("the record serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn failure_record_has_lambdas_shape() {
        let record = invocation_record(&RecordInput {
            request_id: "req-1",
            function: "orders",
            condition: "RetriesExhausted",
            approximate_invoke_count: 3,
            request_payload: br#"{"orderId":"9e07af03"}"#,
            response_payload: Some(br#"{"errorMessage":"no","errorType":"Oops"}"#),
            function_error: Some("Unhandled"),
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_millis(1_573_755_365_568),
        });
        let value: serde_json::Value = serde_json::from_slice(&record).expect("json");
        assert_eq!(
            value,
            json!({
                "version": "1.0",
                "timestamp": "2019-11-14T18:16:05.568Z",
                "requestContext": {
                    "requestId": "req-1",
                    "functionArn": "arn:aws:lambda:local:000000000000:function:orders:$LATEST",
                    "condition": "RetriesExhausted",
                    "approximateInvokeCount": 3
                },
                "requestPayload": { "orderId": "9e07af03" },
                "responseContext": {
                    "statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"
                },
                "responsePayload": { "errorMessage": "no", "errorType": "Oops" }
            })
        );
    }

    #[test]
    fn non_json_payloads_become_strings_and_missing_ones_are_omitted() {
        let record = invocation_record(&RecordInput {
            request_id: "r",
            function: "f",
            condition: "EventAgeExceeded",
            approximate_invoke_count: 0,
            request_payload: b"plain",
            response_payload: None,
            function_error: None,
            timestamp: SystemTime::UNIX_EPOCH,
        });
        let value: serde_json::Value = serde_json::from_slice(&record).expect("json");
        assert_eq!(value["requestPayload"], "plain");
        assert!(value.get("responsePayload").is_none());
        assert!(value["responseContext"].get("functionError").is_none());
    }
}
