//! Per-function metric handles for the invocation hot path: registered once, then each update
//! is one operation on its handle, with no label allocation and no registry lookup.
//!
//! `metrics` resolves a handle against the recorder installed when the handle is registered; a
//! handle registered before the recorder is installed stays a no-op forever. Each type below says
//! when it registers.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use crate::contract::Name;

use super::{
    InvocationOutcome, CONCURRENT_EXECUTIONS, INVOCATIONS_TOTAL, INVOCATION_DURATION_SECONDS,
};

// === ConcurrencyGauge ===

/// A function's `impulse_concurrent_executions` gauge: attempts holding a concurrency permit.
///
/// Registered by [`ConcurrencyGauge::new`]: create it after the recorder is installed. Every
/// move reaches the recorder at once. Clones share the gauge, and so do gauges created for the
/// same function (a rebuilt limiter keeps counting the old one's permits until they drop): moves
/// are increments and decrements, never `set`, so they add up.
#[derive(Clone)]
pub struct ConcurrencyGauge {
    gauge: Gauge,
}

impl ConcurrencyGauge {
    /// Registers the gauge labelled with `function`.
    pub fn new(function: &str) -> Self {
        Self {
            gauge: metrics::gauge!(CONCURRENT_EXECUTIONS, "function" => function.to_owned()),
        }
    }

    /// Emitted when an attempt takes a permit.
    pub fn started(&self) {
        self.gauge.increment(1.0);
    }

    /// Emitted when an attempt gives its permit back.
    pub fn finished(&self) {
        self.gauge.decrement(1.0);
    }
}

impl fmt::Debug for ConcurrencyGauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyGauge").finish_non_exhaustive()
    }
}

// === InvocationMetrics ===

/// A function version's `impulse_invocations_total` counters (labels `function`, `version`,
/// `trigger`, `outcome`) and its `impulse_invocation_duration_seconds` histogram (labels
/// `function`, `version`). `version` is the executed version (`$LATEST`, `1`, …): versions are
/// configured, so the label is bounded.
///
/// Creating it registers nothing, so it may be built before the recorder is installed (the
/// broker builds its functions first). Each handle is registered on first use instead: the
/// recorder MUST be installed before the first invocation starts. As with per-call registration,
/// no series exists before it is needed: the histogram is registered when the function's first
/// attempt starts, each counter when its trigger and outcome first occur together.
///
/// Look up the trigger once per attempt with [`InvocationMetrics::trigger`] (a walk of a short
/// list without a lock; a new entry only for a trigger never seen before), then report through
/// the returned handles.
pub struct InvocationMetrics {
    function: Arc<str>,
    version: Arc<str>,
    /// Shared by every trigger's handles: the histogram's labels are `function` and `version`.
    duration: OnceLock<Histogram>,
    /// The triggers seen so far, in the order they were first seen. Trigger names are
    /// configured names (or `invoke`), a small bounded set, so an append-only list read without
    /// a lock does: a read lock is two atomic updates per attempt on a count that every worker
    /// thread shares. The nodes are leaked: they live for the process, as the series they update
    /// do anyway (bounded by the configuration: functions × triggers), so an attempt holds a
    /// plain reference rather than a clone of an `Arc` that every worker thread shares.
    triggers: OnceLock<&'static TriggerNode>,
}

/// One trigger's handles, and the next trigger's.
struct TriggerNode {
    handles: TriggerInvocationMetrics,
    next: OnceLock<&'static TriggerNode>,
}

impl InvocationMetrics {
    /// Handles for `function`'s `$LATEST`; none is registered yet.
    pub fn new(function: impl Into<Arc<str>>) -> Self {
        Self::versioned(function, "$LATEST")
    }

    /// Handles for `version` of `function`; none is registered yet.
    pub fn versioned(function: impl Into<Arc<str>>, version: impl Into<Arc<str>>) -> Self {
        Self {
            function: function.into(),
            version: version.into(),
            duration: OnceLock::new(),
            triggers: OnceLock::new(),
        }
    }

    /// The function these metrics are labelled with.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// The handles for invocations of this function from `trigger`, registering the duration
    /// histogram the first time any trigger is seen.
    pub fn trigger(&self, trigger: Name) -> &'static TriggerInvocationMetrics {
        let mut slot = &self.triggers;
        loop {
            // Threads adding the same trigger at once wait for one another in `get_or_init`;
            // one adding another trigger in this slot sends the others on to the next.
            let node: &'static TriggerNode = slot.get_or_init(|| {
                Box::leak(Box::new(TriggerNode {
                    handles: self.new_trigger(trigger),
                    next: OnceLock::new(),
                }))
            });
            if node.handles.trigger == trigger {
                return &node.handles;
            }
            slot = &node.next;
        }
    }

    fn new_trigger(&self, trigger: Name) -> TriggerInvocationMetrics {
        TriggerInvocationMetrics {
            function: Arc::clone(&self.function),
            version: Arc::clone(&self.version),
            trigger,
            duration: self
                .duration
                .get_or_init(|| {
                    metrics::histogram!(
                        INVOCATION_DURATION_SECONDS,
                        "function" => Arc::clone(&self.function),
                        "version" => Arc::clone(&self.version),
                    )
                })
                .clone(),
            outcomes: Default::default(),
        }
    }
}

impl fmt::Debug for InvocationMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvocationMetrics")
            .field("function", &self.function)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

// === TriggerInvocationMetrics ===

/// One function's invocation handles for one trigger, from [`InvocationMetrics::trigger`].
pub struct TriggerInvocationMetrics {
    function: Arc<str>,
    version: Arc<str>,
    trigger: Name,
    duration: Histogram,
    /// One counter per outcome, by [`InvocationOutcome::index`], each registered the first
    /// time that outcome occurs (so no zero series for outcomes that never happened).
    outcomes: [OnceLock<Counter>; InvocationOutcome::COUNT],
}

impl TriggerInvocationMetrics {
    /// Emitted when an invocation attempt finishes, whatever its outcome.
    pub fn completed(&self, outcome: InvocationOutcome, elapsed: Duration) {
        self.counter(outcome).increment(1);
        self.duration.record(elapsed.as_secs_f64());
    }

    fn counter(&self, outcome: InvocationOutcome) -> &Counter {
        self.outcomes[outcome.index()].get_or_init(|| {
            metrics::counter!(
                INVOCATIONS_TOTAL,
                "function" => Arc::clone(&self.function),
                "version" => Arc::clone(&self.version),
                "trigger" => self.trigger.as_str(),
                "outcome" => outcome.as_str(),
            )
        })
    }
}

impl fmt::Debug for TriggerInvocationMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TriggerInvocationMetrics")
            .field("function", &self.function)
            .field("trigger", &self.trigger)
            .finish_non_exhaustive()
    }
}
