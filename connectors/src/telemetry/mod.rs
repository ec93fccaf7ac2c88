//! Metric names and the helpers that emit them: the only place raw `metrics::` macros appear.
//!
//! Labels take values from bounded sets only: configured names and `&'static str` codes.
#![allow(clippy::disallowed_macros)] // this module is where the metrics macros belong

mod function;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use self::function::{ConcurrencyGauge, InvocationMetrics, TriggerInvocationMetrics};

/// Counter of finished invocations; labels `function`, `version` (the executed version:
/// `$LATEST`, `1`, …), `trigger`, `outcome`.
pub const INVOCATIONS_TOTAL: &str = "impulse_invocations_total";
/// Histogram of invocation durations in seconds; labels `function`, `version`.
pub const INVOCATION_DURATION_SECONDS: &str = "impulse_invocation_duration_seconds";
/// Gauge set to 1, labelled with the running version.
pub const BUILD_INFO: &str = "impulse_build_info";
/// Counter of admissions refused or delayed by a limit; labels `function`, `limit`.
pub const THROTTLES_TOTAL: &str = "impulse_throttles_total";
/// Counter: admissions decided without Redis under `limits.scope = "cluster"` (it could not be
/// reached); `function` label.
pub const CLUSTER_LIMITS_UNAVAILABLE_TOTAL: &str = "impulse_cluster_limits_unavailable_total";
/// Gauge of attempts holding a concurrency permit; label `function`.
pub const CONCURRENT_EXECUTIONS: &str = "impulse_concurrent_executions";
/// Gauge of the concurrency a function can reach: its reserved concurrency, or the account's
/// unreserved pool (shared with the other unreserved functions); label `function`. Set once at
/// start-up, so that dashboards and alerts can compare [`CONCURRENT_EXECUTIONS`] with it.
pub const CONCURRENCY_LIMIT: &str = "impulse_concurrency_limit";
/// Gauge of a function's `max_event_age` in seconds; label `function`. Set once at start-up, so
/// that alerts can compare [`ASYNC_EVENT_AGE_SECONDS`] with it.
pub const MAX_EVENT_AGE_SECONDS: &str = "impulse_max_event_age_seconds";
/// Counter of events durably added to the async queue; label `function`.
pub const ASYNC_EVENTS_ENQUEUED_TOTAL: &str = "impulse_async_events_enqueued_total";
/// Counter of async events whose outcome became final; labels `function`, `result`.
pub const ASYNC_EVENTS_FINISHED_TOTAL: &str = "impulse_async_events_finished_total";
/// Histogram of async event age at each attempt, in seconds; label `function`.
pub const ASYNC_EVENT_AGE_SECONDS: &str = "impulse_async_event_age_seconds";
/// Counter of retries scheduled; labels `function`, `class`.
pub const RETRIES_TOTAL: &str = "impulse_retries_total";
/// Counter of records written to on-failure destinations; labels `function`, `trigger`,
/// `result` (`ok` or `error`).
pub const DEAD_LETTERS_TOTAL: &str = "impulse_dead_letters_total";
/// Counter of failed destination writes; labels `function`, `destination`.
pub const DESTINATION_FAILURES_TOTAL: &str = "impulse_destination_failures_total";
/// Counter of schedule ticks; labels `trigger`, `result` (`fired`, `skipped`, `caught_up`,
/// `claimed_elsewhere`: queued by another instance sharing the queue).
pub const SCHEDULE_TICKS_TOTAL: &str = "impulse_schedule_ticks_total";

/// Counter of requests refused by authentication or authorization; label `error_type`
/// (Lambda's exception name, e.g. `AccessDeniedException`).
pub const AUTH_REFUSALS_TOTAL: &str = "impulse_auth_refusals_total";

