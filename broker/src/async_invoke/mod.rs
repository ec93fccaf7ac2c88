//! Asynchronous invocation: the durable queue, its dispatcher, and destinations.
//!
//! Intake (`Event` invocations, async HTTP triggers, schedules) answers only after
//! [`Queue::enqueue`] resolved. The [`Dispatcher`] leases due events, waits for the limiter
//! (backpressure, never a drop), invokes, and settles each lease: complete once the outcome is
//! final (success, or the record written to its destination), reschedule otherwise.

mod completions;
mod destinations;
mod dispatcher;
mod queue;

pub(crate) use completions::Completions;
pub(crate) use destinations::build_sink;
pub(crate) use dispatcher::Dispatcher;
pub(crate) use queue::open_queue;
