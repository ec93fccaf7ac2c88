//! The dispatcher: leases due events, admits them, invokes, and settles every lease.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use impulse_connectors::contract::{
    Delivery, LeaseId, Outcome, PendingDestination, Queue, QueuedEvent, Sink,
};
use impulse_connectors::telemetry;
use impulse_invoker::record::{DestinationRecord, RecordOutcome, RecordSource};
use impulse_invoker::retry::{remaining_age, Decision, FailureCondition, SYSTEM_BACKOFF};
use impulse_invoker::{Invocation, InvokeError, Name};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Completions;
use crate::functions::{CallError, CurrentFunctions, Function};

/// How long to wait before retrying a destination write that failed.
const DESTINATION_RETRY: Duration = Duration::from_secs(10);
/// How long to wait before asking the queue again after it failed.
const QUEUE_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Drives the async queue.
#[derive(Debug, Clone)]
pub(crate) struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Arc<dyn Queue>,
    /// Loaded once per event: a reload never changes the function of an attempt under way.
    functions: CurrentFunctions,
    completions: Arc<Completions>,
    /// Bounds leased events (in flight or waiting for admission), so one saturated function
    /// holds at most this many leases while others keep flowing.
    max_leased: usize,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("max_leased", &self.max_leased)
            .finish_non_exhaustive()
    }
}

/// What became of a leased event.
#[derive(Debug)]
enum Settlement {
    /// The outcome is final; remove the event.
    Complete,
    /// Not final yet; keep the (updated) event, due again at the given time.
    Reschedule(QueuedEvent, SystemTime),
}

impl Dispatcher {
    pub(crate) fn new(
        queue: Arc<dyn Queue>,
        functions: impl Into<CurrentFunctions>,
        completions: Arc<Completions>,
        max_leased: usize,
    ) -> Self {
        let inner = Inner {
            queue,
            functions: functions.into(),
            completions,
            max_leased,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Runs until `shutdown`, then waits for the attempts in flight to settle. (The caller
    /// bounds that wait; leases left unsettled are delivered again after a restart.)
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.inner.max_leased));
        let mut tasks = JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            // Biased toward shutdown: once it is asked for, no new lease is taken.
            let slot = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break, // closed: cannot happen, the semaphore is never closed
                },
            };
            let delivery = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                delivery = self.inner.queue.next() => delivery,
            };
            match delivery {
                Ok(delivery) => {
                    let inner = self.inner.clone();
                    tasks.spawn(async move {
                        inner.handle(delivery).await;
                        drop(slot);
                    });
                }
                Err(err) => {
                    tracing::error!(error = %err, "Cannot read the async queue; retrying.");
                    tokio::time::sleep(QUEUE_ERROR_BACKOFF).await;
                }
            }
        }
        while tasks.join_next().await.is_some() {}
    }
}

impl Inner {
    async fn handle(&self, delivery: Delivery) {
        let Delivery { lease, event } = delivery;
        let id = event.id.clone();
        let settlement = self.process(event).await;
        self.settle(lease, &id, settlement).await;
    }

