//! The function registry: each configured function's admission, composed service stack, retry
//! policy and destinations; and the one way to call a function.

use std::collections::HashMap;
use std::sync::Arc;

use impulse_config::{Config, Env, FunctionConfig, ProcessEnv, TargetConfig};
use impulse_connectors::contract::Sink;
use impulse_invoker::http::HttpFunction;
use impulse_invoker::process::{Isolation, ProcessFunction};
use impulse_invoker::retry::RetryPolicy;
use impulse_invoker::role::ResolvedRole;
use impulse_invoker::{
    DeadlineLayer, DynTarget, FunctionService, Invocation, InvocationResponse, Invoke, InvokeError,
    MetricsLayer, Name, TargetFuture,
};
use tower::ServiceBuilder;

use crate::async_invoke::build_sink;
use crate::limiter::{Admission, Limiter, Throttle};

/// A callable function.
///
/// Callers make attempts with [`Function::call_now`] or [`Function::call_when_admitted`], which
/// admit the attempt under the function's limits and hold the permit for exactly the attempt;
/// retries and destinations are the callers' (so no permit is held during a backoff).
#[derive(Clone)]
pub(crate) struct Function {
    /// The configured name.
    pub(crate) name: Name,
    /// The function's concurrency and rate limits.
    admission: Admission,
    /// The stack: metrics → deadline → target.
    service: FunctionService,
    /// When failed async attempts are retried.
    pub(crate) retry: RetryPolicy,
    /// Where records of successful async invocations go.
    pub(crate) on_success: Option<Arc<dyn Sink>>,
    /// Where failed async events go.
    pub(crate) on_failure: Option<Arc<dyn Sink>>,
}

/// Why a call produced no result.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The attempt was not admitted: refused at once ([`Function::call_now`]), or the function
    /// can never be admitted ([`Function::call_when_admitted`]). Nothing was invoked.
    NotAdmitted(Throttle),
    /// The attempt ran and failed.
    Failed(InvokeError),
}

