//! The function registry: each configured function's admission, composed service stack, retry
//! policy and destinations; and the one way to call a function.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use impulse_config::{
    split_qualifier, Config, Env, FunctionConfig, ProcessEnv, TargetConfig, VersionConfig, LATEST,
};
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

/// A callable function, as a caller names it: the function itself (`$LATEST`), one of its
/// published versions, or an alias.
///
/// Callers make attempts with [`Function::call_now`] or [`Function::call_when_admitted`], which
/// admit the attempt under the function's limits and hold the permit for exactly the attempt;
/// retries and destinations are the callers' (so no permit is held during a backoff). Every
/// qualifier of a function shares one admission: reserved concurrency belongs to the function,
/// as in Lambda. An alias picks the version of each attempt by its weights
/// ([`Function::route`]).
#[derive(Clone)]
pub(crate) struct Function {
    /// The configured name.
    pub(crate) name: Name,
    /// The function as its callers name it: `orders`, or `orders:2`, `orders:live`. Records
    /// carry its ARN (`impulse_invoker::record::function_arn`).
    pub(crate) qualified: Arc<str>,
    /// The function's concurrency and rate limits: shared by its qualifiers, and by its
    /// `Function`s of every generation while its configuration does not change, so that a
    /// reload that rebuilds the limits moves all of them (stream triggers' included) at once.
    admission: Arc<ArcSwap<Admission>>,
    /// The versions attempts run.
    routing: Arc<Routing>,
    /// When failed async attempts are retried.
    pub(crate) retry: RetryPolicy,
    /// Where records of successful async invocations go.
    pub(crate) on_success: Option<Arc<dyn Sink>>,
    /// Where failed async events go.
    pub(crate) on_failure: Option<Arc<dyn Sink>>,
}

/// One version's stack (metrics → deadline → target), and its label (`$LATEST`, `1`, …).
#[derive(Clone)]
struct Version {
    label: Arc<str>,
    service: FunctionService,
}

/// The versions a qualified function runs: one, or an alias's weighted split (Lambda's
/// `RoutingConfig`).
struct Routing {
    primary: Version,
    /// Other versions, each with the share of attempts it gets; `primary` gets the rest.
    /// Validation keeps each weight in 0–1 and their sum at most 1.
    additional: Vec<(Version, f64)>,
}

impl Routing {
    fn only(version: Version) -> Self {
        Self {
            primary: version,
            additional: Vec::new(),
        }
    }

    /// The version of one attempt: `draw` is uniform in `[0, 1)`.
    fn pick(&self, draw: f64) -> &Version {
        let mut draw = draw;
        for (version, weight) in &self.additional {
            if draw < *weight {
                return version;
            }
            draw -= weight;
        }
        &self.primary
    }
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
    /// The unqualified function (`$LATEST`) calling `service` under `admission`.
    pub(crate) fn new(
        name: Name,
        admission: Admission,
        service: FunctionService,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            name,
            qualified: Arc::from(&*name),
            admission: Arc::new(ArcSwap::from_pointee(admission)),
            routing: Arc::new(Routing::only(Version {
                label: Arc::from(LATEST),
                service,
            })),
            retry,
            on_success: None,
            on_failure: None,
        }
    }

    /// The version the next attempt runs: fixed for the function itself and for a version,
    /// drawn by weight for an alias with routing. Callers that report the executed version
    /// (`X-Amz-Executed-Version`) route first, then call the [`Routed`] version.
    pub(crate) fn route(&self) -> Routed<'_> {
        let version = if self.routing.additional.is_empty() {
            &self.routing.primary
        } else {
            self.routing.pick(fastrand::f64())
        };
        Routed {
            function: self,
            version,
        }
    }

    /// The version this qualifier points at: `$LATEST`, the version itself, or an alias's own
    /// version (not the ones its routing adds).
    pub(crate) fn version(&self) -> &str {
        &self.routing.primary.label
    }

    /// One attempt, admitted now or refused at once: for synchronous callers, which answer
    /// `429` rather than wait.
    pub(crate) async fn call_now(
        &self,
        invocation: Invocation,
    ) -> Result<InvocationResponse, CallError> {
        self.route().call_now(invocation).await
    }

    /// One attempt, once the function's limits admit it: for queue callers (backpressure,
    /// never a drop). `invocation` is built once admitted, so that what it measures (an
    /// event's age, its deadline) counts from the attempt rather than from the wait.
    pub(crate) async fn call_when_admitted(
        &self,
        invocation: impl FnOnce() -> Invocation,
    ) -> Result<InvocationResponse, CallError> {
        self.route().call_when_admitted(invocation).await
    }
}

