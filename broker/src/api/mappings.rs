//! Lambda's event-source-mapping read API: `ListEventSourceMappings`
//! (`GET /2015-03-31/event-source-mappings/`) and `GetEventSourceMapping`
//! (`GET /2015-03-31/event-source-mappings/{UUID}`).
//!
//! Kafka and Redis triggers are the mappings, in Lambda's `EventSourceMappingConfiguration`
//! shape, built once from the configuration. A mapping's `UUID` is a v5 UUID of its trigger
//! name, so it stays the same across restarts. Documents hold no secret: no Redis URL (it may
//! carry a password), no librdkafka options. With `[auth]`, reading needs the `read-only` or
//! `admin` role, as the function read API.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use impulse_config::{
    Config, DestinationConfig, KafkaTriggerConfig, RedisTriggerConfig, StartingPosition,
    TriggerConfig,
};
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;

/// `ListEventSourceMappings`' default page, as Lambda's (its largest is `ListFunctions`').
const DEFAULT_PAGE: usize = 100;

/// The namespace of the mappings' v5 UUIDs (fixed: a trigger's UUID must not change).
const MAPPING_NAMESPACE: uuid::Uuid = uuid::uuid!("6170409c-0ad5-4290-b8f4-87a85e416dc8");

/// Every Kafka and Redis trigger's `EventSourceMappingConfiguration`, by trigger name.
#[derive(Debug, Default)]
pub(crate) struct Mappings {
    by_trigger: BTreeMap<String, Mapping>,
}

#[derive(Debug)]
struct Mapping {
    uuid: String,
    /// The function the trigger invokes, as configured (a name, maybe `name:qualifier`).
    function: String,
    document: Value,
}

impl Mappings {
    /// The documents for `config`'s Kafka and Redis triggers; `last_modified` is when the
    /// broker loaded it.
    pub(crate) fn new(config: &Config, last_modified: chrono::DateTime<chrono::Utc>) -> Self {
        // A `timestamp` member: epoch seconds in Lambda's JSON protocol.
        let last_modified = last_modified.timestamp_millis() as f64 / 1000.0;
        let by_trigger = config
            .triggers
            .iter()
            .filter_map(|(name, trigger)| {
                let uuid = mapping_uuid(name);
                let mut document = match trigger {
                    TriggerConfig::Kafka(kafka) => kafka_document(name, kafka),
                    TriggerConfig::Redis(redis) => redis_document(redis),
                    TriggerConfig::Http(_) | TriggerConfig::Schedule(_) => return None,
                };
                let common = json!({
                    "UUID": uuid,
                    "FunctionArn": function_arn(trigger.function()),
                    "LastModified": last_modified,
                    "LastProcessingResult": "No records processed",
                    // A configured trigger runs from the start; there is no disabling it.
                    "State": "Enabled",
                    "StateTransitionReason": "USER_INITIATED",
                });
                merge(&mut document, common);
                let mapping = Mapping {
                    uuid,
                    function: trigger.function().to_owned(),
                    document,
                };
                Some((name.clone(), mapping))
            })
            .collect();
        Self { by_trigger }
    }
}

/// A trigger's mapping UUID: stable for its name.
pub(crate) fn mapping_uuid(trigger: &str) -> String {
    uuid::Uuid::new_v5(&MAPPING_NAMESPACE, trigger.as_bytes()).to_string()
}

/// The ARN of a (possibly qualified, `name:qualifier`) function, as the read API writes it.
fn function_arn(function: &str) -> String {
    match impulse_config::split_qualifier(function) {
        (name, Some(qualifier)) => impulse_invoker::record::version_arn(name, qualifier),
        (name, None) => impulse_invoker::record::unqualified_arn(name),
    }
}

fn merge(document: &mut Value, more: Value) {
    if let (Value::Object(document), Value::Object(more)) = (document, more) {
        document.extend(more);
    }
}

