//! Unit tests of the Kafka source's batching and ordering rules (no broker): the
//! `PartitionBatcher` decides what to send and when; the watermark decides what to commit.

use std::time::Duration;

use bytes::Bytes;
use impulse_config::{KafkaTriggerConfig, Ordering};
use tokio::time::Instant;

use super::event::{envelope_len, group_envelope_len, record_len, CREATE_TIME};
use super::source::test_support;
use super::source::{PartitionBatcher, UpkeepPacer, STORE_INTERVAL};
use super::{BatchOutcome, KafkaBatch, KafkaRecord, KafkaSource};
use crate::contract::Outcome;

const WINDOW: Duration = Duration::from_millis(500);

fn record(offset: i64, key: Option<&str>) -> KafkaRecord {
    KafkaRecord {
        topic: "t".into(),
        partition: 0,
        offset,
        timestamp: Some(1),
        timestamp_type: CREATE_TIME,
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: Some(Bytes::from_static(b"{}")),
        headers: Vec::new(),
    }
}

fn batcher(batch_size: usize, ordering: Ordering) -> PartitionBatcher {
    batcher_with(batch_size, ordering, super::MAX_EVENT_BYTES, 8)
}

fn batcher_with(
    batch_size: usize,
    ordering: Ordering,
    max_bytes: usize,
    max_in_flight: usize,
) -> PartitionBatcher {
    let settings = test_support::with_limits(
        test_support::settings(batch_size, WINDOW, ordering),
        max_bytes,
        max_in_flight,
    );
    PartitionBatcher::new(
        settings,
        "trig".into(),
        "t".into(),
        0,
        envelope_len("k:9092") + group_envelope_len("t", 0),
    )
}

fn push(d: &mut PartitionBatcher, offset: i64, key: Option<&str>, now: Instant) {
    d.push(record(offset, key), now);
}

fn offsets(batch: &KafkaBatch) -> Vec<i64> {
    batch.records.iter().map(|r| r.offset).collect()
}

/// Takes the batch that is ready now.
fn take(d: &mut PartitionBatcher, now: Instant) -> KafkaBatch {
    assert!(d.ready(now), "no batch is ready");
    d.take_batch(now).expect("a batch")
}

fn complete_all(d: &mut PartitionBatcher, batch: &KafkaBatch, now: Instant) {
    let outcome = BatchOutcome::all(batch.records.len(), Outcome::Delivered);
    assert_eq!(d.complete(batch, &outcome, now), None);
}

#[test]
fn a_full_batch_goes_at_once_and_a_partial_one_after_the_window() {
    let t0 = Instant::now();
    let mut d = batcher(3, Ordering::Partition);
    for o in 0..4 {
        push(&mut d, o, None, t0);
    }
    let batch = take(&mut d, t0);
    assert_eq!(offsets(&batch), [0, 1, 2]);
    assert_eq!(
        (&*batch.trigger, &*batch.topic, batch.partition),
        ("trig", "t", 0)
    );
    // Offset 3 is buffered, but one batch is in flight: nothing is ready, no timer runs.
    assert!(!d.ready(t0 + WINDOW * 10));
    assert_eq!(d.deadline(), None);
    complete_all(&mut d, &batch, t0);
    assert_eq!(d.watermark.take_store(), Some(3));
    // The window of offset 3 started when it joined the batch (at t0).
    assert_eq!(d.deadline(), Some(t0 + WINDOW));
    assert!(!d.ready(t0 + WINDOW - Duration::from_millis(1)));
    let batch = take(&mut d, t0 + WINDOW);
    assert_eq!(offsets(&batch), [3]);
}

