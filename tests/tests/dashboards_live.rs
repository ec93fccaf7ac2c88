//! The Grafana dashboards and the alert rules against real data: `impulse` under a small mixed
//! load (sync HTTP with throttles, async invocations that fail and are dead-lettered, a Kafka
//! trigger with a filter and a poison record, process functions that start and one that cannot,
//! a destination that cannot be written, a Redis stream trigger with a poison entry, a schedule)
//! is scraped by the real Prometheus of `scripts/services.sh`; then every expression of every
//! dashboard panel and alert rule is run through Prometheus' HTTP API. Each must parse, and
//! every query of the overview dashboard must return data.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use impulse_tests::deploy::{
    alert_expressions, dashboard_expressions, instantiate, prometheus_query, Expression,
};
use impulse_tests::function::FunctionServer;
use impulse_tests::impulse::{binary, Impulse};
use impulse_tests::kafka::{create_topic, produce, producer};
use impulse_tests::services::{
    prometheus_set_targets, require_kafka, require_prometheus, require_redis,
};
use impulse_tests::wait::eventually;
use serde_json::{json, Value};

/// Bound on waiting for Prometheus to hold every overview series.
const WAIT: Duration = Duration::from_secs(45);
/// What `$__rate_interval` becomes: several of the test Prometheus' 1 s scrapes.
const RATE_INTERVAL: &str = "10s";
/// The function `$function` becomes in the per-function dashboard.
const FUNCTION: &str = "web";

