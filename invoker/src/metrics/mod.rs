//! The metrics layer: counts every attempt by outcome and records its duration.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use impulse_connectors::telemetry::{self, InvocationOutcome};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::{Invocation, InvocationResponse, InvokeError};

/// Applies [`Metrics`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsLayer;

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics { inner }
    }
}

/// Emits `impulse_invocations_total` and `impulse_invocation_duration_seconds` per attempt.
#[derive(Debug, Clone)]
pub struct Metrics<S> {
    inner: S,
}

impl<S> Service<Invocation> for Metrics<S>
where
    S: Service<Invocation, Response = InvocationResponse, Error = InvokeError>,
    S::Future: Send + 'static,
{
    type Response = InvocationResponse;
    type Error = InvokeError;
    type Future = BoxFuture<'static, Result<InvocationResponse, InvokeError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, invocation: Invocation) -> Self::Future {
        let function = invocation.function.clone();
        let trigger = invocation.trigger.clone();
        let start = Instant::now();
        let call = self.inner.call(invocation);
        Box::pin(async move {
            let result = call.await;
            let outcome = match &result {
                Ok(_) => InvocationOutcome::Success,
                Err(InvokeError::Function { .. }) => InvocationOutcome::FunctionError,
                Err(InvokeError::Timeout { .. }) => InvocationOutcome::Timeout,
                Err(InvokeError::Throttled) => InvocationOutcome::Throttled,
                Err(InvokeError::System(_)) => InvocationOutcome::SystemError,
                Err(InvokeError::Permanent { .. }) => InvocationOutcome::Permanent,
            };
            telemetry::invocation_completed(&function, &trigger, outcome, start.elapsed());
            result
        })
    }
}
