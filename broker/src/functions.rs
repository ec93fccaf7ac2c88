//! The function registry: each configured function's composed service stack, retry policy and
//! destinations.

use std::collections::HashMap;
use std::sync::Arc;

use impulse_config::{Config, FunctionConfig, TargetConfig};
use impulse_connectors::contract::Sink;
use impulse_invoker::http::HttpFunction;
use impulse_invoker::process::ProcessFunction;
use impulse_invoker::retry::RetryPolicy;
use impulse_invoker::{
    DeadlineLayer, DynTarget, FunctionService, Invoke, MetricsLayer, Name, TargetFuture,
};
use tower::ServiceBuilder;

use crate::async_invoke::build_sink;

/// A callable function.
#[derive(Clone)]
pub(crate) struct Function {
    /// The configured name.
    pub(crate) name: Name,
    /// The stack: metrics → deadline → target. Admission (the limiter) happens before a call,
    /// retries and destinations after it, in the callers: so metrics see every attempt and no
    /// permit is held during backoff.
    pub(crate) service: FunctionService,
    /// When failed async attempts are retried.
    pub(crate) retry: RetryPolicy,
    /// Where records of successful async invocations go.
    pub(crate) on_success: Option<Arc<dyn Sink>>,
    /// Where failed async events go.
    pub(crate) on_failure: Option<Arc<dyn Sink>>,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name)
            .field("on_success", &self.on_success.is_some())
            .field("on_failure", &self.on_failure.is_some())
            .finish_non_exhaustive()
    }
}

/// Every configured function, by name.
#[derive(Debug, Default)]
pub(crate) struct Functions {
    by_name: HashMap<String, Function>,
    /// The process pools, stopped at shutdown.
    processes: Vec<ProcessFunction>,
}

impl Functions {
    /// Builds every function's stack. All functions share one HTTP connection pool.
    ///
    /// Returns every problem found, each prefixed with the config path it concerns.
    pub(crate) fn build(config: &Config) -> Result<Self, Vec<String>> {
        let client = HttpFunction::default_client();
        let mut by_name = HashMap::new();
        let mut processes = Vec::new();
        let mut errors = Vec::new();
        for (name, function) in &config.functions {
            let service = match &function.target {
                TargetConfig::Http(http) => {
                    match HttpFunction::new(client.clone(), &http.endpoint) {
                        Ok(target) => stack(name, function, target),
                        Err(err) => {
                            errors.push(format!("functions.{name}.target.endpoint: {err}"));
                            continue;
                        }
                    }
                }
                TargetConfig::Process(process) => {
                    // Environments scale up to the function's concurrency: its reserved
                    // concurrency, or the account's.
                    let concurrency = function
                        .reserved_concurrency
                        .unwrap_or(config.limits.account_concurrency);
                    let max_environments = usize::try_from(concurrency.max(1)).unwrap_or(1);
                    match ProcessFunction::new(name, process, function.timeout, max_environments) {
                        Ok(target) => {
                            processes.push(target.clone());
                            stack(name, function, target)
                        }
                        Err(err) => {
                            errors.push(format!("functions.{name}.target: {err}"));
                            continue;
                        }
                    }
                }
            };
            let mut sinks = [None, None];
            for (slot, (field, destination)) in sinks.iter_mut().zip([
                ("on_success", &function.on_success),
                ("on_failure", &function.on_failure),
            ]) {
                let Some(destination) = destination else {
                    continue;
                };
                let path = format!("functions.{name}.{field}");
                match build_sink(destination, &config.queue.data_dir, &path) {
                    Ok(sink) => *slot = Some(sink),
                    Err(err) => errors.push(format!("{err:#}")),
                }
            }
            let [on_success, on_failure] = sinks;
            let function = Function {
                name: Name::new(name),
                service,
                retry: RetryPolicy::new(function),
                on_success,
                on_failure,
            };
            by_name.insert(name.clone(), function);
        }
        if errors.is_empty() {
            Ok(Self { by_name, processes })
        } else {
            Err(errors)
        }
    }

    /// The function called `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Function> {
        self.by_name.get(name)
    }

    /// Stops every process function's environments.
    pub(crate) async fn shutdown(&self) {
        futures::future::join_all(self.processes.iter().map(ProcessFunction::shutdown)).await;
    }
}

/// The stack every target gets: metrics → deadline → target.
fn stack(
    name: &str,
    function: &FunctionConfig,
    target: impl Invoke<Future = TargetFuture>,
) -> FunctionService {
    ServiceBuilder::new()
        .layer(MetricsLayer::new(name))
        .layer(DeadlineLayer::new(function.timeout))
        .service(DynTarget::new(target))
}
