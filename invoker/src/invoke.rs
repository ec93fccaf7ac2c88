//! Calling a function through a shared reference.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::{Invocation, InvocationResponse, InvokeError};

/// A function target, or a layer around one, called through a shared reference.
///
/// Every target and layer of this crate is always ready and keeps no state per call, so a call
/// needs neither `&mut` nor a clone of the stack. With tower's `Service::call`, each caller
/// cloned the whole stack per invocation: an allocation for the boxed stack, and an atomic
/// update of every `Arc` in it, on counts every worker thread shares. The layers are still
/// tower [`Layer`](tower::Layer)s, and the targets are still tower services.
pub trait Invoke: Send + Sync + 'static {
    /// The attempt; it borrows nothing from the target.
    type Future: Future<Output = Result<InvocationResponse, InvokeError>> + Send + 'static;

    /// Starts one attempt.
    fn invoke(&self, invocation: Invocation) -> Self::Future;
}

/// A function's composed stack, type-erased so the broker can keep one per function. Clones
/// share the stack.
#[derive(Clone)]
pub struct FunctionService(Arc<dyn ErasedInvoke>);

impl FunctionService {
    /// Erases `stack`.
    pub fn new(stack: impl Invoke) -> Self {
        Self(Arc::new(stack))
    }

    /// Starts one attempt.
    pub fn invoke(
        &self,
        invocation: Invocation,
    ) -> BoxFuture<'static, Result<InvocationResponse, InvokeError>> {
        self.0.invoke_boxed(invocation)
    }
}

impl fmt::Debug for FunctionService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionService").finish_non_exhaustive()
    }
}

/// [`Invoke`] with the future boxed, so that it can be a trait object.
trait ErasedInvoke: Send + Sync {
    fn invoke_boxed(
        &self,
        invocation: Invocation,
    ) -> BoxFuture<'static, Result<InvocationResponse, InvokeError>>;
}

impl<T: Invoke> ErasedInvoke for T {
    fn invoke_boxed(
        &self,
        invocation: Invocation,
    ) -> BoxFuture<'static, Result<InvocationResponse, InvokeError>> {
        Box::pin(self.invoke(invocation))
    }
}
