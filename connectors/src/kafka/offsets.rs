//! Offset bookkeeping for the Kafka source: the per-partition watermark and assignment epochs.
//!
//! Two pure models, no rdkafka inside, so that the rules that keep Impulse from losing records
//! are unit-tested on their own (RELIABILITY.md, invariants 2 and 3):
//!
//! - [`Watermark`]: per partition, the offsets handed out and not yet final. Its
//!   [`position`](Watermark::position) is the **lowest unresolved offset** (or, when everything
//!   is final, one past the highest offset seen): the next record a restarted consumer must
//!   read. That value is what goes to `store_offsets`, **as is**: librdkafka's `store_offsets`
//!   stores the offset unchanged, whereas the deprecated `store_offset` adds 1 (see
//!   [`store_list`]).
//! - [`Assignments`]: the epoch of every partition this consumer owns. Each assignment gets a
//!   fresh epoch; a revoke ends it. A store from an older epoch — a task that outlived its
//!   assignment, even if the partition came back — is refused.

use std::collections::{HashMap, VecDeque};

use rdkafka::{Offset, TopicPartitionList};

/// A topic and partition.
pub(crate) type TopicPartition = (String, i32);

// === Watermark ===

/// Per-partition at-least-once bookkeeping: which offsets are still unresolved.
///
/// Offsets are tracked in the order the partition delivers them (ascending, gaps allowed:
/// compaction and transaction markers leave holes). Only a final outcome resolves an offset;
/// an abandoned one stays unresolved for the life of the assignment, so the partition does
/// not advance past it and a restart redelivers it.
#[derive(Debug, Default)]
pub(crate) struct Watermark {
    /// Tracked offsets in ascending order, each with whether it is final. The front entry is
    /// never final (final entries at the front are popped), so it is the position.
    entries: VecDeque<(i64, bool)>,
    /// Entries not final yet.
    unresolved: usize,
    /// One past the highest offset tracked.
    next: Option<i64>,
    /// The last position handed to [`Watermark::take_store`].
    stored: Option<i64>,
}

impl Watermark {
    /// An empty watermark: nothing tracked, nothing to store.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Starts tracking a record the partition delivered.
    pub(crate) fn track(&mut self, offset: i64) {
        // Records arrive in ascending order; an offset at or below the last one only comes
        // after the consumer was reset (out of range). It is inserted in order, so the position
        // may move back, which redelivers, never skips.
        match self.entries.back() {
            Some((last, _)) if *last >= offset => {
                let at = self.entries.partition_point(|(o, _)| *o <= offset);
                self.entries.insert(at, (offset, false));
            }
            _ => self.entries.push_back((offset, false)),
        }
        self.unresolved += 1;
        let after = offset.saturating_add(1);
        self.next = Some(self.next.map_or(after, |next| next.max(after)));
    }

    /// Marks a tracked offset final. Returns false when it was not tracked (or already
    /// resolved): that completion is ignored.
    pub(crate) fn resolve(&mut self, offset: i64) -> bool {
        // Batches of a partition finish in offset order, so the offset is almost always the
        // front one (never final, and the first of its offset): no search.
        if let Some(front) = self.entries.front_mut() {
            if front.0 == offset {
                front.1 = true;
                self.unresolved -= 1;
                self.pop_final();
                return true;
            }
        }
        let from = self.entries.partition_point(|(o, _)| *o < offset);
        let found = self
            .entries
            .range_mut(from..)
            .take_while(|(o, _)| *o == offset)
            .find(|(_, done)| !*done);
        let Some(entry) = found else {
            return false;
        };
        entry.1 = true;
        self.unresolved -= 1;
        self.pop_final();
        true
    }

    /// Drops final entries from the front, so that the front is the position.
    fn pop_final(&mut self) {
        while self.entries.front().is_some_and(|(_, done)| *done) {
            self.entries.pop_front();
        }
    }

    /// The offset a restarted consumer must read next: the lowest unresolved offset, or one
    /// past the highest tracked offset when all are final. `None` before the first record.
    pub(crate) fn position(&self) -> Option<i64> {
        self.entries.front().map(|(o, _)| *o).or(self.next)
    }

    /// The position, when it changed since the last call: the value to store.
    pub(crate) fn take_store(&mut self) -> Option<i64> {
        let position = self.position()?;
        if self.stored == Some(position) {
            return None;
        }
        self.stored = Some(position);
        Some(position)
    }

    /// How many tracked offsets are not final.
    pub(crate) fn unresolved(&self) -> usize {
        self.unresolved
    }
}

// === Assignments ===

/// The epochs of the partitions this consumer owns, and the offsets stored for them.
#[derive(Debug, Default)]
pub(crate) struct Assignments {
    /// The live epoch of each owned partition.
    epochs: HashMap<TopicPartition, u64>,
    /// The last epoch handed out, across all partitions.
    last_epoch: u64,
    /// The last offset successfully stored per owned partition (what a commit sends).
    stored: HashMap<TopicPartition, i64>,
}

