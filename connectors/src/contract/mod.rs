//! The contracts between sources, the broker and sinks: how each source hands work to the
//! broker, and how it learns that the work's outcome is final.
//!
//! Input is acknowledged to its source only once its [`Outcome`] is final: the function
//! succeeded, its failure was durably written to a destination, or a configured policy dropped
//! it. Each source reaches the broker in the shape its protocol needs, and each ends in that
//! rule:
//!
//! | source | hands work to the broker | learns the final outcome |
//! |---|---|---|
//! | HTTP | the broker's axum handler (`broker::api::trigger`) is the source; `http` encodes the function URL event | sync: the reply carries the function's result; async: `202` once [`Queue::enqueue`] made the event durable |
//! | schedule | `ScheduleSource::run` gives each tick's [`QueuedEvent`] and an [`Ack`] to a `schedule::TickHandler`, which enqueues it on the async [`Queue`] | the async dispatcher resolves the [`Ack`]; the source waits on it for `overlap = "skip"` |
//! | Kafka | `KafkaSource::run` calls a [`BatchHandler`] per batch, from the partition's task | the handler's `BatchOutcome`: an [`Outcome`] per record, or none (abandoned); offsets commit below the first record without one |
//! | Redis streams | `RedisStreamSource::run` calls a [`BatchHandler`] per batch, each in a task of its own | the handler's `BatchOutcome`; `XACK` of the entries with a final outcome, the rest stay pending |
//!
//! Sources share [`SourceError`] and one loop shape, described in the `source` module: a
//! source never sees a function, a limit or a destination. Behind the broker:
//!
//! - [`Queue`]: the durable async-invocation queue (the `embedded` redb file, or Redis) between
//!   asynchronous intake (async HTTP triggers, `Event` invocations, schedules) and the broker's
//!   async dispatcher.
//! - [`Sink`]: durable writes for destinations and dead letters (the embedded log, a Redis
//!   stream, a Kafka topic).
//! - `impulse_invoker::Invoke`: how the broker calls a function. It lives in the invoker, which
//!   no source depends on (DESIGN.md's layering).
//!
//! This module imports no protocol crate: the invoker depends on `connectors` without features
//! and sees only it and `telemetry`.

mod ack;
mod batch;
mod event_id;
mod name;
mod outcome;
mod queue;
mod sink;
mod source;

pub use ack::{Ack, AckReceiver, AckStatus};
pub use batch::{first_failed_item, BatchHandler, BatchOutcome};
pub use event_id::EventId;
pub use name::Name;
pub use outcome::Outcome;
#[cfg(any(feature = "embedded", feature = "redis"))]
pub(crate) use queue::unix_millis;
pub use queue::{
    names_function, DecodeError, Delivery, LeaseId, PendingDestination, Queue, QueueError,
    QueuedEvent,
};
pub use sink::{Sink, SinkError};
pub use source::SourceError;
