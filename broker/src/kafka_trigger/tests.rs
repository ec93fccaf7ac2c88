//! The Kafka batch decision loop ([`BatchContext::process`]) against a scripted function and a
//! destination that fails on demand, on paused time: retries and backoff, bisect, partial
//! batch responses, record expiry, dead-lettering, and shutdown mid-way.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use impulse_config::KafkaTriggerConfig;
use impulse_connectors::contract::{Name, Outcome, Sink};
use impulse_connectors::kafka::{AttemptStore, BatchOutcome, KafkaBatch, KafkaRecord, CREATE_TIME};
use impulse_invoker::InvocationResponse;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::batch::BatchContext;
use crate::test_support::{function, function_error, FlakySink, ScriptedTarget};

/// A trigger's settings over serde defaults.
fn trigger_config(settings: &Value) -> KafkaTriggerConfig {
    let mut config = json!({
        "function": "orders",
        "bootstrap_servers": "127.0.0.1:9092",
        "topics": ["orders"],
    });
    for (key, value) in settings.as_object().expect("settings are an object") {
        config[key] = value.clone();
    }
    serde_json::from_value(config).expect("a valid trigger config")
}

/// What a test drives, and what it looks at.
struct Harness {
    context: BatchContext,
    target: ScriptedTarget,
    shutdown: CancellationToken,
    /// Keeps the attempts file alive.
    _data_dir: tempfile::TempDir,
}

async fn harness(
    settings: Value,
    function_settings: Value,
    target: ScriptedTarget,
    on_failure: Option<Arc<FlakySink>>,
) -> Harness {
    let data_dir = tempfile::tempdir().expect("a temporary directory");
    let (context, shutdown) = context_in(
        data_dir.path(),
        settings,
        function_settings,
        &target,
        on_failure,
    )
    .await;
    Harness {
        context,
        target,
        shutdown,
        _data_dir: data_dir,
    }
}

/// The trigger's batch context, keeping its attempt counts in `data_dir`, and its shutdown.
async fn context_in(
    data_dir: &Path,
    settings: Value,
    function_settings: Value,
    target: &ScriptedTarget,
    on_failure: Option<Arc<FlakySink>>,
) -> (BatchContext, CancellationToken) {
    let mut settings = settings;
    if on_failure.is_some() {
        // The sink stands for this destination: configured, as the defaults depend on it.
        settings["on_failure"] = json!({ "type": "log", "name": "dlq" });
    }
    let config = trigger_config(&settings);
    let attempts = AttemptStore::open(data_dir, "orders-trigger", &config)
        .await
        .expect("the attempts file opens");
    let shutdown = CancellationToken::new();
    let context = BatchContext::kafka(
        "orders-trigger",
        &config,
        function("orders", function_settings, target),
        on_failure.map(|sink| sink as Arc<dyn Sink>),
        attempts,
        shutdown.clone(),
    );
    (context, shutdown)
}

/// A harness whose function always fails.
async fn failing_harness(settings: Value, on_failure: Option<&Arc<FlakySink>>) -> Harness {
    let target = ScriptedTarget::answering(|_| Err(function_error()));
    harness(settings, json!({}), target, on_failure.cloned()).await
}

/// Records at offsets `0..values.len()` of partition 0, written `age` ago.
fn batch_aged(values: &[&str], age: Duration) -> KafkaBatch {
    let written = SystemTime::now() - age;
    let millis = written
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis();
    let records = values
        .iter()
        .zip(0..)
        .map(|(value, offset)| KafkaRecord {
            topic: Name::new("orders"),
            partition: 0,
            offset,
            timestamp: Some(i64::try_from(millis).expect("fits")),
            timestamp_type: CREATE_TIME,
            key: None,
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: Vec::new(),
        })
        .collect();
    KafkaBatch {
        trigger: "orders-trigger".into(),
        topic: "orders".into(),
        partition: 0,
        records,
    }
}

fn batch(values: &[&str]) -> KafkaBatch {
    batch_aged(values, Duration::ZERO)
}

fn outcomes(outcome: &BatchOutcome) -> Vec<Option<Outcome>> {
    (0..outcome.len()).map(|i| outcome.get(i)).collect()
}

