//! A governor clock that reads tokio's clock, so that paused-time tests drive the rate limits.

use std::ops::Add;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::nanos::Nanos;
use tokio::time::Instant;

/// The governor clock behind every rate limit: [`tokio::time::Instant::now`].
///
/// Outside tests this is the monotonic clock `std::time::Instant` reads. Under
/// `#[tokio::test(start_paused = true)]` it is tokio's paused clock, so a test advances the
/// rate limits and the timers `acquire` sleeps on with one clock. (governor's default clock,
/// quanta's, is a little cheaper to read but cannot be paused, and `FakeRelativeClock` cannot
/// drive tokio timers.)
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RateLimitClock;

impl Clock for RateLimitClock {
    type Instant = RateLimitInstant;

    fn now(&self) -> RateLimitInstant {
        RateLimitInstant(Instant::now())
    }
}

/// A [`RateLimitClock`] reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct RateLimitInstant(Instant);

impl RateLimitInstant {
    /// The tokio instant, for `tokio::time::sleep_until`.
    pub(super) const fn into_inner(self) -> Instant {
        self.0
    }
}

impl Add<Nanos> for RateLimitInstant {
    type Output = Self;

    fn add(self, other: Nanos) -> Self {
        // Overflow needs an instant centuries away, which no quota produces; keep the reading
        // rather than panic.
        self.0.checked_add(Duration::from(other)).map_or(self, Self)
    }
}

impl Reference for RateLimitInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        self.0.checked_sub(duration.into()).map_or(*self, Self)
    }
}
