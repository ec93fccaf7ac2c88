//! The `process` function target: child processes speaking the AWS Lambda Runtime API.
//!
//! Handlers built for Lambda runtimes (`lambda_runtime`, `awslambdaric`, any custom runtime)
//! run unchanged: each execution environment is one child process started with
//! `AWS_LAMBDA_RUNTIME_API` pointing at a Runtime API listener of its own on 127.0.0.1
//! (SEMANTICS.md §5). A [`ProcessFunction`] keeps a pool of them per function.
//!
//! | what happens | result |
//! |---|---|
//! | `/response` | success; the body is the result (over 6 MB: `Function.ResponseSizeTooLarge`) |
//! | `/error` | function error of the header's type; the body is the error document |
//! | `/init/error`, or no `/next` within 10 s of starting | function error (the header's type, or `Runtime.InitError`); the environment is replaced |
//! | the command cannot be started | function error `Runtime.InvalidEntrypoint` |
//! | the process exits mid-invocation | function error `Runtime.ExitError`; the environment is replaced |
//! | the deadline passes | [`InvokeError::Timeout`]; the environment is killed and replaced |
//! | the caller goes away mid-invocation (its future is dropped) | the invocation runs to its end or deadline, as on Lambda; the result is discarded and the environment stays warm |
//!
//! Environments are reused warm, one invocation at a time each; the pool grows on demand up to
//! `max_environments` live processes and queues callers beyond that, keeps `min_warm` started,
//! and stops environments idle longer than `idle_timeout`. Workers' stdout and stderr go to
//! tracing (target `impulse::function`) with the function and request id. Metrics:
//! `impulse_cold_starts_total`, `impulse_init_duration_seconds`, `impulse_environments`.
//!
//! Environments get a clean environment: `PATH`, `HOME`, `LANG`, `LC_ALL` and `TMPDIR` from the
//! broker, `TZ=UTC` unless the function sets it, the function's `environment`, its execution
//! role's `environment`, then Lambda's reserved variables, which neither can override.

mod cgroup;
mod environment;
mod isolation;
mod peer;
mod pool;
mod runtime_api;

pub use isolation::{Isolation, IsolationError};

use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::HeaderValue;
use futures::future::BoxFuture;
use impulse_config::ProcessTargetConfig;
use impulse_connectors::telemetry;
use tokio::time::Instant;
use tower::Service;

use impulse_config::SYNC_PAYLOAD_LIMIT;

use crate::role::ResolvedRole;
use crate::{Invocation, InvocationResponse, Invoke, InvokeError, LambdaError};
use environment::{Environment, Launch, Outcome, StartError};
use pool::{Checkout, Grant, Pool};
use runtime_api::Reply;

/// A function run as a pool of local execution environments speaking the Lambda Runtime API.
///
/// Clones share one pool. `poll_ready` is always ready: admission is the broker limiter's job,
/// but a call that finds `max_environments` environments busy waits for one to free up.
/// Dropping the last clone kills every environment.
#[derive(Debug, Clone)]
pub struct ProcessFunction {
    pool: Arc<Pool>,
    timeout: Duration,
}

/// A process target that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// `command` is empty.
    #[error("function {function:?}: the process target's command is empty")]
    EmptyCommand {
        /// The function.
        function: String,
    },
    /// `max_environments` is 0.
    #[error("function {function:?}: a process target needs at least one execution environment")]
    NoEnvironments {
        /// The function.
        function: String,
    },
    /// The function's name cannot be sent in a Runtime API header.
    #[error("function {function:?}: the name cannot be used in a Runtime API header")]
    InvalidName {
        /// The function.
        function: String,
    },
    /// No working directory was configured and the broker's own could not be read.
    #[error("function {function:?}: cannot determine the working directory: {source}")]
    WorkingDir {
        /// The function.
        function: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Built outside a tokio runtime (the pool runs a maintenance task).
    #[error("function {function:?}: process targets must be built inside a tokio runtime")]
    NoRuntime {
        /// The function.
        function: String,
    },
}