/// A self-managed Kafka source, as Lambda describes one.
fn kafka_document(trigger: &str, kafka: &KafkaTriggerConfig) -> Value {
    let endpoints: Vec<&str> = kafka
        .bootstrap_servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let group = kafka.consumer_group(trigger);
    let mut document = json!({
        "StartingPosition": match kafka.starting_position {
            StartingPosition::Latest => "LATEST",
            StartingPosition::Earliest => "TRIM_HORIZON",
            StartingPosition::AtTimestamp => "AT_TIMESTAMP",
        },
        "BatchSize": kafka.batch_size,
        "MaximumBatchingWindowInSeconds": kafka.batch_window.as_secs(),
        "Topics": kafka.topics,
        "SelfManagedEventSource": { "Endpoints": { "KAFKA_BOOTSTRAP_SERVERS": endpoints } },
        "SelfManagedKafkaEventSourceConfig": { "ConsumerGroupId": group },
        // Lambda's -1: retry until the record expires; infinite age.
        "MaximumRetryAttempts": kafka.retry_limit().map_or(-1, i64::from),
        "MaximumRecordAgeInSeconds": kafka.max_record_age.map_or(-1, |age| {
            i64::try_from(age.as_secs()).unwrap_or(i64::MAX)
        }),
        "BisectBatchOnFunctionError": kafka.bisect_batch_on_error,
        "FunctionResponseTypes": if kafka.report_batch_item_failures {
            vec!["ReportBatchItemFailures"]
        } else {
            Vec::new()
        },
    });
    if let Some(at) = kafka.starting_timestamp {
        document["StartingPositionTimestamp"] = json!(at.timestamp_millis() as f64 / 1000.0);
    }
    let patterns = kafka.filter.patterns();
    if !patterns.is_empty() {
        // Lambda's `FilterCriteria`: each pattern as a JSON string.
        let filters: Vec<Value> = patterns
            .iter()
            .map(|pattern| json!({ "Pattern": pattern.to_string() }))
            .collect();
        document["FilterCriteria"] = json!({ "Filters": filters });
    }
    if let Some(destination) = &kafka.on_failure {
        document["DestinationConfig"] = destination_config(destination);
    }
    document
}

/// A Redis stream: no Lambda source type reads one; its ARN names the stream only (the URL
/// may carry a password).
fn redis_document(redis: &RedisTriggerConfig) -> Value {
    let mut document = json!({
        "EventSourceArn": format!("arn:impulse:redis:local:000000000000:stream/{}", redis.stream),
        "StartingPosition": "LATEST",
        "BatchSize": redis.batch_size,
        "MaximumRetryAttempts": redis.max_retry_attempts.map_or(-1, i64::from),
    });
    if let Some(destination) = &redis.on_failure {
        document["DestinationConfig"] = destination_config(destination);
    }
    document
}

/// Lambda's `DestinationConfig` for an `on_failure` destination.
fn destination_config(destination: &DestinationConfig) -> Value {
    let arn = match destination {
        DestinationConfig::Log(log) => format!("arn:impulse:log:local:000000000000:{}", log.name),
        DestinationConfig::Redis(redis) => format!(
            "arn:impulse:redis:local:000000000000:stream/{}",
            redis.stream
        ),
        // Lambda's form for a Kafka topic destination.
        DestinationConfig::Kafka(kafka) => format!("kafka://{}", kafka.topic),
    };
    json!({ "OnSuccess": {}, "OnFailure": { "Destination": arn } })
}

/// `ListEventSourceMappings`: mappings in trigger-name order, `MaxItems` at a time, filtered by
/// `FunctionName` (a name or ARN; with a qualifier, only mappings of that qualifier) and
/// `EventSourceArn`.
pub(super) async fn list_mappings(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    super::read::authorize(&state, &method, &uri, &headers)?;
    let page = super::read::page_size(&query, DEFAULT_PAGE)?;
    let function = query
        .get("FunctionName")
        .map(|raw| super::invoke::parse_function_name(raw));
    let source = query.get("EventSourceArn").map(String::as_str);
    let after = query.get("Marker").map(String::as_str);
    let mut rest = state
        .mappings
        .by_trigger
        .iter()
        .filter(|(name, _)| after.is_none_or(|after| name.as_str() > after))
        .filter(|(_, mapping)| {
            function.is_none_or(|(name, qualifier)| {
                let (own_name, own_qualifier) =
                    super::invoke::parse_function_name(&mapping.function);
                own_name == name && qualifier.is_none_or(|q| own_qualifier == Some(q))
            })
        })
        .filter(|(_, mapping)| {
            source.is_none_or(|arn| mapping.document["EventSourceArn"].as_str() == Some(arn))
        });
    let page: Vec<(&String, &Mapping)> = rest.by_ref().take(page).collect();
    let mut body = json!({
        "EventSourceMappings": page.iter().map(|(_, m)| &m.document).collect::<Vec<_>>(),
    });
    if rest.next().is_some() {
        if let Some((last, _)) = page.last() {
            body["NextMarker"] = json!(last);
        }
    }
    Ok(Json(body).into_response())
}