    /// Takes one leased event one step: an attempt (or a pending destination write), and what
    /// follows from it.
    async fn process(&self, mut event: QueuedEvent) -> Settlement {
        let functions = self.functions.load();
        let Some(function) = functions.get(&event.function) else {
            // The configuration no longer has this function. Keep the event (it may come
            // back) until it is too old; nothing can be written anywhere for it.
            tracing::warn!(function = %event.function, id = %event.id, "Async event for an unknown function.");
            return self.unknown_function(event);
        };
        if let Some(pending) = event.pending_destination.take() {
            return self.write_pending(function, event, pending).await;
        }
        let max_age = function.retry.max_event_age();
        if remaining_age(event.enqueued_at, max_age, SystemTime::now()).is_none() {
            // No attempt ran: the record names the version the function's qualifier points at.
            let version = function.version();
            return self
                .fail(
                    function,
                    event,
                    FailureCondition::AgeExceeded,
                    None,
                    version,
                )
                .await;
        }
        // Routed here rather than inside the call, so the record names the version that ran.
        let routed = function.route();
        let version = routed.version();
        let result = routed
            .call_when_admitted(|| {
                let now = SystemTime::now();
                telemetry::async_event_age(
                    function_label(&event),
                    now.duration_since(event.enqueued_at).unwrap_or_default(),
                );
                event.attempts += 1;
                Invocation {
                    request_id: event.id.clone(),
                    function: function.name,
                    // Events carry the name of a configured trigger: a bounded set to intern.
                    trigger: Name::new(&event.trigger),
                    payload: event.payload.clone(),
                    // The function's timeout applies too; the earlier deadline wins.
                    deadline: Some(
                        tokio::time::Instant::now()
                            + remaining_age(event.enqueued_at, max_age, now).unwrap_or_default(),
                    ),
                    // Lambda passes a client context to synchronous invocations only.
                    client_context: None,
                    log_tail: None,
                }
            })
            .await;
        match result {
            Ok(response) => {
                self.succeed(function, event, &response.payload, version)
                    .await
            }
            // Reserved concurrency 0 (or an unreserved pool that reserved functions emptied):
            // the event can never run. Lambda sends such events straight to the destination.
            Err(CallError::NotAdmitted(throttle)) => {
                tracing::warn!(function = %event.function, id = %event.id, reason = throttle.reason(), "Async event cannot be admitted.");
                self.fail(
                    function,
                    event,
                    FailureCondition::RetriesExhausted,
                    None,
                    version,
                )
                .await
            }
            Err(CallError::Failed(err)) => self.retry_or_fail(function, event, err, version).await,
        }
    }

    /// After a failed attempt: reschedules the event, or fails it for good, as the function's
    /// retry policy decides.
    async fn retry_or_fail(
        &self,
        function: &Function,
        mut event: QueuedEvent,
        err: InvokeError,
        version: &str,
    ) -> Settlement {
        let now = SystemTime::now();
        let decision = function.retry.decide(
            &err,
            event.function_retries,
            event.attempts,
            event.enqueued_at,
            now,
        );
        match decision {
            Decision::Retry {
                after,
                function_retry,
            } => {
                if function_retry {
                    event.function_retries += 1;
                }
                telemetry::retry_scheduled(function_label(&event), err.class().as_str());
                tracing::info!(
                    function = %event.function, id = %event.id, attempts = event.attempts,
                    error_code = err.error_code(), retry_in = ?after,
                    "Async invocation failed; retrying."
                );
                Settlement::Reschedule(event, now + after)
            }
            Decision::GiveUp(condition) => {
                self.fail(function, event, condition, Some(&err), version)
                    .await
            }
        }
    }

    async fn succeed(
        &self,
        function: &Function,
        event: QueuedEvent,
        response: &[u8],
        version: &str,
    ) -> Settlement {
        if function.on_success.is_none() {
            self.finished(&event, "success", Outcome::Delivered);
            return Settlement::Complete;
        }
        let record = destination_record(&event, RecordOutcome::Success { response }, version);
        let pending = PendingDestination {
            succeeded: true,
            record,
        };
        self.write_pending(function, event, pending).await
    }

    async fn fail(
        &self,
        function: &Function,
        event: QueuedEvent,
        condition: FailureCondition,
        error: Option<&InvokeError>,
        version: &str,
    ) -> Settlement {
        tracing::warn!(
            function = %event.function, id = %event.id, attempts = event.attempts,
            condition = condition.as_str(), "Async event failed for good."
        );
        if function.on_failure.is_none() {
            // Lambda discards such events; count it so it is never silent.
            self.finished(&event, "dropped", Outcome::Dropped);
            return Settlement::Complete;
        }
        let record =
            destination_record(&event, RecordOutcome::Failure { condition, error }, version);
        let pending = PendingDestination {
            succeeded: false,
            record,
        };
        self.write_pending(function, event, pending).await
    }

