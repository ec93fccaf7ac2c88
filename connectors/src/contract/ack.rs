//! Acknowledgements of single queued events: how a source that hands the broker one event at a
//! time (a schedule) learns that the event's outcome is final.
//!
//! The source makes the pair, hands the [`Ack`] over with the event and keeps the
//! [`AckReceiver`]. Whoever reaches the event's final [`Outcome`] resolves the ack. An ack
//! dropped without an outcome is **not** final: the receiver sees [`AckStatus::Abandoned`]
//! (RELIABILITY.md, invariant 1).
//!
//! Kafka does not use it: a batch's acknowledgement is the handler's `BatchOutcome`, returned
//! to the partition's task.

use tokio::sync::oneshot;

use super::Outcome;

/// What the source learns once the [`Ack`] is resolved or gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// The event reached this final outcome.
    Final(Outcome),
    /// The ack was dropped without an outcome: nothing may be treated as done.
    Abandoned,
}

/// The acknowledgement of one event: resolve it once with [`Ack::resolve`].
#[derive(Debug)]
pub struct Ack(oneshot::Sender<Outcome>);

/// The source's end: resolves when the [`Ack`] is resolved or dropped.
#[derive(Debug)]
pub struct AckReceiver(oneshot::Receiver<Outcome>);

impl Ack {
    /// A new handle and the receiver its source awaits.
    pub fn new() -> (Self, AckReceiver) {
        let (tx, rx) = oneshot::channel();
        (Self(tx), AckReceiver(rx))
    }

    /// Reports the event's final outcome.
    pub fn resolve(self, outcome: Outcome) {
        // The source may have stopped listening (shutdown); then nobody needs the outcome.
        if self.0.send(outcome).is_err() {
            tracing::trace!("An ack's outcome had no listener.");
        }
    }
}

impl AckReceiver {
    /// Waits until the ack is resolved or dropped.
    pub async fn status(self) -> AckStatus {
        match self.0.await {
            Ok(outcome) => AckStatus::Final(outcome),
            Err(_dropped) => AckStatus::Abandoned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_resolved_ack_is_final() {
        for outcome in [Outcome::Delivered, Outcome::DeadLettered, Outcome::Dropped] {
            let (ack, rx) = Ack::new();
            ack.resolve(outcome);
            assert_eq!(rx.status().await, AckStatus::Final(outcome));
        }
    }

    #[tokio::test]
    async fn a_dropped_ack_is_not_final() {
        let (ack, rx) = Ack::new();
        drop(ack);
        assert_eq!(rx.status().await, AckStatus::Abandoned);
    }

    #[test]
    fn resolving_without_a_listener_is_harmless() {
        let (ack, rx) = Ack::new();
        drop(rx);
        ack.resolve(Outcome::Delivered);
    }
}
