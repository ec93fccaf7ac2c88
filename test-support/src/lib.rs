//! Test helpers shared by every crate's tests: where the real services listen, bounded waits,
//! and the metrics a test recorded.
//!
//! This crate depends on no Impulse crate: a crate's own integration tests can use it without
//! pulling a second copy of that crate into the dependency graph.

pub mod kafka;
pub mod metrics;
pub mod services;
pub mod wait;
