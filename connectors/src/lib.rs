//! Impulse connectors: the protocol-free event contracts, telemetry, and one module per protocol.
//!
//! `contract` and `telemetry` never import a protocol crate: `invoker` depends on this crate
//! with `default-features = false` and sees only them.
#![warn(missing_docs)]

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
