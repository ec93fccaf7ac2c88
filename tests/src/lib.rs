//! Support code for Impulse integration tests.

pub mod deploy;
pub mod function;
pub mod impulse;
pub mod kafka;
pub mod process;
pub mod python;

pub use impulse_test_support::{services, wait};