/// Gauge of open HTTP connections; label `listener` (`server`, `admin`).
pub const HTTP_CONNECTIONS: &str = "impulse_http_connections";
/// Counter of connections closed at accept because the listener had `server.max_connections`
/// open; label `listener`.
pub const HTTP_CONNECTIONS_REFUSED_TOTAL: &str = "impulse_http_connections_refused_total";
/// Counter of connections the server closed on a limit; labels `listener`, `reason`
/// (`header_read_timeout`, `idle_timeout`, `shutdown`).
pub const HTTP_CONNECTIONS_TIMED_OUT_TOTAL: &str = "impulse_http_connections_timed_out_total";

/// Counter of invocations that had to wait for a new execution environment to start (process
/// functions); label `function`.
pub const COLD_STARTS_TOTAL: &str = "impulse_cold_starts_total";
/// Histogram of execution-environment init durations in seconds (process start to the first
/// Runtime API `/next`); label `function`.
pub const INIT_DURATION_SECONDS: &str = "impulse_init_duration_seconds";
/// Counter of execution environments whose init failed (the process could not start, exited,
/// reported `/init/error`, or did not reach `/next` in time); label `function`.
pub const INIT_FAILURES_TOTAL: &str = "impulse_init_failures_total";
/// Gauge set at each scrape of `/metrics`: 1 while `/readyz` answers 200, 0 while it does not
/// (starting, or draining at shutdown); no label.
pub const READY: &str = "impulse_ready";
/// Gauge of live execution environments (running processes) of a process function; labels
/// `function` and `version` (each version has environments of its own).
pub const ENVIRONMENTS: &str = "impulse_environments";
/// Counter of connections an isolated execution environment's Runtime API refused because
/// another user's process made them (another function trying to take its invocations);
/// label `function`.
pub const RUNTIME_API_REFUSED_TOTAL: &str = "impulse_runtime_api_refused_total";

/// Counter of configuration reloads; label `outcome` (`applied`, `invalid`, `refused`).
pub const CONFIG_RELOADS_TOTAL: &str = "impulse_config_reloads_total";
/// Gauge of the configuration's generation in force: 1 at start, one more per applied reload.
pub const CONFIG_GENERATION: &str = "impulse_config_generation";
/// Gauge of a fingerprint of the configuration in force (48 bits of its SHA-256): equal on two
/// instances when they run the same configuration.
pub const CONFIG_HASH: &str = "impulse_config_hash";

/// Buckets for [`INIT_DURATION_SECONDS`]: 5 ms to Lambda's 10 s init limit.
pub const INIT_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counter of records a Kafka source read; label `trigger`.
pub const KAFKA_RECORDS_RECEIVED_TOTAL: &str = "impulse_kafka_records_received_total";
/// Counter of Kafka records that matched no filter pattern (acked as dropped); label `trigger`.
pub const KAFKA_RECORDS_FILTERED_TOTAL: &str = "impulse_kafka_records_filtered_total";
/// Counter of Kafka records that failed for good with no `on_failure` destination (committed
/// without delivery, as Lambda discards them); labels `trigger`, `condition`.
pub const KAFKA_RECORDS_DROPPED_TOTAL: &str = "impulse_kafka_records_dropped_total";
/// Counter of Kafka records in invocations that failed (a function error, timeout, throttle
/// or system error; with a partial batch response, the records from the first reported
/// failure on); label `trigger`. Counted per attempt, so a retried record counts again
/// (Lambda's `FailedInvokeEventCount`).
pub const KAFKA_RECORDS_FAILED_INVOKE_TOTAL: &str = "impulse_kafka_records_failed_invoke_total";
/// Counter of batches a Kafka source handed on; label `trigger`.
pub const KAFKA_BATCHES_TOTAL: &str = "impulse_kafka_batches_total";
/// Histogram of records per Kafka batch; label `trigger`. Buckets: [`KAFKA_BATCH_SIZE_BUCKETS`].
pub const KAFKA_BATCH_SIZE: &str = "impulse_kafka_batch_size";
/// Gauge of records behind the high watermark, summed over a trigger's assigned partitions
/// (Lambda's `OffsetLag`); label `trigger`.
pub const OFFSET_LAG_RECORDS: &str = "impulse_offset_lag_records";

