//! Function targets behind one interface: the [`Invoke`] trait (a call through a shared
//! reference), the type-erased [`DynTarget`], and the composed [`FunctionService`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::{Deadline, Invocation, InvocationResponse, InvokeError, Metrics};

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

/// The future of a target called through [`DynTarget`]. Every target of this crate boxes its
/// own future already, so erasing the target costs no second allocation.
pub type TargetFuture = BoxFuture<'static, Result<InvocationResponse, InvokeError>>;

/// A function target behind a trait object, so that every function's stack has one type
/// whatever its target. Clones share the target.
///
/// The erasure sits at the target rather than around the whole stack: the layers' futures are
/// named types, so an erased stack would box a future per attempt on top of the target's own.
#[derive(Clone)]
pub struct DynTarget(Arc<dyn Invoke<Future = TargetFuture>>);

impl DynTarget {
    /// Erases `target`.
    pub fn new(target: impl Invoke<Future = TargetFuture>) -> Self {
        Self(Arc::new(target))
    }
}

impl Invoke for DynTarget {
    type Future = TargetFuture;

    fn invoke(&self, invocation: Invocation) -> Self::Future {
        self.0.invoke(invocation)
    }
}

impl fmt::Debug for DynTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynTarget").finish_non_exhaustive()
    }
}

/// A function's composed stack, as the broker builds it: metrics → deadline → target. Cheap to
/// clone; clones share the target and the metric handles.
pub type FunctionService = Metrics<Deadline<DynTarget>>;
