//! Test helpers shared by every crate's tests: where the real services listen, bounded waits,
//! the metrics a test recorded, TLS certificates made at test time, and the property-test runner.
//!
//! This crate depends on no Impulse crate: a crate's own integration tests can use it without
//! pulling a second copy of that crate into the dependency graph.

pub mod kafka;
pub mod metrics;
pub mod prop;
pub mod services;
pub mod tls;
pub mod wait;