/// Counter of entries a Redis stream trigger read (claimed ones included); label `trigger`.
pub const REDIS_ENTRIES_RECEIVED_TOTAL: &str = "impulse_redis_entries_received_total";
/// Counter of batches a Redis stream trigger handed on; label `trigger`.
pub const REDIS_BATCHES_TOTAL: &str = "impulse_redis_batches_total";
/// Histogram of entries per Redis stream batch; label `trigger`. Buckets:
/// [`KAFKA_BATCH_SIZE_BUCKETS`].
pub const REDIS_BATCH_SIZE: &str = "impulse_redis_batch_size";
/// Gauge of entries of a Redis stream trigger's group not yet acknowledged: delivered and
/// pending, plus not yet delivered (`XINFO GROUPS` `pending` + `lag`); label `trigger`.
pub const REDIS_LAG_ENTRIES: &str = "impulse_redis_lag_entries";
/// Counter of Redis stream entries in invocations that failed (as
/// [`KAFKA_RECORDS_FAILED_INVOKE_TOTAL`]); label `trigger`.
pub const REDIS_ENTRIES_FAILED_INVOKE_TOTAL: &str = "impulse_redis_entries_failed_invoke_total";
/// Counter of Redis stream entries that failed for good with no `on_failure` destination
/// (acknowledged without delivery); labels `trigger`, `condition`.
pub const REDIS_ENTRIES_DROPPED_TOTAL: &str = "impulse_redis_entries_dropped_total";
/// Counter of entries a Redis stream trigger claimed from a stopped consumer (`XAUTOCLAIM`);
/// label `trigger`.
pub const REDIS_ENTRIES_CLAIMED_TOTAL: &str = "impulse_redis_entries_claimed_total";

/// Buckets for [`KAFKA_BATCH_SIZE`]: 1 record to Lambda's largest `BatchSize`, 10,000.
pub const KAFKA_BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// Buckets for [`ASYNC_EVENT_AGE_SECONDS`]: 10 ms to Lambda's 6 h maximum event age.
pub const AGE_BUCKETS: &[f64] = &[
    0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 180.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
];

/// Which limit held an admission back, as the `limit` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A concurrency cap (the function's reserved concurrency or the account's).
    Concurrency,
    /// The function's invocation rate.
    Rate,
}

