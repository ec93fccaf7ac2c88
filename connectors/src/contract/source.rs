//! What every source shares: the shape of its run loop, and the error that stops it.
//!
//! A source is a struct built from its trigger's configuration, with
//! `run(self, handler, shutdown) -> Result<(), SourceError>`: it hands its input to `handler`
//! (the broker's), acknowledges input only once the handler reports a final
//! [`Outcome`](super::Outcome), and returns when `shutdown` resolves. The handler is a
//! per-protocol trait, because what a source hands over differs: a Kafka batch
//! (`contract::BatchHandler`, Kafka and Redis streams), a schedule tick's queued event (`schedule::TickHandler`).

/// An error that stops a source.
#[derive(Debug, thiserror::Error)]
#[error("source {trigger} failed: {message}")]
pub struct SourceError {
    /// The trigger whose source failed.
    pub trigger: String,
    /// What went wrong, for the operator.
    pub message: String,
}