impl Assignments {
    /// Starts a new epoch for `tp` (an assignment) and returns it. Anything stored under an
    /// older epoch is forgotten: the committed offset is the new assignment's start.
    pub(crate) fn assign(&mut self, tp: &TopicPartition) -> u64 {
        self.last_epoch += 1;
        self.epochs.insert(tp.clone(), self.last_epoch);
        self.stored.remove(tp);
        self.last_epoch
    }

    /// Ends `tp`'s epoch (a revoke): later stores from it are refused. Returns the offset
    /// stored during the epoch, for the final commit.
    pub(crate) fn revoke(&mut self, tp: &TopicPartition) -> Option<i64> {
        self.epochs.remove(tp);
        self.stored.remove(tp)
    }

    /// Whether `epoch` is `tp`'s live epoch, i.e. whether a store from it may proceed.
    pub(crate) fn is_current(&self, tp: &TopicPartition, epoch: u64) -> bool {
        self.epochs.get(tp) == Some(&epoch)
    }

    /// Records a successful store of `offset` by `epoch`; ignored from a stale epoch.
    pub(crate) fn stored(&mut self, tp: &TopicPartition, epoch: u64, offset: i64) {
        if self.is_current(tp, epoch) {
            self.stored.insert(tp.clone(), offset);
        }
    }

    /// The stored offsets of every owned partition.
    pub(crate) fn stored_offsets(&self) -> Vec<(TopicPartition, i64)> {
        let mut all: Vec<_> = self.stored.iter().map(|(tp, o)| (tp.clone(), *o)).collect();
        all.sort();
        all
    }

    /// Ends every epoch (shutdown), returning what was stored.
    pub(crate) fn revoke_all(&mut self) -> Vec<(TopicPartition, i64)> {
        let stored = self.stored_offsets();
        self.epochs.clear();
        self.stored.clear();
        stored
    }
}

