//! The deadline layer: every attempt ends by the function's timeout or the caller's deadline.

mod timer;

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::Layer;

pub use self::timer::dedicate_this_thread_to_the_current_runtime;
use self::timer::DeadlineTimer;
use crate::{Invocation, InvocationResponse, Invoke, InvokeError};

/// Applies [`Deadline`] with a function's timeout.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    timeout: Duration,
}

impl DeadlineLayer {
    /// A layer enforcing `timeout` (the function's configured timeout).
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            timeout: self.timeout,
        }
    }
}

/// Fails an attempt with [`InvokeError::Timeout`] at `min(now + timeout, invocation.deadline)`,
/// and passes that absolute deadline down so the target can tell the function.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S: Invoke> Invoke for Deadline<S> {
    type Future = DeadlineFuture<S::Future>;

    fn invoke(&self, mut invocation: Invocation) -> Self::Future {
        let start = Instant::now();
        let deadline = attempt_deadline(invocation.deadline, start, self.timeout);
        invocation.deadline = Some(deadline);
        DeadlineFuture {
            call: self.inner.invoke(invocation),
            timer: DeadlineTimer::until(deadline),
            after: deadline - start,
        }
    }
}

/// When an attempt started at `start` must end: `timeout` (the function's) after `start`, or the
/// caller's `deadline` (an event's remaining age) when that is earlier.
pub(crate) fn attempt_deadline(
    deadline: Option<Instant>,
    start: Instant,
    timeout: Duration,
) -> Instant {
    let own = start + timeout;
    deadline.map_or(own, |caller| caller.min(own))
}

pin_project! {
    /// The future of a [`Deadline`] call: the inner call, or `InvokeError::Timeout` once the
    /// deadline passes (dropping the call).
    pub struct DeadlineFuture<F> {
        #[pin]
        call: F,
        timer: DeadlineTimer,
        after: Duration,
    }
}

impl<F> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<InvocationResponse, InvokeError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.call.poll(cx) {
            return Poll::Ready(result);
        }
        ready!(Pin::new(this.timer).poll(cx));
        Poll::Ready(Err(InvokeError::Timeout { after: *this.after }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Name;
    use bytes::Bytes;
    use futures::future::BoxFuture;

    fn invocation(deadline: Option<Instant>) -> Invocation {
        Invocation {
            request_id: "r".into(),
            function: Name::new("f"),
            trigger: Name::new("t"),
            payload: Bytes::new(),
            deadline,
            client_context: None,
            log_tail: None,
        }
    }

    /// A target that answers `done` after a while.
    struct Sleeper(Duration);

    impl Invoke for Sleeper {
        type Future = BoxFuture<'static, Result<InvocationResponse, InvokeError>>;

        fn invoke(&self, _invocation: Invocation) -> Self::Future {
            let after = self.0;
            Box::pin(async move {
                tokio::time::sleep(after).await;
                Ok(InvocationResponse {
                    payload: Bytes::from_static(b"done"),
                })
            })
        }
    }

    fn sleeper(after: Duration) -> Sleeper {
        Sleeper(after)
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_at_the_function_timeout() {
        let svc = DeadlineLayer::new(Duration::from_secs(3)).layer(sleeper(Duration::from_secs(5)));
        let err = svc
            .invoke(invocation(None))
            .await
            .expect_err("must time out");
        assert!(matches!(err, InvokeError::Timeout { after } if after == Duration::from_secs(3)));
        assert_eq!(err.to_string(), "task timed out after 3.00 seconds");
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_caller_deadline_wins() {
        let svc = DeadlineLayer::new(Duration::from_secs(3)).layer(sleeper(Duration::from_secs(2)));
        let caller = Instant::now() + Duration::from_secs(1);
        let err = svc
            .invoke(invocation(Some(caller)))
            .await
            .expect_err("must time out");
        assert!(matches!(err, InvokeError::Timeout { after } if after == Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn finishes_within_the_deadline() {
        let svc = DeadlineLayer::new(Duration::from_secs(3)).layer(sleeper(Duration::from_secs(2)));
        let ok = svc.invoke(invocation(None)).await.expect("in time");
        assert_eq!(ok.payload, Bytes::from_static(b"done"));
    }
}
