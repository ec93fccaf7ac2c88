//! Schedule source tests, on paused tokio time with a [`TokioWallClock`]: no real sleeps.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt as _;
use impulse_config::{CatchUp, Overlap, ScheduleTriggerConfig};
use impulse_test_support::metrics::RecordedMetrics;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::*;
use crate::contract::{Ack, Outcome, QueueError, QueuedEvent, SourceError};
use crate::telemetry::SCHEDULE_TICKS_TOTAL;

const NAME: &str = "nightly";

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test timestamp")
        .with_timezone(&Utc)
}

fn config(expression: &str) -> ScheduleTriggerConfig {
    ScheduleTriggerConfig {
        function: "report".to_owned(),
        expression: expression.parse().expect("test expression"),
        timezone: "UTC".to_owned(),
        flexible_window: None,
        catch_up: CatchUp::None,
        catch_up_limit: 100,
        overlap: Overlap::Allow,
        input: None,
    }
}

fn payload(tick: &Tick) -> serde_json::Value {
    serde_json::from_slice(&tick.event.payload).expect("the payload is JSON")
}

/// The event's `time` field, parsed.
fn tick_of(tick: &Tick) -> DateTime<Utc> {
    utc(payload(tick)["time"].as_str().expect("time is a string"))
}

/// The memory and file states answer at once: these read and write them synchronously.
trait ReadyState {
    fn last(&self, schedule: &str) -> Option<DateTime<Utc>>;
    fn put(&self, schedule: &str, tick: DateTime<Utc>) -> Result<(), String>;
}

impl<S: ScheduleState + ?Sized> ReadyState for S {
    fn last(&self, schedule: &str) -> Option<DateTime<Utc>> {
        self.last_fired(schedule)
            .now_or_never()
            .expect("a local state answers at once")
            .expect("a local state is readable")
    }

    fn put(&self, schedule: &str, tick: DateTime<Utc>) -> Result<(), String> {
        self.record_fired(schedule, tick)
            .now_or_never()
            .expect("a local state answers at once")
    }
}

// === Harness ===

/// A tick's event as the broker's handler received it.
struct Tick {
    event: QueuedEvent,
    ack: Ack,
}

/// The broker's side, faked with a bounded channel: a full channel holds the source back as a
/// slow queue would, and once the receiver is gone every tick fails to queue.
struct ChannelHandler(mpsc::Sender<Tick>);

impl TickHandler for ChannelHandler {
    fn handle(&self, event: QueuedEvent, ack: Ack) -> BoxFuture<'_, Result<Handled, QueueError>> {
        Box::pin(async move {
            self.0
                .send(Tick { event, ack })
                .await
                .map(|()| Handled::Queued)
                .map_err(|_closed| QueueError {
                    operation: "enqueue",
                    message: "the test's queue is gone".to_owned(),
                })
        })
    }
}

/// Runs `source` with a [`ChannelHandler`] of `capacity` until the returned sender sends or is
/// dropped.
fn spawn(
    source: ScheduleSource,
    capacity: usize,
) -> (
    mpsc::Receiver<Tick>,
    oneshot::Sender<()>,
    JoinHandle<Result<(), SourceError>>,
) {
    let (out, events) = mpsc::channel(capacity);
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        // A dropped sender is a shutdown as well.
        match stopped.await {
            Ok(()) | Err(_) => {}
        }
    };
    let task = tokio::spawn(source.run(Arc::new(ChannelHandler(out)), shutdown));
    (events, stop, task)
}

struct Harness {
    events: mpsc::Receiver<Tick>,
    clock: Arc<TokioWallClock>,
    state: Arc<MemoryScheduleState>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), SourceError>>,
}

fn start(config: ScheduleTriggerConfig, state: MemoryScheduleState, at: &str) -> Harness {
    start_with_capacity(config, state, at, 16)
}

