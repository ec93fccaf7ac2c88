//! The `Sink` trait: a durable place to write records (destinations and dead letters).

use bytes::Bytes;
use futures::future::BoxFuture;

/// A failed write. Every sink error is retriable and never final: the event stays unacked.
#[derive(Debug, thiserror::Error)]
#[error("sink {sink} write failed ({code}): {message}")]
pub struct SinkError {
    /// The configured name of the sink.
    pub sink: String,
    /// A stable code for metrics labels (`timeout`, `unavailable`, `rejected`, …).
    pub code: &'static str,
    /// What went wrong, for the operator.
    pub message: String,
}

/// A durable writer. `write` resolves `Ok` only once the record is confirmed durable
/// (a delivery report from an `acks=all` producer, a Redis reply, a synced log write).
pub trait Sink: Send + Sync {
    /// Writes one record, keyed by its idempotency key.
    fn write(&self, key: &str, record: Bytes) -> BoxFuture<'_, Result<(), SinkError>>;
}
