//! The replay memory: deliveries a verifier accepted, each until its window closes, in bounded
//! space.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::SystemTime;

use super::WebhookError;

/// Accepted delivery keys with their expiry. Expired entries are forgotten on every call,
/// oldest first, through a min-heap, so each call costs O(log n) plus the entries it drops.
#[derive(Debug)]
pub(super) struct ReplayMemory {
    capacity: usize,
    expires: HashMap<String, SystemTime>,
    /// Every key in `expires` once, ordered by its expiry.
    by_expiry: BinaryHeap<Reverse<(SystemTime, String)>>,
}

impl ReplayMemory {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            expires: HashMap::new(),
            by_expiry: BinaryHeap::new(),
        }
    }

    /// Remembers `key` until `expires`; refuses a key already remembered and unexpired at
    /// `now`, and a new key when `capacity` unexpired keys are remembered (fail closed).
    pub(super) fn remember(
        &mut self,
        key: String,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<(), WebhookError> {
        self.forget_expired(now);
        if self.expires.contains_key(&key) {
            return Err(WebhookError::Replayed);
        }
        if self.expires.len() >= self.capacity {
            return Err(WebhookError::ReplayMemoryFull);
        }
        self.by_expiry.push(Reverse((expires, key.clone())));
        self.expires.insert(key, expires);
        Ok(())
    }

    /// Drops every entry whose window closed before `now`. An entry is kept *at* its expiry:
    /// the timestamp check still accepts a request exactly `tolerance` old.
    fn forget_expired(&mut self, now: SystemTime) {
        while let Some(Reverse((expires, _))) = self.by_expiry.peek() {
            if *expires >= now {
                break;
            }
            if let Some(Reverse((_, key))) = self.by_expiry.pop() {
                self.expires.remove(&key);
            }
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.expires.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_key_is_refused_until_it_expires() {
        let mut memory = ReplayMemory::new(10);
        assert_eq!(memory.remember("a".into(), at(100), at(0)), Ok(()));
        assert_eq!(
            memory.remember("a".into(), at(200), at(99)),
            Err(WebhookError::Replayed)
        );
        assert_eq!(
            memory.remember("a".into(), at(200), at(100)),
            Err(WebhookError::Replayed)
        );
        // After its expiry the key is forgotten and may be accepted again.
        assert_eq!(memory.remember("a".into(), at(300), at(101)), Ok(()));
        assert_eq!(memory.len(), 1);
    }

    #[test]
    fn a_full_memory_fails_closed_until_entries_expire() {
        let mut memory = ReplayMemory::new(2);
        assert_eq!(memory.remember("a".into(), at(50), at(0)), Ok(()));
        assert_eq!(memory.remember("b".into(), at(100), at(0)), Ok(()));
        assert_eq!(
            memory.remember("c".into(), at(100), at(10)),
            Err(WebhookError::ReplayMemoryFull)
        );
        // Nothing was evicted to make room: "a" is still a replay.
        assert_eq!(
            memory.remember("a".into(), at(100), at(10)),
            Err(WebhookError::Replayed)
        );
        // Once "a" expires there is room again, and only "a" was forgotten.
        assert_eq!(memory.remember("c".into(), at(100), at(51)), Ok(()));
        assert_eq!(
            memory.remember("b".into(), at(100), at(51)),
            Err(WebhookError::Replayed)
        );
        assert_eq!(memory.len(), 2);
    }

    #[test]
    fn memory_stays_bounded_over_many_windows() {
        let mut memory = ReplayMemory::new(100);
        for i in 0..10_000 {
            // Each key lives 50 s; one arrives per second.
            assert_eq!(memory.remember(format!("k{i}"), at(i + 50), at(i)), Ok(()));
            assert!(memory.len() <= 51);
        }
        assert!(memory.by_expiry.len() <= 51);
    }
}
