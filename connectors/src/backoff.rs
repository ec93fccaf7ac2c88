//! Exponential backoff: the one delay rule every retry in Impulse follows (here, below the
//! invoker, so that sources retrying their own hand-offs use it too).

use std::time::Duration;

/// Delays that double from `base` up to `max`: `base × 2^step`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
}

/// After a throttle or a system error (an unreachable endpoint): Lambda's 1 s doubling to
/// 5 min, for async events.
pub const SYSTEM_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));

/// Between attempts of a failing stream batch (Kafka) while its partition waits, between
/// failed writes of its records to a destination, and between failed hand-offs of a schedule
/// tick to the queue: 0.5 s doubling to 1 min.
pub const STREAM_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(500), Duration::from_secs(60));

impl Backoff {
    /// Delays from `base` doubling to `max`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The delay before retry number `step`, counting from 0: `base × 2^step`, at most `max`.
    pub fn delay(&self, step: u32) -> Duration {
        self.base
            .checked_mul(2u32.saturating_pow(step))
            .map_or(self.max, |delay| delay.min(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_never_overflows() {
        let secs: Vec<u64> = (0..12).map(|s| SYSTEM_BACKOFF.delay(s).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(STREAM_BACKOFF.delay(0), Duration::from_millis(500));
        assert_eq!(STREAM_BACKOFF.delay(1), Duration::from_secs(1));
        assert_eq!(STREAM_BACKOFF.delay(3), Duration::from_secs(4));
        assert_eq!(STREAM_BACKOFF.delay(u32::MAX), Duration::from_secs(60));
    }
}
