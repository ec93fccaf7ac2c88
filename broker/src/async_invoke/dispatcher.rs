//! The dispatcher: leases due events, admits them, invokes, and settles every lease.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use impulse_connectors::contract::{
    Delivery, LeaseId, Outcome, PendingDestination, Queue, QueuedEvent, Sink,
};
use impulse_connectors::telemetry;
use impulse_invoker::record::{invocation_record, RecordInput};
use impulse_invoker::retry::{Decision, FailureCondition, SYSTEM_BACKOFF_BASE};
use impulse_invoker::{ErrorClass, Invocation, Invoke, InvokeError, LambdaError, Name};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Completions;
use crate::functions::{Function, Functions};
use crate::limiter::{Limiter, Throttle};

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
    functions: Arc<Functions>,
    limiter: Limiter,
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
enum Settlement {
    /// The outcome is final; remove the event.
    Complete,
    /// Not final yet; keep the (updated) event, due again at the given time.
    Reschedule(QueuedEvent, SystemTime),
}

impl Dispatcher {
    pub(crate) fn new(
        queue: Arc<dyn Queue>,
        functions: Arc<Functions>,
        limiter: Limiter,
        completions: Arc<Completions>,
        max_leased: usize,
    ) -> Self {
        let inner = Inner {
            queue,
            functions,
            limiter,
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

    async fn process(&self, mut event: QueuedEvent) -> Settlement {
        let Some(function) = self.functions.get(&event.function) else {
            // The configuration no longer has this function. Keep the event (it may come
            // back) until it is too old; nothing can be written anywhere for it.
            tracing::warn!(function = %event.function, id = %event.id, "Async event for an unknown function.");
            return self.unknown_function(event);
        };
        if let Some(pending) = event.pending_destination.take() {
            return self.write_pending(function, event, pending).await;
        }
        let now = SystemTime::now();
        let age = now.duration_since(event.enqueued_at).unwrap_or_default();
        let max_age = function.retry.max_event_age();
        if age >= max_age {
            return self
                .fail(function, event, FailureCondition::EventAgeExceeded, None)
                .await;
        }
        let permit = match self.limiter.acquire(&event.function).await {
            Ok(permit) => permit,
            // Reserved concurrency 0 (or an unreserved pool that reserved functions emptied):
            // the event can never run. Lambda sends such events straight to the destination.
            Err(Throttle::Disabled | Throttle::AccountConcurrency) => {
                return self
                    .fail(function, event, FailureCondition::RetriesExhausted, None)
                    .await
            }
            Err(other) => {
                tracing::warn!(function = %event.function, reason = other.reason(), "Async event not admitted.");
                return self.unknown_function(event);
            }
        };
        telemetry::async_event_age(&event.function, age);
        event.attempts += 1;
        let invocation = Invocation {
            request_id: event.id.clone(),
            function: function.name,
            // Events carry the name of a configured trigger: a bounded set to intern.
            trigger: Name::new(&event.trigger),
            payload: event.payload.clone(),
            // The function's timeout applies too; the earlier deadline wins.
            deadline: Some(tokio::time::Instant::now() + (max_age - age)),
        };
        let result = function.service.invoke(invocation).await;
        // The permit covers one attempt: released before any backoff.
        drop(permit);
        match result {
            Ok(response) => self.succeed(function, event, &response.payload).await,
            Err(err) => {
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
                        telemetry::retry_scheduled(&event.function, class_label(err.class()));
                        tracing::info!(
                            function = %event.function, id = %event.id, attempts = event.attempts,
                            error_code = err.error_code(), retry_in = ?after,
                            "Async invocation failed; retrying."
                        );
                        Settlement::Reschedule(event, now + after)
                    }
                    Decision::GiveUp(condition) => {
                        self.fail(function, event, condition, Some(&err)).await
                    }
                }
            }
        }
    }

    async fn succeed(
        &self,
        function: &Function,
        event: QueuedEvent,
        response: &[u8],
    ) -> Settlement {
        if function.on_success.is_none() {
            self.finished(&event, "success", Outcome::Delivered);
            return Settlement::Complete;
        }
        let record = invocation_record(&RecordInput {
            request_id: &event.id,
            function: &event.function,
            condition: "Success",
            approximate_invoke_count: event.attempts,
            request_payload: &event.payload,
            response_payload: Some(response),
            function_error: None,
            timestamp: SystemTime::now(),
        });
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
        let response = error.map(error_document);
        let record = invocation_record(&RecordInput {
            request_id: &event.id,
            function: &event.function,
            condition: condition.as_str(),
            approximate_invoke_count: event.attempts,
            request_payload: &event.payload,
            response_payload: response.as_deref(),
            function_error: error.map(|_| "Unhandled"),
            timestamp: SystemTime::now(),
        });
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
                    telemetry::dead_letter_written(&event.function, &event.trigger, true);
                    self.finished(&event, "dead_lettered", Outcome::DeadLettered);
                }
                Settlement::Complete
            }
            Err(err) => {
                telemetry::destination_failed(&event.function, label);
                if !pending.succeeded {
                    telemetry::dead_letter_written(&event.function, &event.trigger, false);
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

    /// An event whose function is missing or not admissible: back off like a system error
    /// until the event is too old, then drop it (there is no destination to write to).
    fn unknown_function(&self, mut event: QueuedEvent) -> Settlement {
        let now = SystemTime::now();
        let age = now.duration_since(event.enqueued_at).unwrap_or_default();
        if age >= impulse_config::default_max_event_age() {
            self.finished(&event, "expired", Outcome::Dropped);
            return Settlement::Complete;
        }
        event.attempts += 1;
        let step = event.attempts.min(8);
        let after = (SYSTEM_BACKOFF_BASE * 2u32.pow(step)).min(Duration::from_secs(300));
        Settlement::Reschedule(event, now + after)
    }

    fn finished(&self, event: &QueuedEvent, result: &'static str, outcome: Outcome) {
        telemetry::async_event_finished(&event.function, result);
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

/// The error document a failure record carries as `responsePayload`.
fn error_document(error: &InvokeError) -> bytes::Bytes {
    match error {
        InvokeError::Function { payload, .. } => payload.clone(),
        other => {
            let (error_type, message) = match other {
                InvokeError::Timeout { .. } => ("Sandbox.Timedout", other.to_string()),
                InvokeError::Throttled => ("TooManyRequestsException", other.to_string()),
                InvokeError::System(_) => ("ServiceException", other.to_string()),
                _ => ("RequestRejected", other.to_string()),
            };
            LambdaError {
                error_type,
                error_message: &message,
            }
            .to_bytes()
        }
    }
}

fn class_label(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Function => "function",
        ErrorClass::Throttle => "throttle",
        ErrorClass::System => "system",
        ErrorClass::Permanent => "permanent",
    }
}
