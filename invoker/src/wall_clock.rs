//! Deadlines as wall-clock epoch milliseconds, for the headers that announce them.
//!
//! Lambda announces an attempt's deadline in epoch milliseconds; ours are monotonic instants.
//! Converting one reads both clocks (the time left, and the wall clock to add it to): two clock
//! reads per attempt on the hot path (see BENCHMARKS.md, ledger "Per-thread clock offset").
//! Each thread instead
//! keeps the wall-clock time of one deadline it converted, its anchor, and converts a later
//! deadline by adding the monotonic distance between the two. It reads the clocks again once a
//! deadline is outside the anchor's [`REFRESH`] window: deadlines move with time, so a busy
//! thread measures again about every `REFRESH`, and a step of the wall clock shows within it.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// How far past its anchor a deadline is still converted with the anchor's clock offset.
const REFRESH: Duration = Duration::from_millis(100);

/// A deadline and its wall-clock time, as time since the Unix epoch.
#[derive(Clone, Copy)]
struct Anchor {
    deadline: Instant,
    since_epoch: Duration,
}

thread_local! {
    static ANCHOR: Cell<Option<Anchor>> = const { Cell::new(None) };
}

/// `deadline` in milliseconds since the Unix epoch (0 if the wall clock is before it).
pub(crate) fn epoch_millis(deadline: Instant) -> u64 {
    let anchored = ANCHOR
        .try_with(Cell::get)
        .ok()
        .flatten()
        .and_then(|anchor| {
            let past_anchor = deadline.checked_duration_since(anchor.deadline)?;
            (past_anchor < REFRESH).then(|| anchor.since_epoch + past_anchor)
        });
    let since_epoch = anchored.unwrap_or_else(|| {
        let (since_epoch, exact) = measure(deadline);
        // A deadline already past reads as "now", which is no offset to convert others with.
        // During thread teardown there is nowhere to keep an anchor; the next call measures.
        if exact {
            ANCHOR
                .try_with(|anchor| {
                    anchor.set(Some(Anchor {
                        deadline,
                        since_epoch,
                    }))
                })
                .unwrap_or_default();
        }
        since_epoch
    });
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// `deadline`'s wall-clock time from both clocks read now, and whether it is exact: a deadline
/// already past reads as the present.
fn measure(deadline: Instant) -> (Duration, bool) {
    let now = SystemTime::now();
    let remaining = deadline.checked_duration_since(Instant::now());
    let since_epoch = (now + remaining.unwrap_or_default())
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (since_epoch, remaining.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured_millis(deadline: Instant) -> u64 {
        u64::try_from(measure(deadline).0.as_millis()).unwrap_or(u64::MAX)
    }

    /// Tests may share a thread (`--test-threads 1`): each starts without an anchor.
    fn forget_anchor() {
        ANCHOR.with(|anchor| anchor.set(None));
    }

    #[test]
    fn anchored_conversions_match_reading_the_clocks() {
        forget_anchor();
        let base = Instant::now() + Duration::from_secs(3);
        // The first conversion anchors; the others, within the window, reuse its offset.
        for step_ms in [0, 1, 7, 42, 99] {
            let deadline = base + Duration::from_millis(step_ms);
            let anchored = epoch_millis(deadline);
            let direct = measured_millis(deadline);
            assert!(
                anchored.abs_diff(direct) <= 2,
                "step {step_ms} ms: anchored {anchored}, read from the clocks {direct}"
            );
        }
    }

    #[test]
    fn deadlines_outside_the_window_are_measured_again() {
        forget_anchor();
        let base = Instant::now() + Duration::from_secs(3);
        epoch_millis(base);
        let anchor = ANCHOR.with(Cell::get).map(|a| a.deadline);
        assert_eq!(anchor, Some(base));

        // Earlier than the anchor: measured, and it becomes the anchor.
        let earlier = base - Duration::from_secs(1);
        epoch_millis(earlier);
        assert_eq!(ANCHOR.with(Cell::get).map(|a| a.deadline), Some(earlier));

        // Within the window: the anchor stays.
        epoch_millis(earlier + Duration::from_millis(50));
        assert_eq!(ANCHOR.with(Cell::get).map(|a| a.deadline), Some(earlier));

        // A deadline already past is "now", and does not become the anchor.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let past = epoch_millis(Instant::now() - Duration::from_secs(10));
        assert!(u128::from(past) >= now, "{past} vs {now}");
        assert_eq!(ANCHOR.with(Cell::get).map(|a| a.deadline), Some(earlier));

        // Past the window: measured again.
        let later = earlier + REFRESH;
        let millis = epoch_millis(later);
        assert_eq!(ANCHOR.with(Cell::get).map(|a| a.deadline), Some(later));
        assert!(millis.abs_diff(measured_millis(later)) <= 2);
    }
}
