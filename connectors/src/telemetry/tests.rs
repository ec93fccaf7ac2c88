//! Telemetry handle tests: exact names and labels, one registration per series, lazy
//! registration of invocation handles.

use std::time::Duration;

use impulse_test_support::metrics::RecordedMetrics;

use super::{
    ConcurrencyGauge, InvocationMetrics, InvocationOutcome, KafkaPartitionCounts,
    KafkaSourceMetrics,
};
use crate::contract::Name;

// === helpers ===

/// The metrics the test recorded.
#[derive(Debug, Default)]
struct Recorded(RecordedMetrics);

impl Recorded {
    fn value(&self, series: &str) -> Option<f64> {
        self.0.value(series)
    }

    fn samples(&self, series: &str) -> Vec<f64> {
        self.0.samples(series)
    }

    fn registrations(&self) -> Vec<(String, usize)> {
        self.0.registrations()
    }
}

const SUCCESS: &str =
    "impulse_invocations_total{function=f,version=$LATEST,trigger=orders,outcome=success}";
const TIMEOUT: &str =
    "impulse_invocations_total{function=f,version=$LATEST,trigger=orders,outcome=timeout}";
const INVOKE: &str =
    "impulse_invocations_total{function=f,version=$LATEST,trigger=invoke,outcome=success}";
const DURATION: &str = "impulse_invocation_duration_seconds{function=f,version=$LATEST}";
const GAUGE: &str = "impulse_concurrent_executions{function=f}";

// === ConcurrencyGauge ===

#[test]
fn concurrency_gauge_counts_permits_with_one_registration() {
    let recorder = Recorded::default();
    let _local = metrics::set_default_local_recorder(&recorder.0);
    let gauge = ConcurrencyGauge::new("f");
    let copy = gauge.clone();

    gauge.started();
    copy.started();
    assert_eq!(recorder.value(GAUGE), Some(2.0));
    gauge.finished();
    assert_eq!(recorder.value(GAUGE), Some(1.0));
    copy.finished();
    assert_eq!(recorder.value(GAUGE), Some(0.0));
    assert_eq!(recorder.registrations(), [(GAUGE.to_owned(), 1)]);
}

#[test]
fn concurrency_gauge_adds_up_moves_from_many_threads() {
    let recorder = Recorded::default();
    let _local = metrics::set_default_local_recorder(&recorder.0);
    let gauge = &ConcurrencyGauge::new("f");
    std::thread::scope(|scope| {
        for _ in 0..20 {
            scope.spawn(move || {
                for _ in 0..100 {
                    gauge.started();
                }
                for _ in 0..60 {
                    gauge.finished();
                }
            });
        }
    });
    assert_eq!(recorder.value(GAUGE), Some(800.0));
    gauge.finished();
    assert_eq!(recorder.value(GAUGE), Some(799.0));
}

// === InvocationMetrics ===

#[test]
fn invocation_metrics_register_nothing_until_first_use() {
    // Built with no recorder at all, as the broker builds its functions before installing one.
    let metrics = InvocationMetrics::new("f");
    let recorder = Recorded::default();
    let _local = metrics::set_default_local_recorder(&recorder.0);
    let late = InvocationMetrics::new("g");
    assert_eq!(late.function(), "g");
    assert!(
        recorder.registrations().is_empty(),
        "creating the handles registers nothing"
    );

    metrics
        .trigger(Name::new("orders"))
        .completed(InvocationOutcome::Success, Duration::from_millis(250));
    assert_eq!(recorder.value(SUCCESS), Some(1.0), "the handles are live");
    assert_eq!(recorder.samples(DURATION), [0.25]);
}