/// One attempt's version of a [`Function`], from [`Function::route`].
#[derive(Clone, Copy)]
pub(crate) struct Routed<'a> {
    function: &'a Function,
    version: &'a Version,
}

impl Routed<'_> {
    /// The executed version: `$LATEST`, `1`, ….
    pub(crate) fn version(&self) -> &str {
        &self.version.label
    }

    /// [`Function::call_now`] on this version.
    pub(crate) async fn call_now(
        self,
        invocation: Invocation,
    ) -> Result<InvocationResponse, CallError> {
        // Loaded once: the permit goes back to the limits it came from.
        let admission = self.function.admission.load_full();
        let _permit = admission
            .try_acquire()
            .await
            .map_err(CallError::NotAdmitted)?;
        self.version
            .service
            .invoke(invocation)
            .await
            .map_err(CallError::Failed)
    }

    /// [`Function::call_when_admitted`] on this version.
    pub(crate) async fn call_when_admitted(
        self,
        invocation: impl FnOnce() -> Invocation,
    ) -> Result<InvocationResponse, CallError> {
        let admission = self.function.admission.load_full();
        let _permit = admission.acquire().await.map_err(CallError::NotAdmitted)?;
        self.version
            .service
            .invoke(invocation())
            .await
            .map_err(CallError::Failed)
    }
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("qualified", &self.qualified)
            .field("on_success", &self.on_success.is_some())
            .field("on_failure", &self.on_failure.is_some())
            .finish_non_exhaustive()
    }
}

/// A function and its qualified forms.
#[derive(Debug, Clone)]
struct Qualifiers {
    /// The function itself: `$LATEST`.
    latest: Function,
    /// Its published versions and aliases, by qualifier.
    qualified: HashMap<String, Function>,
}

/// Every configured function, by name, with its versions and aliases.
#[derive(Debug, Default)]
pub(crate) struct Functions {
    by_name: HashMap<String, Qualifiers>,
    /// The process pools of each function, stopped at shutdown.
    processes: HashMap<String, Vec<ProcessFunction>>,
    /// Cancelled when the registry is dropped: once no request, event or trigger holds it any
    /// more, the pools a reload retired may stop (see [`Functions::released`]).
    released: tokio_util::sync::CancellationToken,
}

impl Drop for Functions {
    fn drop(&mut self) {
        self.released.cancel();
    }
}

/// The registry in force, replaced as a whole by a configuration reload. A caller loads it once
/// per invocation (request, queued event) and keeps that registry until the invocation ends,
/// so work in flight finishes on the functions it started with.
#[derive(Debug, Clone)]
pub(crate) struct CurrentFunctions(Arc<arc_swap::ArcSwap<Functions>>);

impl CurrentFunctions {
    /// The registry in force now.
    pub(crate) fn load(&self) -> Arc<Functions> {
        self.0.load_full()
    }

    /// Puts `functions` in force; returns the registry it replaces.
    pub(crate) fn replace(&self, functions: Arc<Functions>) -> Arc<Functions> {
        self.0.swap(functions)
    }
}

impl From<Arc<Functions>> for CurrentFunctions {
    fn from(functions: Arc<Functions>) -> Self {
        Self(Arc::new(arc_swap::ArcSwap::new(functions)))
    }
}

