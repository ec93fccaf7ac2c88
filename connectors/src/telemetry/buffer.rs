//! Metric updates of the invocation hot path, kept per thread and applied in bulk.
//!
//! The invocation counters and the duration histogram are shared by every worker thread, so
//! each update was an atomic operation on a cache line the other threads write too: at one
//! record per batch, such updates showed in profiles. Instead, each thread appends its updates
//! to a log of its own (a lock nobody else takes between flushes) and replays it into the
//! handles once it holds [`FLUSH_AT`] updates, and on [`flush_all`], which the metrics endpoint
//! calls before every scrape. A scrape therefore sees every update made before it. (The
//! concurrency gauge is counted per thread stripe instead, in `super::striped`; the flushes
//! here publish it.)
//!
//! A thread that exits hands what is left in its log to the next [`flush_all`]: it cannot
//! replay it itself, because applying an update reads other thread-locals (the exporter's
//! clock), which may already be gone while a thread's locals are destroyed. A panic there
//! aborts the process.
//!
//! Handles are `&'static`: a registered series lives as long as the recorder anyway, and the
//! series on this path are bounded by the configuration (functions × triggers × outcomes).

use std::cell::OnceCell;
use std::sync::{Arc, Mutex};

use super::{lock, striped, InvocationOutcome, TriggerInvocationMetrics};

/// Updates a thread keeps before it replays them.
pub(super) const FLUSH_AT: usize = 256;

/// One buffered update: an attempt finished, for its outcome's counter and the duration
/// histogram.
#[derive(Clone, Copy)]
struct Update(&'static TriggerInvocationMetrics, InvocationOutcome, f64);

impl Update {
    fn apply(self) {
        let Self(handles, outcome, seconds) = self;
        handles.apply(outcome, seconds);
    }
}

type Log = Arc<Mutex<Vec<Update>>>;

/// Every thread's log, for [`flush_all`].
static LOGS: Mutex<Vec<Log>> = Mutex::new(Vec::new());

/// Updates left by threads that exited, for [`flush_all`].
static ORPHANS: Mutex<Vec<Update>> = Mutex::new(Vec::new());

thread_local! {
    static THIS_THREAD: ThreadLog = const { ThreadLog(OnceCell::new()) };
}

/// A thread's log, registered on first use; handed to [`ORPHANS`] and unregistered when the
/// thread exits.
struct ThreadLog(OnceCell<Log>);

impl ThreadLog {
    fn get(&self) -> &Log {
        self.0.get_or_init(|| {
            let log = Log::default();
            lock(&LOGS).push(Arc::clone(&log));
            log
        })
    }
}

impl Drop for ThreadLog {
    fn drop(&mut self) {
        if let Some(log) = self.0.get() {
            lock(&ORPHANS).append(&mut lock(log));
            lock(&LOGS).retain(|other| !Arc::ptr_eq(other, log));
        }
    }
}

fn replay(log: &mut Vec<Update>) {
    for update in log.drain(..) {
        update.apply();
    }
}

fn push(update: Update) {
    let buffered = THIS_THREAD.try_with(|this| {
        let mut log = lock(this.get());
        log.push(update);
        if log.len() >= FLUSH_AT {
            replay(&mut log);
        }
    });
    // The thread is exiting and its log is gone.
    if buffered.is_err() {
        lock(&ORPHANS).push(update);
    }
}

/// Counts an attempt that took `seconds`.
pub(super) fn attempt(
    handles: &'static TriggerInvocationMetrics,
    outcome: InvocationOutcome,
    seconds: f64,
) {
    push(Update(handles, outcome, seconds));
}

/// Applies the updates buffered by this thread, and publishes the concurrency gauges.
pub fn flush_this_thread() {
    // A thread that is exiting has replayed its log already: nothing to do then.
    THIS_THREAD
        .try_with(|this| replay(&mut lock(this.get())))
        .unwrap_or_default();
    striped::publish_all();
}

/// Applies the updates buffered by every thread, and those left by threads that exited: call
/// it before reading the metrics.
pub fn flush_all() {
    let logs = lock(&LOGS).clone();
    for log in logs {
        replay(&mut lock(&log));
    }
    let orphans = std::mem::take(&mut *lock(&ORPHANS));
    for update in orphans {
        update.apply();
    }
    striped::publish_all();
}