    /// Writes a destination record; the event completes only once the write is confirmed.
    async fn write_pending(
        &self,
        function: &Function,
        mut event: QueuedEvent,
        pending: PendingDestination,
    ) -> Settlement {
        let (sink, label): (Option<&Arc<dyn Sink>>, &'static str) = if pending.succeeded {
            (function.on_success.as_ref(), "on_success")
        } else {
            (function.on_failure.as_ref(), "on_failure")
        };
        let Some(sink) = sink else {
            // The destination was removed from the configuration since: nothing to write.
            let (result, outcome) = if pending.succeeded {
                ("success", Outcome::Delivered)
            } else {
                ("dropped", Outcome::Dropped)
            };
            self.finished(&event, result, outcome);
            return Settlement::Complete;
        };
        match sink.write(&event.id, pending.record.clone()).await {
            Ok(()) => {
                if pending.succeeded {
                    self.finished(&event, "success", Outcome::Delivered);
                } else {
                    telemetry::dead_letter_written(function_label(&event), &event.trigger, true);
                    self.finished(&event, "dead_lettered", Outcome::DeadLettered);
                }
                Settlement::Complete
            }
            Err(err) => {
                telemetry::destination_failed(function_label(&event), label);
                if !pending.succeeded {
                    telemetry::dead_letter_written(function_label(&event), &event.trigger, false);
                }
                tracing::error!(
                    function = %event.function, id = %event.id, destination = label, error = %err,
                    "Destination write failed; the event stays queued."
                );
                event.pending_destination = Some(pending);
                Settlement::Reschedule(event, SystemTime::now() + DESTINATION_RETRY)
            }
        }
    }

    /// An event whose function is not configured: back off like a system error until the event
    /// is too old for the default age, then drop it (there is no destination to write to).
    fn unknown_function(&self, mut event: QueuedEvent) -> Settlement {
        let now = SystemTime::now();
        let max_age = impulse_config::default_max_event_age();
        if remaining_age(event.enqueued_at, max_age, now).is_none() {
            self.finished(&event, "expired", Outcome::Dropped);
            return Settlement::Complete;
        }
        event.attempts += 1;
        let due = now + SYSTEM_BACKOFF.delay(event.attempts);
        Settlement::Reschedule(event, due)
    }

    fn finished(&self, event: &QueuedEvent, result: &'static str, outcome: Outcome) {
        telemetry::async_event_finished(function_label(event), result);
        self.completions.resolve(&event.id, outcome);
    }

    async fn settle(&self, lease: LeaseId, id: &str, settlement: Settlement) {
        let result = match settlement {
            Settlement::Complete => self.queue.complete(lease).await,
            Settlement::Reschedule(event, at) => self.queue.reschedule(lease, event, at).await,
        };
        if let Err(err) = result {
            // The lease stays unsettled: the event is delivered again (a duplicate, not a loss).
            tracing::error!(id, error = %err, "Cannot settle an async event; it will be delivered again.");
        }
    }
}

/// The destination record of an async event.
fn destination_record(
    event: &QueuedEvent,
    outcome: RecordOutcome<'_>,
    executed_version: &str,
) -> bytes::Bytes {
    DestinationRecord {
        request_id: &event.id,
        function: &event.function,
        executed_version,
        approximate_invoke_count: event.attempts,
        outcome,
        source: RecordSource::Invocation {
            request_payload: &event.payload,
        },
        timestamp: SystemTime::now(),
    }
    .to_bytes()
}

/// The `function` label of `event`'s metrics: the function's name without the qualifier it was
/// called with (`orders` for `orders:live`), as every other metric of the function.
fn function_label(event: &QueuedEvent) -> &str {
    impulse_config::split_qualifier(&event.function).0
}

#[cfg(test)]
#[path = "dispatcher_tests.rs"]
mod tests;
