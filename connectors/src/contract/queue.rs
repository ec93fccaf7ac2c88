//! The `Queue` trait: the durable async-invocation queue, and the event record it keeps.
//!
//! Asynchronous invocations (`X-Amz-Invocation-Type: Event`, async HTTP triggers, schedules)
//! are answered `202` only after [`Queue::enqueue`] resolves, i.e. once the event is durable.
//! A dispatcher then takes due events with [`Queue::next`], invokes, and settles each lease with
//! [`Queue::complete`] (the outcome is final) or [`Queue::reschedule`] (try again later).
//! A lease that is never settled — the process died — is delivered again: at the next start
//! (embedded) or when the lease times out (Redis). Duplicates are possible; loss is not.

use std::time::SystemTime;

use bytes::Bytes;
use futures::future::BoxFuture;

/// An event in the async queue, with the state that must survive restarts so that retry
/// budgets and `max_event_age` hold across crashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    /// The request id: the idempotency key, the same on every attempt.
    pub id: String,
    /// The function to invoke.
    pub function: String,
    /// What produced the event: a trigger name, or `invoke` for the Invoke API.
    pub trigger: String,
    /// The JSON payload.
    pub payload: Bytes,
    /// When the event was first accepted; its age (for `max_event_age`) counts from here.
    pub enqueued_at: SystemTime,
    /// Attempts made so far, of every kind (Lambda's `approximateInvokeCount`).
    pub attempts: u32,
    /// Retries already spent on function errors and timeouts (bounded by `max_retry_attempts`).
    pub function_retries: u32,
    /// A destination record whose write failed: the function already ran to a final outcome,
    /// so the next delivery retries only this write (to `on_success` when `succeeded`, else
    /// `on_failure`).
    pub pending_destination: Option<PendingDestination>,
}

/// A destination write still owed for an event whose invocation outcome is final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDestination {
    /// True for `on_success`, false for `on_failure`.
    pub succeeded: bool,
    /// The invocation record to write, as JSON.
    pub record: Bytes,
}

impl QueuedEvent {
    /// A new event, never attempted.
    pub fn new(id: String, function: String, trigger: String, payload: Bytes) -> Self {
        Self {
            id,
            function,
            trigger,
            payload,
            enqueued_at: SystemTime::now(),
            attempts: 0,
            function_retries: 0,
            pending_destination: None,
        }
    }
}

/// An opaque handle to a leased event (an embedded sequence number, a Redis entry id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseId(pub String);

/// A leased event: it is invisible to other consumers until settled or the lease is lost.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Settles the lease.
    pub lease: LeaseId,
    /// The event, as last enqueued or rescheduled.
    pub event: QueuedEvent,
}

/// A queue operation failed. Enqueue failures answer the caller with an error (never `202`);
/// settle failures leave the lease to be delivered again.
#[derive(Debug, thiserror::Error)]
#[error("queue {operation} failed: {message}")]
pub struct QueueError {
    /// `enqueue`, `next`, `complete` or `reschedule`.
    pub operation: &'static str,
    /// What went wrong, for the operator.
    pub message: String,
}

/// A durable queue of async invocations. Implementations: embedded (a redb file in the data
/// directory, group commit) and Redis (a stream with a consumer group, delays in a sorted set).
pub trait Queue: Send + Sync + 'static {
    /// Appends `event`; resolves only once it is durable (fsynced, or acknowledged by Redis).
    fn enqueue(&self, event: QueuedEvent) -> BoxFuture<'_, Result<(), QueueError>>;

    /// Waits until an event is due (its delay has passed and nobody holds it) and leases it.
    fn next(&self) -> BoxFuture<'_, Result<Delivery, QueueError>>;

    /// Removes a leased event: its outcome is final.
    fn complete(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), QueueError>>;

    /// Replaces a leased event with `event` (updated counters), due again at `not_before`.
    /// Durable before it resolves: a crash after it never loses the event.
    fn reschedule(
        &self,
        lease: LeaseId,
        event: QueuedEvent,
        not_before: SystemTime,
    ) -> BoxFuture<'_, Result<(), QueueError>>;
}
