//! Lambda's destination records, written to `on_success` and `on_failure` destinations: the
//! invocation record of async events and the failure record of stream batches, from one
//! builder.
//!
//! Impulse has no ARNs; `functionArn` is `arn:aws:lambda:local:000000000000:function:<name>:<qualifier>`
//! — the qualifier the function was called with (a version, an alias, `$LATEST` when
//! unqualified): stable, and shaped like Lambda's so that tools parsing ARNs keep working.

use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::retry::FailureCondition;
use crate::InvokeError;

/// The `functionArn` Impulse reports for `function`: a name (reported as `$LATEST`) or a
/// qualified `name:qualifier`.
pub fn function_arn(function: &str) -> String {
    match function.split_once(':') {
        Some((name, qualifier)) => version_arn(name, qualifier),
        None => version_arn(function, "$LATEST"),
    }
}

/// The ARN of `qualifier` (a version, an alias or `$LATEST`) of function `name`.
pub fn version_arn(name: &str, qualifier: &str) -> String {
    format!("{}:{qualifier}", unqualified_arn(name))
}

/// The ARN of function `name` without a qualifier (Lambda's name for the function itself).
pub fn unqualified_arn(name: &str) -> String {
    format!("arn:aws:lambda:local:000000000000:function:{name}")
}

/// How the invocation ended, as the record reports it.
#[derive(Debug, Clone, Copy)]
pub enum RecordOutcome<'a> {
    /// The function succeeded with this result (on-success records).
    Success {
        /// The function's result.
        response: &'a [u8],
    },
    /// The event failed for good (on-failure records).
    Failure {
        /// Why.
        condition: FailureCondition,
        /// The last attempt's error, when there was an attempt; its document becomes
        /// `responsePayload` and `functionError` is `Unhandled`.
        error: Option<&'a InvokeError>,
    },
}

/// What was invoked: Lambda's two record shapes.
#[derive(Debug, Clone, Copy)]
pub enum RecordSource<'a> {
    /// An async invocation: the event becomes `requestPayload`.
    Invocation {
        /// The event as the function received it.
        request_payload: &'a [u8],
    },
    /// Records of an event source mapping (Kafka): `<info_field>` describes where they sit in
    /// their stream, and `payload` holds them as the function's event.
    Batch {
        /// `KafkaBatchInfo`, …
        info_field: &'static str,
        /// The batch's position (topic, partition, offsets, …) as a JSON object.
        info: &'a RawValue,
        /// The records, as an event.
        payload: &'a [u8],
    },
}

/// A record for an `on_success` or `on_failure` destination: the one builder every source uses.
#[derive(Debug, Clone, Copy)]
pub struct DestinationRecord<'a> {
    /// The request id (the event's idempotency key, or the record's identifier).
    pub request_id: &'a str,
    /// The function as it was called: a name, or `name:qualifier` (a version or an alias);
    /// `functionArn` is its ARN.
    pub function: &'a str,
    /// The version that ran (`$LATEST`, `1`, …): `executedVersion`.
    pub executed_version: &'a str,
    /// Attempts made.
    pub approximate_invoke_count: u32,
    /// Success or why it failed.
    pub outcome: RecordOutcome<'a>,
    /// What was invoked.
    pub source: RecordSource<'a>,
    /// When the outcome became final.
    pub timestamp: SystemTime,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    version: &'static str,
    timestamp: String,
    request_context: RequestContext<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_payload: Option<Payload<'a>>,
    response_context: ResponseContext<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_payload: Option<Payload<'a>>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    batch: Option<BatchPart<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestContext<'a> {
    request_id: &'a str,
    function_arn: String,
    condition: &'static str,
    approximate_invoke_count: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseContext<'a> {
    status_code: u16,
    executed_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_error: Option<&'static str>,
}

/// The batch fields of a stream record: `<info_field>` and `payload`.
struct BatchPart<'a> {
    info_field: &'static str,
    info: &'a RawValue,
    payload: Payload<'a>,
}

impl Serialize for BatchPart<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry(self.info_field, self.info)?;
        map.serialize_entry("payload", &self.payload)?;
        map.end()
    }
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