impl Function {
    /// A function calling `service` under `admission`.
    pub(crate) fn new(
        name: Name,
        admission: Admission,
        service: FunctionService,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            name,
            admission,
            service,
            retry,
            on_success: None,
            on_failure: None,
        }
    }

    /// One attempt, admitted now or refused at once: for synchronous callers, which answer
    /// `429` rather than wait.
    pub(crate) async fn call_now(
        &self,
        invocation: Invocation,
    ) -> Result<InvocationResponse, CallError> {
        let _permit = self
            .admission
            .try_acquire()
            .map_err(CallError::NotAdmitted)?;
        self.service
            .invoke(invocation)
            .await
            .map_err(CallError::Failed)
    }

    /// One attempt, once the function's limits admit it: for queue callers (backpressure,
    /// never a drop). `invocation` is built once admitted, so that what it measures (an
    /// event's age, its deadline) counts from the attempt rather than from the wait.
    pub(crate) async fn call_when_admitted(
        &self,
        invocation: impl FnOnce() -> Invocation,
    ) -> Result<InvocationResponse, CallError> {
        let _permit = self
            .admission
            .acquire()
            .await
            .map_err(CallError::NotAdmitted)?;
        self.service
            .invoke(invocation())
            .await
            .map_err(CallError::Failed)
    }
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
    /// Builds every function's stack, admitted under `limiter`. All `http` functions without
    /// TLS settings share one HTTP connection pool. The secrets of the execution roles in use
    /// are read here, once, from the broker's environment and files.
    ///
    /// Returns every problem found, each prefixed with the config path it concerns.
    /// Process functions' environments run as users of their own when `isolation` is given.
    pub(crate) fn build(
        config: &Config,
        limiter: &Limiter,
        isolation: Option<&Arc<Isolation>>,
    ) -> Result<Self, Vec<String>> {
        Self::build_with(config, limiter, &ProcessEnv, isolation)
    }

    /// [`Functions::build`] without isolation, reading role secrets' variables from `env`.
    #[cfg(test)]
    pub(crate) fn build_with_env(
        config: &Config,
        limiter: &Limiter,
        env: &dyn Env,
    ) -> Result<Self, Vec<String>> {
        Self::build_with(config, limiter, env, None)
    }

    fn build_with(
        config: &Config,
        limiter: &Limiter,
        env: &dyn Env,
        isolation: Option<&Arc<Isolation>>,
    ) -> Result<Self, Vec<String>> {
        let client = HttpFunction::default_client();
        let mut by_name = HashMap::new();
        let mut processes = Vec::new();
        let (roles, mut errors) = resolve_roles(config, env);
        for (name, function) in &config.functions {
            let role = function
                .execution_role
                .as_deref()
                .and_then(|role| roles.get(role));
            if function.execution_role.is_some() && role.is_none() {
                // Its role's problems are reported already.
                continue;
            }
            let service = match &function.target {
                TargetConfig::Http(http) => {
                    // TLS settings (a private CA, a client certificate, its own or its
                    // role's) apply to one function's connections only: such a function gets
                    // a client and pool of its own.
                    let role_certificate = role.and_then(|role| role.client_certificate());
                    let client = if http.tls.is_none() && role_certificate.is_none() {
                        client.clone()
                    } else {
                        match HttpFunction::tls_client(http.tls.as_ref(), role.map(|r| &**r)) {
                            Ok(own) => own,
                            Err(err) => {
                                errors.push(format!("functions.{name}.target.tls: {err}"));
                                continue;
                            }
                        }
                    };
                    match HttpFunction::new(client, &http.endpoint) {
                        Ok(target) => {
                            let target = match role {
                                Some(role) => target.with_role(role),
                                None => target,
                            };
                            stack(name, function, target)
                        }
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
                    match ProcessFunction::with_role(
                        name,
                        process,
                        role.cloned(),
                        isolation.cloned(),
                        function.timeout,
                        max_environments,
                    ) {
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
            let Some(admission) = limiter.admission(name) else {
                errors.push(format!("functions.{name}: the limiter does not know it"));
                continue;
            };
            let function = Function {
                on_success,
                on_failure,
                ..Function::new(
                    Name::new(name),
                    admission,
                    service,
                    RetryPolicy::new(function),
                )
            };
            by_name.insert(name.clone(), function);
        }
        if errors.is_empty() {
            Ok(Self { by_name, processes })
        } else {
            Err(errors)
        }
    }

    /// A registry of `functions`, for tests.
    #[cfg(test)]
    pub(crate) fn of(functions: impl IntoIterator<Item = Function>) -> Self {
        Self {
            by_name: functions
                .into_iter()
                .map(|function| (function.name.to_string(), function))
                .collect(),
            processes: Vec::new(),
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

/// The execution roles some function uses, each read once, by name; and every problem found.
fn resolve_roles(
    config: &Config,
    env: &dyn Env,
) -> (HashMap<String, Arc<ResolvedRole>>, Vec<String>) {
    let used: std::collections::BTreeSet<&str> = config
        .functions
        .values()
        .filter_map(|function| function.execution_role.as_deref())
        .collect();
    let mut roles = HashMap::new();
    let mut errors = Vec::new();
    for name in used {
        // A loaded config names only roles it defines.
        let Some(role) = config.execution_roles.get(name) else {
            errors.push(format!("execution_roles.{name}: not defined"));
            continue;
        };
        match ResolvedRole::resolve(name, role, env) {
            Ok(resolved) => {
                roles.insert(name.to_owned(), Arc::new(resolved));
            }
            Err(problems) => errors.extend(problems.iter().map(ToString::to_string)),
        }
    }
    (roles, errors)
}

/// Function `name`, configured by `config`, calling `target` under limits of its own (a
/// limiter holding only this function): for tests.
#[cfg(test)]
pub(crate) fn standalone(
    name: &str,
    config: &FunctionConfig,
    target: impl Invoke<Future = TargetFuture>,
) -> Function {
    let mut full = Config::default();
    full.functions.insert(name.to_owned(), config.clone());
    let admission = Limiter::new(&full)
        .admission(name)
        .expect("the limiter was built with this function");
    Function::new(
        Name::new(name),
        admission,
        stack(name, config, target),
        RetryPolicy::new(config),
    )
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn config(text: &str) -> Config {
        impulse_config::parse(
            text,
            impulse_config::Format::Toml,
            "t.toml",
            &BTreeMap::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    const TWO_USERS: &str = r#"
[execution_roles.payments]
headers = { Authorization = { env = "PAY_AUTH" }, X-Key = { env = "PAY_KEY" } }

[functions.a]
target = { type = "http", endpoint = "http://127.0.0.1:1/a" }
execution_role = "payments"

[functions.b]
target = { type = "http", endpoint = "http://127.0.0.1:1/b" }
execution_role = "payments"

[functions.c]
target = { type = "http", endpoint = "http://127.0.0.1:1/c" }
"#;

    #[tokio::test]
    async fn a_missing_secret_stops_the_build_once_without_its_value() {
        let config = config(TWO_USERS);
        let env = BTreeMap::from([("PAY_AUTH".to_owned(), "canary-broker-auth".to_owned())]);
        let errors = Functions::build_with_env(&config, &Limiter::new(&config), &env)
            .expect_err("PAY_KEY is missing");
        // Read once for both functions, so reported once.
        assert_eq!(
            errors,
            ["execution_roles.payments.headers.X-Key: environment variable PAY_KEY is not set"]
        );
    }

    #[tokio::test]
    async fn functions_build_once_their_roles_resolve() {
        let config = config(TWO_USERS);
        let env = BTreeMap::from([
            ("PAY_AUTH".to_owned(), "canary-broker-auth".to_owned()),
            ("PAY_KEY".to_owned(), "canary-broker-key".to_owned()),
        ]);
        let functions = Functions::build_with_env(&config, &Limiter::new(&config), &env)
            .unwrap_or_else(|e| panic!("{e:?}"));
        for name in ["a", "b", "c"] {
            assert!(functions.get(name).is_some(), "{name}");
        }
        let debug = format!("{functions:?}");
        assert!(!debug.contains("canary"), "{debug}");
    }
}
