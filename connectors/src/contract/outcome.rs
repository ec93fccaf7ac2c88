//! The final outcome of an input: the only thing that acknowledges it to its source.

/// A final outcome, reported by whoever finished with an event or record.
///
/// Nothing else is final: an input without one is never acknowledged (no offset committed, no
/// tick considered done), so it is delivered again (RELIABILITY.md, invariant 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// The function succeeded.
    Delivered,
    /// The failure record was durably written to the event's failure destination.
    DeadLettered,
    /// A configured policy dropped the event (a filter, a disabled function); it was counted.
    Dropped,
}