impl ProcessFunction {
    /// A pool for `function_name` running `config`, with invocations bounded by `timeout` (the
    /// function's configured timeout) and at most `max_environments` live processes (the
    /// function's concurrency). Starts `min_warm` environments in the background.
    ///
    /// MUST be called inside a tokio runtime.
    pub fn new(
        function_name: &str,
        config: &ProcessTargetConfig,
        timeout: Duration,
        max_environments: usize,
    ) -> Result<Self, ProcessError> {
        Self::with_role(function_name, config, None, None, timeout, max_environments)
    }

    /// As [`ProcessFunction::new`], with the variables of the function's execution role in
    /// every environment's process environment, and each environment running as a user of its
    /// own when `isolation` is given.
    ///
    /// MUST be called inside a tokio runtime.
    pub fn with_role(
        function_name: &str,
        config: &ProcessTargetConfig,
        role: Option<Arc<ResolvedRole>>,
        isolation: Option<Arc<Isolation>>,
        timeout: Duration,
        max_environments: usize,
    ) -> Result<Self, ProcessError> {
        Self::version(
            function_name,
            "$LATEST",
            config,
            role,
            isolation,
            timeout,
            max_environments,
        )
    }

    /// As [`ProcessFunction::with_role`], for published version `version` (or `$LATEST`) of
    /// the function: its environments are its own, see `AWS_LAMBDA_FUNCTION_VERSION` set to
    /// `version`, and are given the version's ARN (`…:function:<name>:<version>`).
    ///
    /// MUST be called inside a tokio runtime.
    pub fn version(
        function_name: &str,
        version: &str,
        config: &ProcessTargetConfig,
        role: Option<Arc<ResolvedRole>>,
        isolation: Option<Arc<Isolation>>,
        timeout: Duration,
        max_environments: usize,
    ) -> Result<Self, ProcessError> {
        let function = || function_name.to_owned();
        if config.command.trim().is_empty() {
            return Err(ProcessError::EmptyCommand {
                function: function(),
            });
        }
        if max_environments == 0 {
            return Err(ProcessError::NoEnvironments {
                function: function(),
            });
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ProcessError::NoRuntime {
                function: function(),
            });
        }
        let function_arn =
            HeaderValue::from_str(&crate::record::version_arn(function_name, version)).map_err(
                |_| ProcessError::InvalidName {
                    function: function(),
                },
            )?;
        let working_dir = match &config.working_dir {
            Some(dir) => absolute(dir.clone()).map_err(|source| ProcessError::WorkingDir {
                function: function(),
                source,
            })?,
            None => std::env::current_dir().map_err(|source| ProcessError::WorkingDir {
                function: function(),
                source,
            })?,
        };
        let launch = Launch {
            function: Arc::from(function_name),
            version: Arc::from(version),
            command: config.command.clone(),
            args: config.args.clone(),
            environment: config
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            role,
            handler: config.handler.clone().unwrap_or_default(),
            memory_size: config.memory_size,
            working_dir,
            function_arn,
            isolation,
        };
        let min_warm = usize::try_from(config.min_warm).unwrap_or(usize::MAX);
        let pool = Pool::new(
            launch,
            max_environments,
            min_warm,
            config.idle_timeout,
            environment::INIT_TIMEOUT,
        );
        Ok(Self { pool, timeout })
    }

    /// Replaces the init limit (Lambda's 10 s) for environments started from now on: how long
    /// a new process has to call `/next`. Tests shorten it.
    pub fn with_init_timeout(self, init_timeout: Duration) -> Self {
        self.pool.set_init_timeout(init_timeout);
        self
    }

    /// Live execution environments: processes started and not yet reaped.
    pub fn live_environments(&self) -> usize {
        self.pool.live()
    }

    /// Stops every environment: SIGTERM, then SIGKILL after 2 s (Lambda's shutdown budget).
    /// Waiting and later calls fail with a system error. Returns once the processes are reaped.
    pub async fn shutdown(&self) {
        self.pool.shutdown().await;
    }
}

