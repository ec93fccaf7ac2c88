//! The async dispatcher's decision ([`Inner::process`]) against a scripted function and a
//! destination that fails on demand: what each attempt's result makes of the leased event; and
//! its run loop at shutdown.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use impulse_connectors::contract::{Delivery, LeaseId, Queue, QueueError, QueuedEvent, Sink};
use impulse_invoker::InvokeError;
use serde_json::{json, Value};

use super::{Inner, Settlement};
use crate::async_invoke::Completions;
use crate::functions::{Function, Functions};
use crate::test_support::{function, function_error, FlakySink, ScriptedTarget};

/// `process` never touches the queue: the lease is settled by the caller.
struct Unused;

impl Queue for Unused {
    fn enqueue(&self, _event: QueuedEvent) -> BoxFuture<'_, Result<(), QueueError>> {
        unreachable!("process does not enqueue")
    }
    fn next(&self) -> BoxFuture<'_, Result<Delivery, QueueError>> {
        unreachable!("process does not lease")
    }
    fn complete(&self, _lease: LeaseId) -> BoxFuture<'_, Result<(), QueueError>> {
        unreachable!("process does not settle")
    }
    fn reschedule(
        &self,
        _lease: LeaseId,
        _event: QueuedEvent,
        _not_before: SystemTime,
    ) -> BoxFuture<'_, Result<(), QueueError>> {
        unreachable!("process does not settle")
    }
}

fn dispatcher(function: Function) -> Inner {
    Inner {
        queue: Arc::new(Unused),
        functions: Arc::new(Functions::of([function])).into(),
        completions: Arc::new(Completions::default()),
        max_leased: 1,
    }
}

fn with_destinations(
    mut function: Function,
    on_success: Option<&Arc<FlakySink>>,
    on_failure: Option<&Arc<FlakySink>>,
) -> Function {
    function.on_success = on_success.map(|sink| Arc::clone(sink) as Arc<dyn Sink>);
    function.on_failure = on_failure.map(|sink| Arc::clone(sink) as Arc<dyn Sink>);
    function
}

fn event() -> QueuedEvent {
    QueuedEvent::new(
        "req-1".into(),
        "orders".into(),
        "invoke".into(),
        Bytes::from_static(br#"{"n":1}"#),
    )
}

/// The event rescheduled, and how long after now it is due.
fn rescheduled(settlement: Settlement) -> (QueuedEvent, Duration) {
    match settlement {
        Settlement::Reschedule(event, at) => {
            let after = at.duration_since(SystemTime::now()).unwrap_or_default();
            (event, after)
        }
        Settlement::Complete => panic!("expected a reschedule, got completion"),
    }
}

fn is_complete(settlement: &Settlement) -> bool {
    matches!(settlement, Settlement::Complete)
}

fn within(after: Duration, expected: Duration) -> bool {
    after <= expected && after + Duration::from_secs(1) >= expected
}

#[tokio::test]
async fn success_completes_and_writes_the_success_record() {
    let sink = FlakySink::failing(0);
    let target = ScriptedTarget::default();
    let function = with_destinations(function("orders", json!({}), &target), Some(&sink), None);
    let settlement = dispatcher(function).process(event()).await;
    assert!(is_complete(&settlement));
    let written = sink.written();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].0, "req-1");
    assert_eq!(written[0].1["requestContext"]["condition"], "Success");
    assert_eq!(written[0].1["requestPayload"], json!({ "n": 1 }));
    assert_eq!(written[0].1["responsePayload"], json!({}));
}

#[tokio::test]
async fn a_function_error_is_retried_after_lambdas_delay() {
    let target = ScriptedTarget::new([Err(function_error())]);
    let function = function("orders", json!({}), &target);
    let (event, after) = rescheduled(dispatcher(function).process(event()).await);
    assert_eq!((event.attempts, event.function_retries), (1, 1));
    assert!(within(after, Duration::from_secs(60)), "{after:?}");
}

#[tokio::test]
async fn a_throttle_backs_off_without_spending_a_function_retry() {
    let target = ScriptedTarget::new([Err(InvokeError::Throttled)]);
    let function = function("orders", json!({}), &target);
    let (event, after) = rescheduled(dispatcher(function).process(event()).await);
    assert_eq!((event.attempts, event.function_retries), (1, 0));
    assert!(within(after, Duration::from_secs(1)), "{after:?}");
}

#[tokio::test]
async fn exhausted_retries_write_the_failure_record_then_complete() {
    let sink = FlakySink::failing(0);
    let target = ScriptedTarget::new([Err(InvokeError::Timeout {
        after: Duration::from_secs(3),
    })]);
    let function = with_destinations(function("orders", json!({}), &target), None, Some(&sink));
    let mut last_try = event();
    last_try.attempts = 2;
    last_try.function_retries = 2;
    let settlement = dispatcher(function).process(last_try).await;
    assert!(is_complete(&settlement));
    let written = sink.written();
    assert_eq!(written.len(), 1);
    let record: &Value = &written[0].1;
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
    // One vocabulary with the Invoke API and Kafka records: Lambda's timeout document.
    assert_eq!(record["responsePayload"]["errorType"], "Sandbox.Timedout");
}