/// The registry a configuration reload builds: the new [`Functions`], and the process pools of
/// the previous one that no function of the new one uses (removed or changed functions), to
/// stop once the calls still running on them end.
pub(crate) struct Rebuilt {
    pub(crate) functions: Functions,
    pub(crate) retired: Vec<ProcessFunction>,
    /// The functions that kept their previous stack (same configuration, same role).
    pub(crate) kept: std::collections::BTreeSet<String>,
}

/// The registry a reload builds on: the previous configuration and its functions.
pub(crate) struct Previous<'a> {
    pub(crate) config: &'a Config,
    pub(crate) functions: &'a Functions,
}

impl Functions {
    /// Builds every function's stack (one per version), admitted under `limiter`. All `http`
    /// functions without TLS settings share one HTTP connection pool. The secrets of the
    /// execution roles in use are read here, once, from the broker's environment and files.
    ///
    /// Returns every problem found, each prefixed with the config path it concerns.
    /// Process functions' environments run as users of their own when `isolation` is given.
    pub(crate) fn build(
        config: &Config,
        limiter: &Limiter,
        isolation: Option<&Arc<Isolation>>,
    ) -> Result<Self, Vec<String>> {
        Self::build_with(config, limiter, &ProcessEnv, isolation, None).map(|built| built.functions)
    }

    /// [`Functions::build`] for a configuration reload: a function whose configuration (and
    /// execution role) is unchanged keeps its previous stack, so its process environments and
    /// its limiter state carry over; the others are built anew under `limiter`.
    pub(crate) fn rebuild(
        config: &Config,
        limiter: &Limiter,
        isolation: Option<&Arc<Isolation>>,
        previous: &Previous<'_>,
    ) -> Result<Rebuilt, Vec<String>> {
        Self::build_with(config, limiter, &ProcessEnv, isolation, Some(previous))
    }

    /// [`Functions::build`] without isolation, reading role secrets' variables from `env`.
    #[cfg(test)]
    pub(crate) fn build_with_env(
        config: &Config,
        limiter: &Limiter,
        env: &dyn Env,
    ) -> Result<Self, Vec<String>> {
        Self::build_with(config, limiter, env, None, None).map(|built| built.functions)
    }

