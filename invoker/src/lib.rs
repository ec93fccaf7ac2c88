//! Impulse invoker: function targets as tower services, and the layers around them.
//!
//! A target is a `Service<Invocation, Response = InvocationResponse, Error = InvokeError>`.
//! The broker composes each function's stack; this crate never reads a source.
#![warn(missing_docs)]

mod deadline;
mod error;
pub mod http;
mod invocation;
mod metrics;
pub mod process;
pub mod record;
pub mod retry;

pub use deadline::{Deadline, DeadlineLayer};
pub use error::{ErrorClass, InvokeError};
pub use invocation::{Invocation, InvocationResponse, LambdaError, MAX_SYNC_PAYLOAD};
pub use metrics::{Metrics, MetricsLayer};

/// A function's composed stack, type-erased so the broker can keep one per function.
pub type FunctionService =
    tower::util::BoxCloneSyncService<Invocation, InvocationResponse, InvokeError>;
