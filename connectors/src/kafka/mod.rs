//! The Kafka backends: a source (Lambda's Kafka event source mapping) and a sink writing
//! through an idempotent producer.

mod event;
mod filter;
mod handler;
mod in_flight;
mod offsets;
mod producer;
mod sink;
mod source;
mod stop;

#[cfg(test)]
mod tests;

pub use event::{
    encode_event, KafkaBatch, KafkaRecord, RecordId, RecordIdError, CREATE_TIME, EVENT_SOURCE,
    LOG_APPEND_TIME, NO_TIMESTAMP_TYPE,
};
pub use filter::KafkaFilter;
pub use handler::{BatchHandler, BatchOutcome};
pub use producer::{Reporting, ReportingProducer};
pub use sink::KafkaSink;
pub use source::{
    KafkaSource, CONSUMER_DEFAULTS, DEFAULT_DRAIN_TIMEOUT, KEY_MODE_MAX_IN_FLIGHT, MAX_EVENT_BYTES,
};
