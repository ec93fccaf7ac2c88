//! Gauges moved from every thread at once: one count per stripe, added up at scrape.
//!
//! The concurrency gauge moves twice per attempt, from whichever worker runs it. A single
//! shared count moved a cache line between cores on every move, and a buffered update (see
//! `super::buffer`) costs a lock and a log entry. Here each thread moves a count of its own
//! stripe (uncontended while there are fewer threads than stripes), and [`publish_all`], which
//! every flush calls, adds what the sum moved since the last publish to the real gauge.
//!
//! A sum read while attempts start and finish may miss a start whose finish it counts (the
//! stripes are read one after the other), so a scrape can see a count briefly too low; the next
//! publish corrects it. Published moves are increments, so gauges published separately for
//! one series (a rebuilt limiter's and the old one's) still add up.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Mutex;

use metrics::Gauge;

use super::lock;

/// Stripes per gauge: threads take them in turn, so a runtime's worker threads each get one.
const STRIPES: usize = 16;

/// One stripe's count, alone on its cache line (128 bytes: x86 prefetches lines in pairs).
#[repr(align(128))]
#[derive(Default)]
struct Stripe(AtomicI64);

/// A gauge whose moves are counted per stripe.
pub(super) struct StripedGauge {
    gauge: Gauge,
    stripes: [Stripe; STRIPES],
    /// The sum last added to `gauge`.
    published: Mutex<i64>,
}

/// Every striped gauge, for [`publish_all`]. Bounded by the configuration: one per function
/// per limiter built.
static GAUGES: Mutex<Vec<&'static StripedGauge>> = Mutex::new(Vec::new());

/// This thread's stripe, given out in turn as threads first move a gauge.
fn this_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    // A thread that is exiting shares the first stripe: the count is atomic all the same.
    STRIPE.try_with(|stripe| *stripe).unwrap_or(0)
}

impl StripedGauge {
    /// Stripes for `gauge`, published by every [`publish_all`] from now on.
    pub(super) fn register(gauge: Gauge) -> &'static Self {
        let striped: &'static Self = Box::leak(Box::new(Self {
            gauge,
            stripes: Default::default(),
            published: Mutex::new(0),
        }));
        lock(&GAUGES).push(striped);
        striped
    }

    /// Moves the gauge by `delta`.
    pub(super) fn add(&self, delta: i64) {
        self.stripes[this_stripe()]
            .0
            .fetch_add(delta, Ordering::Relaxed);
    }

    fn publish(&self) {
        let sum: i64 = self
            .stripes
            .iter()
            .map(|stripe| stripe.0.load(Ordering::Relaxed))
            .sum();
        let mut published = lock(&self.published);
        if sum != *published {
            self.gauge.increment((sum - *published) as f64);
            *published = sum;
        }
    }
}

/// Adds to each gauge what its stripes moved since the last publish.
pub(super) fn publish_all() {
    let gauges = lock(&GAUGES).clone();
    for gauge in gauges {
        gauge.publish();
    }
}
