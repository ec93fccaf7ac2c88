//! What the schedule source drives: a handler that queues each tick's event for asynchronous
//! invocation.
//!
//! Schedule triggers invoke asynchronously (SEMANTICS.md §4): a tick's event is made durable on
//! the async [`Queue`](crate::contract::Queue), and the broker's dispatcher invokes it later,
//! with retries and destinations. The handler is the broker's; the source never sees a function
//! or the queue itself.
//!
//! The source records a tick as handled only once the handler's future has resolved, so a
//! recorded tick's event is durable. With several instances sharing one queue, the handler
//! claims each tick on the shared queue in the same atomic step that queues it; an instance
//! that finds the tick claimed already learns that its event is durable too
//! ([`Handled::ClaimedElsewhere`]). The [`Ack`] travels with the event: the broker resolves it
//! when the event's outcome is final, and the source waits on it only for `overlap = "skip"`.

use futures::future::BoxFuture;

use crate::contract::{Ack, QueueError, QueuedEvent};

/// What became of a tick handed to a [`TickHandler`]. Either way the tick's event is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// This handler queued the event (and keeps the ack).
    Queued,
    /// Another instance had already claimed and queued this tick's event; the ack was dropped.
    ClaimedElsewhere,
}

/// Queues each tick's event of a schedule.
///
/// The source calls it for one tick at a time and awaits the future from its own task; a slow
/// queue holds the schedule back (catch-up then decides what the ticks it passed become).
pub trait TickHandler: Send + Sync + 'static {
    /// Makes `event` durable and keeps `ack` until the event's outcome is final. Resolves once
    /// the event is durable; an error means it was not queued (and `ack` was dropped). Calling
    /// it again for the same event after an error (even an ambiguous one) MUST NOT be what
    /// queues it twice when the handler claims ticks.
    fn handle(&self, event: QueuedEvent, ack: Ack) -> BoxFuture<'_, Result<Handled, QueueError>>;
}
