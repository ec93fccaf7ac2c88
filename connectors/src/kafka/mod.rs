//! The Kafka backends: a source (Lambda's Kafka event source mapping), a sink writing
//! through an idempotent producer, and the durable attempt counts of failing batches.

mod attempts;
mod event;
mod filter;
mod in_flight;
mod offsets;
mod producer;
mod response;
mod sink;
mod source;
mod stop;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

/// The batch contract, shared with the other batching sources; the Kafka source's handlers
/// take a [`KafkaBatch`].
pub use crate::contract::{BatchHandler, BatchOutcome};
pub use attempts::{AttemptStore, AttemptStoreError};
pub use event::{
    encode_event, KafkaBatch, KafkaRecord, CREATE_TIME, EVENT_SOURCE, LOG_APPEND_TIME,
    NO_TIMESTAMP_TYPE,
};
pub use filter::KafkaFilter;
pub use producer::{Reporting, ReportingProducer};
pub use response::{first_failed, RecordId, RecordIdError};
pub use sink::KafkaSink;
pub use source::{
    KafkaSource, CONSUMER_DEFAULTS, DEFAULT_DRAIN_TIMEOUT, KEY_MODE_MAX_IN_FLIGHT, MAX_EVENT_BYTES,
};
