//! Deadline timers reused per thread, so an attempt's timeout costs no lock in the common case.
//!
//! A fresh `tokio::time::Sleep` per attempt goes through the runtime's timer-wheel lock, which
//! every worker thread shares, twice (filed on its first poll, taken out when dropped) and
//! clones the runtime handle (see BENCHMARKS.md, ledger "Pooled deadline timers"). So a
//! finished attempt gives its timer back to its thread's pool, still armed, and the next
//! attempt on that thread takes it.
//!
//! Attempts of a function have the same timeout, so each attempt's deadline is later than the
//! previous one's. The taken timer is then left armed at its old, earlier deadline: the attempt
//! only notes its own deadline. If the old deadline comes while the attempt runs, the timer
//! fires, sees the attempt's deadline is later, and moves itself there. That happens about once
//! per timeout period per timer, instead of a `Sleep::reset` per attempt (which costs a
//! timer-wheel update even though tokio then only moves the entry in place). A
//! deadline *earlier* than the armed one resets the timer at once.
//!
//! An armed timer nobody takes fires once at its old deadline and wakes the task that last
//! polled it: a spurious wake-up, which every future must tolerate. Each pooled timer remembers
//! the runtime it belongs to, and a thread that finds another runtime's timers (a test thread
//! running one runtime after another) drops them rather than polling a timer of a runtime that
//! may be gone.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::runtime::{self, Handle};
use tokio::time::{Instant, Sleep};

/// Timers kept per thread; more than the attempts a thread has in flight at once is waste.
const POOL_SIZE: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Pooled>> = const { RefCell::new(Vec::new()) };
    /// The runtime this thread runs for its whole life, when it said so.
    static DEDICATED_TO: Cell<Option<runtime::Id>> = const { Cell::new(None) };
}

/// Declares that the current thread runs the current runtime's tasks, and no other runtime's,
/// for the rest of its life: call it from the runtime's `on_thread_start` in a process with one
/// runtime (the `impulse` binary). The thread's attempts then take pooled timers without asking
/// tokio for the runtime each time (a reference count on the runtime handle, which every
/// worker updates). Panics outside a runtime.
pub fn dedicate_this_thread_to_the_current_runtime() {
    let runtime = Handle::current().id();
    DEDICATED_TO.with(|dedicated| dedicated.set(Some(runtime)));
}

/// A pooled timer and the runtime whose timer wheel it is registered with.
struct Pooled {
    runtime: runtime::Id,
    sleep: Pin<Box<Sleep>>,
}

/// A timer that completes at its deadline and goes back to its thread's pool when dropped.
pub(super) struct DeadlineTimer {
    /// Always `Some` until dropped. Armed at `deadline` or earlier.
    timer: Option<Pooled>,
    deadline: Instant,
}

impl DeadlineTimer {
    /// A timer completing at `deadline`: a pooled one of the current runtime, or a new one.
    /// Panics outside a tokio runtime, like `tokio::time::sleep_until`.
    pub(super) fn until(deadline: Instant) -> Self {
        let runtime = DEDICATED_TO
            .try_with(Cell::get)
            .ok()
            .flatten()
            .unwrap_or_else(|| Handle::current().id());
        let reused = POOL
            .try_with(|pool| take(&mut pool.borrow_mut(), runtime))
            .ok()
            .flatten();
        let timer = match reused {
            Some(mut sleep) => {
                // Armed later than this deadline: it would fire too late. (Armed earlier, it
                // moves itself when it fires; see the module's comment.)
                if sleep.deadline() > deadline {
                    sleep.as_mut().reset(deadline);
                }
                Pooled { runtime, sleep }
            }
            None => Pooled {
                runtime,
                sleep: Box::pin(tokio::time::sleep_until(deadline)),
            },
        };
        Self {
            timer: Some(timer),
            deadline,
        }
    }
}

/// The last pooled timer of `runtime`. Timers of another runtime are dropped: they are what
/// is left of a runtime the thread ran before.
fn take(pool: &mut Vec<Pooled>, runtime: runtime::Id) -> Option<Pin<Box<Sleep>>> {
    if pool.last().is_some_and(|pooled| pooled.runtime != runtime) {
        pool.retain(|pooled| pooled.runtime == runtime);
    }
    pool.pop().map(|pooled| pooled.sleep)
}

impl Future for DeadlineTimer {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        let Some(timer) = &mut self.timer else {
            return Poll::Pending;
        };
        loop {
            ready!(timer.sleep.as_mut().poll(cx));
            if timer.sleep.deadline() >= deadline {
                return Poll::Ready(());
            }
            // It fired at a deadline it kept from an earlier attempt.
            timer.sleep.as_mut().reset(deadline);
        }
    }
}

