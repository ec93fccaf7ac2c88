//! The contracts every source, sink and the broker share: events, acknowledgements, sources, sinks.

mod ack;
mod event;
mod name;
mod queue;
mod sink;
mod source;

pub use ack::{Ack, AckReceiver, AckStatus, Outcome};
pub use event::{Event, EventId, EventMetadata};
pub use name::Name;
#[cfg(any(feature = "embedded", feature = "redis"))]
pub(crate) use queue::unix_millis;
pub use queue::{
    DecodeError, Delivery, LeaseId, PendingDestination, Queue, QueueError, QueuedEvent,
};
pub use sink::{Sink, SinkError};
pub use source::{Source, SourceError};