#[test]
fn invocation_metrics_keep_names_labels_and_register_each_series_once() {
    let recorder = Recorded::default();
    let _local = metrics::set_default_local_recorder(&recorder.0);
    let metrics = InvocationMetrics::new("f");
    let orders = Name::new("orders");

    for _ in 0..3 {
        metrics
            .trigger(orders)
            .completed(InvocationOutcome::Success, Duration::from_millis(5));
    }
    // The name interned again finds the same handles.
    let handles = metrics.trigger(Name::new(&String::from("orders")));
    handles.completed(InvocationOutcome::Timeout, Duration::from_secs(3));
    metrics
        .trigger(Name::new("invoke"))
        .completed(InvocationOutcome::Success, Duration::from_millis(1));

    assert_eq!(recorder.value(SUCCESS), Some(3.0));
    assert_eq!(recorder.value(TIMEOUT), Some(1.0));
    assert_eq!(recorder.value(INVOKE), Some(1.0));
    assert_eq!(
        recorder.samples(DURATION),
        [0.005, 0.005, 0.005, 3.0, 0.001]
    );
    assert_eq!(
        recorder.registrations(),
        [
            (DURATION.to_owned(), 1),
            (INVOKE.to_owned(), 1),
            (SUCCESS.to_owned(), 1),
            (TIMEOUT.to_owned(), 1),
        ],
        "one registration per series; no series for outcomes that never happened"
    );
}

#[test]
fn threads_seeing_new_triggers_at_once_share_one_set_of_handles_per_trigger() {
    let recorder = Recorded::default();
    let metrics = InvocationMetrics::new("f");
    let triggers: Vec<Name> = ["a", "b", "c"].into_iter().map(Name::new).collect();
    std::thread::scope(|scope| {
        for offset in 0..8 {
            let (recorder, metrics, triggers) = (&recorder, &metrics, &triggers);
            scope.spawn(move || {
                metrics::with_local_recorder(&recorder.0, || {
                    for i in 0..triggers.len() {
                        // Each thread starts at another trigger, so that they race to add them.
                        let trigger = triggers[(i + offset) % triggers.len()];
                        metrics
                            .trigger(trigger)
                            .completed(InvocationOutcome::Success, Duration::ZERO);
                    }
                });
            });
        }
    });
    for trigger in ["a", "b", "c"] {
        let key =
            format!("impulse_invocations_total{{function=f,version=$LATEST,trigger={trigger},outcome=success}}");
        assert_eq!(recorder.value(&key), Some(8.0), "{key}");
    }
    assert!(
        recorder
            .registrations()
            .iter()
            .all(|(_, count)| *count == 1),
        "one registration per series: {:?}",
        recorder.registrations()
    );
}

#[test]
fn every_outcome_has_its_own_label_and_slot() {
    let recorder = Recorded::default();
    let _local = metrics::set_default_local_recorder(&recorder.0);
    let handles = InvocationMetrics::new("f").trigger(Name::new("t"));
    let outcomes = [
        (InvocationOutcome::Success, "success"),
        (InvocationOutcome::FunctionError, "function_error"),
        (InvocationOutcome::Timeout, "timeout"),
        (InvocationOutcome::Throttled, "throttled"),
        (InvocationOutcome::SystemError, "system_error"),
        (InvocationOutcome::Permanent, "permanent"),
    ];
    assert_eq!(outcomes.len(), InvocationOutcome::COUNT);
    for (i, (outcome, label)) in outcomes.into_iter().enumerate() {
        assert_eq!(outcome.index(), i);
        assert_eq!(outcome.as_str(), label);
        handles.completed(outcome, Duration::ZERO);
        let key = format!(
            "impulse_invocations_total{{function=f,version=$LATEST,trigger=t,outcome={label}}}"
        );
        assert_eq!(recorder.value(&key), Some(1.0), "{key}");
    }
}

// === KafkaPartitionCounts ===

