//! Metric names and the helpers that emit them: the only place raw `metrics::` macros appear.
//!
//! Labels take values from bounded sets only: configured names and `&'static str` codes.
#![allow(clippy::disallowed_macros)] // this module is where the metrics macros belong

use std::time::Duration;

/// Counter of finished invocations; labels `function`, `trigger`, `outcome`.
pub const INVOCATIONS_TOTAL: &str = "impulse_invocations_total";
/// Histogram of invocation durations in seconds; label `function`.
pub const INVOCATION_DURATION_SECONDS: &str = "impulse_invocation_duration_seconds";
/// Gauge set to 1, labelled with the running version.
pub const BUILD_INFO: &str = "impulse_build_info";

/// Buckets for [`INVOCATION_DURATION_SECONDS`]: 1 ms to 900 s (Lambda's longest timeout).
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0,
];

/// How an invocation ended, as the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationOutcome {
    /// The function returned a result.
    Success,
    /// The function reported an error (or its HTTP endpoint answered 5xx).
    FunctionError,
    /// The function ran past its deadline.
    Timeout,
    /// The target refused for load (HTTP 429).
    Throttled,
    /// The target could not be reached or broke the connection.
    SystemError,
    /// The request can never succeed as sent (4xx other than 429, payload too large).
    Permanent,
}

impl InvocationOutcome {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::FunctionError => "function_error",
            Self::Timeout => "timeout",
            Self::Throttled => "throttled",
            Self::SystemError => "system_error",
            Self::Permanent => "permanent",
        }
    }
}

/// Registers descriptions for every metric, so `/metrics` explains them.
pub fn describe() {
    metrics::describe_counter!(INVOCATIONS_TOTAL, "Function invocations by outcome.");
    metrics::describe_histogram!(
        INVOCATION_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Time from sending an invocation to its result."
    );
    metrics::describe_gauge!(BUILD_INFO, "Always 1; the `version` label names the build.");
}

/// Emitted once at start-up.
pub fn build_info(version: &'static str) {
    metrics::gauge!(BUILD_INFO, "version" => version).set(1.0);
}

/// Emitted when an invocation attempt finishes, whatever its outcome.
pub fn invocation_completed(
    function: &str,
    trigger: &str,
    outcome: InvocationOutcome,
    elapsed: Duration,
) {
    metrics::counter!(
        INVOCATIONS_TOTAL,
        "function" => function.to_owned(),
        "trigger" => trigger.to_owned(),
        "outcome" => outcome.as_str(),
    )
    .increment(1);
    metrics::histogram!(INVOCATION_DURATION_SECONDS, "function" => function.to_owned())
        .record(elapsed.as_secs_f64());
}