impl Limit {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Concurrency => "concurrency",
            Self::Rate => "rate",
        }
    }
}

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
    /// How many outcomes there are: the length of a table indexed by [`Self::index`]
    /// (`Permanent` is the last variant).
    const COUNT: usize = Self::Permanent as usize + 1;

    /// A dense index below [`Self::COUNT`], for tables of per-outcome handles: the variant's
    /// position (the enum has no fields and no explicit discriminants).
    const fn index(self) -> usize {
        self as usize
    }

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
    metrics::describe_counter!(
        CONFIG_RELOADS_TOTAL,
        "Configuration reloads by outcome (applied, invalid, refused)."
    );
    metrics::describe_gauge!(
        CONFIG_GENERATION,
        "Generation of the configuration in force: 1 at start, +1 per applied reload."
    );
    metrics::describe_gauge!(
        CONFIG_HASH,
        "Fingerprint (48 bits of SHA-256) of the configuration in force."
    );
    metrics::describe_counter!(
        THROTTLES_TOTAL,
        "Admissions refused (sync) or delayed (queued) by a limit."
    );
    metrics::describe_counter!(
        CLUSTER_LIMITS_UNAVAILABLE_TOTAL,
        "Admissions decided without Redis, which cluster-wide limits could not reach."
    );
    metrics::describe_gauge!(
        CONCURRENT_EXECUTIONS,
        "Attempts currently holding a concurrency permit."
    );
    metrics::describe_gauge!(
        CONCURRENCY_LIMIT,
        "The concurrency a function can reach: its reserved concurrency or the unreserved pool."
    );
    metrics::describe_gauge!(
        MAX_EVENT_AGE_SECONDS,
        metrics::Unit::Seconds,
        "A function's max_event_age: async events older than this are dropped."
    );
    metrics::describe_counter!(
        ASYNC_EVENTS_ENQUEUED_TOTAL,
        "Events durably added to the async queue."
    );
    metrics::describe_counter!(
        ASYNC_EVENTS_FINISHED_TOTAL,
        "Async events whose outcome became final, by result."
    );
    metrics::describe_histogram!(
        ASYNC_EVENT_AGE_SECONDS,
        metrics::Unit::Seconds,
        "Age of async events when an attempt starts."
    );
    metrics::describe_counter!(RETRIES_TOTAL, "Retries scheduled, by error class.");
    metrics::describe_gauge!(HTTP_CONNECTIONS, "Open HTTP connections, by listener.");
    metrics::describe_counter!(
        HTTP_CONNECTIONS_REFUSED_TOTAL,
        "Connections closed at accept because the listener was at server.max_connections."
    );
    metrics::describe_counter!(
        HTTP_CONNECTIONS_TIMED_OUT_TOTAL,
        "Connections the server closed on a header-read, idle or shutdown limit."
    );
    metrics::describe_counter!(
        DEAD_LETTERS_TOTAL,
        "Records written to on-failure destinations."
    );
    metrics::describe_counter!(
        DESTINATION_FAILURES_TOTAL,
        "Destination writes that failed (and will be retried)."
    );
    metrics::describe_counter!(
        SCHEDULE_TICKS_TOTAL,
        "Schedule ticks, by what happened to them."
    );
    metrics::describe_counter!(
        KAFKA_RECORDS_RECEIVED_TOTAL,
        "Records read by Kafka sources."
    );
    metrics::describe_counter!(
        KAFKA_RECORDS_FILTERED_TOTAL,
        "Kafka records that matched no filter pattern; acked as dropped and committed."
    );
    metrics::describe_counter!(
        KAFKA_RECORDS_DROPPED_TOTAL,
        "Kafka records that failed for good without an on_failure destination; committed."
    );
    metrics::describe_counter!(
        KAFKA_RECORDS_FAILED_INVOKE_TOTAL,
        "Kafka records in failed invocations, counted per attempt."
    );
    metrics::describe_counter!(KAFKA_BATCHES_TOTAL, "Batches handed on by Kafka sources.");
    metrics::describe_histogram!(KAFKA_BATCH_SIZE, "Records per Kafka batch.");
    metrics::describe_gauge!(
        OFFSET_LAG_RECORDS,
        "Records between a trigger's stored (or committed) offsets and the high watermarks."
    );
    metrics::describe_counter!(
        REDIS_ENTRIES_RECEIVED_TOTAL,
        "Entries read by Redis stream triggers, claimed ones included."
    );
    metrics::describe_counter!(
        REDIS_ENTRIES_CLAIMED_TOTAL,
        "Entries Redis stream triggers claimed from stopped consumers."
    );
    metrics::describe_counter!(
        REDIS_BATCHES_TOTAL,
        "Batches handed on by Redis stream triggers."
    );
    metrics::describe_histogram!(REDIS_BATCH_SIZE, "Entries per Redis stream batch.");
    metrics::describe_gauge!(
        REDIS_LAG_ENTRIES,
        "Entries of a Redis stream trigger's group pending or not yet delivered."
    );
    metrics::describe_counter!(
        REDIS_ENTRIES_FAILED_INVOKE_TOTAL,
        "Redis stream entries in failed invocations, counted per attempt."
    );
    metrics::describe_counter!(
        REDIS_ENTRIES_DROPPED_TOTAL,
        "Redis stream entries that failed for good without an on_failure destination; acknowledged."
    );
    metrics::describe_counter!(
        AUTH_REFUSALS_TOTAL,
        "Requests refused by authentication or authorization, by Lambda's error type."
    );
    metrics::describe_counter!(
        COLD_STARTS_TOTAL,
        "Invocations that waited for a new execution environment to start."
    );
    metrics::describe_histogram!(
        INIT_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Time from starting an execution environment to its first Runtime API /next."
    );
    metrics::describe_counter!(
        INIT_FAILURES_TOTAL,
        "Execution environments whose init failed."
    );
    metrics::describe_gauge!(READY, "1 while /readyz answers 200, else 0.");
    metrics::describe_gauge!(
        ENVIRONMENTS,
        "Live execution environments (processes) of a process function."
    );
    metrics::describe_counter!(
        RUNTIME_API_REFUSED_TOTAL,
        "Runtime API connections refused because another user's process made them."
    );
}

