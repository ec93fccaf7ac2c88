//! Impulse invoker: function targets as tower services, and the layers around them.
//!
//! A target is called through [`Invoke`] (a shared reference: no clone of the stack per call)
//! and is also a tower `Service<Invocation>`; the layers around it are tower `Layer`s. The
//! broker composes each function's stack; this crate never reads a source.
#![warn(missing_docs)]

mod deadline;
mod error;
pub mod http;
mod invocation;
pub mod log_tail;
mod metrics;
pub mod process;
pub mod record;
pub mod retry;
pub mod role;
mod target;
mod wall_clock;

pub use deadline::{dedicate_this_thread_to_the_current_runtime, Deadline, DeadlineLayer};
pub use error::{ErrorClass, InvokeError};
pub use impulse_connectors::contract::Name;
pub use invocation::{Invocation, InvocationResponse, LambdaError, CLIENT_CONTEXT_HEADER};
pub use log_tail::LogTail;
pub use metrics::{Metrics, MetricsLayer};
pub use target::{DynTarget, FunctionService, Invoke, TargetFuture};
