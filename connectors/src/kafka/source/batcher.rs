//! One partition's batching and ordering rules, without I/O: what to send, and when.
//!
//! The partition task feeds it records and finished batches and asks it for the next batch;
//! it owns the partition's [`Watermark`], so every record it is given is tracked until final.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use impulse_config::Ordering;
use tokio::time::Instant;

use super::Settings;
use crate::contract::BatchOutcome;
use crate::contract::Name;
use crate::kafka::event::{json_str_len, record_len_in, KafkaBatch, KafkaRecord};
use crate::kafka::offsets::Watermark;

/// With `ordering = "key"`, the fewest records a partition buffers before it stops reading:
/// records held back by an in-flight key must not keep other keys from being read.
const KEY_MODE_MIN_BUFFERED_RECORDS: usize = 1_000;

/// A record read and not yet sent.
struct Pending {
    record: KafkaRecord,
    /// Its bytes in the event.
    len: usize,
}

/// One partition's batching and ordering rules, without I/O: what to send, and when.
///
/// Invariants:
/// - every record given to [`push`](Self::push) or [`filtered`](Self::filtered) is tracked by
///   [`watermark`](Self::watermark) until a final outcome resolves it;
/// - a batch holds at most `batch_size` records, and makes an event of at most `max_bytes`
///   unless it is a single record larger than that;
/// - partition order: at most one batch in flight, records in offset order; key mode: at most
///   `max_in_flight` batches, and a record never goes while an earlier record of its key is in
///   flight or held back;
/// - buffered records stay under the bound [`has_room`](Self::has_room) checks (the partition
///   stops reading when it is reached).
pub(crate) struct PartitionBatcher {
    settings: Settings,
    trigger: Arc<str>,
    /// The batches' copy of the topic.
    topic: Arc<str>,
    /// The records' copy of the topic (one interned name per topic the source is assigned).
    topic_name: Name,
    /// The topic's length as a JSON string, part of every record's length.
    topic_len: usize,
    partition: i32,
    /// Event bytes outside the records.
    envelope: usize,
    /// Read, not yet in a batch (in key mode, possibly held back by an in-flight key).
    waiting: VecDeque<Pending>,
    /// The batch being filled: its records become the batch as they are, without a copy.
    current: Vec<KafkaRecord>,
    /// The current batch's records' bytes in the event, a comma each included.
    current_bytes: usize,
    current_since: Option<Instant>,
    /// The batch is full (count or bytes): send it as soon as allowed.
    closed: bool,
    /// Bytes in `waiting` and `current`.
    buffered_bytes: usize,
    /// Batches handed to the handler and not finished.
    in_flight: usize,
    /// Key mode: records in flight per key.
    in_flight_keys: HashMap<Bytes, usize>,
    /// The partition's unresolved offsets: what may be stored.
    pub(crate) watermark: Watermark,
}

impl PartitionBatcher {
    /// A batcher for `partition` of `topic`, whose events have `envelope` bytes outside their
    /// records (the event's envelope and the partition's group).
    pub(crate) fn new(
        settings: Settings,
        trigger: Arc<str>,
        topic: Arc<str>,
        partition: i32,
        envelope: usize,
    ) -> Self {
        Self {
            settings,
            trigger,
            topic_len: json_str_len(&topic),
            topic_name: Name::new(&topic),
            topic,
            partition,
            envelope,
            waiting: VecDeque::new(),
            current: Vec::new(),
            current_bytes: 0,
            current_since: None,
            closed: false,
            buffered_bytes: 0,
            in_flight: 0,
            in_flight_keys: HashMap::new(),
            watermark: Watermark::new(),
        }
    }

    /// The partition's topic, for its records.
    pub(crate) fn topic(&self) -> Name {
        self.topic_name
    }

    /// Whether the partition may read more records (bounded memory).
    ///
    /// In partition order without a batch window, it reads only the batch it can send now: a
    /// record read while a batch is in flight would only be copied out of librdkafka's own
    /// prefetch queue earlier, and encoded later, once its bytes have left the CPU's cache
    /// (see BENCHMARKS.md). With a window it reads the next batch while one is in flight, so
    /// that batch's window starts when its first record arrives, not when the partition is free
    /// again. Key mode reads further ahead, past records held back by an in-flight key.
    pub(crate) fn has_room(&self) -> bool {
        let max_records = match self.settings.ordering {
            Ordering::Partition if self.settings.window.is_zero() => {
                if self.in_flight > 0 {
                    0
                } else {
                    self.settings.batch_size
                }
            }
            Ordering::Partition => 2 * self.settings.batch_size,
            Ordering::Key => (2 * self.settings.batch_size).max(KEY_MODE_MIN_BUFFERED_RECORDS),
        };
        self.waiting.len() + self.current.len() < max_records
            && self.buffered_bytes < 2 * self.settings.max_bytes
    }

    /// A record to send.
    pub(crate) fn push(&mut self, record: KafkaRecord, now: Instant) {
        self.watermark.track(record.offset);
        let len = record_len_in(&record, self.topic_len);
        self.buffered_bytes += len;
        // In partition order a record that nothing waits before joins the batch directly
        // (each move of a record copies it whole).
        if self.settings.ordering == Ordering::Partition
            && self.waiting.is_empty()
            && !self.closed
            && self.has_room_for(len)
        {
            self.append(record, len, now);
            return;
        }
        self.waiting.push_back(Pending { record, len });
        self.fill(now);
    }

