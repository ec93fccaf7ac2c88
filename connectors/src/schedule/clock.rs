//! The wall clock schedule ticks are compared with: the system's, or one that follows tokio's
//! paused time in tests.

use chrono::{DateTime, TimeDelta, Utc};

/// The wall clock that schedule ticks are compared with.
///
/// Timers are tokio's; tests pair them with [`TokioWallClock`] so that paused tokio time moves
/// the wall clock too.
pub trait WallClock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock ([`Utc::now`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemWallClock;

impl WallClock for SystemWallClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A wall clock that follows tokio's clock: a fixed start plus the [`tokio::time::Instant`]
/// time elapsed since the clock was made. Under `#[tokio::test(start_paused = true)]`, time
/// advances exactly as far as tokio's paused clock.
#[derive(Debug, Clone, Copy)]
pub struct TokioWallClock {
    start: DateTime<Utc>,
    origin: tokio::time::Instant,
}

impl TokioWallClock {
    /// A clock reading `start` now. MUST be made inside the runtime whose time it follows.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        Self {
            start,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl WallClock for TokioWallClock {
    fn now(&self) -> DateTime<Utc> {
        TimeDelta::from_std(self.origin.elapsed())
            .ok()
            .and_then(|elapsed| self.start.checked_add_signed(elapsed))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}