#[test]
fn partition_mode_keeps_one_batch_in_flight_and_abandoned_records_hold_the_watermark() {
    let t0 = Instant::now();
    let mut d = batcher(2, Ordering::Partition);
    for o in 0..6 {
        push(&mut d, o, Some("k"), t0);
    }
    let first = take(&mut d, t0);
    assert_eq!(offsets(&first), [0, 1]);
    assert!(!d.ready(t0 + WINDOW), "the first batch is still out");
    // Offset 1 has no outcome: it frees the partition but not the watermark.
    let mut outcome = BatchOutcome::unresolved(2);
    outcome.resolve(0..1, Outcome::Delivered);
    assert_eq!(d.complete(&first, &outcome, t0), Some(1));
    let second = take(&mut d, t0);
    assert_eq!(offsets(&second), [2, 3]);
    assert_eq!(d.watermark.take_store(), Some(1), "offset 1 was abandoned");
    complete_all(&mut d, &second, t0);
    assert_eq!(d.watermark.take_store(), None, "still held at 1");
    assert_eq!(d.watermark.unresolved(), 3, "1 abandoned, 4 and 5 buffered");
}

#[test]
fn key_mode_runs_batches_in_parallel_but_never_overtakes_a_key() {
    let t0 = Instant::now();
    let mut d = batcher(2, Ordering::Key);
    // a0 b1 | a2 c3 | …: a2 must wait for a0's batch.
    push(&mut d, 0, Some("a"), t0);
    push(&mut d, 1, Some("b"), t0);
    let first = take(&mut d, t0);
    assert_eq!(offsets(&first), [0, 1]);
    push(&mut d, 2, Some("a"), t0);
    push(&mut d, 3, Some("c"), t0);
    push(&mut d, 4, Some("c"), t0);
    push(&mut d, 5, None, t0);
    // a2 is held back; c3 and c4 (same key, offset order, one batch) go in parallel.
    let second = take(&mut d, t0);
    assert_eq!(offsets(&second), [3, 4]);
    // The null-key record has no order: it may go now too.
    let third = take(&mut d, t0 + WINDOW);
    assert_eq!(offsets(&third), [5]);
    assert!(!d.ready(t0 + WINDOW * 2), "a2 waits for a0");
    complete_all(&mut d, &third, t0);
    complete_all(&mut d, &second, t0);
    assert_eq!(
        d.watermark.take_store(),
        Some(0),
        "offsets 0 and 1 are unresolved"
    );
    complete_all(&mut d, &first, t0);
    assert_eq!(d.watermark.take_store(), Some(2));
    let fourth = take(&mut d, t0 + WINDOW * 2);
    assert_eq!(offsets(&fourth), [2]);
}

#[test]
fn key_mode_releases_keys_of_abandoned_records() {
    let t0 = Instant::now();
    let mut d = batcher(1, Ordering::Key);
    push(&mut d, 0, Some("a"), t0);
    let first = take(&mut d, t0);
    push(&mut d, 1, Some("a"), t0);
    assert!(!d.ready(t0 + WINDOW), "a1 waits for a0");
    assert_eq!(
        d.complete(&first, &BatchOutcome::unresolved(1), t0),
        Some(0)
    );
    assert_eq!(offsets(&take(&mut d, t0)), [1]);
    assert_eq!(d.watermark.take_store(), Some(0), "a0 was abandoned");
}

#[test]
fn key_mode_holds_back_every_later_record_of_a_waiting_key() {
    let t0 = Instant::now();
    let mut d = batcher(10, Ordering::Key);
    push(&mut d, 0, Some("a"), t0);
    let first = take(&mut d, t0 + WINDOW);
    push(&mut d, 1, Some("a"), t0);
    push(&mut d, 2, Some("b"), t0);
    push(&mut d, 3, Some("a"), t0);
    let batch = take(&mut d, t0 + WINDOW);
    assert_eq!(offsets(&batch), [2], "both later `a` records wait");
    complete_all(&mut d, &first, t0);
    let batch = take(&mut d, t0 + WINDOW * 2);
    assert_eq!(offsets(&batch), [1, 3], "in offset order, one batch");
}

