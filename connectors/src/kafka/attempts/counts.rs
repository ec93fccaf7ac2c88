//! Attempt counts in memory, with an emptiness check that takes no lock.
//!
//! Every successful batch asks whether a count needs clearing: that question must not take a
//! lock that every partition of the trigger shares (it is on the hot path; see BENCHMARKS.md).

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Counts by attempts key.
#[derive(Debug, Default)]
pub(super) struct Counts {
    map: Mutex<BTreeMap<String, u32>>,
    /// The map's length, written whenever a guard is released.
    len: AtomicUsize,
}

impl Counts {
    pub(super) fn new(map: BTreeMap<String, u32>) -> Self {
        Self {
            len: AtomicUsize::new(map.len()),
            map: Mutex::new(map),
        }
    }

    /// Whether there is no count, as of the last released guard.
    pub(super) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    pub(super) fn lock(&self) -> CountsGuard<'_> {
        CountsGuard {
            // A panic while holding the lock leaves a plain map behind: still valid.
            map: self
                .map
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            len: &self.len,
        }
    }
}

/// The locked map; publishes its length when dropped.
pub(super) struct CountsGuard<'a> {
    map: MutexGuard<'a, BTreeMap<String, u32>>,
    len: &'a AtomicUsize,
}

impl Deref for CountsGuard<'_> {
    type Target = BTreeMap<String, u32>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl DerefMut for CountsGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}

impl Drop for CountsGuard<'_> {
    fn drop(&mut self) {
        self.len.store(self.map.len(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emptiness_follows_every_change() {
        let counts = Counts::default();
        assert!(counts.is_empty());
        counts.lock().insert("t-0@5".into(), 2);
        assert!(!counts.is_empty());
        counts.lock().remove("t-0@5");
        assert!(counts.is_empty());
        let loaded = Counts::new(BTreeMap::from([("t-1@9".to_owned(), 1)]));
        assert!(!loaded.is_empty());
    }
}