/// The list handed to `store_offsets` or `commit`: each offset **as is**, the next record to
/// read. (`store_offset(topic, partition, o)` would store `o + 1`: never used here.)
pub(crate) fn store_list(offsets: &[(TopicPartition, i64)]) -> TopicPartitionList {
    let mut list = TopicPartitionList::with_capacity(offsets.len());
    for ((topic, partition), offset) in offsets {
        // Only fails for an invalid offset value; a watermark is always a real offset.
        if let Err(e) = list.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
            tracing::warn!(topic = %topic, partition, offset, error = %e, "Skipped an offset that cannot be stored.");
        }
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        (topic.to_owned(), partition)
    }

    #[test]
    fn empty_watermark_stores_nothing() {
        let mut w = Watermark::new();
        assert_eq!(w.position(), None);
        assert_eq!(w.take_store(), None);
    }

    #[test]
    fn position_is_the_lowest_unresolved_offset() {
        let mut w = Watermark::new();
        for o in 10..15 {
            w.track(o);
        }
        // Nothing final: the first record is the position (so a new owner starts there, not
        // at `latest`).
        assert_eq!(w.take_store(), Some(10));
        assert!(w.resolve(12));
        assert!(w.resolve(11));
        assert_eq!(w.position(), Some(10), "10 is still unresolved");
        assert_eq!(w.take_store(), None, "unchanged");
        assert!(w.resolve(10));
        assert_eq!(w.take_store(), Some(13));
        assert!(w.resolve(14));
        assert_eq!(w.position(), Some(13));
        assert!(w.resolve(13));
        // All final: one past the highest tracked, the next record to read (±1: stored as is).
        assert_eq!(w.take_store(), Some(15));
        assert_eq!(w.unresolved(), 0);
    }

    #[test]
    fn a_single_record_stores_offset_plus_one() {
        let mut w = Watermark::new();
        w.track(0);
        assert!(w.resolve(0));
        assert_eq!(w.take_store(), Some(1));
    }

    #[test]
    fn gaps_are_fine() {
        let mut w = Watermark::new();
        for o in [3, 4, 9, 12] {
            w.track(o);
        }
        for o in [3, 4] {
            w.resolve(o);
        }
        assert_eq!(w.position(), Some(9));
        w.resolve(9);
        assert_eq!(w.position(), Some(12));
        w.resolve(12);
        assert_eq!(w.position(), Some(13));
    }

    #[test]
    fn unknown_or_repeated_completions_are_ignored() {
        let mut w = Watermark::new();
        w.track(5);
        assert!(!w.resolve(4));
        assert!(w.resolve(5));
        assert!(!w.resolve(5));
        assert_eq!(w.position(), Some(6));
    }

    #[test]
    fn the_front_and_later_offsets_resolve_alike() {
        let mut w = Watermark::new();
        for offset in [1, 2, 3] {
            w.track(offset);
        }
        assert!(w.resolve(2), "a later offset (searched)");
        assert_eq!(w.position(), Some(1));
        assert!(w.resolve(1), "the front offset");
        assert_eq!(w.position(), Some(3), "the front pops every final entry");
        // The same offset tracked twice (a reset): each completion resolves one of them.
        w.track(3);
        assert!(w.resolve(3));
        assert_eq!(w.position(), Some(3));
        assert_eq!(w.unresolved(), 1);
        assert!(w.resolve(3));
        assert_eq!(w.position(), Some(4));
        assert!(!w.resolve(3));
    }

    #[test]
    fn a_reset_backwards_never_skips() {
        let mut w = Watermark::new();
        w.track(100);
        w.resolve(100);
        w.track(50); // the consumer was reset to an earlier offset
        assert_eq!(w.position(), Some(50));
        w.resolve(50);
        assert_eq!(w.position(), Some(101));
    }

    #[test]
    fn stale_epochs_cannot_store() {
        let mut a = Assignments::default();
        let p = tp("orders", 0);
        let first = a.assign(&p);
        a.stored(&p, first, 10);
        assert_eq!(a.stored_offsets(), vec![(p.clone(), 10)]);
        assert_eq!(a.revoke(&p), Some(10));
        assert!(!a.is_current(&p, first));
        a.stored(&p, first, 99);
        assert!(a.stored_offsets().is_empty(), "a revoked epoch stored");

        // The partition comes back: the old epoch stays fenced.
        let second = a.assign(&p);
        assert_ne!(first, second);
        assert!(!a.is_current(&p, first));
        assert!(a.is_current(&p, second));
        a.stored(&p, first, 99);
        assert!(a.stored_offsets().is_empty());
        a.stored(&p, second, 12);
        assert_eq!(a.revoke_all(), vec![(p.clone(), 12)]);
        assert!(!a.is_current(&p, second));
    }

    #[test]
    fn store_list_keeps_offsets_as_is() {
        let list = store_list(&[(tp("orders", 3), 42)]);
        let elem = list.find_partition("orders", 3).expect("listed");
        // `store_offsets` stores what it is given: 42 is the next record to read. The
        // deprecated `store_offset(…, 41)` would be needed to get the same (it adds 1).
        assert_eq!(elem.offset(), Offset::Offset(42));
    }

    /// A randomised model: records fetched in order, completed out of order (some abandoned),
    /// partitions revoked and reassigned, the process restarted from the committed offset.
    /// Checks that the committed position never passes an unresolved or abandoned offset,
    /// and that a stale epoch never stores.
    #[test]
    fn model_never_commits_past_an_unresolved_record() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rand = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let p = tp("t", 0);
        for _ in 0..200 {
            let log_end = 200i64;
            let mut committed = 0i64;
            // `final_offsets` survive restarts: a record once final may be redelivered, but
            // every offset below the committed one must have been final at commit time.
            let mut ever_final = vec![false; log_end as usize];
            let mut assignments = Assignments::default();
            let mut epoch = assignments.assign(&p);
            let mut w = Watermark::new();
            let mut next_fetch = committed;
            let mut in_flight: Vec<i64> = Vec::new();
            let mut stale: Vec<(u64, i64)> = Vec::new();
            let mut abandoned: Vec<i64> = Vec::new();
            for _ in 0..2_000 {
                match rand(10) {
                    0..=3 if next_fetch < log_end => {
                        w.track(next_fetch);
                        in_flight.push(next_fetch);
                        next_fetch += 1;
                    }
                    4..=6 if !in_flight.is_empty() => {
                        let i = rand(in_flight.len() as u64) as usize;
                        let o = in_flight.swap_remove(i);
                        ever_final[o as usize] = true;
                        assert!(w.resolve(o));
                    }
                    7 if !in_flight.is_empty() => {
                        // Abandoned: leaves the watermark where it is.
                        let i = rand(in_flight.len() as u64) as usize;
                        abandoned.push(in_flight.swap_remove(i));
                    }
                    8 => {
                        // Store and commit.
                        if let Some(pos) = w.take_store() {
                            if assignments.is_current(&p, epoch) {
                                assignments.stored(&p, epoch, pos);
                            }
                        }
                        if let Some((_, pos)) = assignments.stored_offsets().first() {
                            committed = *pos;
                        }
                        // A late completion from an older epoch tries to store.
                        if let Some((old, o)) = stale.pop() {
                            assert!(!assignments.is_current(&p, old));
                            assignments.stored(&p, old, o + 1_000);
                            assert!(assignments.stored_offsets().iter().all(|(_, s)| *s < 1_000));
                        }
                    }
                    _ => {
                        // Revoke (or crash) and reassign: restart from the committed offset.
                        if let Some(stored) = assignments.revoke(&p) {
                            committed = stored;
                        }
                        stale.push((epoch, next_fetch));
                        epoch = assignments.assign(&p);
                        w = Watermark::new();
                        in_flight.clear();
                        abandoned.clear();
                        next_fetch = committed;
                    }
                }
                let lowest_open = in_flight
                    .iter()
                    .chain(&abandoned)
                    .copied()
                    .min()
                    .unwrap_or(next_fetch);
                for (_, stored) in assignments.stored_offsets() {
                    assert!(
                        stored <= lowest_open,
                        "stored {stored} past open {lowest_open}"
                    );
                }
                for o in 0..committed {
                    assert!(
                        ever_final[o as usize],
                        "committed {committed} past unresolved {o}"
                    );
                }
            }
        }
    }
}