#[test]
fn key_mode_caps_batches_in_flight() {
    let t0 = Instant::now();
    let mut d = batcher_with(1, Ordering::Key, super::MAX_EVENT_BYTES, 2);
    for (o, k) in ["a", "b", "c"].iter().enumerate() {
        push(&mut d, o as i64, Some(k), t0);
    }
    let first = take(&mut d, t0);
    let _second = take(&mut d, t0);
    assert!(!d.ready(t0 + WINDOW), "two in flight");
    complete_all(&mut d, &first, t0);
    let third = take(&mut d, t0);
    assert_eq!(offsets(&third), [2]);
}

#[test]
fn a_batch_never_passes_the_byte_limit_but_a_big_record_goes_alone() {
    let t0 = Instant::now();
    let one = record_len(&record(0, None)) + 1;
    let envelope = envelope_len("k:9092") + group_envelope_len("t", 0);
    // Room for exactly two records.
    let mut d = batcher_with(100, Ordering::Partition, envelope + 2 * one, 1);
    for o in 0..5 {
        push(&mut d, o, None, t0);
    }
    let batch = take(&mut d, t0);
    assert_eq!(offsets(&batch), [0, 1]);
    assert!(batch.encode("k:9092").len() <= envelope + 2 * one);
    complete_all(&mut d, &batch, t0);
    let batch = take(&mut d, t0);
    assert_eq!(offsets(&batch), [2, 3]);

    // Smaller than one record: each goes alone.
    let mut d = batcher_with(100, Ordering::Partition, 10, 1);
    push(&mut d, 0, None, t0);
    push(&mut d, 1, None, t0);
    let batch = take(&mut d, t0);
    assert_eq!(offsets(&batch), [0]);
    complete_all(&mut d, &batch, t0);
    assert_eq!(offsets(&take(&mut d, t0)), [1]);
}

#[test]
fn filtered_records_resolve_at_once_but_never_pass_an_open_record() {
    let t0 = Instant::now();
    let mut d = batcher(10, Ordering::Partition);
    push(&mut d, 0, None, t0);
    d.filtered(1);
    d.filtered(2);
    assert_eq!(d.watermark.take_store(), Some(0));
    let batch = take(&mut d, t0 + WINDOW);
    complete_all(&mut d, &batch, t0);
    assert_eq!(d.watermark.take_store(), Some(3));
    d.filtered(3);
    assert_eq!(d.watermark.take_store(), Some(4));
}

#[test]
fn a_partial_outcome_stores_the_contiguous_prefix() {
    let t0 = Instant::now();
    let mut d = batcher(5, Ordering::Partition);
    for o in 10..15 {
        push(&mut d, o, None, t0);
    }
    let batch = take(&mut d, t0);
    assert_eq!(d.watermark.take_store(), Some(10));
    // 10–11 delivered, 12 without an outcome, 13–14 dead-lettered.
    let mut outcome = BatchOutcome::unresolved(5);
    outcome.resolve(0..2, Outcome::Delivered);
    outcome.resolve(3..5, Outcome::DeadLettered);
    assert_eq!(d.complete(&batch, &outcome, t0), Some(12));
    assert_eq!(d.watermark.take_store(), Some(12));
    assert_eq!(d.watermark.unresolved(), 1);
}

#[test]
fn buffers_are_bounded() {
    let t0 = Instant::now();
    let fill_up = |d: &mut PartitionBatcher| {
        let mut o = 0;
        while d.has_room() {
            push(d, o, Some("k"), t0);
            o += 1;
            assert!(o <= 10_000, "unbounded");
        }
        o
    };
    let fill = |ordering| fill_up(&mut batcher(10, ordering));
    // Partition order with a window: the batch being filled and the next one.
    assert_eq!(fill(Ordering::Partition), 20);
    // Without a window: the batch it can send now, and nothing while one is in flight.
    let mut d = PartitionBatcher::new(
        test_support::settings(10, Duration::ZERO, Ordering::Partition),
        "trig".into(),
        "t".into(),
        0,
        envelope_len("k:9092") + group_envelope_len("t", 0),
    );
    assert_eq!(fill_up(&mut d), 10);
    let batch = take(&mut d, t0);
    assert_eq!(batch.records.len(), 10);
    assert!(!d.has_room(), "read while a batch is in flight");
    d.complete(&batch, &BatchOutcome::all(10, Outcome::Delivered), t0);
    assert!(d.has_room());
    // Key order reads further ahead, past records held back by an in-flight key.
    assert_eq!(fill(Ordering::Key), 1_000);
}

