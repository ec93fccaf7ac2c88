//! How the rebalance callback tells a partition task to stop.
//!
//! A channel of [`Stop`]s, specialised for a receiver that is polled on every turn of the
//! partition loop and almost never has anything: such a poll is one atomic load, where a
//! tokio channel registers the task's waker again each time (two compare-and-swaps on its
//! `AtomicWaker`, a cost per event at one record per batch; see BENCHMARKS.md, ledger "Stop
//! signals polled in place").

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// What a partition task is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// Stop dispatching; wait this long for in-flight acks, store, exit.
    Drain(Duration),
    /// Exit now (the assignment was lost): nothing more may be stored.
    Abort,
}

/// A new stop channel.
pub(super) fn stop_channel() -> (StopSender, StopReceiver) {
    let shared = Arc::new(Shared {
        posted: AtomicBool::new(false),
        inner: Mutex::new(Inner::default()),
    });
    let receiver = StopReceiver {
        shared: Arc::clone(&shared),
        registered: None,
    };
    (StopSender(shared), receiver)
}

struct Shared {
    /// Whether the receiver has something to take (a stop, or the sender gone). Set under the
    /// lock; the receiver takes the lock only when it is set or its waker changed.
    posted: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    stops: VecDeque<Stop>,
    sender_gone: bool,
    /// The receiver's task. It stays registered after a wake: the receiver only registers
    /// again when its waker changes.
    waker: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock; were it poisoned, the state is still whole.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn post(&self, change: impl FnOnce(&mut Inner)) {
        let waker = {
            let mut inner = self.lock();
            change(&mut inner);
            self.posted.store(true, Ordering::Release);
            inner.waker.clone()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The rebalance callback's end. Dropping it tells the receiver that no stop will come.
pub(super) struct StopSender(Arc<Shared>);

impl StopSender {
    pub(super) fn send(&self, stop: Stop) {
        self.0.post(|inner| inner.stops.push_back(stop));
    }
}

impl Drop for StopSender {
    fn drop(&mut self) {
        self.0.post(|inner| inner.sender_gone = true);
    }
}

/// The partition task's end.
pub(super) struct StopReceiver {
    shared: Arc<Shared>,
    /// The waker registered in `shared`, to tell whether the task's waker changed.
    registered: Option<Waker>,
}

impl StopReceiver {
    /// The next stop, or `None` once the sender is gone and every stop was taken.
    pub(super) async fn recv(&mut self) -> Option<Stop> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`StopReceiver::recv`] as a poll, for a loop that polls it on every turn.
    pub(super) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Stop>> {
        let registered = self
            .registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()));
        if registered && !self.shared.posted.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        let mut inner = self.shared.lock();
        if let Some(stop) = inner.stops.pop_front() {
            if inner.stops.is_empty() && !inner.sender_gone {
                self.shared.posted.store(false, Ordering::Relaxed);
            }
            return Poll::Ready(Some(stop));
        }
        if inner.sender_gone {
            return Poll::Ready(None);
        }
        self.shared.posted.store(false, Ordering::Relaxed);
        if !registered {
            inner.waker = Some(cx.waker().clone());
            self.registered = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt as _;

    #[tokio::test]
    async fn stops_arrive_in_order_then_none_once_the_sender_is_gone() {
        let (sender, mut receiver) = stop_channel();
        assert_eq!(receiver.recv().now_or_never(), None, "nothing sent yet");
        sender.send(Stop::Drain(Duration::from_secs(1)));
        sender.send(Stop::Abort);
        assert_eq!(
            receiver.recv().await,
            Some(Stop::Drain(Duration::from_secs(1)))
        );
        assert_eq!(receiver.recv().await, Some(Stop::Abort));
        assert_eq!(receiver.recv().now_or_never(), None, "nothing more sent");
        drop(sender);
        assert_eq!(receiver.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_task_is_woken_by_each_stop() {
        let (sender, mut receiver) = stop_channel();
        let task = tokio::spawn(async move {
            let first = receiver.recv().await;
            let second = receiver.recv().await;
            let end = receiver.recv().await;
            (first, second, end)
        });
        // Each send lands while the task may or may not be waiting: either way it is seen.
        tokio::task::yield_now().await;
        sender.send(Stop::Drain(Duration::ZERO));
        tokio::task::yield_now().await;
        sender.send(Stop::Abort);
        drop(sender);
        let (first, second, end) = task.await.expect("the receiving task");
        assert_eq!(first, Some(Stop::Drain(Duration::ZERO)));
        assert_eq!(second, Some(Stop::Abort));
        assert_eq!(end, None);
    }
}
