//! Event ids: the idempotency key each source derives from its input.

use std::fmt;

/// An idempotency key, stable across retries and redeliveries of the same input:
/// `topic/partition/offset`, a Redis entry id, `schedule/<name>/<tick>` or an HTTP request id.
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

impl From<EventId> for String {
    fn from(id: EventId) -> Self {
        id.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
