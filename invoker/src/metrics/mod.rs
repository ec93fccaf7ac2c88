//! The metrics layer: counts every attempt by outcome and records its duration.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use impulse_connectors::telemetry::{
    InvocationMetrics, InvocationOutcome, TriggerInvocationMetrics,
};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::Layer;

use crate::{Invocation, InvocationResponse, Invoke, InvokeError};

/// Applies [`Metrics`] for one function.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Arc<InvocationMetrics>,
}

impl MetricsLayer {
    /// The layer for `function`'s stack. It registers no metric until the first attempt, so it
    /// may be built before the metrics recorder is installed (but the recorder MUST be installed
    /// before the first attempt).
    pub fn new(function: &str) -> Self {
        Self::versioned(function, "$LATEST")
    }

    /// As [`MetricsLayer::new`], for the stack of `version` of `function`: its attempts are
    /// labelled with that version.
    pub fn versioned(function: &str, version: &str) -> Self {
        Self {
            metrics: Arc::new(InvocationMetrics::versioned(function, version)),
        }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// Emits `impulse_invocations_total` and `impulse_invocation_duration_seconds` per attempt.
///
/// The `function` label is the one the layer was built for: the service MUST only be called
/// with invocations of that function. The `trigger` label comes from each invocation.
#[derive(Debug, Clone)]
pub struct Metrics<S> {
    inner: S,
    /// Shared by every clone: the handles are registered once per function.
    metrics: Arc<InvocationMetrics>,
}

impl<S: Invoke> Invoke for Metrics<S> {
    type Future = MetricsFuture<S::Future>;

    fn invoke(&self, invocation: Invocation) -> Self::Future {
        debug_assert_eq!(
            *invocation.function,
            *self.metrics.function(),
            "a function's metrics layer sees only its own invocations"
        );
        // Resolved before the call, which takes the invocation: the future keeps a reference
        // to the handles instead of copies of the labels.
        let handles = self.metrics.trigger(invocation.trigger);
        let start = Instant::now();
        MetricsFuture {
            call: self.inner.invoke(invocation),
            handles,
            start,
        }
    }
}

pin_project! {
    /// The future of a [`Metrics`] call: the inner call, then its count and duration. A named
    /// type rather than a boxed one: the layer sits on every invocation.
    pub struct MetricsFuture<F> {
        #[pin]
        call: F,
        handles: &'static TriggerInvocationMetrics,
        start: Instant,
    }
}

impl<F> Future for MetricsFuture<F>
where
    F: Future<Output = Result<InvocationResponse, InvokeError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.call.poll(cx));
        let outcome = match &result {
            Ok(_) => InvocationOutcome::Success,
            Err(InvokeError::Function { .. }) => InvocationOutcome::FunctionError,
            Err(InvokeError::Timeout { .. }) => InvocationOutcome::Timeout,
            Err(InvokeError::Throttled) => InvocationOutcome::Throttled,
            Err(InvokeError::System(_)) => InvocationOutcome::SystemError,
            Err(InvokeError::Permanent { .. }) => InvocationOutcome::Permanent,
        };
        this.handles.completed(outcome, this.start.elapsed());
        Poll::Ready(result)
    }
}