    /// A record that matched no filter: final at once.
    pub(crate) fn filtered(&mut self, offset: i64) {
        self.watermark.track(offset);
        self.watermark.resolve(offset);
    }

    fn can_send(&self) -> bool {
        match self.settings.ordering {
            Ordering::Partition => self.in_flight == 0,
            Ordering::Key => self.in_flight < self.settings.max_in_flight,
        }
    }

    /// Whether the current batch should go now.
    pub(crate) fn ready(&self, now: Instant) -> bool {
        !self.current.is_empty()
            && self.can_send()
            && (self.closed
                || self
                    .current_since
                    .is_some_and(|since| now >= since + self.settings.window))
    }

    /// When the current batch's window ends, if it is waiting for it and could then be sent.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.current.is_empty() || self.closed || !self.can_send() {
            return None;
        }
        self.current_since.map(|since| since + self.settings.window)
    }

    /// Moves waiting records into the current batch, as far as the rules allow.
    fn fill(&mut self, now: Instant) {
        // Key mode: keys of records left waiting in this pass (created on the first one).
        let mut held_back: Option<HashSet<Bytes>> = None;
        let mut i = 0;
        while i < self.waiting.len() && !self.closed {
            let key = self.waiting[i].record.key.as_ref();
            let eligible = match (self.settings.ordering, key) {
                (Ordering::Partition, _) | (Ordering::Key, None) => true,
                (Ordering::Key, Some(key)) => {
                    !self.in_flight_keys.contains_key(key)
                        && !held_back.as_ref().is_some_and(|held| held.contains(key))
                }
            };
            if !eligible {
                // Later records of this key must wait too, or they would overtake it.
                if let Some(key) = key {
                    let key = key.clone();
                    held_back.get_or_insert_with(HashSet::new).insert(key);
                }
                i += 1;
                continue;
            }
            if !self.has_room_for(self.waiting[i].len) {
                break;
            }
            let Some(pending) = self.waiting.remove(i) else {
                break;
            };
            self.append(pending.record, pending.len, now);
        }
    }

    /// Whether a record of `len` bytes fits in the current batch; closes the batch when it
    /// does not. A record alone always fits: one larger than any event allows goes alone.
    fn has_room_for(&mut self, len: usize) -> bool {
        // +1 for the comma.
        if !self.current.is_empty()
            && self.envelope + self.current_bytes + len + 1 > self.settings.max_bytes
        {
            self.closed = true;
            return false;
        }
        true
    }

    /// Adds a record of `len` bytes to the current batch, closing it once it is full.
    fn append(&mut self, record: KafkaRecord, len: usize, now: Instant) {
        if self.current.is_empty() {
            self.current_since = Some(now);
        }
        self.current_bytes += len + 1;
        self.current.push(record);
        // Full by count, or by size (a record too big for any batch goes alone at once).
        if self.current.len() >= self.settings.batch_size
            || self.envelope + self.current_bytes >= self.settings.max_bytes
        {
            self.closed = true;
        }
    }

    /// Takes the current batch, if any: it is in flight until [`PartitionBatcher::complete`].
    pub(crate) fn take_batch(&mut self, now: Instant) -> Option<KafkaBatch> {
        if self.current.is_empty() {
            return None;
        }
        // The next batch is likely the size of this one: room for it now saves growing the
        // vector record by record (each growth copies every record so far).
        let next = Vec::with_capacity(self.current.len());
        let mut records = std::mem::replace(&mut self.current, next);
        // Key mode may let a held-back record join after later ones: restore offset order
        // (records of one key are already in order, so this never reorders a key).
        if self.settings.ordering == Ordering::Key {
            records.sort_by_key(|r| r.offset);
            for record in &records {
                if let Some(key) = &record.key {
                    *self.in_flight_keys.entry(key.clone()).or_default() += 1;
                }
            }
        }
        // `current_bytes` counts a comma per record; `buffered_bytes` does not.
        let bytes = self.current_bytes - records.len();
        self.buffered_bytes = self.buffered_bytes.saturating_sub(bytes);
        self.closed = false;
        self.current_bytes = 0;
        self.current_since = None;
        self.in_flight += 1;
        self.fill(now);
        Some(KafkaBatch {
            trigger: Arc::clone(&self.trigger),
            topic: Arc::clone(&self.topic),
            partition: self.partition,
            records,
        })
    }

    /// A batch taken with [`PartitionBatcher::take_batch`] finished: final outcomes move the
    /// watermark; records without one only free their keys. Returns the offset of the first
    /// record without an outcome, if any.
    pub(crate) fn complete(
        &mut self,
        batch: &KafkaBatch,
        outcome: &BatchOutcome,
        now: Instant,
    ) -> Option<i64> {
        self.in_flight = self.in_flight.saturating_sub(1);
        let key_mode = self.settings.ordering == Ordering::Key;
        let mut first_abandoned = None;
        for (i, record) in batch.records.iter().enumerate() {
            if key_mode {
                self.release_key(record.key.as_ref());
            }
            if outcome.get(i).is_some() {
                self.watermark.resolve(record.offset);
            } else {
                first_abandoned.get_or_insert(record.offset);
            }
        }
        self.fill(now);
        first_abandoned
    }

    fn release_key(&mut self, key: Option<&Bytes>) {
        let Some(key) = key else {
            return;
        };
        if let Some(count) = self.in_flight_keys.get_mut(key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.in_flight_keys.remove(key);
            }
        }
    }
}