impl Service<Invocation> for ProcessFunction {
    type Response = InvocationResponse;
    type Error = InvokeError;
    type Future = BoxFuture<'static, Result<InvocationResponse, InvokeError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Admission is the broker limiter's job; the pool queues beyond its cap.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, invocation: Invocation) -> Self::Future {
        Invoke::invoke(self, invocation)
    }
}

impl Invoke for ProcessFunction {
    type Future = BoxFuture<'static, Result<InvocationResponse, InvokeError>>;

    fn invoke(&self, invocation: Invocation) -> Self::Future {
        Box::pin(invoke(self.pool.clone(), self.timeout, invocation))
    }
}

/// One invocation: find an environment (warm, new, or the next to free up), run the event on
/// it, and decide the environment's fate from the outcome. Every wait is bounded by the
/// deadline, which is the earlier of the invocation's and `now + timeout`.
async fn invoke(
    pool: Arc<Pool>,
    timeout: Duration,
    invocation: Invocation,
) -> Result<InvocationResponse, InvokeError> {
    let start = Instant::now();
    let deadline = crate::deadline::attempt_deadline(invocation.deadline, start, timeout);
    let timed_out = InvokeError::Timeout {
        after: deadline.saturating_duration_since(start),
    };
    let request_id: Arc<str> = Arc::from(invocation.request_id.as_str());
    let env = match environment(&pool, deadline, &request_id).await {
        Ok(env) => env,
        Err(None) => return Err(timed_out),
        Err(Some(err)) => return Err(err),
    };
    if Instant::now() >= deadline {
        // Nothing was handed to the worker: the environment is as good as before.
        pool.release(env);
        return Err(timed_out);
    }
    // From here the worker has the event. The exchange runs in a task of its own so that a
    // caller that goes away does not cut it short: killing the worker mid-event would cost
    // the next caller a cold start, and Lambda lets such an invocation finish too.
    let exchange = tokio::spawn(async move {
        let outcome = env
            .invoke(
                request_id.clone(),
                invocation.payload,
                deadline,
                invocation.client_context,
                invocation.log_tail,
            )
            .await;
        settle(&pool, env, &request_id, outcome)
    });
    match exchange.await {
        Ok(result) => result.unwrap_or(Err(timed_out)),
        // Only a panic in the exchange gets here; the environment went with it.
        Err(err) => Err(InvokeError::System(Box::new(err))),
    }
}

/// An environment for one invocation: a warm one, a new one started in a free slot, or the
/// next to free up. `Err(None)` when the deadline passed while waiting.
async fn environment(
    pool: &Arc<Pool>,
    deadline: Instant,
    request_id: &str,
) -> Result<Environment, Option<InvokeError>> {
    let slot = match pool.checkout() {
        Checkout::Warm(env) => return Ok(env),
        Checkout::Start(slot) => slot,
        Checkout::Closed => return Err(Some(closed())),
        Checkout::Wait(mut waiting) => {
            match tokio::time::timeout_at(deadline, waiting.recv()).await {
                Err(_elapsed) => return Err(None),
                Ok(None) => return Err(Some(closed())),
                Ok(Some(Grant::Env(env))) => return Ok(env),
                Ok(Some(Grant::Start(slot))) => slot,
            }
        }
    };
    telemetry::cold_start(&pool.launch.function);
    let mut starting = pool.start(slot);
    match tokio::time::timeout_at(deadline, starting.recv()).await {
        // The environment goes on starting and joins the pool when ready.
        Err(_elapsed) => Err(None),
        Ok(None) => Err(Some(closed())),
        Ok(Some(Ok(env))) => Ok(env),
        Ok(Some(Err(e))) => Err(Some(start_failed(&pool.launch, request_id, e))),
    }
}