/// The offsets of the records in one invocation's Kafka event.
fn offsets(payload: &Bytes) -> Vec<i64> {
    let event: Value = serde_json::from_slice(payload).expect("the event is JSON");
    event["records"]["orders-0"]
        .as_array()
        .expect("records of orders-0")
        .iter()
        .map(|record| record["offset"].as_i64().expect("an offset"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_is_retried_with_backoff_until_it_succeeds() {
    let target = ScriptedTarget::new([Err(function_error()), Err(function_error())]);
    let h = harness(json!({}), json!({}), target, None).await;
    let started = Instant::now();
    let outcome = h.context.process(&batch(&["a", "b"]).records).await;
    assert_eq!(outcomes(&outcome), [Some(Outcome::Delivered); 2]);
    assert_eq!(h.target.calls(), 3);
    // 0.5 s, then 1 s: the stream backoff.
    assert_eq!(started.elapsed(), Duration::from_millis(1500));
}

#[tokio::test(start_paused = true)]
async fn retries_exhausted_dead_letter_every_record_with_lambdas_record() {
    let sink = FlakySink::failing(0);
    let h = failing_harness(json!({ "max_retry_attempts": 2 }), Some(&sink)).await;
    let outcome = h.context.process(&batch(&["a", "b"]).records).await;
    assert_eq!(outcomes(&outcome), [Some(Outcome::DeadLettered); 2]);
    assert_eq!(h.target.calls(), 3, "the first attempt and two retries");
    let written = sink.written();
    let keys: Vec<&str> = written.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["orders-0@0", "orders-0@1"]);
    let record = &written[0].1;
    assert_eq!(
        record["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    assert_eq!(record["responsePayload"]["errorType"], "Boom");
    assert_eq!(record["KafkaBatchInfo"]["startOffset"], 0);
    assert_eq!(offsets(&Bytes::from(record["payload"].to_string())), [0]);
}

#[tokio::test(start_paused = true)]
async fn a_destination_means_ten_retries_by_default() {
    let sink = FlakySink::failing(0);
    let h = failing_harness(json!({}), Some(&sink)).await;
    let outcome = h.context.process(&batch(&["a"]).records).await;
    assert_eq!(outcomes(&outcome), [Some(Outcome::DeadLettered); 1]);
    assert_eq!(h.target.calls(), 11);
}

#[tokio::test(start_paused = true)]
async fn without_a_destination_records_that_fail_for_good_are_dropped() {
    let h = failing_harness(json!({ "max_retry_attempts": 0 }), None).await;
    let outcome = h.context.process(&batch(&["a", "b"]).records).await;
    assert_eq!(outcomes(&outcome), [Some(Outcome::Dropped); 2]);
    assert_eq!(h.target.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn bisect_isolates_the_bad_record() {
    let sink = FlakySink::failing(0);
    let target = ScriptedTarget::answering(|invocation| {
        // The record at offset 2 is the bad one.
        if offsets(&invocation.payload).contains(&2) {
            Err(function_error())
        } else {
            Ok(crate::test_support::ok())
        }
    });
    let h = harness(
        json!({ "bisect_batch_on_error": true, "max_retry_attempts": 0 }),
        json!({}),
        target,
        Some(sink.clone()),
    )
    .await;
    let outcome = h
        .context
        .process(&batch(&["a", "b", "c", "d"]).records)
        .await;
    assert_eq!(
        outcomes(&outcome),
        [
            Some(Outcome::Delivered),
            Some(Outcome::Delivered),
            Some(Outcome::DeadLettered),
            Some(Outcome::Delivered),
        ]
    );
    let calls: Vec<Vec<i64>> = h.target.payloads().iter().map(offsets).collect();
    // Whole, halves in offset order, then the failing half's halves.
    assert_eq!(
        calls,
        [vec![0, 1, 2, 3], vec![0, 1], vec![2, 3], vec![2], vec![3]]
    );
    let keys: Vec<String> = sink.written().into_iter().map(|(key, _)| key).collect();
    assert_eq!(keys, ["orders-0@2"]);
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_response_retries_from_the_first_failed_record() {
    let partial = InvocationResponse {
        payload: Bytes::from_static(
            br#"{"batchItemFailures":[{"itemIdentifier":"orders-0@2"},{"itemIdentifier":"orders-0@3"}]}"#,
        ),
    };
    let target = ScriptedTarget::new([Ok(partial)]);
    let h = harness(
        json!({ "report_batch_item_failures": true }),
        json!({}),
        target,
        None,
    )
    .await;
    let recorder = impulse_test_support::metrics::RecordedMetrics::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let outcome = h
        .context
        .process(&batch(&["a", "b", "c", "d"]).records)
        .await;
    assert_eq!(outcomes(&outcome), [Some(Outcome::Delivered); 4]);
    let calls: Vec<Vec<i64>> = h.target.payloads().iter().map(offsets).collect();
    assert_eq!(calls, [vec![0, 1, 2, 3], vec![2, 3]]);
    assert_eq!(
        recorder.value("impulse_kafka_records_failed_invoke_total{trigger=orders-trigger}"),
        Some(2.0),
        "the records from the first reported failure on (FailedInvokeEventCount)"
    );
}

#[tokio::test(start_paused = true)]
async fn expired_records_go_to_the_destination_without_an_invocation() {
    let sink = FlakySink::failing(0);
    let target = ScriptedTarget::default();
    let h = harness(
        json!({ "max_record_age": "60s" }),
        json!({}),
        target,
        Some(sink.clone()),
    )
    .await;
    let outcome = h
        .context
        .process(&batch_aged(&["old", "older"], Duration::from_secs(61)).records)
        .await;
    assert_eq!(outcomes(&outcome), [Some(Outcome::DeadLettered); 2]);
    assert_eq!(h.target.calls(), 0);
    let written = sink.written();
    assert_eq!(written.len(), 2);
    assert_eq!(
        written[0].1["requestContext"]["condition"],
        "MaximumRecordAgeExceeded"
    );
    assert!(written[0].1.get("responsePayload").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_failed_destination_write_is_retried_and_the_record_waits() {
    let sink = FlakySink::failing(2);
    let h = failing_harness(json!({ "max_retry_attempts": 0 }), Some(&sink)).await;
    let started = Instant::now();
    let outcome = h.context.process(&batch(&["a"]).records).await;
    assert_eq!(outcomes(&outcome), [Some(Outcome::DeadLettered); 1]);
    assert_eq!(sink.written().len(), 1);
    // Two refused writes: 0.5 s and 1 s of backoff before the third.
    assert_eq!(started.elapsed(), Duration::from_millis(1500));
}

#[tokio::test(start_paused = true)]
async fn a_record_whose_destination_write_never_succeeds_is_not_acked_at_shutdown() {
    let sink = FlakySink::failing(u32::MAX);
    let h = failing_harness(json!({ "max_retry_attempts": 0 }), Some(&sink)).await;
    let shutdown = h.shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        shutdown.cancel();
    });
    let outcome = h.context.process(&batch(&["a", "b"]).records).await;
    assert_eq!(
        outcome.abandoned(),
        2,
        "no record may be acked: {outcome:?}"
    );
    assert!(sink.written().is_empty());
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_backoff_leaves_the_batch_unacked() {
    let h = failing_harness(json!({}), None).await;
    let shutdown = h.shutdown.clone();
    tokio::spawn(async move {
        // Inside the third backoff (0.5 s + 1 s + 2 s).
        tokio::time::sleep(Duration::from_secs(2)).await;
        shutdown.cancel();
    });
    let started = Instant::now();
    let outcome = h.context.process(&batch(&["a", "b"]).records).await;
    assert_eq!(outcome.abandoned(), 2, "nothing acked: {outcome:?}");
    assert_eq!(h.target.calls(), 3);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "shutdown ends the wait at once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_disabled_function_holds_the_batch_until_shutdown() {
    let target = ScriptedTarget::default();
    let h = harness(
        json!({}),
        json!({ "reserved_concurrency": 0 }),
        target,
        None,
    )
    .await;
    let shutdown = h.shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(300)).await;
        shutdown.cancel();
    });
    let outcome = h.context.process(&batch(&["a"]).records).await;
    assert_eq!(outcome.abandoned(), 1, "nothing acked: {outcome:?}");
    assert_eq!(h.target.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn attempt_counts_survive_a_restart_of_the_batch() {
    // The first run fails twice and stops at shutdown; the second, with the same attempts
    // file, counts on from 2: one more failure exhausts `max_retry_attempts = 2`.
    let data_dir = tempfile::tempdir().expect("a temporary directory");
    let run = |shutdown_after: Option<Duration>| {
        let dir = data_dir.path().to_owned();
        async move {
            let target = ScriptedTarget::answering(|_| Err(function_error()));
            let settings = json!({ "max_retry_attempts": 2 });
            let (context, shutdown) = context_in(&dir, settings, json!({}), &target, None).await;
            if let Some(after) = shutdown_after {
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    shutdown.cancel();
                });
            }
            let outcome = context.process(&batch(&["a"]).records).await;
            (outcome, target.calls())
        }
    };
    let (first, calls) = run(Some(Duration::from_millis(1200))).await;
    assert_eq!((first.abandoned(), calls), (1, 2));
    let (second, calls) = run(None).await;
    assert_eq!(
        (outcomes(&second), calls),
        (vec![Some(Outcome::Dropped)], 1)
    );
}