#[tokio::test]
async fn a_failed_destination_write_keeps_the_event_and_retries_only_the_write() {
    let sink = FlakySink::failing(1);
    let target = ScriptedTarget::answering(|_| Err(function_error()));
    let function = with_destinations(
        function("orders", json!({ "max_retry_attempts": 0 }), &target),
        None,
        Some(&sink),
    );
    let dispatcher = dispatcher(function);
    let (event, after) = rescheduled(dispatcher.process(event()).await);
    assert!(event.pending_destination.is_some(), "the record is owed");
    assert!(within(after, super::DESTINATION_RETRY), "{after:?}");
    assert!(sink.written().is_empty());
    assert_eq!(target.calls(), 1);

    let settlement = dispatcher.process(event).await;
    assert!(is_complete(&settlement));
    assert_eq!(target.calls(), 1, "the function does not run again");
    assert_eq!(sink.written().len(), 1);
}

#[tokio::test]
async fn an_event_past_its_age_fails_without_an_invocation() {
    let sink = FlakySink::failing(0);
    let target = ScriptedTarget::default();
    let function = with_destinations(
        function("orders", json!({ "max_event_age": "60s" }), &target),
        None,
        Some(&sink),
    );
    let mut old = event();
    old.enqueued_at = SystemTime::now() - Duration::from_secs(61);
    let settlement = dispatcher(function).process(old).await;
    assert!(is_complete(&settlement));
    assert_eq!(target.calls(), 0);
    assert_eq!(
        sink.written()[0].1["requestContext"]["condition"],
        "EventAgeExceeded"
    );
}

#[tokio::test]
async fn a_disabled_function_sends_its_events_to_the_destination() {
    let sink = FlakySink::failing(0);
    let target = ScriptedTarget::default();
    let function = with_destinations(
        function("orders", json!({ "reserved_concurrency": 0 }), &target),
        None,
        Some(&sink),
    );
    let settlement = dispatcher(function).process(event()).await;
    assert!(is_complete(&settlement));
    assert_eq!(target.calls(), 0);
    assert_eq!(
        sink.written()[0].1["requestContext"]["condition"],
        "RetriesExhausted"
    );
}

#[tokio::test]
async fn without_a_destination_a_failed_event_is_dropped() {
    let target = ScriptedTarget::answering(|_| Err(function_error()));
    let function = function("orders", json!({ "max_retry_attempts": 0 }), &target);
    let settlement = dispatcher(function).process(event()).await;
    assert!(is_complete(&settlement));
}

#[tokio::test]
async fn an_event_for_an_unknown_function_backs_off() {
    let target = ScriptedTarget::default();
    let function = function("other", json!({}), &target);
    let (event, after) = rescheduled(dispatcher(function).process(event()).await);
    assert_eq!(event.attempts, 1);
    assert!(within(after, Duration::from_secs(2)), "{after:?}");
}

// === the run loop ===

/// An in-memory queue: leases events in order, records what was settled.
#[derive(Default)]
struct MemoryQueue {
    due: std::sync::Mutex<std::collections::VecDeque<QueuedEvent>>,
    arrived: tokio::sync::Notify,
    settled: std::sync::Mutex<Vec<String>>,
}

impl MemoryQueue {
    fn settled(&self) -> Vec<String> {
        self.settled.lock().expect("not poisoned").clone()
    }

    fn waiting(&self) -> usize {
        self.due.lock().expect("not poisoned").len()
    }
}

impl Queue for MemoryQueue {
    fn enqueue(&self, event: QueuedEvent) -> BoxFuture<'_, Result<(), QueueError>> {
        self.due.lock().expect("not poisoned").push_back(event);
        self.arrived.notify_one();
        Box::pin(async { Ok(()) })
    }

    fn next(&self) -> BoxFuture<'_, Result<Delivery, QueueError>> {
        Box::pin(async move {
            loop {
                let next = self.due.lock().expect("not poisoned").pop_front();
                if let Some(event) = next {
                    let lease = LeaseId(event.id.clone());
                    return Ok(Delivery { lease, event });
                }
                self.arrived.notified().await;
            }
        })
    }

    fn complete(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), QueueError>> {
        self.settled.lock().expect("not poisoned").push(lease.0);
        Box::pin(async { Ok(()) })
    }

    fn reschedule(
        &self,
        lease: LeaseId,
        _event: QueuedEvent,
        _not_before: SystemTime,
    ) -> BoxFuture<'_, Result<(), QueueError>> {
        self.settled.lock().expect("not poisoned").push(lease.0);
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_the_attempt_in_flight_settle_and_leases_nothing_more() {
    // The function takes 10 s; one lease at a time.
    let target = ScriptedTarget::default().taking(Duration::from_secs(10));
    let slow = function("orders", json!({ "timeout": "60s" }), &target);
    let queue = Arc::new(MemoryQueue::default());
    for n in 1..=2 {
        let mut queued = event();
        queued.id = format!("req-{n}");
        queue.enqueue(queued).await.expect("in memory");
    }
    let dispatcher = super::Dispatcher::new(
        queue.clone(),
        Arc::new(Functions::of([slow])),
        Arc::new(Completions::default()),
        1,
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(dispatcher.run(shutdown.clone()));
    // Stop once the first event is being invoked.
    for _ in 0..100 {
        if target.calls() == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(target.calls(), 1, "the first event is in flight");
    let stopped_at = tokio::time::Instant::now();
    shutdown.cancel();
    run.await.expect("the dispatcher ends");
    assert_eq!(
        stopped_at.elapsed(),
        Duration::from_secs(10),
        "it waited for the attempt"
    );
    assert_eq!(target.calls(), 1);
    assert_eq!(
        queue.settled(),
        ["req-1"],
        "the attempt in flight was settled"
    );
    assert_eq!(queue.waiting(), 1, "no new lease after shutdown");
}
