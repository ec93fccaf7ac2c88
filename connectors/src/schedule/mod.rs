//! Schedule triggers: `rate()`, `cron()` and `at()` ticks as EventBridge scheduled events.
//!
//! A [`ScheduleSource`] computes ticks from a [`ScheduleTriggerConfig`] in the trigger's time
//! zone, hands one event per tick to the broker's [`TickHandler`], which queues it for
//! asynchronous invocation (SEMANTICS.md §4), and remembers the newest handled tick in a
//! [`ScheduleState`] so that a restart can catch up on the ticks missed while no broker ran.
//! Instances sharing a Redis queue claim each tick there and share the state record
//! (`crate::redis::RedisSchedules`).
//!
//! [`ScheduleTriggerConfig`]: impulse_config::ScheduleTriggerConfig

mod clock;
mod event;
mod handler;
mod source;
mod state;

pub use clock::{SystemWallClock, TokioWallClock, WallClock};
pub use event::{encode_scheduled_event, event_id, scheduled_event_uuid};
pub use handler::{Handled, TickHandler};
pub use source::ScheduleSource;
pub use state::{FileScheduleState, MemoryScheduleState, ScheduleState, ScheduleStateError};

#[cfg(test)]
mod tests;