impl DestinationRecord<'_> {
    /// Lambda's `condition` for this record: `Success`, and for failures the vocabulary of the
    /// record's shape.
    pub fn condition(&self) -> &'static str {
        let RecordOutcome::Failure { condition, .. } = self.outcome else {
            return "Success";
        };
        match (self.source, condition) {
            (RecordSource::Invocation { .. }, FailureCondition::RetriesExhausted) => {
                "RetriesExhausted"
            }
            (RecordSource::Invocation { .. }, FailureCondition::AgeExceeded) => "EventAgeExceeded",
            (RecordSource::Batch { .. }, FailureCondition::RetriesExhausted) => {
                "RetryAttemptsExhausted"
            }
            (RecordSource::Batch { .. }, FailureCondition::AgeExceeded) => {
                "MaximumRecordAgeExceeded"
            }
        }
    }

    /// The record as JSON bytes.
    pub fn to_bytes(&self) -> Bytes {
        let timestamp = chrono::DateTime::<chrono::Utc>::from(self.timestamp)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let error_document = match self.outcome {
            RecordOutcome::Failure {
                error: Some(error), ..
            } => Some(error.document(self.request_id)),
            _ => None,
        };
        let (response_payload, function_error) = match (self.outcome, &error_document) {
            (RecordOutcome::Success { response }, _) => (Some(payload(response)), None),
            (_, Some(document)) => (Some(payload(document)), Some("Unhandled")),
            (_, None) => (None, None),
        };
        let (request_payload, batch) = match self.source {
            RecordSource::Invocation { request_payload } => (Some(payload(request_payload)), None),
            RecordSource::Batch {
                info_field,
                info,
                payload: records,
            } => (
                None,
                Some(BatchPart {
                    info_field,
                    info,
                    payload: payload(records),
                }),
            ),
        };
        let record = Record {
            version: "1.0",
            timestamp,
            request_context: RequestContext {
                request_id: self.request_id,
                function_arn: function_arn(self.function),
                condition: self.condition(),
                approximate_invoke_count: self.approximate_invoke_count,
            },
            request_payload,
            response_context: ResponseContext {
                status_code: 200,
                executed_version: self.executed_version,
                function_error,
            },
            response_payload,
            batch,
        };
        // Strings, numbers and already-valid JSON fragments always serialise.
        Bytes::from(serde_json::to_vec(&record).expect("the record serialises"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn parsed(record: &DestinationRecord<'_>) -> serde_json::Value {
        serde_json::from_slice(&record.to_bytes()).expect("json")
    }

    #[test]
    fn failure_record_has_lambdas_shape() {
        let error = InvokeError::Function {
            error_type: "Unhandled".into(),
            payload: Bytes::from_static(br#"{"errorMessage":"no","errorType":"Oops"}"#),
        };
        let record = DestinationRecord {
            request_id: "req-1",
            function: "orders",
            executed_version: "$LATEST",
            approximate_invoke_count: 3,
            outcome: RecordOutcome::Failure {
                condition: FailureCondition::RetriesExhausted,
                error: Some(&error),
            },
            source: RecordSource::Invocation {
                request_payload: br#"{"orderId":"9e07af03"}"#,
            },
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_millis(1_573_755_365_568),
        };
        assert_eq!(
            parsed(&record),
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
        let record = DestinationRecord {
            request_id: "r",
            function: "f",
            executed_version: "$LATEST",
            approximate_invoke_count: 0,
            outcome: RecordOutcome::Failure {
                condition: FailureCondition::AgeExceeded,
                error: None,
            },
            source: RecordSource::Invocation {
                request_payload: b"plain",
            },
            timestamp: SystemTime::UNIX_EPOCH,
        };
        let value = parsed(&record);
        assert_eq!(value["requestContext"]["condition"], "EventAgeExceeded");
        assert_eq!(value["requestPayload"], "plain");
        assert!(value.get("responsePayload").is_none());
        assert!(value["responseContext"].get("functionError").is_none());
    }

    #[test]
    fn a_timeout_carries_lambdas_error_document() {
        let error = InvokeError::Timeout {
            after: Duration::from_secs(2),
        };
        let record = DestinationRecord {
            request_id: "req-9",
            function: "f",
            executed_version: "$LATEST",
            approximate_invoke_count: 3,
            outcome: RecordOutcome::Failure {
                condition: FailureCondition::RetriesExhausted,
                error: Some(&error),
            },
            source: RecordSource::Invocation {
                request_payload: b"{}",
            },
            timestamp: SystemTime::UNIX_EPOCH,
        };
        let value = parsed(&record);
        assert_eq!(value["responsePayload"]["errorType"], "Sandbox.Timedout");
        assert_eq!(value["responseContext"]["functionError"], "Unhandled");
    }

    #[test]
    fn batch_records_carry_their_position_and_records() {
        let info = RawValue::from_string(r#"{"topic":"orders","partition":0}"#.to_owned())
            .expect("valid JSON");
        let record = DestinationRecord {
            request_id: "orders-0@15",
            function: "f",
            executed_version: "$LATEST",
            approximate_invoke_count: 11,
            outcome: RecordOutcome::Failure {
                condition: FailureCondition::AgeExceeded,
                error: None,
            },
            source: RecordSource::Batch {
                info_field: "KafkaBatchInfo",
                info: &info,
                payload: br#"{"records":{}}"#,
            },
            timestamp: SystemTime::UNIX_EPOCH,
        };
        let value = parsed(&record);
        assert_eq!(
            value["requestContext"]["condition"],
            "MaximumRecordAgeExceeded"
        );
        assert_eq!(value["KafkaBatchInfo"]["topic"], "orders");
        assert_eq!(value["payload"], json!({ "records": {} }));
        assert!(value.get("requestPayload").is_none());
        let exhausted = DestinationRecord {
            outcome: RecordOutcome::Failure {
                condition: FailureCondition::RetriesExhausted,
                error: None,
            },
            ..record
        };
        assert_eq!(exhausted.condition(), "RetryAttemptsExhausted");
    }

    #[test]
    fn a_qualified_call_reports_its_arn_and_the_version_that_ran() {
        let record = DestinationRecord {
            request_id: "req-2",
            function: "orders:live",
            executed_version: "2",
            approximate_invoke_count: 1,
            outcome: RecordOutcome::Success { response: b"{}" },
            source: RecordSource::Invocation {
                request_payload: b"{}",
            },
            timestamp: SystemTime::UNIX_EPOCH,
        };
        let value = parsed(&record);
        assert_eq!(
            value["requestContext"]["functionArn"],
            "arn:aws:lambda:local:000000000000:function:orders:live"
        );
        assert_eq!(value["responseContext"]["executedVersion"], "2");
        assert_eq!(
            function_arn("orders"),
            "arn:aws:lambda:local:000000000000:function:orders:$LATEST"
        );
    }
}
