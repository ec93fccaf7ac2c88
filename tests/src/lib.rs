//! Support code for Impulse integration tests.

pub mod function;
pub mod impulse;
pub mod kafka;
pub mod services;
pub mod wait;
