//! The batches of one partition whose handler is running.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream};

use super::event::KafkaBatch;
use crate::contract::BatchOutcome;

/// A batch whose handler is running; resolves to the batch and its outcome. The handler's
/// future borrows the handler for `'h`.
type Running<'h> = BoxFuture<'h, (KafkaBatch, BatchOutcome)>;

/// The running batches of one partition, in completion order.
///
/// In partition order at most one batch runs, so a plain slot holds it: `FuturesUnordered`
/// allocates a task and registers a waker of its own on every push, a cost per event at one
/// record per batch (see BENCHMARKS.md, ledger "One slot instead of `FuturesUnordered`").
/// Key mode runs several and needs the set.
pub(super) enum InFlight<'h> {
    One(Option<Running<'h>>),
    Many(FuturesUnordered<Running<'h>>),
}

impl<'h> InFlight<'h> {
    /// At most one batch at a time (partition order), or several (key mode).
    pub(super) fn new(several: bool) -> Self {
        if several {
            Self::Many(FuturesUnordered::new())
        } else {
            Self::One(None)
        }
    }

    /// Starts tracking a batch's handler future.
    pub(super) fn push(&mut self, running: Running<'h>) {
        match self {
            Self::One(slot) => {
                debug_assert!(
                    slot.is_none(),
                    "a second batch in flight in partition order"
                );
                *slot = Some(running);
            }
            Self::Many(set) => set.push(running),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        match self {
            Self::One(slot) => slot.is_none(),
            Self::Many(set) => set.is_empty(),
        }
    }

    /// The next batch to finish, with its outcome; `None` at once when nothing runs.
    pub(super) fn next(
        &mut self,
    ) -> impl Future<Output = Option<(KafkaBatch, BatchOutcome)>> + use<'_, 'h> {
        poll_fn(move |cx| self.poll_next(cx))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(KafkaBatch, BatchOutcome)>> {
        match self {
            Self::One(slot) => {
                let Some(running) = slot.as_mut() else {
                    return Poll::Ready(None);
                };
                let finished = ready!(running.as_mut().poll(cx));
                *slot = None;
                Poll::Ready(Some(finished))
            }
            Self::Many(set) => Pin::new(set).poll_next(cx),
        }
    }
}
