//! Acks of in-process sources (schedules) waiting for their async event's final outcome.
//!
//! The queue keeps events durable across restarts; these acks are only in memory. After a
//! restart the source's receiver is gone too, so losing them loses nothing: the ack was only
//! telling a live source (overlap = skip) that the previous tick finished.

use std::collections::HashMap;
use std::sync::Mutex;

use impulse_connectors::contract::{Ack, Outcome};

/// Acks by event id.
#[derive(Debug, Default)]
pub(crate) struct Completions {
    pending: Mutex<HashMap<String, Ack>>,
}

impl Completions {
    /// Remembers `ack` until event `id` reaches a final outcome.
    pub(crate) fn register(&self, id: String, ack: Ack) {
        // A second registration for the same id (a tick fired twice) abandons the first ack,
        // which is the safe reading: its source must not treat it as done.
        self.lock().insert(id, ack);
    }

    /// Drops the ack of event `id` unresolved: the event never made it onto the queue.
    pub(crate) fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Resolves the ack of event `id`, if a source is waiting for it.
    pub(crate) fn resolve(&self, id: &str, outcome: Outcome) {
        let ack = self.lock().remove(id);
        if let Some(ack) = ack {
            ack.resolve(outcome);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ack>> {
        // The map holds no invariant a panicking holder could break halfway.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