fn start_with_capacity(
    config: ScheduleTriggerConfig,
    state: MemoryScheduleState,
    at: &str,
    capacity: usize,
) -> Harness {
    let clock = Arc::new(TokioWallClock::starting_at(utc(at)));
    let state = Arc::new(state);
    let source =
        ScheduleSource::new(NAME.to_owned(), config, state.clone()).with_clock(clock.clone());
    let (events, stop, task) = spawn(source, capacity);
    Harness {
        events,
        clock,
        state,
        stop,
        task,
    }
}

impl Harness {
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    async fn next(&mut self) -> Tick {
        self.events.recv().await.expect("the source is running")
    }

    /// The next event within `wait` of paused time, if any.
    async fn next_within(&mut self, wait: Duration) -> Option<Tick> {
        tokio::time::timeout(wait, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Sleeps (paused time) until the clock reads `at`.
    async fn sleep_until(&self, at: &str) {
        let delay = (utc(at) - self.now()).to_std().expect("a future time");
        tokio::time::sleep(delay).await;
    }

    fn recorded(&self) -> Option<DateTime<Utc>> {
        self.state.last(NAME)
    }

    async fn stop(self) {
        self.stop.send(()).expect("the source is running");
        self.task
            .await
            .expect("the source does not panic")
            .expect("the source stops cleanly");
    }
}

fn state_at(last: &str) -> MemoryScheduleState {
    let state = MemoryScheduleState::new();
    state.put(NAME, utc(last)).expect("memory state");
    state
}

// === Metrics ===

/// The metrics a test recorded. Installed as the thread's local recorder: `#[tokio::test]` runs
/// the source on the test's thread.
#[derive(Debug, Default)]
struct TickCounts(RecordedMetrics);

impl TickCounts {
    /// `impulse_schedule_ticks_total` of this test's trigger with `result`.
    fn get(&self, result: &str) -> u64 {
        let series = format!("{SCHEDULE_TICKS_TOTAL}{{trigger={NAME},result={result}}}");
        // Counters hold whole numbers.
        self.0.value(&series).map_or(0, |count| count as u64)
    }
}

// === Events and ids ===

#[test]
fn the_event_is_eventbridge_scheduled_event_shape() {
    let tick = utc("2026-01-01T10:00:00Z");
    let bytes = encode_scheduled_event(NAME, tick, &json!({"job": "report"})).expect("encodes");
    let event: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(
        event,
        json!({
            "version": "0",
            // Pinned: ids are idempotency keys and MUST survive upgrades.
            "id": "df9c2a5f-64b5-5e4e-aecd-1b2f24644db6",
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "000000000000",
            "time": "2026-01-01T10:00:00Z",
            "region": "local",
            "resources": ["arn:aws:events:local:000000000000:rule/nightly"],
            "detail": {"job": "report"}
        })
    );
    // EventBridge's field order, for readers of the raw bytes.
    let text = std::str::from_utf8(&bytes).expect("UTF-8");
    assert!(text.starts_with(r#"{"version":"0","id":""#), "{text}");
}

#[test]
fn ids_are_deterministic_per_schedule_and_tick() {
    let tick = utc("2026-01-01T10:00:00Z");
    let next = utc("2026-01-01T10:01:00Z");
    assert_eq!(
        scheduled_event_uuid(NAME, tick),
        scheduled_event_uuid(NAME, tick)
    );
    assert_ne!(
        scheduled_event_uuid(NAME, tick),
        scheduled_event_uuid(NAME, next)
    );
    assert_ne!(
        scheduled_event_uuid(NAME, tick),
        scheduled_event_uuid("hourly", tick)
    );
    assert_eq!(scheduled_event_uuid(NAME, tick).get_version_num(), 5);
    assert_eq!(event_id(NAME, tick).as_str(), "schedule/nightly/1767261600");
}

// === Firing ===

#[tokio::test(start_paused = true)]
async fn rate_fires_on_each_minute_boundary() {
    let counts = TickCounts::default();
    let _recorder = metrics::set_default_local_recorder(&counts.0);
    let mut config = config("rate(1 minute)");
    config.input = Some(json!({"job": "report"}));
    let mut h = start(config, MemoryScheduleState::new(), "2026-01-01T10:00:20Z");

    for expected in [
        "2026-01-01T10:01:00Z",
        "2026-01-01T10:02:00Z",
        "2026-01-01T10:03:00Z",
    ] {
        let tick = utc(expected);
        let event = h.next().await;
        assert_eq!(h.now(), tick, "fires on the tick");
        assert_eq!(event.event.id, event_id(NAME, tick).as_str());
        assert_eq!(event.event.function, "report");
        assert_eq!(event.event.trigger, NAME);
        assert_eq!(event.event.enqueued_at, SystemTime::from(tick));
        assert_eq!(event.event.attempts, 0);
        let expected_payload: serde_json::Value = serde_json::from_slice(
            &encode_scheduled_event(NAME, tick, &json!({"job": "report"})).expect("encodes"),
        )
        .expect("JSON");
        assert_eq!(payload(&event), expected_payload);
        assert_eq!(payload(&event)["time"], expected);
        assert_eq!(
            payload(&event)["id"],
            scheduled_event_uuid(NAME, tick).to_string()
        );
        event.ack.resolve(Outcome::Delivered);
    }
    assert_eq!(h.recorded(), Some(utc("2026-01-01T10:03:00Z")));
    assert_eq!(counts.get("fired"), 3);
    assert_eq!(counts.get("skipped"), 0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn cron_fires_at_local_time_in_its_time_zone() {
    let mut config = config("cron(0 10 * * ? *)");
    config.timezone = "Europe/Berlin".to_owned();
    let mut h = start(config, MemoryScheduleState::new(), "2026-01-01T00:00:00Z");
    // 10:00 in Berlin in winter (CET, UTC+1) is 09:00Z.
    let first = h.next().await;
    assert_eq!(tick_of(&first), utc("2026-01-01T09:00:00Z"));
    assert_eq!(h.now(), utc("2026-01-01T09:00:00Z"));
    let second = h.next().await;
    assert_eq!(tick_of(&second), utc("2026-01-02T09:00:00Z"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn at_fires_once_then_waits_for_shutdown() {
    let mut config = config("at(2026-01-01T11:05:00)");
    config.timezone = "Europe/Berlin".to_owned();
    let mut h = start(config, MemoryScheduleState::new(), "2026-01-01T10:00:00Z");
    let event = h.next().await;
    assert_eq!(tick_of(&event), utc("2026-01-01T10:05:00Z"));
    assert_eq!(h.now(), utc("2026-01-01T10:05:00Z"));
    assert!(h
        .next_within(Duration::from_secs(3 * 86_400))
        .await
        .is_none());
    assert!(!h.task.is_finished(), "the source waits for shutdown");
    assert_eq!(h.recorded(), Some(utc("2026-01-01T10:05:00Z")));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_at_already_recorded_does_not_fire_again() {
    let config = config("at(2026-01-01T10:05:00)");
    let mut h = start(
        config,
        state_at("2026-01-01T10:05:00Z"),
        "2026-01-01T10:00:00Z",
    );
    assert!(h.next_within(Duration::from_secs(86_400)).await.is_none());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn flexible_window_delays_within_bounds_and_keeps_the_tick() {
    let mut config = config("rate(1 hour)");
    let window = chrono::TimeDelta::minutes(30);
    config.flexible_window = Some(window.to_std().expect("positive"));
    let mut h = start(config, MemoryScheduleState::new(), "2026-01-01T09:30:00Z");
    let mut delays = Vec::new();
    let mut expected = utc("2026-01-01T10:00:00Z");
    for _ in 0..8 {
        let event = h.next().await;
        let fired = h.now();
        assert_eq!(tick_of(&event), expected, "time stays the tick's");
        assert_eq!(event.event.id, event_id(NAME, expected).as_str());
        assert!(
            fired >= expected && fired < expected + window,
            "fired at {fired} for tick {expected}"
        );
        delays.push(fired - expected);
        expected += chrono::TimeDelta::hours(1);
    }
    assert!(
        delays
            .iter()
            .any(|delay| *delay > chrono::TimeDelta::zero()),
        "the window spreads fires: {delays:?}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_window_longer_than_the_period_keeps_ticks_independent() {
    let mut config = config("rate(1 minute)");
    config.flexible_window = Some(Duration::from_secs(10 * 60));
    let mut h = start(config, MemoryScheduleState::new(), "2026-01-01T10:00:00Z");
    let mut ticks = Vec::new();
    for _ in 0..20 {
        let event = h.next().await;
        let tick = tick_of(&event);
        let fired = h.now();
        assert!(fired >= tick && fired < tick + chrono::TimeDelta::minutes(10));
        ticks.push(tick);
    }
    ticks.sort();
    ticks.dedup();
    assert_eq!(ticks.len(), 20, "each tick fires once");
    // Only ticks whose every predecessor fired may be recorded.
    let recorded = h.recorded().expect("a tick is recorded");
    let mut expected = utc("2026-01-01T10:01:00Z");
    while expected <= recorded {
        assert!(
            ticks.contains(&expected),
            "{expected} recorded but not fired"
        );
        expected += chrono::TimeDelta::minutes(1);
    }
    h.stop().await;
}

// === Overlap ===

#[tokio::test(start_paused = true)]
async fn overlap_skip_skips_while_the_previous_event_is_open() {
    let counts = TickCounts::default();
    let _recorder = metrics::set_default_local_recorder(&counts.0);
    let mut config = config("rate(1 minute)");
    config.overlap = Overlap::Skip;
    let mut h = start(config, MemoryScheduleState::new(), "2026-01-01T10:00:00Z");

    let first = h.next().await;
    assert_eq!(tick_of(&first), utc("2026-01-01T10:01:00Z"));
    // The first event's ack is held: 10:02 is skipped.
    assert!(h.next_within(Duration::from_secs(90)).await.is_none());
    assert_eq!(h.now(), utc("2026-01-01T10:02:30Z"));
    assert_eq!(counts.get("skipped"), 1);
    assert_eq!(
        h.recorded(),
        Some(utc("2026-01-01T10:02:00Z")),
        "a skipped tick is handled"
    );

    first.ack.resolve(Outcome::Delivered);
    let next = h.next().await;
    assert_eq!(tick_of(&next), utc("2026-01-01T10:03:00Z"));
    assert_eq!(h.now(), utc("2026-01-01T10:03:00Z"));
    assert_eq!(counts.get("fired"), 2);

    // An abandoned ack is a finished one too.
    drop(next);
    let after = h.next().await;
    assert_eq!(tick_of(&after), utc("2026-01-01T10:04:00Z"));
    assert_eq!(counts.get("skipped"), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn overlap_allow_fires_while_the_previous_event_is_open() {
    let counts = TickCounts::default();
    let _recorder = metrics::set_default_local_recorder(&counts.0);
    let mut h = start(
        config("rate(1 minute)"),
        MemoryScheduleState::new(),
        "2026-01-01T10:00:00Z",
    );
    let first = h.next().await;
    let second = h.next().await;
    assert_eq!(tick_of(&first), utc("2026-01-01T10:01:00Z"));
    assert_eq!(tick_of(&second), utc("2026-01-01T10:02:00Z"));
    assert_eq!(counts.get("fired"), 2);
    assert_eq!(counts.get("skipped"), 0);
    h.stop().await;
}

// === Catch-up ===

#[tokio::test(start_paused = true)]
async fn without_state_the_first_tick_is_the_next_one_and_the_start_is_recorded() {
    let counts = TickCounts::default();
    let _recorder = metrics::set_default_local_recorder(&counts.0);
    let mut config = config("rate(1 minute)");
    config.catch_up = CatchUp::All;
    let mut h = start(config, MemoryScheduleState::new(), "2026-01-01T10:00:20Z");
    let event = h.next().await;
    assert_eq!(tick_of(&event), utc("2026-01-01T10:01:00Z"));
    assert_eq!(h.now(), utc("2026-01-01T10:01:00Z"));
    assert_eq!(counts.get("caught_up"), 0);
    h.stop().await;

    // The start time itself was recorded before the first fire.
    let state = MemoryScheduleState::new();
    let h = start(config_all(), state, "2026-01-01T10:00:20Z");
    tokio::task::yield_now().await;
    assert_eq!(h.recorded(), Some(utc("2026-01-01T10:00:20Z")));
    h.stop().await;
}

fn config_all() -> ScheduleTriggerConfig {
    let mut config = config("rate(1 minute)");
    config.catch_up = CatchUp::All;
    config
}

#[tokio::test(start_paused = true)]
async fn catch_up_none_skips_missed_ticks() {
    let counts = TickCounts::default();
    let _recorder = metrics::set_default_local_recorder(&counts.0);
    // Last fired 09:57; down until 10:00:00: 09:58, 09:59 and 10:00 were missed.
    let mut h = start(
        config("rate(1 minute)"),
        state_at("2026-01-01T09:57:00Z"),
        "2026-01-01T10:00:00Z",
    );
    let event = h.next().await;
    assert_eq!(tick_of(&event), utc("2026-01-01T10:01:00Z"));
    assert_eq!(h.now(), utc("2026-01-01T10:01:00Z"));
    assert_eq!(counts.get("skipped"), 3);
    assert_eq!(counts.get("caught_up"), 0);
    assert_eq!(counts.get("fired"), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn catch_up_latest_fires_the_newest_missed_tick() {
    let counts = TickCounts::default();
    let _recorder = metrics::set_default_local_recorder(&counts.0);
    let mut config = config("rate(1 minute)");
    config.catch_up = CatchUp::Latest;
    let mut h = start(
        config,
        state_at("2026-01-01T09:57:00Z"),
        "2026-01-01T10:00:30Z",
    );
    let caught = h.next().await;
    assert_eq!(tick_of(&caught), utc("2026-01-01T10:00:00Z"));
    assert_eq!(h.now(), utc("2026-01-01T10:00:30Z"), "at once");
    assert_eq!(
        caught.event.id,
        event_id(NAME, utc("2026-01-01T10:00:00Z")).as_str()
    );
    let next = h.next().await;
    assert_eq!(tick_of(&next), utc("2026-01-01T10:01:00Z"));
    assert_eq!(counts.get("caught_up"), 1);
    assert_eq!(counts.get("skipped"), 2);
    assert_eq!(counts.get("fired"), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn catch_up_all_fires_every_missed_tick_in_order() {
    let counts = TickCounts::default();
    let _recorder = metrics::set_default_local_recorder(&counts.0);
    let mut h = start(
        config_all(),
        state_at("2026-01-01T09:57:00Z"),
        "2026-01-01T10:00:30Z",
    );
    for expected in [
        "2026-01-01T09:58:00Z",
        "2026-01-01T09:59:00Z",
        "2026-01-01T10:00:00Z",
    ] {
        let event = h.next().await;
        assert_eq!(tick_of(&event), utc(expected));
        assert_eq!(h.now(), utc("2026-01-01T10:00:30Z"), "at once");
    }
    assert_eq!(h.recorded(), Some(utc("2026-01-01T10:00:00Z")));
    let next = h.next().await;
    assert_eq!(tick_of(&next), utc("2026-01-01T10:01:00Z"));
    assert_eq!(counts.get("caught_up"), 3);
    assert_eq!(counts.get("skipped"), 0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn catch_up_all_fires_only_the_newest_up_to_the_limit() {
    let counts = TickCounts::default();
    let _recorder = metrics::set_default_local_recorder(&counts.0);
    let mut config = config_all();
    config.catch_up_limit = 2;
    // Five missed: 09:56 .. 10:00; the newest two fire.
    let mut h = start(
        config,
        state_at("2026-01-01T09:55:00Z"),
        "2026-01-01T10:00:30Z",
    );
    assert_eq!(tick_of(&h.next().await), utc("2026-01-01T09:59:00Z"));
    assert_eq!(tick_of(&h.next().await), utc("2026-01-01T10:00:00Z"));
    assert_eq!(tick_of(&h.next().await), utc("2026-01-01T10:01:00Z"));
    assert_eq!(counts.get("caught_up"), 2);
    assert_eq!(counts.get("skipped"), 3);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn catch_up_with_overlap_skip_fires_one_after_another() {
    let mut config = config_all();
    config.overlap = Overlap::Skip;
    let mut h = start(
        config,
        state_at("2026-01-01T09:57:00Z"),
        "2026-01-01T10:00:30Z",
    );
    let first = h.next().await;
    assert_eq!(tick_of(&first), utc("2026-01-01T09:58:00Z"));
    assert!(
        h.next_within(Duration::from_secs(10)).await.is_none(),
        "the backlog waits for the previous event"
    );
    first.ack.resolve(Outcome::Delivered);
    let second = h.next().await;
    assert_eq!(tick_of(&second), utc("2026-01-01T09:59:00Z"));
    second.ack.resolve(Outcome::Delivered);
    let third = h.next().await;
    assert_eq!(tick_of(&third), utc("2026-01-01T10:00:00Z"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn ticks_passed_under_backpressure_follow_the_catch_up_policy() {
    let counts = TickCounts::default();
    let _recorder = metrics::set_default_local_recorder(&counts.0);
    // One slot: 10:01 fills it, 10:02 waits to be sent, 10:03 and 10:04 pass meanwhile.
    let mut h = start_with_capacity(
        config("rate(1 minute)"),
        MemoryScheduleState::new(),
        "2026-01-01T10:00:00Z",
        1,
    );
    h.sleep_until("2026-01-01T10:04:30Z").await;
    assert_eq!(tick_of(&h.next().await), utc("2026-01-01T10:01:00Z"));
    assert_eq!(tick_of(&h.next().await), utc("2026-01-01T10:02:00Z"));
    // The newest passed tick fires late; 10:03 is skipped (catch_up = none).
    let late = h.next().await;
    assert_eq!(tick_of(&late), utc("2026-01-01T10:04:00Z"));
    assert_eq!(h.now(), utc("2026-01-01T10:04:30Z"));
    assert_eq!(counts.get("skipped"), 1);
    assert_eq!(counts.get("fired"), 3);
    h.stop().await;
}

// === Shutdown ===

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_loop_promptly() {
    let h = start(
        config("cron(0 10 * * ? *)"),
        MemoryScheduleState::new(),
        "2026-01-01T00:00:00Z",
    );
    tokio::task::yield_now().await;
    let clock = h.clock.clone();
    h.stop().await;
    assert_eq!(
        clock.now(),
        utc("2026-01-01T00:00:00Z"),
        "no timer had to run out"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_the_broker_is_saturated_leaves_the_tick_unrecorded() {
    let h = start_with_capacity(
        config("rate(1 minute)"),
        MemoryScheduleState::new(),
        "2026-01-01T10:00:00Z",
        1,
    );
    // 10:01 fills the channel; 10:02 waits to be sent.
    h.sleep_until("2026-01-01T10:02:30Z").await;
    assert_eq!(h.recorded(), Some(utc("2026-01-01T10:01:00Z")));
    let clock = h.clock.clone();
    let state = h.state.clone();
    let blocked_at = clock.now();
    h.stop().await;
    assert_eq!(clock.now(), blocked_at, "stopped without waiting");
    assert_eq!(
        state.last(NAME),
        Some(utc("2026-01-01T10:01:00Z")),
        "the unsent 10:02 is not recorded"
    );
}

/// Fails its first `failures` hand-offs, then passes them on.
struct FlakyHandler {
    failures: std::sync::atomic::AtomicU32,
    inner: ChannelHandler,
}

impl TickHandler for FlakyHandler {
    fn handle(&self, event: QueuedEvent, ack: Ack) -> BoxFuture<'_, Result<Handled, QueueError>> {
        let failing = self
            .failures
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |left| left.checked_sub(1),
            )
            .is_ok();
        if failing {
            return Box::pin(async {
                Err(QueueError {
                    operation: "enqueue",
                    message: "the queue is down".to_owned(),
                })
            });
        }
        self.inner.handle(event, ack)
    }
}

#[tokio::test(start_paused = true)]
async fn a_tick_that_cannot_be_queued_is_retried_and_recorded_only_once_queued() {
    let counts = TickCounts::default();
    let _recorder = metrics::set_default_local_recorder(&counts.0);
    let clock = Arc::new(TokioWallClock::starting_at(utc("2026-01-01T10:00:30Z")));
    let state = Arc::new(state_at("2026-01-01T10:00:00Z"));
    let source = ScheduleSource::new(NAME.to_owned(), config("rate(1 minute)"), state.clone())
        .with_clock(clock.clone());
    let (out, mut events) = mpsc::channel(16);
    // Down for 5 hand-offs: 0.5 + 1 + 2 + 4 + 8 s of backoff.
    let handler = Arc::new(FlakyHandler {
        failures: std::sync::atomic::AtomicU32::new(5),
        inner: ChannelHandler(out),
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(source.run(handler, async move {
        stopped.await.ok();
    }));

    let tick = events.recv().await.expect("the 10:01 tick, once queued");
    assert_eq!(tick_of(&tick), utc("2026-01-01T10:01:00Z"));
    assert_eq!(
        clock.now(),
        utc("2026-01-01T10:01:15.500Z"),
        "queued after the backoff"
    );
    assert_eq!(counts.get("fired"), 1);
    assert_eq!(counts.get("skipped"), 0);
    // Recorded only now that it is queued, and the schedule goes on.
    assert_eq!(state.last(NAME), Some(utc("2026-01-01T10:01:00Z")));
    let next = events.recv().await.expect("the 10:02 tick");
    assert_eq!(tick_of(&next), utc("2026-01-01T10:02:00Z"));
    stop.send(()).ok();
    task.await.expect("joins").expect("no error");
}

#[tokio::test(start_paused = true)]
async fn a_tick_still_failing_at_shutdown_is_not_recorded() {
    let mut h = start(
        config("rate(1 minute)"),
        state_at("2026-01-01T10:00:00Z"),
        "2026-01-01T10:00:30Z",
    );
    // Every enqueue fails from now on.
    h.events.close();
    h.sleep_until("2026-01-01T10:05:00Z").await;
    assert!(!h.task.is_finished(), "the source keeps retrying");
    assert_eq!(
        h.recorded(),
        Some(utc("2026-01-01T10:00:00Z")),
        "the failing 10:01 is not recorded"
    );
    h.stop().await;
}

/// Finds every tick claimed by another instance already.
struct ClaimedElsewhereHandler(mpsc::UnboundedSender<QueuedEvent>);

impl TickHandler for ClaimedElsewhereHandler {
    fn handle(&self, event: QueuedEvent, ack: Ack) -> BoxFuture<'_, Result<Handled, QueueError>> {
        drop(ack);
        self.0.send(event).ok();
        Box::pin(async { Ok(Handled::ClaimedElsewhere) })
    }
}

#[tokio::test(start_paused = true)]
async fn a_tick_claimed_elsewhere_is_recorded_but_not_counted_as_fired() {
    let counts = TickCounts::default();
    let _recorder = metrics::set_default_local_recorder(&counts.0);
    let clock = Arc::new(TokioWallClock::starting_at(utc("2026-01-01T10:00:30Z")));
    let state = Arc::new(state_at("2026-01-01T10:00:00Z"));
    let source = ScheduleSource::new(NAME.to_owned(), config("rate(1 minute)"), state.clone())
        .with_clock(clock.clone());
    let (out, mut offered) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(
        source.run(Arc::new(ClaimedElsewhereHandler(out)), async move {
            stopped.await.ok();
        }),
    );
    for expected in ["2026-01-01T10:01:00Z", "2026-01-01T10:02:00Z"] {
        let event = offered.recv().await.expect("running");
        assert_eq!(event.id, event_id(NAME, utc(expected)).to_string());
    }
    stop.send(()).ok();
    task.await.expect("joins").expect("no error");
    // Another instance queued both: handled here, so catch-up will not fire them again.
    assert_eq!(state.last(NAME), Some(utc("2026-01-01T10:02:00Z")));
    assert_eq!(counts.get("claimed_elsewhere"), 2);
    assert_eq!(counts.get("fired"), 0);
}

// === FileScheduleState ===

#[test]
fn file_state_round_trips_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = FileScheduleState::open(dir.path()).expect("a missing file is an empty state");
    assert_eq!(state.last(NAME), None);
    state
        .put(NAME, utc("2026-01-01T10:00:00Z"))
        .expect("writes");
    state
        .put("hourly", utc("2026-01-01T09:00:00Z"))
        .expect("writes");
    state
        .put(NAME, utc("2026-01-01T10:01:00Z"))
        .expect("writes");
    assert_eq!(state.last(NAME), Some(utc("2026-01-01T10:01:00Z")));
    assert_eq!(state.path(), dir.path().join("schedules.json"));
    drop(state);

    let reopened = FileScheduleState::open(dir.path()).expect("reopens");
    assert_eq!(reopened.last(NAME), Some(utc("2026-01-01T10:01:00Z")));
    assert_eq!(reopened.last("hourly"), Some(utc("2026-01-01T09:00:00Z")));
    assert_eq!(reopened.last("other"), None);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("lists")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers, ["schedules.json"], "no temporary file is left");
}

#[test]
fn file_state_creates_a_missing_data_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nested = dir.path().join("data").join("impulse");
    let state = FileScheduleState::open(&nested).expect("opens");
    state
        .put(NAME, utc("2026-01-01T10:00:00Z"))
        .expect("writes");
    assert!(nested.join("schedules.json").is_file());
}

#[test]
fn file_state_reports_a_corrupt_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("schedules.json"), b"{not json").expect("writes");
    let err = FileScheduleState::open(dir.path()).expect_err("corrupt");
    assert!(matches!(err, ScheduleStateError::Corrupt { .. }), "{err:?}");
    assert!(
        err.to_string().contains("schedules.json is corrupt"),
        "{err}"
    );

    std::fs::write(
        dir.path().join("schedules.json"),
        br#"{"version":1,"schedules":{"nightly":"yesterday"}}"#,
    )
    .expect("writes");
    assert!(matches!(
        FileScheduleState::open(dir.path()),
        Err(ScheduleStateError::Corrupt { .. })
    ));

    std::fs::write(
        dir.path().join("schedules.json"),
        br#"{"version":2,"schedules":{}}"#,
    )
    .expect("writes");
    assert!(matches!(
        FileScheduleState::open(dir.path()),
        Err(ScheduleStateError::Version { version: 2, .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_restart_on_the_file_state_catches_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = FileScheduleState::open(dir.path()).expect("opens");
    state
        .put(NAME, utc("2026-01-01T09:58:00Z"))
        .expect("writes");
    drop(state);

    let state: Arc<dyn ScheduleState> =
        Arc::new(FileScheduleState::open(dir.path()).expect("reopens"));
    let clock = Arc::new(TokioWallClock::starting_at(utc("2026-01-01T10:00:10Z")));
    let source =
        ScheduleSource::new(NAME.to_owned(), config_all(), state.clone()).with_clock(clock.clone());
    let (mut events, stop, task) = spawn(source, 8);
    for expected in ["2026-01-01T09:59:00Z", "2026-01-01T10:00:00Z"] {
        let event = events.recv().await.expect("running");
        assert_eq!(tick_of(&event), utc(expected));
    }
    stop.send(()).expect("running");
    task.await.expect("no panic").expect("clean stop");
    let reopened = FileScheduleState::open(dir.path()).expect("reopens");
    assert_eq!(reopened.last(NAME), Some(utc("2026-01-01T10:00:00Z")));
}