    fn build_with(
        config: &Config,
        limiter: &Limiter,
        env: &dyn Env,
        isolation: Option<&Arc<Isolation>>,
        previous: Option<&Previous<'_>>,
    ) -> Result<Rebuilt, Vec<String>> {
        let mut targets = Targets {
            client: HttpFunction::default_client(),
            processes: Vec::new(),
            account_concurrency: config.limits.account_concurrency,
            isolation: isolation.cloned(),
        };
        let mut by_name = HashMap::new();
        let mut processes = HashMap::new();
        let mut kept = std::collections::BTreeSet::new();
        let (roles, mut errors) = resolve_roles(config, env);
        for (name, function) in &config.functions {
            if let Some(previous) = previous.filter(|previous| previous.unchanged(config, name)) {
                if let Some(qualifiers) = previous.functions.by_name.get(name) {
                    by_name.insert(name.clone(), qualifiers.clone());
                    if let Some(pools) = previous.functions.processes.get(name) {
                        processes.insert(name.clone(), pools.clone());
                    }
                    kept.insert(name.clone());
                    continue;
                }
            }
            let role = function
                .execution_role
                .as_deref()
                .and_then(|role| roles.get(role));
            if function.execution_role.is_some() && role.is_none() {
                // Its role's problems are reported already.
                continue;
            }
            let path = format!("functions.{name}");
            targets.processes.clear();
            let latest = targets.build(name, LATEST, function, None, role, &path);
            let mut versions = HashMap::new();
            for (number, version) in &function.versions {
                let path = format!("{path}.versions.{number}");
                let built = targets.build(name, number, function, Some(version), role, &path);
                match built {
                    Ok(version) => {
                        versions.insert(number.clone(), version);
                    }
                    Err(err) => errors.push(err),
                }
            }
            let latest = match latest {
                Ok(latest) => latest,
                Err(err) => {
                    errors.push(err);
                    continue;
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
                let path = format!("{path}.{field}");
                match build_sink(destination, &config.queue.data_dir, &path) {
                    Ok(sink) => *slot = Some(sink),
                    Err(err) => errors.push(format!("{err:#}")),
                }
            }
            let [on_success, on_failure] = sinks;
            let Some(admission) = limiter.admission(name) else {
                errors.push(format!("{path}: the limiter does not know it"));
                continue;
            };
            let base = Function {
                on_success,
                on_failure,
                ..Function::new(
                    Name::new(name),
                    admission,
                    latest.service.clone(),
                    RetryPolicy::new(function),
                )
            };
            let qualified = |qualifier: &str, routing: Routing| Function {
                qualified: Arc::from(format!("{name}:{qualifier}")),
                routing: Arc::new(routing),
                ..base.clone()
            };
            let mut by_qualifier = HashMap::new();
            for (number, version) in &versions {
                by_qualifier.insert(
                    number.clone(),
                    qualified(number, Routing::only(version.clone())),
                );
            }
            for (alias, settings) in &function.aliases {
                // Validation guarantees that an alias names declared versions; one that failed
                // to build is reported already.
                let find = |number: &str| {
                    if number == LATEST {
                        Some(latest.clone())
                    } else {
                        versions.get(number).cloned()
                    }
                };
                let Some(primary) = find(&settings.version) else {
                    continue;
                };
                let additional: Option<Vec<(Version, f64)>> = settings
                    .routing
                    .iter()
                    .map(|(number, weight)| find(number).map(|version| (version, *weight)))
                    .collect();
                let Some(additional) = additional else {
                    continue;
                };
                let routing = Routing {
                    primary,
                    additional,
                };
                by_qualifier.insert(alias.clone(), qualified(alias, routing));
            }
            by_name.insert(
                name.clone(),
                Qualifiers {
                    latest: base,
                    qualified: by_qualifier,
                },
            );
            processes.insert(name.clone(), std::mem::take(&mut targets.processes));
        }
        if !errors.is_empty() {
            // Pools built for a registry that will not run: nothing calls them.
            for pools in processes
                .iter()
                .filter(|(name, _)| !kept.contains(*name))
                .map(|(_, pools)| pools)
            {
                for pool in pools {
                    let pool = pool.clone();
                    tokio::spawn(async move { pool.shutdown().await });
                }
            }
            return Err(errors);
        }
        let retired = previous
            .map(|previous| {
                previous
                    .functions
                    .processes
                    .iter()
                    .filter(|(name, _)| !kept.contains(*name))
                    .flat_map(|(_, pools)| pools.iter().cloned())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Rebuilt {
            functions: Self {
                by_name,
                processes,
                released: tokio_util::sync::CancellationToken::new(),
            },
            retired,
            kept,
        })
    }

    /// A registry of `functions` (unqualified only), for tests.
    #[cfg(test)]
    pub(crate) fn of(functions: impl IntoIterator<Item = Function>) -> Self {
        Self {
            by_name: functions
                .into_iter()
                .map(|function| {
                    let qualifiers = Qualifiers {
                        latest: function.clone(),
                        qualified: HashMap::new(),
                    };
                    (function.name.to_string(), qualifiers)
                })
                .collect(),
            processes: HashMap::new(),
            released: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Moves the functions named in `kept` (carried over from the previous registry by
    /// [`Functions::rebuild`]) under `limiter`, for every holder of them at once: once the
    /// reload is certain to apply, as it changes the previous registry's functions too. Calls
    /// already admitted keep the permits they hold.
    pub(crate) fn admit_under(&self, limiter: &Limiter, kept: &std::collections::BTreeSet<String>) {
        for name in kept {
            if let (Some(qualifiers), Some(admission)) =
                (self.by_name.get(name), limiter.admission(name))
            {
                qualifiers.latest.admission.store(Arc::new(admission));
            }
        }
    }

    /// Cancelled once this registry is dropped: every call that started on it has ended.
    pub(crate) fn released(&self) -> tokio_util::sync::CancellationToken {
        self.released.clone()
    }

    /// The function a reference names: `name`, or `name:qualifier` (a version, an alias or
    /// `$LATEST`), as triggers and queued events name functions.
    pub(crate) fn get(&self, reference: &str) -> Option<&Function> {
        let (name, qualifier) = split_qualifier(reference);
        self.resolve(name, qualifier)
    }

    /// Function `name` with `qualifier` (none, or `$LATEST`: the function itself).
    pub(crate) fn resolve(&self, name: &str, qualifier: Option<&str>) -> Option<&Function> {
        let qualifiers = self.by_name.get(name)?;
        match qualifier {
            None | Some(LATEST) => Some(&qualifiers.latest),
            Some(qualifier) => qualifiers.qualified.get(qualifier),
        }
    }

    /// Stops every process function's environments.
    pub(crate) async fn shutdown(&self) {
        futures::future::join_all(
            self.processes
                .values()
                .flatten()
                .map(ProcessFunction::shutdown),
        )
        .await;
    }
}

impl Previous<'_> {
    /// Whether function `name` of `config` is configured exactly as before, execution role
    /// included: then its stack is reused as it is.
    fn unchanged(&self, config: &Config, name: &str) -> bool {
        let (Some(now), Some(before)) =
            (config.functions.get(name), self.config.functions.get(name))
        else {
            return false;
        };
        let role = now.execution_role.as_deref();
        let role_now = role.map(|role| config.execution_roles.get(role));
        let role_before = role.map(|role| self.config.execution_roles.get(role));
        now == before
            && role_now == role_before
            && config.queue.data_dir == self.config.queue.data_dir
    }
}

/// What building targets shares: the default HTTP client, and the process pools built so far.
struct Targets {
    client: reqwest::Client,
    processes: Vec<ProcessFunction>,
    account_concurrency: u32,
    /// Given to every process function: each environment runs as a user of its own.
    isolation: Option<Arc<Isolation>>,
}

impl Targets {
    /// The stack of `version` (`None`: the function's own target, labelled `label`
    /// `$LATEST`) of function `name`; problems are prefixed with `path`.
    fn build(
        &mut self,
        name: &str,
        label: &str,
        function: &FunctionConfig,
        version: Option<&VersionConfig>,
        role: Option<&Arc<ResolvedRole>>,
        path: &str,
    ) -> Result<Version, String> {
        let target = version.map_or(&function.target, |version| &version.target);
        let timeout = function.timeout_of(version);
        let service = match target {
            TargetConfig::Http(http) => {
                // TLS settings (a private CA, a client certificate, its own or its role's)
                // apply to one function's connections only: such a function gets a client
                // and pool of its own.
                let role_certificate = role.and_then(|role| role.client_certificate());
                let client = if http.tls.is_none() && role_certificate.is_none() {
                    self.client.clone()
                } else {
                    HttpFunction::tls_client(http.tls.as_ref(), role.map(|r| &**r))
                        .map_err(|err| format!("{path}.target.tls: {err}"))?
                };
                let target = HttpFunction::new(client, &http.endpoint)
                    .map_err(|err| format!("{path}.target.endpoint: {err}"))?;
                let target = match role {
                    Some(role) => target.with_role(role),
                    None => target,
                };
                stack(name, label, timeout, target)
            }
            TargetConfig::Process(process) => {
                // Environments scale up to the function's concurrency: its reserved
                // concurrency, or the account's. Each version has environments of its own;
                // the function's admission bounds them all together.
                let concurrency = function
                    .reserved_concurrency
                    .unwrap_or(self.account_concurrency);
                let max_environments = usize::try_from(concurrency.max(1)).unwrap_or(1);
                let target = ProcessFunction::version(
                    name,
                    label,
                    process,
                    role.cloned(),
                    self.isolation.clone(),
                    timeout,
                    max_environments,
                )
                .map_err(|err| format!("{path}.target: {err}"))?;
                self.processes.push(target.clone());
                stack(name, label, timeout, target)
            }
        };
        Ok(Version {
            label: Arc::from(label),
            service,
        })
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
        stack(name, LATEST, config.timeout, target),
        RetryPolicy::new(config),
    )
}

/// The stack every target gets: metrics (labelled with the function and `version`) →
/// deadline → target.
fn stack(
    name: &str,
    version: &str,
    timeout: std::time::Duration,
    target: impl Invoke<Future = TargetFuture>,
) -> FunctionService {
    ServiceBuilder::new()
        .layer(MetricsLayer::versioned(name, version))
        .layer(DeadlineLayer::new(timeout))
        .service(DynTarget::new(target))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn config(text: &str) -> Config {
        crate::test_support::toml_config(text, "t.toml")
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

    const VERSIONED: &str = r#"
[functions.orders]
target = { type = "http", endpoint = "http://127.0.0.1:1/latest" }

[functions.orders.versions.1]
target = { type = "http", endpoint = "http://127.0.0.1:1/v1" }

[functions.orders.versions.2]
target = { type = "http", endpoint = "http://127.0.0.1:1/v2" }

[functions.orders.aliases.live]
version = "1"
routing = { "2" = 0.25 }

[functions.orders.aliases.edge]
version = "$LATEST"
"#;

    #[tokio::test]
    async fn references_resolve_to_qualified_functions() {
        let config = config(VERSIONED);
        let functions = Functions::build(&config, &Limiter::new(&config), None)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let qualified = |reference: &str| {
            functions.get(reference).map(|function| {
                (
                    function.qualified.to_string(),
                    function.route().version().to_owned(),
                )
            })
        };
        let latest = Some(("orders".to_owned(), "$LATEST".to_owned()));
        assert_eq!(qualified("orders"), latest);
        assert_eq!(qualified("orders:$LATEST"), latest);
        assert_eq!(
            qualified("orders:2"),
            Some(("orders:2".to_owned(), "2".to_owned()))
        );
        assert_eq!(
            qualified("orders:edge"),
            Some(("orders:edge".to_owned(), "$LATEST".to_owned()))
        );
        assert_eq!(qualified("orders:3"), None);
        assert_eq!(qualified("orders:1:2"), None);
        assert_eq!(qualified("other"), None);
        let live = functions.get("orders:live").expect("the alias exists");
        assert_eq!(
            &*live.name, "orders",
            "metrics label the function, not the alias"
        );
        let versions: std::collections::BTreeSet<String> = (0..200)
            .map(|_| live.route().version().to_owned())
            .collect();
        assert_eq!(versions, ["1".to_owned(), "2".to_owned()].into());
    }

    #[test]
    fn routing_splits_draws_by_weight() {
        let version = |label: &str| Version {
            label: Arc::from(label),
            service: stack(
                "f",
                label,
                std::time::Duration::from_secs(1),
                crate::test_support::ScriptedTarget::default(),
            ),
        };
        let routing = Routing {
            primary: version("1"),
            additional: vec![(version("2"), 0.1), (version("3"), 0.2)],
        };
        let picked = |draw: f64| routing.pick(draw).label.to_string();
        assert_eq!(picked(0.0), "2");
        assert_eq!(picked(0.099), "2");
        assert_eq!(picked(0.1), "3");
        assert_eq!(picked(0.299), "3");
        assert_eq!(picked(0.301), "1");
        assert_eq!(picked(0.999_999), "1");
        let only = Routing::only(version("7"));
        assert_eq!(only.pick(0.5).label.as_ref(), "7");
    }

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