/// Emitted for each configuration reload, with its outcome (`applied`, `invalid`, `refused`).
pub fn config_reloaded(outcome: &'static str) {
    metrics::counter!(CONFIG_RELOADS_TOTAL, "outcome" => outcome).increment(1);
}

/// Emitted when a configuration is put in force (at start and by each applied reload).
pub fn config_loaded(generation: u64, fingerprint: u64) {
    #[allow(clippy::cast_precision_loss)] // generations stay far below 2^52
    metrics::gauge!(CONFIG_GENERATION).set(generation as f64);
    // Callers keep the fingerprint within 48 bits: exact as an f64.
    #[allow(clippy::cast_precision_loss)]
    metrics::gauge!(CONFIG_HASH).set(fingerprint as f64);
}

/// Emitted once at start-up.
pub fn build_info(version: &'static str) {
    metrics::gauge!(BUILD_INFO, "version" => version).set(1.0);
}

/// Emitted once per function at start-up: the concurrency it can reach and its
/// `max_event_age`.
pub fn function_limits(function: &str, concurrency: u32, max_event_age: Duration) {
    metrics::gauge!(CONCURRENCY_LIMIT, "function" => function.to_owned())
        .set(f64::from(concurrency));
    metrics::gauge!(MAX_EVENT_AGE_SECONDS, "function" => function.to_owned())
        .set(max_event_age.as_secs_f64());
}

/// Emitted when an invocation of Kafka records fails: `records` is how many of them failed.
/// Only failures pay for the registry lookup: the success path counts nothing here.
pub fn kafka_records_failed_invoke(trigger: &str, records: u64) {
    metrics::counter!(KAFKA_RECORDS_FAILED_INVOKE_TOTAL, "trigger" => trigger.to_owned())
        .increment(records);
}

/// Emitted when a limit refuses a synchronous call or makes a queued one wait.
pub fn throttled(function: &str, limit: Limit) {
    metrics::counter!(THROTTLES_TOTAL, "function" => function.to_owned(), "limit" => limit.as_str())
        .increment(1);
}

/// Emitted when a cluster-wide admission is decided without Redis (it could not be reached).
pub fn cluster_limits_unavailable(function: &str) {
    metrics::counter!(CLUSTER_LIMITS_UNAVAILABLE_TOTAL, "function" => function.to_owned())
        .increment(1);
}

/// Emitted when a request is refused for its credentials or permissions.
pub fn auth_refused(error_type: &'static str) {
    metrics::counter!(AUTH_REFUSALS_TOTAL, "error_type" => error_type).increment(1);
}

/// Emitted once an async event is durable in the queue.
pub fn async_event_enqueued(function: &str) {
    metrics::counter!(ASYNC_EVENTS_ENQUEUED_TOTAL, "function" => function.to_owned()).increment(1);
}

/// Emitted when an async event's outcome is final; `result` is `success`, `dead_lettered`,
/// `dropped` or `expired`.
pub fn async_event_finished(function: &str, result: &'static str) {
    metrics::counter!(
        ASYNC_EVENTS_FINISHED_TOTAL,
        "function" => function.to_owned(),
        "result" => result,
    )
    .increment(1);
}

