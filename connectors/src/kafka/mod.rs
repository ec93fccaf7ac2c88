//! The Kafka backends: a sink writing through an idempotent producer.

mod sink;

pub use sink::KafkaSink;