impl Drop for DeadlineTimer {
    fn drop(&mut self) {
        let Some(timer) = self.timer.take() else {
            return;
        };
        // During thread teardown the pool may be gone (`try_with` fails); the timer is then
        // dropped with the closure, as it is when the pool is full.
        POOL.try_with(|pool| {
            if let Ok(mut pool) = pool.try_borrow_mut() {
                if pool.len() < POOL_SIZE {
                    pool.push(timer);
                }
            }
        })
        .unwrap_or_default();
    }
}

/// How many timers this thread has pooled (tests).
#[cfg(test)]
pub(super) fn pooled_on_this_thread() -> usize {
    POOL.with(|pool| pool.borrow().len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn current_thread_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime")
    }

    /// Gives this thread's pool a timer armed `after` from now, as a finished attempt does.
    fn pool_a_timer_armed_for(after: Duration) {
        drop(DeadlineTimer::until(Instant::now() + after));
    }

    #[test]
    fn a_finished_timer_is_reused_and_still_fires_at_its_new_deadline() {
        let rt = current_thread_runtime();
        rt.block_on(async {
            let before = pooled_on_this_thread();
            pool_a_timer_armed_for(Duration::from_secs(3));
            assert_eq!(pooled_on_this_thread(), before + 1, "given back");

            let start = Instant::now();
            let reused = DeadlineTimer::until(start + Duration::from_secs(5));
            assert_eq!(
                pooled_on_this_thread(),
                before,
                "taken again, not made anew"
            );
            reused.await;
            assert_eq!(start.elapsed(), Duration::from_secs(5));
        });
    }

    #[test]
    fn a_reused_timer_whose_old_deadline_passed_waits_for_its_new_one() {
        let rt = current_thread_runtime();
        rt.block_on(async {
            pool_a_timer_armed_for(Duration::from_secs(1));
            tokio::time::sleep(Duration::from_secs(2)).await;

            let start = Instant::now();
            let before = pooled_on_this_thread();
            let reused = DeadlineTimer::until(start + Duration::from_secs(3));
            assert_eq!(pooled_on_this_thread() + 1, before, "taken from the pool");
            reused.await;
            assert_eq!(start.elapsed(), Duration::from_secs(3));
        });
    }

    #[test]
    fn a_reused_timer_moved_earlier_fires_at_the_earlier_deadline() {
        let rt = current_thread_runtime();
        rt.block_on(async {
            let start = Instant::now();
            let first = DeadlineTimer::until(start + Duration::from_secs(10));
            // Poll it once so it is filed in the wheel at +10 s, as an attempt's timer is.
            assert!(futures::poll!(Box::pin(first)).is_pending());
            DeadlineTimer::until(start + Duration::from_secs(1)).await;
            assert_eq!(start.elapsed(), Duration::from_secs(1));
        });
    }

    #[test]
    fn a_dedicated_thread_pools_without_asking_for_the_runtime() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .on_thread_start(dedicate_this_thread_to_the_current_runtime)
            .build()
            .expect("a runtime");
        let reused = rt.block_on(async {
            tokio::spawn(async {
                let dedicated = DEDICATED_TO.with(Cell::get);
                assert_eq!(dedicated, Some(Handle::current().id()));
                pool_a_timer_armed_for(Duration::from_secs(3));
                let pooled = pooled_on_this_thread();
                let start = Instant::now();
                let timer = DeadlineTimer::until(start + Duration::from_millis(20));
                let taken = pooled - pooled_on_this_thread();
                timer.await;
                assert!(start.elapsed() >= Duration::from_millis(20));
                taken
            })
            .await
            .expect("the task")
        });
        assert_eq!(reused, 1, "the worker took its pooled timer");
    }

    #[test]
    fn timers_of_a_runtime_that_is_gone_are_not_reused() {
        let first = current_thread_runtime();
        first.block_on(async {
            pool_a_timer_armed_for(Duration::from_secs(3));
        });
        assert!(pooled_on_this_thread() >= 1);
        drop(first);

        // Polling a timer of the dropped runtime would panic ("runtime is shutting down") or
        // never fire; a timer of this runtime fires on time.
        let second = current_thread_runtime();
        second.block_on(async {
            let start = Instant::now();
            DeadlineTimer::until(start + Duration::from_secs(2)).await;
            assert_eq!(start.elapsed(), Duration::from_secs(2));
        });
    }
}