/// Emitted as an async attempt starts.
pub fn async_event_age(function: &str, age: Duration) {
    metrics::histogram!(ASYNC_EVENT_AGE_SECONDS, "function" => function.to_owned())
        .record(age.as_secs_f64());
}

/// Emitted when a retry is scheduled; `class` is the error class (`function`, `throttle`,
/// `system`).
pub fn retry_scheduled(function: &str, class: &'static str) {
    metrics::counter!(RETRIES_TOTAL, "function" => function.to_owned(), "class" => class)
        .increment(1);
}

/// Emitted after an on-failure destination write, successful or not.
pub fn dead_letter_written(function: &str, trigger: &str, ok: bool) {
    metrics::counter!(
        DEAD_LETTERS_TOTAL,
        "function" => function.to_owned(),
        "trigger" => trigger.to_owned(),
        "result" => if ok { "ok" } else { "error" },
    )
    .increment(1);
}

/// Emitted when Kafka records fail for good and the trigger has no `on_failure` destination;
/// `condition` says why (`retries_exhausted`, `age_exceeded`).
pub fn kafka_records_dropped(trigger: &str, condition: &'static str, records: u64) {
    metrics::counter!(
        KAFKA_RECORDS_DROPPED_TOTAL,
        "trigger" => trigger.to_owned(),
        "condition" => condition,
    )
    .increment(records);
}

/// Emitted when a destination write fails; `destination` is `on_success` or `on_failure`.
pub fn destination_failed(function: &str, destination: &'static str) {
    metrics::counter!(
        DESTINATION_FAILURES_TOTAL,
        "function" => function.to_owned(),
        "destination" => destination,
    )
    .increment(1);
}

/// Emitted for every schedule tick; `result` is `fired`, `skipped`, `caught_up` or
/// `claimed_elsewhere`.
pub fn schedule_tick(trigger: &str, result: &'static str) {
    metrics::counter!(SCHEDULE_TICKS_TOTAL, "trigger" => trigger.to_owned(), "result" => result)
        .increment(1);
}

/// Emitted when an invocation has to wait for a new execution environment (a cold start).
pub fn cold_start(function: &str) {
    metrics::counter!(COLD_STARTS_TOTAL, "function" => function.to_owned()).increment(1);
}

/// Emitted when an execution environment finishes its init phase.
pub fn init_duration(function: &str, elapsed: Duration) {
    metrics::histogram!(INIT_DURATION_SECONDS, "function" => function.to_owned())
        .record(elapsed.as_secs_f64());
}

/// Emitted when an execution environment's init fails.
pub fn init_failed(function: &str) {
    metrics::counter!(INIT_FAILURES_TOTAL, "function" => function.to_owned()).increment(1);
}

/// Emitted at each scrape of `/metrics` with what `/readyz` would answer.
pub fn ready(ready: bool) {
    metrics::gauge!(READY).set(if ready { 1.0 } else { 0.0 });
}

/// Emitted when an isolated environment's Runtime API refuses a connection from another user.
pub fn runtime_api_refused(function: &str) {
    metrics::counter!(RUNTIME_API_REFUSED_TOTAL, "function" => function.to_owned()).increment(1);
}

/// Emitted whenever a process function's number of live execution environments changes.
pub fn environments(function: &str, version: &str, live: usize) {
    metrics::gauge!(ENVIRONMENTS, "function" => function.to_owned(), "version" => version.to_owned())
        .set(live as f64);
}

/// A listener's connection metric handles, resolved once: connections are counted as they
/// open and close, so no registry lookup per connection.
#[derive(Debug, Clone)]
pub struct ConnectionMetrics {
    open: metrics::Gauge,
    refused: metrics::Counter,
    header_read_timeout: metrics::Counter,
    idle_timeout: metrics::Counter,
    shutdown: metrics::Counter,
}