#[test]
fn buffered_bytes_come_back_when_batches_are_taken() {
    // A byte cap that binds before the count does: every batch is closed by size, and the
    // room to read again depends on the bytes of the batches taken being given back exactly.
    let per_record = record_len(&record(0, None)) + 1;
    let envelope = envelope_len("k:9092") + group_envelope_len("t", 0);
    let mut d = batcher_with(1_000, Ordering::Partition, envelope + 5 * per_record, 8);
    let t0 = Instant::now();
    let mut offset = 0;
    let mut read_per_round = Vec::new();
    for _ in 0..50 {
        let mut read = 0;
        while d.has_room() {
            push(&mut d, offset, None, t0);
            offset += 1;
            read += 1;
            assert!(read <= 10_000, "unbounded");
        }
        read_per_round.push(read);
        // Take and finish everything buffered, one batch at a time.
        while let Some(batch) = d.take_batch(t0) {
            let n = batch.records.len();
            assert!(n <= 5, "a batch of {n} records is over the byte cap");
            d.complete(&batch, &BatchOutcome::all(n, Outcome::Delivered), t0);
        }
    }
    let first = read_per_round[0];
    assert!(first >= 5, "read {first} records before the cap");
    assert!(
        read_per_round.iter().all(|&read| read == first),
        "the room to read drifted: {read_per_round:?}"
    );
    assert_eq!(d.watermark.unresolved(), 0);
}

fn trigger_config(json: serde_json::Value) -> KafkaTriggerConfig {
    serde_json::from_value(json).expect("a trigger config")
}

#[test]
fn new_checks_options_filters_and_hides_secrets() {
    let base = serde_json::json!({
        "function": "f", "bootstrap_servers": "127.0.0.1:9092", "topics": ["t"],
        "librdkafka_options": {"sasl.password": "canary-sasl", "client.id": "visible"},
        "filter": [{"value": {"a": ["b"]}}]
    });
    let source = KafkaSource::new("orders", &trigger_config(base.clone())).expect("valid");
    assert_eq!(source.group_id(), "impulse-orders");
    let shown = format!("{source:?}");
    assert!(!shown.contains("canary"), "{shown}");
    assert!(shown.contains("visible"), "{shown}");

    let mut bad_option = base.clone();
    bad_option["librdkafka_options"]["no.such.property"] = "1".into();
    let err =
        KafkaSource::new("orders", &trigger_config(bad_option)).expect_err("unknown property");
    assert_eq!(err.trigger, "orders");
    assert!(!err.message.contains("canary"), "{err}");

    let mut bad_filter = base;
    bad_filter["filter"] = serde_json::json!([{"value": {"a": "b"}}]);
    let err = KafkaSource::new("orders", &trigger_config(bad_filter)).expect_err("bad filter");
    assert!(err.message.contains("filter[0].value.a"), "{err}");

    assert!(test_support::is_secret("SASL.PASSWORD"));
    assert!(!test_support::is_secret("fetch.max.bytes"));
}

#[test]
fn upkeep_rests_after_doing_something_until_the_timer_ends_the_rest() {
    let mut pacer = UpkeepPacer::default();
    assert!(pacer.may_run(), "a new partition may store at once");
    assert_eq!(pacer.due(), None, "no timer needed");
    let t0 = Instant::now();
    pacer.ran(t0);
    assert!(!pacer.may_run(), "resting");
    assert_eq!(
        pacer.due(),
        Some(t0 + STORE_INTERVAL),
        "the timer ends the rest"
    );
    pacer.wake(t0 + STORE_INTERVAL / 2);
    assert!(
        !pacer.may_run(),
        "a timer that fired early (a batch window) does not end it"
    );
    pacer.wake(t0 + STORE_INTERVAL);
    assert!(pacer.may_run());
    assert_eq!(pacer.due(), None);
}