/// Whether the event (an Invoke API payload, a Redis stream event's entry fields, or a Kafka
/// event's base64 record values) asks to fail.
fn asks_to_fail(event: &Value) -> bool {
    if event["fail"] == true {
        return true;
    }
    if let Some(entries) = event["Records"].as_array() {
        return entries
            .iter()
            .any(|entry| entry["fields"]["fail"] == "true");
    }
    let Some(groups) = event["records"].as_object() else {
        return false;
    };
    groups
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|record| record["value"].as_str())
        .filter_map(|value| base64::engine::general_purpose::STANDARD.decode(value).ok())
        .filter_map(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .any(|value| value["fail"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_expression_runs_against_a_scraped_impulse() {
    let started = Instant::now();
    let prometheus = require_prometheus().await;
    let bootstrap = require_kafka().await;
    let redis_url = require_redis().await;
    let topic = format!("dashboards-{}", uuid::Uuid::new_v4());
    create_topic(&bootstrap, &topic, 1).await;

    let function = FunctionServer::start(|event: Value| async move {
        if asks_to_fail(&event) {
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"errorType": "Poison", "errorMessage": "asked to fail"})),
            )
        } else {
            (axum::http::StatusCode::OK, axum::Json(json!({"ok": true})))
        }
    })
    .await;
    let endpoint = function.endpoint();
    let impulse_binary = binary().display().to_string();
    let impulse = Impulse::start(&format!(
        r#"
# Sync HTTP; also the Kafka trigger's function.
[functions.web]
target = {{ type = "http", endpoint = "{endpoint}" }}

# One call a second: the rest are throttled (429).
[functions.limited]
target = {{ type = "http", endpoint = "{endpoint}" }}
rate = {{ per_second = 1, burst = 1 }}

# Async: a failing event is retried once, then written to on_failure.
[functions.queued]
target = {{ type = "http", endpoint = "{endpoint}" }}
max_retry_attempts = 1
retry_delay = {{ base = "100ms", max = "100ms" }}
on_failure = {{ type = "log", name = "queued-failures" }}

# Async with an on_success destination nothing listens at: every write fails (and is retried).
[functions.unlucky]
target = {{ type = "http", endpoint = "{endpoint}" }}
on_success = {{ type = "redis", url = "redis://127.0.0.1:1", stream = "never" }}

# A process function (cold start, init duration, environments) ...
[functions.proc]
target = {{ type = "process", command = "{impulse_binary}", args = ["example-function"] }}

# ... and one whose init fails.
[functions.broken]
target = {{ type = "process", command = "/bin/false" }}

[triggers.orders]
type = "kafka"
function = "web"
bootstrap_servers = "{bootstrap}"
topics = ["{topic}"]
group_id = "{topic}-group"
starting_position = "earliest"
batch_window = "50ms"
max_retry_attempts = 0
filter = [ {{ value = {{ skip = [false] }} }} ]

# A poison entry fails once and is dropped.
[triggers.jobs]
type = "redis"
function = "web"
url = "{redis_url}"
stream = "{topic}"
starting_position = "earliest"
max_retry_attempts = 0

[triggers.tick]
type = "schedule"
function = "web"
expression = "rate(1 second)"
"#
    ))
    .await;
    prometheus_set_targets(&[impulse.admin]);

    // --- the load ---
    let client = reqwest::Client::new();
    let invoke = |name: &str| impulse.url(&format!("/2015-03-31/functions/{name}/invocations"));
    for body in [r#"{"n": 1}"#, r#"{"n": 2}"#, r#"{"fail": true}"#] {
        client
            .post(invoke("web"))
            .body(body)
            .send()
            .await
            .expect("invoke web");
    }
    let mut throttled = 0;
    for _ in 0..4 {
        let response = client
            .post(invoke("limited"))
            .body("{}")
            .send()
            .await
            .expect("invoke");
        throttled += usize::from(response.status() == 429);
    }
    assert!(throttled > 0, "the rate limit throttled nothing");
    for (name, body) in [
        ("queued", r#"{"ok": 1}"#),
        ("queued", r#"{"fail": true}"#),
        ("unlucky", r#"{"ok": 1}"#),
    ] {
        let response = client
            .post(invoke(name))
            .header("x-amz-invocation-type", "Event")
            .body(body)
            .send()
            .await
            .expect("invoke async");
        assert_eq!(response.status(), 202);
    }
    let response = client
        .post(invoke("proc"))
        .body("{}")
        .send()
        .await
        .expect("proc");
    assert_eq!(response.status(), 200, "the example function answers");
    let response = client
        .post(invoke("broken"))
        .body("{}")
        .send()
        .await
        .expect("broken");
    assert!(
        response.headers().contains_key("x-amz-function-error"),
        "a function whose init fails answers with a function error: {response:?}"
    );
    let kafka = producer(&bootstrap);
    for (i, value) in [
        r#"{"skip": false, "n": 1}"#,
        r#"{"skip": true, "n": 2}"#,
        r#"{"skip": false, "fail": true}"#,
        r#"{"skip": false, "n": 4}"#,
    ]
    .into_iter()
    .enumerate()
    {
        produce(&kafka, &topic, 0, &format!("k{i}"), value.as_bytes()).await;
    }

    let mut redis = redis::Client::open(redis_url.as_str())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    for fields in [["n", "1"], ["fail", "true"]] {
        redis::cmd("XADD")
            .arg(&topic)
            .arg("*")
            .arg(&fields)
            .query_async::<String>(&mut redis)
            .await
            .expect("XADD");
    }

    // --- every expression parses; every overview query returns data ---
    let mut expressions = dashboard_expressions();
    expressions.extend(alert_expressions());
    assert!(
        expressions.len() > 40,
        "only {} expressions found",
        expressions.len()
    );
    let run = |expression: &Expression| instantiate(&expression.expr, RATE_INTERVAL, FUNCTION);
    for expression in &expressions {
        if let Err(error) = prometheus_query(&client, &prometheus, &run(expression)).await {
            panic!("{}: {}\n{error}", expression.source, expression.expr);
        }
    }
    let overview: Vec<&Expression> = expressions.iter().filter(|e| e.overview).collect();
    assert!(overview.len() > 20, "{overview:?}");
    let empty = eventually("data for every overview query", WAIT, async || {
        let mut empty = BTreeMap::new();
        for expression in &overview {
            let data = prometheus_query(&client, &prometheus, &run(expression)).await?;
            if data["result"].as_array().is_none_or(Vec::is_empty) {
                empty.insert(expression.source.clone(), expression.expr.clone());
            }
        }
        if empty.is_empty() {
            Ok(())
        } else {
            Err(format!("{empty:#?}"))
        }
    })
    .await;
    prometheus_set_targets(&[]);
    empty.unwrap_or_else(|e| panic!("{e}"));

    // The per-function dashboard's queries find the function the variable names.
    let data = prometheus_query(
        &client,
        &prometheus,
        &format!(
            "sum by (function) (impulse_invocations_total{{function=\"{FUNCTION}\", instance=\"{}\"}})",
            impulse.admin
        ),
    )
    .await
    .expect("query");
    assert_eq!(data["result"][0]["metric"]["function"], FUNCTION);
    eprintln!(
        "dashboards_live: {} expressions checked in {:?}",
        expressions.len(),
        started.elapsed()
    );
}