/// `GetEventSourceMapping`.
pub(super) async fn get_mapping(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    super::read::authorize(&state, &method, &uri, &headers)?;
    state
        .mappings
        .by_trigger
        .values()
        .find(|mapping| mapping.uuid == uuid)
        .map(|mapping| Json(mapping.document.clone()).into_response())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                format!("The resource you requested does not exist: event source mapping {uuid}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::{mapping_uuid, Mappings};

    #[test]
    fn kafka_and_redis_triggers_are_mappings_without_secrets() {
        let text = r#"
[functions.orders]
target = { type = "http", endpoint = "http://127.0.0.1:1/" }

[triggers.web]
type = "http"
function = "orders"
path = "/orders"

[triggers.orders-in]
type = "kafka"
function = "orders"
bootstrap_servers = "k1:9092, k2:9092"
topics = ["orders"]
batch_size = 50
starting_position = "earliest"
report_batch_item_failures = true
on_failure = { type = "log", name = "orders-dlq" }

[triggers.jobs]
type = "redis"
function = "orders"
url = "redis://:hunter2-canary@127.0.0.1:6379/0"
stream = "jobs"
"#;
        let config = impulse_config::parse(
            text,
            impulse_config::Format::Toml,
            "t.toml",
            &HashMap::new(),
        )
        .expect("valid config");
        let mappings = Mappings::new(&config, chrono::Utc::now());
        assert_eq!(
            mappings.by_trigger.keys().collect::<Vec<_>>(),
            ["jobs", "orders-in"]
        );
        let kafka = &mappings.by_trigger["orders-in"].document;
        assert_eq!(kafka["UUID"], mapping_uuid("orders-in"));
        assert_eq!(kafka["State"], "Enabled");
        assert_eq!(kafka["Topics"], json!(["orders"]));
        assert_eq!(kafka["BatchSize"], 50);
        assert_eq!(kafka["StartingPosition"], "TRIM_HORIZON");
        assert_eq!(
            kafka["SelfManagedEventSource"]["Endpoints"]["KAFKA_BOOTSTRAP_SERVERS"],
            json!(["k1:9092", "k2:9092"])
        );
        assert_eq!(
            kafka["SelfManagedKafkaEventSourceConfig"]["ConsumerGroupId"],
            "impulse-orders-in"
        );
        // An on-failure destination makes Lambda's default retries 10.
        assert_eq!(kafka["MaximumRetryAttempts"], 10);
        assert_eq!(
            kafka["FunctionResponseTypes"],
            json!(["ReportBatchItemFailures"])
        );
        assert_eq!(
            kafka["DestinationConfig"]["OnFailure"]["Destination"],
            "arn:impulse:log:local:000000000000:orders-dlq"
        );
        let redis = &mappings.by_trigger["jobs"].document;
        assert_eq!(
            redis["EventSourceArn"],
            "arn:impulse:redis:local:000000000000:stream/jobs"
        );
        assert_eq!(
            redis["FunctionArn"],
            "arn:aws:lambda:local:000000000000:function:orders"
        );
        assert!(!redis.to_string().contains("hunter2-canary"), "{redis}");
    }

    #[test]
    fn a_trigger_keeps_its_uuid() {
        assert_eq!(mapping_uuid("orders"), mapping_uuid("orders"));
        assert_ne!(mapping_uuid("orders"), mapping_uuid("orders2"));
        assert_eq!(
            uuid::Uuid::parse_str(&mapping_uuid("orders"))
                .expect("a uuid")
                .get_version_num(),
            5
        );
    }
}