/// Why the server closed a connection on a limit (label `reason` of
/// [`HTTP_CONNECTIONS_TIMED_OUT_TOTAL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionLimit {
    /// The request header did not arrive in `server.header_read_timeout`.
    HeaderReadTimeout,
    /// No request for `server.idle_timeout`.
    IdleTimeout,
    /// Still open with no request in flight a second after shutdown began.
    Shutdown,
}

impl ConnectionMetrics {
    /// Handles labelled with `listener`. Create them after the recorder is installed.
    pub fn new(listener: &'static str) -> Self {
        let timed_out = |reason: &'static str| metrics::counter!(HTTP_CONNECTIONS_TIMED_OUT_TOTAL, "listener" => listener, "reason" => reason);
        Self {
            open: metrics::gauge!(HTTP_CONNECTIONS, "listener" => listener),
            refused: metrics::counter!(HTTP_CONNECTIONS_REFUSED_TOTAL, "listener" => listener),
            header_read_timeout: timed_out("header_read_timeout"),
            idle_timeout: timed_out("idle_timeout"),
            shutdown: timed_out("shutdown"),
        }
    }

    /// Emitted when a connection is accepted and served.
    pub fn opened(&self) {
        self.open.increment(1.0);
    }

    /// Emitted when a served connection ends, for whatever reason.
    pub fn closed(&self) {
        self.open.decrement(1.0);
    }

    /// Emitted when a connection is closed at accept for the connection cap.
    pub fn refused(&self) {
        self.refused.increment(1);
    }

    /// Emitted when the server closes a connection on `limit`.
    pub fn timed_out(&self, limit: ConnectionLimit) {
        match limit {
            ConnectionLimit::HeaderReadTimeout => &self.header_read_timeout,
            ConnectionLimit::IdleTimeout => &self.idle_timeout,
            ConnectionLimit::Shutdown => &self.shutdown,
        }
        .increment(1);
    }
}

/// A Kafka source's metric handles, resolved once for its trigger: records are counted on the
/// hot path, so no per-record registry lookup.
#[derive(Debug, Clone)]
pub struct KafkaSourceMetrics {
    received: metrics::Counter,
    filtered: metrics::Counter,
    batches: metrics::Counter,
    batch_size: metrics::Histogram,
    lag: metrics::Gauge,
}

impl KafkaSourceMetrics {
    /// Handles labelled with `trigger`. Create them after the recorder is installed.
    pub fn new(trigger: &str) -> Self {
        Self {
            received: metrics::counter!(KAFKA_RECORDS_RECEIVED_TOTAL, "trigger" => trigger.to_owned()),
            filtered: metrics::counter!(KAFKA_RECORDS_FILTERED_TOTAL, "trigger" => trigger.to_owned()),
            batches: metrics::counter!(KAFKA_BATCHES_TOTAL, "trigger" => trigger.to_owned()),
            batch_size: metrics::histogram!(KAFKA_BATCH_SIZE, "trigger" => trigger.to_owned()),
            lag: metrics::gauge!(OFFSET_LAG_RECORDS, "trigger" => trigger.to_owned()),
        }
    }

    /// Emitted periodically with the records behind the high watermarks.
    pub fn offset_lag(&self, records: i64) {
        self.lag.set(records as f64);
    }
}

/// One partition task's records and batches, counted locally and added to its source's metrics
/// by [`KafkaPartitionCounts::flush`].
///
/// The source's handles are shared by all its partitions, so every update is an atomic
/// operation on a cache line the other worker threads write too: three per batch, which at one
/// record per batch is three per event (see BENCHMARKS.md, "Telemetry buffering micro-bench").
/// The partition task flushes with its offset stores, at most every 100 ms, so the metrics lag
/// by that much at most.
#[derive(Debug)]
pub struct KafkaPartitionCounts {
    metrics: KafkaSourceMetrics,
    received: u64,
    filtered: u64,
    /// Sizes of the batches not flushed yet, as runs of equal sizes: under a steady load most
    /// batches have the same size, so the runs stay few.
    batches: Vec<(usize, usize)>,
}

