//! The Redis side of the stream batch policy: the Redis stream event, entry ids as
//! identifiers, `RedisStreamBatchInfo`, and attempt counts kept as Redis delivery counts.

use std::time::SystemTime;

use bytes::Bytes;
use impulse_connectors::contract::first_failed_item;
use impulse_connectors::redis::{encode_event, RedisAttempts, RedisBatch, RedisEntry};
use impulse_connectors::telemetry;
use serde_json::json;
use serde_json::value::RawValue;

use crate::stream_batch::{HasRecords, StreamKind};

/// The batch policy of a Redis trigger.
pub(super) type BatchContext = crate::stream_batch::BatchContext<RedisStream>;

/// A Redis trigger's entries, as the batch policy sees them.
pub(super) struct RedisStream {
    pub(super) stream: String,
    pub(super) group: String,
    pub(super) attempts: RedisAttempts,
}

impl HasRecords<RedisEntry> for RedisBatch {
    fn records(&self) -> &[RedisEntry] {
        &self.entries
    }
}

impl StreamKind for RedisStream {
    type Record = RedisEntry;
    const NAME: &'static str = "Redis stream";

    fn encode(&self, records: &[RedisEntry]) -> Bytes {
        encode_event(&self.stream, &self.group, records)
    }

    /// `itemIdentifier` is the entry id.
    fn first_failed(&self, payload: &[u8], records: &[RedisEntry]) -> Option<usize> {
        first_failed_item(payload, |id| {
            let id = id.as_str()?;
            records.iter().position(|entry| entry.id == id)
        })
    }

    fn written_at(&self, record: &RedisEntry) -> Option<SystemTime> {
        record.written_at()
    }

    fn identifier(&self, record: &RedisEntry) -> String {
        record.id.clone()
    }

    /// `RedisStreamBatchInfo`, and the entry as a one-entry event.
    fn failure_info(&self, record: &RedisEntry) -> (&'static str, Box<RawValue>, Bytes) {
        let info = json!({
            "stream": self.stream,
            "group": self.group,
            "startId": record.id,
            "endId": record.id,
            "batchSize": 1,
        });
        // A JSON object of strings and numbers always serialises.
        let info = serde_json::value::to_raw_value(&info).expect("the batch info serialises");
        let payload = encode_event(&self.stream, &self.group, std::slice::from_ref(record));
        ("RedisStreamBatchInfo", info, payload)
    }

    /// Counts live in the group's pending list, which `XACK` clears: nothing to clear here.
    fn counts_may_exist(&self) -> bool {
        false
    }

    /// Deliveries before this one: each was an attempt that did not finish (failed, or its
    /// instance stopped). Read again from Redis, as a retry here stores its count there.
    async fn attempts(&self, record: &RedisEntry) -> u32 {
        let deliveries = self
            .attempts
            .delivery_count(&record.id)
            .await
            .unwrap_or(record.delivery_count);
        deliveries.saturating_sub(1)
    }

    async fn set_attempts(&self, record: &RedisEntry, made: u32) {
        self.attempts
            .set_delivery_count(&record.id, made.saturating_add(1))
            .await;
    }

    async fn clear_attempts(&self, _record: &RedisEntry) {}

    fn count_failed_invoke(&self, trigger: &str, records: u64) {
        telemetry::redis_entries_failed_invoke(trigger, records);
    }

    fn count_dropped(&self, trigger: &str, condition: &'static str, records: u64) {
        telemetry::redis_entries_dropped(trigger, condition, records);
    }
}
