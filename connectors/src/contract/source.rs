//! The `Source` trait: something that turns outside input into [`Event`]s.

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::Event;

/// An error that stops a source.
#[derive(Debug, thiserror::Error)]
#[error("source {trigger} failed: {message}")]
pub struct SourceError {
    /// The trigger whose source failed.
    pub trigger: String,
    /// What went wrong, for the operator.
    pub message: String,
}

/// A producer of events: Kafka, Redis streams, schedules.
///
/// `run` sends events into `out` and MUST wait on each event's ack before committing the
/// input it came from; it returns when `shutdown` resolves, after committing what is final.
/// Sending into `out` waits when the broker is saturated: that is the backpressure path.
pub trait Source: Send {
    /// Runs the source until `shutdown` completes.
    fn run(
        self: Box<Self>,
        out: mpsc::Sender<Event>,
        shutdown: BoxFuture<'static, ()>,
    ) -> BoxFuture<'static, Result<(), SourceError>>;
}