#[test]
fn partition_counts_reach_the_source_metrics_only_when_flushed() {
    const RECEIVED: &str = "impulse_kafka_records_received_total{trigger=t}";
    const FILTERED: &str = "impulse_kafka_records_filtered_total{trigger=t}";
    const BATCHES: &str = "impulse_kafka_batches_total{trigger=t}";
    const SIZES: &str = "impulse_kafka_batch_size{trigger=t}";
    let recorder = Recorded::default();
    let _local = metrics::set_default_local_recorder(&recorder.0);
    let source = KafkaSourceMetrics::new("t");
    let mut counts = KafkaPartitionCounts::new(&source);
    assert!(!counts.flush(), "nothing counted yet");

    counts.records_received(4);
    counts.record_filtered();
    for size in [1, 1, 2, 1] {
        counts.batch_sent(size);
    }
    // The handles are registered with the source metrics; nothing counted reaches them yet.
    assert_eq!(recorder.value(RECEIVED), Some(0.0), "not flushed yet");
    assert_eq!(recorder.value(BATCHES), Some(0.0), "not flushed yet");

    assert!(counts.flush());
    assert_eq!(recorder.value(RECEIVED), Some(4.0));
    assert_eq!(recorder.value(FILTERED), Some(1.0));
    assert_eq!(recorder.value(BATCHES), Some(4.0));
    assert_eq!(
        recorder.samples(SIZES),
        [1.0, 1.0, 2.0, 1.0],
        "every batch, in order"
    );
    assert!(!counts.flush(), "a flush leaves nothing behind");

    counts.records_received(2);
    assert!(counts.flush());
    assert_eq!(recorder.value(RECEIVED), Some(6.0), "flushes add up");
}

// === updates from any thread ===

#[test]
fn updates_reach_the_recorder_at_once_from_any_thread() {
    let recorder = Recorded::default();
    let _local = metrics::set_default_local_recorder(&recorder.0);
    let handles = InvocationMetrics::new("f").trigger(Name::new("orders"));
    let gauge = ConcurrencyGauge::new("f");

    handles.completed(InvocationOutcome::Success, Duration::from_millis(1));
    gauge.started();
    assert_eq!(recorder.value(SUCCESS), Some(1.0), "no flush needed");
    assert_eq!(recorder.value(GAUGE), Some(1.0), "no flush needed");

    // A thread that makes its last updates and exits leaves nothing behind to apply.
    std::thread::spawn(move || {
        handles.completed(InvocationOutcome::Success, Duration::ZERO);
        gauge.finished();
    })
    .join()
    .expect("the recording thread");
    assert_eq!(recorder.value(SUCCESS), Some(2.0));
    assert_eq!(recorder.value(GAUGE), Some(0.0));
    assert_eq!(recorder.samples(DURATION), [0.001, 0.0]);
}

// === operator metrics (dashboards and alerts read these names) ===

#[test]
fn readiness_limits_init_failures_and_failed_kafka_invokes_have_their_names() {
    {
        let not_ready = Recorded::default();
        let _local = metrics::set_default_local_recorder(&not_ready.0);
        super::ready(false);
        assert_eq!(not_ready.value("impulse_ready{}"), Some(0.0));
    }
    let recorder = Recorded::default();
    let _local = metrics::set_default_local_recorder(&recorder.0);
    super::ready(true);
    assert_eq!(recorder.value("impulse_ready{}"), Some(1.0));
    super::function_limits("f", 7, Duration::from_secs(90));
    assert_eq!(
        recorder.value("impulse_concurrency_limit{function=f}"),
        Some(7.0)
    );
    assert_eq!(
        recorder.value("impulse_max_event_age_seconds{function=f}"),
        Some(90.0)
    );
    super::init_failed("f");
    super::init_failed("f");
    assert_eq!(
        recorder.value("impulse_init_failures_total{function=f}"),
        Some(2.0)
    );
    super::kafka_records_failed_invoke("orders", 3);
    assert_eq!(
        recorder.value("impulse_kafka_records_failed_invoke_total{trigger=orders}"),
        Some(3.0)
    );
}