/// The result of an invocation's `outcome`, returning `env` to the pool when it is still good
/// and dropping (killing) it otherwise. `None` for a timeout.
fn settle(
    pool: &Pool,
    env: Environment,
    request_id: &str,
    outcome: Outcome,
) -> Option<Result<InvocationResponse, InvokeError>> {
    let result = match outcome {
        Outcome::Replied(Reply::Response(payload)) => {
            pool.release(env);
            Ok(InvocationResponse { payload })
        }
        Outcome::Replied(Reply::Error {
            error_type,
            payload,
        }) => {
            pool.release(env);
            Err(InvokeError::Function {
                error_type,
                payload,
            })
        }
        Outcome::Replied(Reply::TooLarge) => {
            pool.release(env);
            Err(function_error(
                "Function.ResponseSizeTooLarge",
                &format!(
                    "Response payload size exceeded maximum allowed payload size \
                     ({SYNC_PAYLOAD_LIMIT} bytes)."
                ),
            ))
        }
        Outcome::Exited(status) => {
            tracing::warn!(
                function = %pool.launch.function,
                request_id = %request_id,
                pid = env.pid(),
                %status,
                "Execution environment exited during an invocation."
            );
            drop(env);
            Err(exit_error(request_id, &status))
        }
        Outcome::TimedOut => {
            tracing::info!(
                function = %pool.launch.function,
                request_id = %request_id,
                pid = env.pid(),
                "Invocation timed out; killing its execution environment."
            );
            drop(env);
            return None;
        }
    };
    Some(result)
}

fn closed() -> InvokeError {
    InvokeError::System("the process function is shut down".into())
}

fn start_failed(launch: &Launch, request_id: &str, error: StartError) -> InvokeError {
    match error {
        StartError::Listen(e) | StartError::Isolation(e) => InvokeError::System(Box::new(e)),
        StartError::Spawn(e) if launch.isolation.is_some() => {
            tracing::warn!(function = %launch.function, command = %launch.command, error = %e, "Starting an isolated execution environment failed.");
            function_error(
                "Runtime.InvalidEntrypoint",
                &format!(
                    "RequestId: {request_id} Error: fork/exec {}: {e} (isolated: the command, \
                     its interpreter and the working directory must be readable by other \
                     users; or set isolation.mode = \"off\")",
                    launch.command
                ),
            )
        }
        StartError::Spawn(e) => {
            tracing::warn!(function = %launch.function, command = %launch.command, error = %e, "Starting an execution environment failed.");
            function_error(
                "Runtime.InvalidEntrypoint",
                &format!(
                    "RequestId: {request_id} Error: fork/exec {}: {e}",
                    launch.command
                ),
            )
        }
        StartError::Init {
            error_type,
            payload,
        } => {
            tracing::warn!(function = %launch.function, %error_type, "Execution environment init failed.");
            InvokeError::Function {
                error_type,
                payload,
            }
        }
        StartError::Exited(status) => {
            tracing::warn!(function = %launch.function, %status, "Execution environment exited during init.");
            exit_error(request_id, &status)
        }
        StartError::InitTimeout(after) => {
            tracing::warn!(function = %launch.function, "Execution environment did not finish init in time.");
            function_error(
                "Runtime.InitError",
                &format!(
                    "RequestId: {request_id} Error: the runtime did not call \
                     /runtime/invocation/next within {} seconds of starting",
                    after.as_secs_f64()
                ),
            )
        }
    }
}

fn exit_error(request_id: &str, status: &str) -> InvokeError {
    function_error(
        "Runtime.ExitError",
        &format!("RequestId: {request_id} Error: Runtime exited with error: {status}"),
    )
}

fn function_error(error_type: &str, message: &str) -> InvokeError {
    InvokeError::Function {
        error_type: error_type.to_owned(),
        payload: LambdaError {
            error_type,
            error_message: message,
        }
        .to_bytes(),
    }
}

fn absolute(dir: PathBuf) -> std::io::Result<PathBuf> {
    if dir.is_absolute() {
        Ok(dir)
    } else {
        Ok(std::env::current_dir()?.join(dir))
    }
}
