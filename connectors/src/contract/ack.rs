//! Acknowledgements: how a source learns that an event's outcome is final.
//!
//! The ack travels with the event. Its clones share one finaliser, and the source learns the
//! combined status when the last clone is gone. Unlike vector's finaliser, a clone dropped
//! without a status is **not** final: the source sees [`AckStatus::Abandoned`] and must not
//! commit, so the input is delivered again (RELIABILITY.md, invariant 1).

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// A final outcome, reported by whoever finished with the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// The function succeeded.
    Delivered,
    /// The failure record was durably written to the event's failure destination.
    DeadLettered,
    /// A configured policy dropped the event (a filter, a disabled function); it was counted.
    Dropped,
}

/// What the source learns when every clone of an [`Ack`] is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Every clone reported a final outcome; this is the combined one.
    ///
    /// Combined by priority: one dead-lettered clone makes the whole event dead-lettered, and
    /// a dropped one only wins when every clone was dropped.
    Final(Outcome),
    /// At least one clone was dropped without an outcome: nothing may be committed.
    Abandoned,
}

/// The acknowledgement handle carried by an [`Event`](super::Event).
///
/// Clone it to fan an event out; resolve each clone once with [`Ack::resolve`].
#[derive(Debug, Clone)]
pub struct Ack {
    shared: Arc<Shared>,
    resolved: bool,
}

/// The source's end: resolves when the last [`Ack`] clone is gone.
#[derive(Debug)]
pub struct AckReceiver(oneshot::Receiver<AckStatus>);

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    combined: Option<Outcome>,
    abandoned: bool,
    notify: Option<oneshot::Sender<AckStatus>>,
}

// === impl Ack ===

impl Ack {
    /// A new handle and the receiver its source awaits.
    pub fn new() -> (Self, AckReceiver) {
        let (tx, rx) = oneshot::channel();
        let state = State {
            combined: None,
            abandoned: false,
            notify: Some(tx),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
        });
        (
            Self {
                shared,
                resolved: false,
            },
            AckReceiver(rx),
        )
    }

    /// Records this clone's final outcome and consumes it.
    pub fn resolve(mut self, outcome: Outcome) {
        self.resolved = true;
        let mut state = self.shared.lock();
        state.combined = Some(match state.combined {
            None => outcome,
            Some(previous) => combine(previous, outcome),
        });
    }
}

/// Dead-lettered beats delivered beats dropped: the status that needs the most attention wins.
fn combine(a: Outcome, b: Outcome) -> Outcome {
    let rank = |o: Outcome| match o {
        Outcome::DeadLettered => 2,
        Outcome::Delivered => 1,
        Outcome::Dropped => 0,
    };
    if rank(a) >= rank(b) {
        a
    } else {
        b
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if !self.resolved {
            state.abandoned = true;
        }
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another clone panicked mid-update of two plain fields;
        // the state is still meaningful, and an abandoned flag errs on the safe side.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let state = self
            .state
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let status = match (state.abandoned, state.combined) {
            (false, Some(outcome)) => AckStatus::Final(outcome),
            _ => AckStatus::Abandoned,
        };
        if let Some(tx) = state.notify.take() {
            // The source may have stopped listening (shutdown); then nobody needs the status.
            if tx.send(status).is_err() {
                tracing::trace!("An ack status had no listener.");
            }
        }
    }
}

// === impl AckReceiver ===

impl AckReceiver {
    /// Waits until every clone of the ack is gone and returns the combined status.
    pub async fn status(self) -> AckStatus {
        // The sender lives in `Shared`, whose drop always sends, so an error cannot happen;
        // treating it as abandoned keeps the source from committing if it ever did.
        self.0.await.unwrap_or(AckStatus::Abandoned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivered_is_final() {
        let (ack, rx) = Ack::new();
        ack.resolve(Outcome::Delivered);
        assert_eq!(rx.status().await, AckStatus::Final(Outcome::Delivered));
    }

    #[tokio::test]
    async fn dead_lettered_is_final() {
        let (ack, rx) = Ack::new();
        ack.resolve(Outcome::DeadLettered);
        assert_eq!(rx.status().await, AckStatus::Final(Outcome::DeadLettered));
    }

    #[tokio::test]
    async fn dropped_by_policy_is_final() {
        let (ack, rx) = Ack::new();
        ack.resolve(Outcome::Dropped);
        assert_eq!(rx.status().await, AckStatus::Final(Outcome::Dropped));
    }

    #[tokio::test]
    async fn a_dropped_handle_is_not_final() {
        let (ack, rx) = Ack::new();
        drop(ack);
        assert_eq!(rx.status().await, AckStatus::Abandoned);
    }

    #[tokio::test]
    async fn one_abandoned_clone_abandons_the_event() {
        let (ack, rx) = Ack::new();
        let clone = ack.clone();
        ack.resolve(Outcome::Delivered);
        drop(clone);
        assert_eq!(rx.status().await, AckStatus::Abandoned);
    }

    #[tokio::test]
    async fn status_waits_for_the_last_clone_and_combines_by_priority() {
        let (ack, mut rx) = Ack::new();
        let clone = ack.clone();
        ack.resolve(Outcome::DeadLettered);
        assert!(
            matches!(rx.0.try_recv(), Err(oneshot::error::TryRecvError::Empty)),
            "one clone is still out"
        );
        clone.resolve(Outcome::Delivered);
        assert_eq!(rx.status().await, AckStatus::Final(Outcome::DeadLettered));
    }

    #[test]
    fn dropped_only_wins_when_alone() {
        assert_eq!(
            combine(Outcome::Dropped, Outcome::Delivered),
            Outcome::Delivered
        );
        assert_eq!(
            combine(Outcome::Dropped, Outcome::Dropped),
            Outcome::Dropped
        );
        assert_eq!(
            combine(Outcome::Delivered, Outcome::DeadLettered),
            Outcome::DeadLettered
        );
    }
}
