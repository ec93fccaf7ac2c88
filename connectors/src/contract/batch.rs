//! What a batching source (Kafka, Redis streams) drives: a handler that takes a batch to final
//! outcomes, and the per-record outcome it answers with.
//!
//! The Kafka source owns one task per assigned partition, and that task polls the handler's
//! future itself: reading the next records, invoking the function and moving the watermark
//! happen in one task, with no channel or task hop in between (the hot path). The Redis stream
//! source runs each batch in a task of its own and acknowledges (`XACK`) what it answers.
//! The handler is the broker's (invoke, retry, dead-letter); a source never sees a function.
//!
//! The handler's [`BatchOutcome`] is the batch's acknowledgement: per record, a final
//! [`Outcome`] or nothing. A record without one (the handler stopped at shutdown, or its
//! future was dropped) is **abandoned**: the source never acknowledges it, and it is read
//! again (RELIABILITY.md, invariant 1).

use std::ops::Range;

use futures::future::BoxFuture;

use serde_json::Value;

use super::Outcome;

/// Takes each batch `B` of a source to a final outcome per record.
///
/// The Kafka source calls it for one batch at a time per partition (`ordering = "partition"`),
/// or for several whose keys do not overlap (`ordering = "key"`), and polls the future from the
/// partition's task. The Redis stream source calls it for up to `maximum_concurrency` batches
/// at once.
pub trait BatchHandler<B>: Send + Sync + 'static {
    /// Processes `batch`, and gives it back with its outcome. The future resolves once every
    /// record has a final outcome, or when the handler gives up on the rest (shutdown); those
    /// records stay unacknowledged.
    ///
    /// The future may borrow the handler: the partition's task keeps the handler for as long
    /// as it polls the future. (An owned `Arc` per batch was two atomic updates on a count
    /// every partition shares.) It owns the batch, which the partition needs back to move its
    /// watermark: sharing it instead cost an allocation per batch.
    fn handle(&self, batch: B) -> BoxFuture<'_, (B, BatchOutcome)>;
}

/// The outcome of each record of a batch: final, or not (abandoned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    len: usize,
    repr: Repr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr {
    /// Every record has the same fate: the common case, without a per-record vector.
    Uniform(Option<Outcome>),
    /// Record by record, in batch order.
    PerRecord(Vec<Option<Outcome>>),
}

impl BatchOutcome {
    /// No record of a batch of `len` has an outcome yet.
    pub fn unresolved(len: usize) -> Self {
        Self {
            len,
            repr: Repr::Uniform(None),
        }
    }

    /// Every record of a batch of `len` ended with `outcome`.
    pub fn all(len: usize, outcome: Outcome) -> Self {
        Self {
            len,
            repr: Repr::Uniform(Some(outcome)),
        }
    }

    /// Records `outcome` for the records at `range` (indexes into the batch). A record that
    /// already has an outcome keeps the first one.
    pub fn resolve(&mut self, range: Range<usize>, outcome: Outcome) {
        let range = range.start.min(self.len)..range.end.min(self.len);
        if range.is_empty() {
            return;
        }
        if range == (0..self.len) && self.repr == Repr::Uniform(None) {
            self.repr = Repr::Uniform(Some(outcome));
            return;
        }
        if let Repr::Uniform(uniform) = self.repr {
            self.repr = Repr::PerRecord(vec![uniform; self.len]);
        }
        if let Repr::PerRecord(per_record) = &mut self.repr {
            for slot in &mut per_record[range] {
                slot.get_or_insert(outcome);
            }
        }
    }

    /// The outcome of the record at `index`; `None` if it has none (abandoned) or is out of
    /// range.
    pub fn get(&self, index: usize) -> Option<Outcome> {
        if index >= self.len {
            return None;
        }
        match &self.repr {
            Repr::Uniform(outcome) => *outcome,
            Repr::PerRecord(per_record) => per_record[index],
        }
    }

    /// How many records have no final outcome.
    pub fn abandoned(&self) -> usize {
        match &self.repr {
            Repr::Uniform(None) => self.len,
            Repr::Uniform(Some(_)) => 0,
            Repr::PerRecord(per_record) => per_record.iter().filter(|o| o.is_none()).count(),
        }
    }

    /// The number of records the outcome covers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it covers no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Where retrying starts after a function's response to a batch (SEMANTICS.md §1.2), as an
/// index into the batch: `{"batchItemFailures": [{"itemIdentifier": …}]}`, each identifier
/// mapped to its record's index by `locate` (the source's identifier form).
///
/// Lambda's stream rules: an empty or null list, or an empty or null response, is full
/// success (`None`); an empty or null `itemIdentifier`, an identifier not in the batch, or a
/// misspelt key is full failure (`Some(0)`); otherwise the batch checkpoints at the lowest
/// failed record.
pub fn first_failed_item(
    payload: &[u8],
    locate: impl Fn(&Value) -> Option<usize>,
) -> Option<usize> {
    let trimmed = payload.iter().filter(|b| !b.is_ascii_whitespace()).count();
    if trimmed == 0 {
        return None;
    }
    let Ok(value) = serde_json::from_slice::<Value>(payload) else {
        return Some(0);
    };
    let failures = match &value {
        Value::Null => return None,
        Value::Object(map) => match map.get("batchItemFailures") {
            None if map.is_empty() => return None,
            None => return Some(0), // misspelt or another shape: full failure
            Some(Value::Null) => return None,
            Some(Value::Array(items)) => items,
            Some(_) => return Some(0),
        },
        _ => return Some(0),
    };
    let mut lowest: Option<usize> = None;
    for item in failures {
        let Some(index) = item.get("itemIdentifier").and_then(&locate) else {
            return Some(0);
        };
        lowest = Some(lowest.map_or(index, |l| l.min(index)));
    }
    lowest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_batch_stays_uniform() {
        let mut outcome = BatchOutcome::unresolved(3);
        assert_eq!(outcome.abandoned(), 3);
        outcome.resolve(0..3, Outcome::Delivered);
        assert_eq!(outcome, BatchOutcome::all(3, Outcome::Delivered));
        assert_eq!(outcome.get(2), Some(Outcome::Delivered));
        assert_eq!(outcome.get(3), None, "out of range");
        assert_eq!(outcome.abandoned(), 0);
    }

    #[test]
    fn parts_are_tracked_per_record_and_the_first_outcome_wins() {
        let mut outcome = BatchOutcome::unresolved(5);
        outcome.resolve(0..2, Outcome::Delivered);
        outcome.resolve(3..4, Outcome::DeadLettered);
        outcome.resolve(1..4, Outcome::Dropped);
        let got: Vec<_> = (0..5).map(|i| outcome.get(i)).collect();
        assert_eq!(
            got,
            [
                Some(Outcome::Delivered),
                Some(Outcome::Delivered),
                Some(Outcome::Dropped),
                Some(Outcome::DeadLettered),
                None,
            ]
        );
        assert_eq!(outcome.abandoned(), 1);
    }

    #[test]
    fn out_of_range_parts_are_ignored() {
        let mut outcome = BatchOutcome::unresolved(2);
        outcome.resolve(2..9, Outcome::Delivered);
        assert_eq!(outcome.abandoned(), 2);
        outcome.resolve(1..9, Outcome::Delivered);
        assert_eq!(outcome.get(1), Some(Outcome::Delivered));
        assert_eq!(outcome.abandoned(), 1);
    }
}
