//! The Kafka side of the stream batch policy: Lambda's Kafka event, record identifiers,
//! `KafkaBatchInfo`, and attempt counts in the trigger's [`AttemptStore`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use impulse_config::KafkaTriggerConfig;
use impulse_connectors::kafka::{
    encode_event, first_failed, AttemptStore, KafkaBatch, KafkaRecord,
};
use impulse_connectors::telemetry;
use serde_json::json;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::functions::Function;
use crate::stream_batch::{BatchSettings, HasRecords, StreamKind};

/// The batch policy of a Kafka trigger.
pub(super) type BatchContext = crate::stream_batch::BatchContext<KafkaStream>;

/// A Kafka trigger's records, as the batch policy sees them.
pub(super) struct KafkaStream {
    bootstrap_servers: String,
    attempts: AttemptStore,
}

impl HasRecords<KafkaRecord> for KafkaBatch {
    fn records(&self) -> &[KafkaRecord] {
        &self.records
    }
}

impl BatchContext {
    /// The policy of Kafka trigger `trigger`, configured by `config`.
    pub(super) fn kafka(
        trigger: &str,
        config: &KafkaTriggerConfig,
        function: Function,
        on_failure: Option<std::sync::Arc<dyn impulse_connectors::contract::Sink>>,
        attempts: AttemptStore,
        shutdown: CancellationToken,
    ) -> Self {
        let settings = BatchSettings {
            max_retry_attempts: config.retry_limit(),
            max_record_age: config.max_record_age,
            bisect: config.bisect_batch_on_error,
            report_item_failures: config.report_batch_item_failures,
        };
        let stream = KafkaStream {
            bootstrap_servers: config.bootstrap_servers.clone(),
            attempts,
        };
        Self::new(trigger, stream, function, on_failure, settings, shutdown)
    }
}

impl StreamKind for KafkaStream {
    type Record = KafkaRecord;
    const NAME: &'static str = "Kafka";

    fn encode(&self, records: &[KafkaRecord]) -> Bytes {
        encode_event(&self.bootstrap_servers, records)
    }

    fn first_failed(&self, payload: &[u8], records: &[KafkaRecord]) -> Option<usize> {
        first_failed(payload, records)
    }

    fn written_at(&self, record: &KafkaRecord) -> Option<SystemTime> {
        record
            .timestamp
            .map(|ms| UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    }

    fn identifier(&self, record: &KafkaRecord) -> String {
        record.identifier()
    }

    /// `KafkaBatchInfo`, and the record as a one-record Kafka event.
    fn failure_info(&self, record: &KafkaRecord) -> (&'static str, Box<RawValue>, Bytes) {
        let info = json!({
            "bootstrapServers": self.bootstrap_servers,
            "topic": &*record.topic,
            "partition": record.partition,
            "startOffset": record.offset,
            "endOffset": record.offset,
            "batchSize": 1,
        });
        // A JSON object of strings and numbers always serialises.
        let info = serde_json::value::to_raw_value(&info).expect("the batch info serialises");
        let payload = encode_event(&self.bootstrap_servers, std::slice::from_ref(record));
        ("KafkaBatchInfo", info, payload)
    }

    fn counts_may_exist(&self) -> bool {
        !self.attempts.is_empty()
    }

    async fn attempts(&self, record: &KafkaRecord) -> u32 {
        self.attempts.get(&record.identifier()).await
    }

    async fn set_attempts(&self, record: &KafkaRecord, made: u32) {
        self.attempts.set(&record.identifier(), made).await;
    }

    async fn clear_attempts(&self, record: &KafkaRecord) {
        self.attempts.clear(&record.identifier()).await;
    }

    fn count_failed_invoke(&self, trigger: &str, records: u64) {
        telemetry::kafka_records_failed_invoke(trigger, records);
    }

    fn count_dropped(&self, trigger: &str, condition: &'static str, records: u64) {
        telemetry::kafka_records_dropped(trigger, condition, records);
    }
}