impl KafkaPartitionCounts {
    /// Counts to be flushed into `metrics`.
    pub fn new(metrics: &KafkaSourceMetrics) -> Self {
        Self {
            metrics: metrics.clone(),
            received: 0,
            filtered: 0,
            batches: Vec::new(),
        }
    }

    /// Counts records read.
    pub fn records_received(&mut self, records: u64) {
        self.received += records;
    }

    /// Counts a record that matched no filter pattern.
    pub fn record_filtered(&mut self) {
        self.filtered += 1;
    }

    /// Counts a batch of `records` handed on.
    pub fn batch_sent(&mut self, records: usize) {
        match self.batches.last_mut() {
            Some((size, count)) if *size == records => *count += 1,
            _ => self.batches.push((records, 1)),
        }
    }

    /// Adds everything counted since the last flush to the source's metrics; returns whether
    /// there was anything.
    pub fn flush(&mut self) -> bool {
        let any = self.received > 0 || self.filtered > 0 || !self.batches.is_empty();
        if self.received > 0 {
            self.metrics
                .received
                .increment(std::mem::take(&mut self.received));
        }
        if self.filtered > 0 {
            self.metrics
                .filtered
                .increment(std::mem::take(&mut self.filtered));
        }
        for (size, count) in self.batches.drain(..) {
            self.metrics.batches.increment(count as u64);
            self.metrics.batch_size.record_many(size as f64, count);
        }
        any
    }
}

/// A Redis stream source's metric handles, resolved once for its trigger.
#[derive(Debug, Clone)]
pub struct RedisSourceMetrics {
    received: metrics::Counter,
    claimed: metrics::Counter,
    batches: metrics::Counter,
    batch_size: metrics::Histogram,
    lag: metrics::Gauge,
}

impl RedisSourceMetrics {
    /// Handles labelled with `trigger`. Create them after the recorder is installed.
    pub fn new(trigger: &str) -> Self {
        Self {
            received: metrics::counter!(REDIS_ENTRIES_RECEIVED_TOTAL, "trigger" => trigger.to_owned()),
            claimed: metrics::counter!(REDIS_ENTRIES_CLAIMED_TOTAL, "trigger" => trigger.to_owned()),
            batches: metrics::counter!(REDIS_BATCHES_TOTAL, "trigger" => trigger.to_owned()),
            batch_size: metrics::histogram!(REDIS_BATCH_SIZE, "trigger" => trigger.to_owned()),
            lag: metrics::gauge!(REDIS_LAG_ENTRIES, "trigger" => trigger.to_owned()),
        }
    }

    /// Emitted for entries read; `claimed` of them taken over from a stopped consumer.
    pub fn entries_received(&self, entries: usize, claimed: usize) {
        self.received.increment(entries as u64);
        if claimed > 0 {
            self.claimed.increment(claimed as u64);
        }
    }

    /// Emitted for each batch handed on.
    pub fn batch_sent(&self, entries: usize) {
        self.batches.increment(1);
        self.batch_size.record(entries as f64);
    }

    /// Emitted periodically with the group's pending plus undelivered entries.
    pub fn lag(&self, entries: u64) {
        self.lag.set(entries as f64);
    }
}

/// Emitted when an invocation of Redis stream entries fails: `entries` is how many failed.
pub fn redis_entries_failed_invoke(trigger: &str, entries: u64) {
    metrics::counter!(REDIS_ENTRIES_FAILED_INVOKE_TOTAL, "trigger" => trigger.to_owned())
        .increment(entries);
}

/// Emitted when Redis stream entries fail for good and the trigger has no `on_failure`
/// destination; `condition` says why (`retries_exhausted`, `age_exceeded`).
pub fn redis_entries_dropped(trigger: &str, condition: &'static str, entries: u64) {
    metrics::counter!(
        REDIS_ENTRIES_DROPPED_TOTAL,
        "trigger" => trigger.to_owned(),
        "condition" => condition,
    )
    .increment(entries);
}
