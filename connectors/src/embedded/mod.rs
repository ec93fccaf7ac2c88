//! The embedded backends: a durable queue in a redb file and an append-only JSON-lines log sink,
//! both in the data directory, both syncing to disk before they answer.

mod queue;
mod salvage;
mod sink;

pub use queue::{Commit, EmbeddedQueue, QUEUE_FILE};
pub use salvage::{salvage, SalvageError, Salvaged};
pub use sink::{read_log, LogEntry, LogReadError, LogSink, LOGS_DIR};
