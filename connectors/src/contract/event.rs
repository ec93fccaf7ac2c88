//! An event: a JSON payload on its way to a function, its metadata, and its acknowledgement.

use std::fmt;
use std::time::SystemTime;

use bytes::Bytes;

use super::Ack;

/// An idempotency key, stable across retries and redeliveries of the same input:
/// `topic/partition/offset`, a Redis entry id, `schedule/tick` or an HTTP request id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(String);

impl EventId {
    /// Wraps a source-specific key.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an event came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMetadata {
    /// The configured name of the trigger that produced the event.
    pub trigger: String,
    /// The kind of source: `http`, `schedule`, `kafka`, `redis` or `invoke` (the Invoke API).
    pub source: &'static str,
    /// When the source first saw the input; the event's age is measured from here.
    pub received_at: SystemTime,
}

/// A JSON payload for a function, with the acknowledgement its source waits on.
///
/// The payload stays bytes: sources build it without parsing user data on the hot path.
#[derive(Debug)]
pub struct Event {
    /// The idempotency key.
    pub id: EventId,
    /// The JSON document the function receives.
    pub payload: Bytes,
    /// Where the event came from.
    pub metadata: EventMetadata,
    /// Resolved once the event's outcome is final; see [`Ack`].
    pub ack: Ack,
}
