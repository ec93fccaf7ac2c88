//! Impulse connectors: the contracts between sources, the broker and sinks; telemetry; and one
//! module per protocol.
//!
//! - `contract`: how each source hands work to the broker and learns the final outcome, the
//!   async [`Queue`](contract::Queue) and the [`Sink`](contract::Sink) (its module doc is the
//!   map).
//! - `telemetry`: metric names and the helpers that emit them.
//! - `http`: the function URL event (payload format 2.0) and result decoding; the broker's
//!   server is the HTTP source.
//! - `schedule`: the schedule source (`rate`, `cron`, `at`) and its tick state.
//! - `kafka`: the Kafka source (Lambda's event source mapping) and sink.
//! - `redis`: the Redis Streams async queue and sink.
//! - `embedded`: the embedded async queue (a redb file) and the embedded log sink, in the data
//!   directory.
//!
//! `contract` and `telemetry` never import a protocol crate: `invoker` depends on this crate
//! with `default-features = false` and sees only them.
#![warn(missing_docs)]

pub mod backoff;
pub mod contract;
#[cfg(feature = "embedded")]
pub mod embedded;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "schedule")]
pub mod schedule;
pub mod telemetry;
