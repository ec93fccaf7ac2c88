//! The configuration model: every type a config file deserialises into.
//!
//! Doc comments here are the user reference: they appear in rustdoc and in [`crate::json_schema`].
//! Defaults copy Lambda's where Lambda has one (SEMANTICS.md), and say so.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

use crate::schedule::ScheduleExpression;
use crate::support::{self, DebugKeys, DebugSecretMap, DebugUrl};

/// Lambda's 6 MB limit on a synchronous payload, in bytes: a synchronous request or response,
/// and a batch of records (Kafka) handed to a function. The one definition every crate uses.
pub const SYNC_PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;
/// Lambda's 1 MB limit on an asynchronous invocation's payload, in bytes.
pub const ASYNC_PAYLOAD_LIMIT: usize = 1024 * 1024;

// === Config ===

/// An Impulse configuration file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listen addresses.
    #[serde(default)]
    pub server: ServerConfig,
    /// Broker-wide limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The asynchronous-invocation queue.
    #[serde(default)]
    pub queue: QueueConfig,
    /// Functions by name. A name is 1 to 64 characters from `A-Z a-z 0-9 _ -`, as Lambda's
    /// function names.
    #[serde(default)]
    pub functions: BTreeMap<String, FunctionConfig>,
    /// Execution roles by name (same name rules as functions): secrets given only to the
    /// functions whose `execution_role` names them.
    #[serde(default)]
    pub execution_roles: BTreeMap<String, ExecutionRoleConfig>,
    /// Triggers by name (same name rules as functions). Each invokes one function.
    #[serde(default)]
    pub triggers: BTreeMap<String, TriggerConfig>,
    /// Who may call the HTTP APIs: bearer tokens and SigV4 access keys, each with a role.
    /// None configured means no authentication (refuse to expose that beyond loopback).
    #[serde(default)]
    pub auth: AuthConfig,
    /// How `process` functions are kept apart from each other and from the broker.
    #[serde(default)]
    pub isolation: IsolationConfig,
}

// === server ===

/// Where the broker listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address for HTTP triggers and the Lambda Invoke API (`/2015-03-31/functions/…`).
    /// Environment override: `IMPULSE_LISTEN`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address for `/healthz`, `/readyz` and `/metrics`; must differ from `listen`.
    /// Environment override: `IMPULSE_ADMIN_LISTEN`.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// TLS on both listeners (`listen` and `admin_listen`). Unset: plain HTTP.
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
    /// Longest a client may take to send a request's complete header, from connecting (or
    /// from the first byte of a later request on the connection); then the connection is
    /// closed. 1s to 300s.
    #[serde(default = "default_header_read_timeout", with = "crate::duration")]
    #[schemars(with = "String")]
    pub header_read_timeout: Duration,
    /// Longest a kept-alive connection may stay open with no request in flight. 1s to 3600s.
    #[serde(default = "default_connection_idle_timeout", with = "crate::duration")]
    #[schemars(with = "String")]
    pub idle_timeout: Duration,
    /// Most open connections per listener, 1 to 1000000. A connection beyond it is closed at
    /// once and counted in `impulse_http_connections_refused_total`; keep the process's file
    /// limit above twice this.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

/// 10s: an Impulse default (Lambda's front end is not configurable); a legitimate client
/// sends a header in one round trip.
pub const fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}

/// 120s: an Impulse default, longer than common clients keep an idle connection pooled (90s in
/// Go's and reqwest's), so that a client does not send a request on a connection the server is
/// closing.
pub const fn default_connection_idle_timeout() -> Duration {
    Duration::from_secs(120)
}

/// 10000: an Impulse default.
pub const fn default_max_connections() -> u32 {
    10_000
}

/// The certificate both listeners present. The files are read at start; a restart picks up a
/// renewed certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM file with the server certificate first, then any intermediates. A relative path is
    /// resolved from the broker's working directory.
    pub certificate: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
}

/// `127.0.0.1:8080`: an Impulse default (Lambda has no listener); loopback, so nothing is exposed
/// until configured.
pub const fn default_listen() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080))
}

/// `127.0.0.1:8081`: an Impulse default, next to [`default_listen`].
pub const fn default_admin_listen() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8081))
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            tls: None,
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_connection_idle_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

// === limits ===

/// Broker-wide limits (SEMANTICS.md §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Concurrent invocations across all functions; greater than 0. Functions without
    /// `reserved_concurrency` share what the reserved ones leave.
    #[serde(default = "default_account_concurrency")]
    pub account_concurrency: u32,
    /// Where the limits hold. `process` (the default): each instance admits up to every limit
    /// on its own, so N instances admit N × each limit. `cluster`: account concurrency, reserved
    /// concurrency and every function's rate hold across all instances sharing the Redis queue
    /// (`[queue] backend = "redis"`, required), at the cost of one Redis round-trip per
    /// admitted attempt.
    #[serde(default)]
    pub scope: LimitsScope,
    /// With `scope = "cluster"`: how long a concurrency slot outlives the instance holding it.
    /// Live instances renew their slots every third of this; a crashed instance's slots come
    /// back within it. 1s to 10m.
    #[serde(default = "default_lease_time", with = "crate::duration")]
    #[schemars(with = "String")]
    pub lease_time: Duration,
    /// With `scope = "cluster"`: what admission does while Redis cannot be reached. `deny`
    /// (the default): synchronous calls are throttled and queued sources wait, so no limit is
    /// ever exceeded. `local`: each instance enforces every limit on its own until Redis is
    /// back, as with `scope = "process"`.
    #[serde(default)]
    pub on_redis_unavailable: OnRedisUnavailable,
}

/// Where `[limits]` hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitsScope {
    /// In each instance on its own.
    #[default]
    Process,
    /// Across every instance sharing the Redis queue.
    Cluster,
}

/// Admission while the cluster limits' Redis is unreachable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisUnavailable {
    /// Admit nothing: synchronous calls get a 429, queued sources wait.
    #[default]
    Deny,
    /// Enforce every limit in each instance on its own.
    Local,
}

/// 10 s: a crashed instance's slots come back within 10 s, and renewals (every 3⅓ s) survive a
/// few slow round-trips.
pub const fn default_lease_time() -> Duration {
    Duration::from_secs(10)
}

/// 1000: Lambda's default concurrency per account and Region.
pub const fn default_account_concurrency() -> u32 {
    1000
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            account_concurrency: default_account_concurrency(),
            scope: LimitsScope::default(),
            lease_time: default_lease_time(),
            on_redis_unavailable: OnRedisUnavailable::default(),
        }
    }
}

// === isolation ===

/// How `process` functions' execution environments are kept apart.
///
/// Isolated, each environment runs as a user of its own, taken from `first_uid ..
/// first_uid + uid_count`: it cannot read another environment's or the broker's process
/// environment or memory, its Runtime API refuses connections from any other user, it gets a
/// private `HOME` and `TMPDIR`, at most 1024 processes and threads (Lambda's limit), and every
/// process it leaves behind is killed when it ends; `memory_size` is enforced where the broker
/// can create memory cgroups. Needs root, or the capabilities `CAP_SETUID`, `CAP_SETGID`,
/// `CAP_KILL`, `CAP_CHOWN` and `CAP_DAC_OVERRIDE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IsolationConfig {
    /// `auto`: isolate when the broker can switch users, else start with a warning saying what
    /// is not isolated; `required`: refuse to start unless it can; `off`: every environment
    /// runs as the broker's own user. Environment override: `IMPULSE_ISOLATION_MODE`.
    #[serde(default)]
    pub mode: IsolationMode,
    /// First user (and group) id given to environments. The range must not contain real users
    /// or the broker's own id: every process in it is killed at start.
    #[serde(default = "default_first_uid")]
    pub first_uid: u32,
    /// How many ids the range holds: the most environments alive at once.
    #[serde(default = "default_uid_count")]
    pub uid_count: u32,
}

/// Whether environments are isolated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IsolationMode {
    /// Isolate when the broker can switch users; warn otherwise.
    #[default]
    Auto,
    /// Isolate, or refuse to start.
    Required,
    /// No isolation.
    Off,
}

/// 200000: above the ids distributions give to people and system accounts.
pub const fn default_first_uid() -> u32 {
    200_000
}

/// 10000 environments alive at once.
pub const fn default_uid_count() -> u32 {
    10_000
}

impl Default for IsolationConfig {
    fn default() -> Self {
        Self {
            mode: IsolationMode::default(),
            first_uid: default_first_uid(),
            uid_count: default_uid_count(),
        }
    }
}

// === queue ===

/// The durable queue behind asynchronous invocations (async HTTP triggers, schedules,
/// `InvocationType: Event`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Where queued events live.
    #[serde(default)]
    pub backend: QueueBackend,
    /// Directory for the embedded queue and `log` destinations, relative to the working
    /// directory unless absolute. Environment override: `IMPULSE_DATA_DIR`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The Redis stream; required when `backend = "redis"`.
    #[serde(default)]
    pub redis: Option<RedisQueueConfig>,
}

/// `impulse-data`: an Impulse default (Lambda's queue is managed).
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("impulse-data")
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            backend: QueueBackend::default(),
            data_dir: default_data_dir(),
            redis: None,
        }
    }
}

/// Queue storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueueBackend {
    /// Files in `data_dir`: one broker instance.
    #[default]
    Embedded,
    /// A Redis stream (`[queue.redis]`): shared by several broker instances.
    Redis,
}

/// The async queue's Redis stream.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisQueueConfig {
    /// `redis://` or `rediss://` URL. A `#insecure` fragment (which disables TLS certificate
    /// verification in redis-rs) is rejected. Environment override: `IMPULSE_QUEUE_REDIS_URL`.
    pub url: String,
    /// Stream key.
    #[serde(default = "default_queue_stream")]
    pub stream: String,
}

/// `impulse:async`: an Impulse default.
pub fn default_queue_stream() -> String {
    "impulse:async".to_owned()
}

impl fmt::Debug for RedisQueueConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisQueueConfig")
            .field("url", &DebugUrl(&self.url))
            .field("stream", &self.stream)
            .finish()
    }
}

// === functions ===

/// A function: where it runs, and Lambda's per-function settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    /// How the function is called.
    pub target: TargetConfig,
    /// Longest an invocation may run, greater than 0 and at most 900s (Lambda's maximum).
    #[serde(default = "default_timeout", with = "crate::duration")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Concurrency set aside for this function (and capping it). 0 disables the function, as in
    /// Lambda. The sum over all functions must not exceed `limits.account_concurrency`.
    #[serde(default)]
    pub reserved_concurrency: Option<u32>,
    /// Invocation rate limit. Unset: 10 × the function's concurrency per second, Lambda's rule.
    #[serde(default)]
    pub rate: Option<RateConfig>,
    /// Retries of a failed asynchronous invocation, 0 to 2.
    #[serde(default = "default_max_retry_attempts")]
    pub max_retry_attempts: u32,
    /// Delays between asynchronous retries after function errors and timeouts.
    #[serde(default)]
    pub retry_delay: RetryDelayConfig,
    /// Oldest an asynchronous event may be and still be tried, 60s to 6h.
    #[serde(default = "default_max_event_age", with = "crate::duration")]
    #[schemars(with = "String")]
    pub max_event_age: Duration,
    /// Where the record of a successful asynchronous invocation goes.
    #[serde(default)]
    pub on_success: Option<DestinationConfig>,
    /// Where an asynchronous event goes once retries or its age run out.
    #[serde(default)]
    pub on_failure: Option<DestinationConfig>,
    /// Who may invoke this function (Lambda's resource-based policy). Unset: every principal
    /// whose role may invoke, and every trigger naming the function.
    #[serde(default)]
    pub policy: Option<FunctionPolicy>,
    /// The execution role (`[execution_roles.<name>]`) whose secrets this function holds: the
    /// role's `environment` for a process target, its `headers` for an http target. Unset: the
    /// function holds no secrets but its own `environment`.
    #[serde(default)]
    pub execution_role: Option<String>,
    /// Published versions by number (`1`, `2`, …: Lambda's version numbers, positive integers
    /// without leading zeros). Each is a frozen copy of the function: its own `target` (the
    /// code) and optionally its own `timeout`; everything else (limits, retries, destinations,
    /// policy, execution role) is the function's and shared by its versions, as in Lambda, where
    /// reserved concurrency belongs to the function. Invoked as `name:1`. The unqualified
    /// function is `$LATEST`: the function's own `target`.
    #[serde(default)]
    pub versions: BTreeMap<String, VersionConfig>,
    /// Aliases by name (`live`, `canary`): a name for a version, optionally shifting a share of
    /// the traffic to other versions (Lambda's `RoutingConfig`). Invoked as `name:live`. A name
    /// is 1 to 128 characters from `A-Z a-z 0-9 _ -`, not all digits (that names a version).
    #[serde(default)]
    pub aliases: BTreeMap<String, AliasConfig>,
}

/// A published version: the code (`target`) and the settings frozen with it.
///
/// The target is required rather than inherited from the function: a version that followed
/// the function's `target` would change whenever `$LATEST` does, and a published version is
/// immutable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionConfig {
    /// How this version is called (for a process target: its command, environment and
    /// `memory_size`; each version has execution environments of its own).
    pub target: TargetConfig,
    /// Longest an invocation of this version may run, greater than 0 and at most 900s. Unset:
    /// the function's `timeout`.
    #[serde(default, with = "crate::duration::option")]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// Lambda's version `Description`, shown by `ListVersionsByFunction`.
    #[serde(default)]
    pub description: Option<String>,
}

/// An alias: a name pointing at a version, with optional weighted routing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasConfig {
    /// The version invoked (`FunctionVersion`): a key of `versions`, or `$LATEST`.
    pub version: String,
    /// Shares of the traffic sent to other published versions instead (Lambda's
    /// `RoutingConfig.AdditionalVersionWeights`), e.g. `{ "2" = 0.1 }` sends 10 % to version
    /// 2. Each weight is 0 to 1, their sum at most 1; `version` gets the rest.
    #[serde(default)]
    pub routing: BTreeMap<String, f64>,
    /// Lambda's alias `Description`, shown by `GetAlias` and `ListAliases`.
    #[serde(default)]
    pub description: Option<String>,
}

/// The qualifier of the unqualified function, reserved: no version or alias may be named so.
pub const LATEST: &str = "$LATEST";

/// Splits a function reference, `name` or `name:qualifier` (a version, an alias or `$LATEST`),
/// as triggers name functions.
pub fn split_qualifier(reference: &str) -> (&str, Option<&str>) {
    match reference.split_once(':') {
        Some((name, qualifier)) => (name, Some(qualifier)),
        None => (reference, None),
    }
}

impl FunctionConfig {
    /// Whether `qualifier` names something of this function: `$LATEST`, a version or an alias.
    pub fn has_qualifier(&self, qualifier: &str) -> bool {
        qualifier == LATEST
            || self.versions.contains_key(qualifier)
            || self.aliases.contains_key(qualifier)
    }

    /// The timeout of `version` (`None`: `$LATEST`): its own, or the function's.
    pub fn timeout_of(&self, version: Option<&VersionConfig>) -> Duration {
        version.and_then(|v| v.timeout).unwrap_or(self.timeout)
    }
}

/// A function's resource-based policy: the principals and triggers allowed to invoke it.
/// Everyone else is denied, so a trigger or token cannot reach a function by accident
/// (Lambda's confused-deputy guard).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionPolicy {
    /// Names under `auth.tokens` or `auth.access_keys` that may invoke the function through the
    /// Invoke API and `AWS_IAM` HTTP triggers. Unset: every principal whose role may invoke.
    /// Principals with the `admin` role may always invoke.
    #[serde(default)]
    pub principals: Option<Vec<String>>,
    /// Names of the triggers that may invoke the function. Unset: every trigger naming it.
    /// A trigger naming the function without being listed is a configuration error.
    #[serde(default)]
    pub triggers: Option<Vec<String>>,
}

/// 3s: Lambda's default function timeout.
pub const fn default_timeout() -> Duration {
    Duration::from_secs(3)
}

/// 2: Lambda's default `MaximumRetryAttempts` for asynchronous invocation.
pub const fn default_max_retry_attempts() -> u32 {
    2
}

/// 6h: Lambda's default `MaximumEventAgeInSeconds` (21600) for asynchronous invocation.
pub const fn default_max_event_age() -> Duration {
    Duration::from_secs(6 * 60 * 60)
}

/// How a function is called, chosen by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TargetConfig {
    /// `type = "http"`: POST the event to an HTTP endpoint; the response body is the result.
    Http(HttpTargetConfig),
    /// `type = "process"`: start local execution environments that poll the Lambda Runtime API,
    /// so functions built on any Lambda runtime client run unchanged.
    Process(ProcessTargetConfig),
}

/// An HTTP function.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpTargetConfig {
    /// Absolute `http://` or `https://` URL. `https://` endpoints are verified against the
    /// system's root certificates (plus `tls.ca_file`). A `user:password@` in the URL is sent
    /// as HTTP Basic authentication and shown as `user:***` in every message. Environment
    /// override: `IMPULSE_FUNCTION_<NAME>_ENDPOINT`.
    pub endpoint: String,
    /// TLS settings for an `https://` endpoint: a private CA, a client certificate.
    #[serde(default)]
    pub tls: Option<HttpTlsConfig>,
}

impl fmt::Debug for HttpTargetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTargetConfig")
            .field("endpoint", &DebugUrl(&self.endpoint))
            .field("tls", &self.tls)
            .finish()
    }
}

/// TLS to an `https://` function endpoint. Certificate verification is always on. Files are
/// PEM, read at start; a relative path is resolved from the broker's working directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpTlsConfig {
    /// CA certificates trusted in addition to the system's roots (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain for mutual TLS, leaf first; requires `client_key`.
    #[serde(default)]
    pub client_certificate: Option<PathBuf>,
    /// The client certificate's private key (PKCS#8, PKCS#1 RSA or SEC1 EC); requires
    /// `client_certificate`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

/// A function run as local processes speaking the Lambda Runtime API.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessTargetConfig {
    /// Program to start (a path, or a name looked up in `PATH`).
    pub command: String,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Value of `_HANDLER` in the process environment, as Lambda's handler setting.
    #[serde(default)]
    pub handler: Option<String>,
    /// Extra environment variables. Values may be written as strings, numbers or booleans.
    #[serde(default, deserialize_with = "support::string_map::deserialize")]
    pub environment: BTreeMap<String, String>,
    /// Working directory; default: the broker's.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// Memory in MB, 128 to 10240 (Lambda's range); exposed as
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`.
    #[serde(default = "default_memory_size")]
    pub memory_size: u32,
    /// Execution environments kept warm when idle; at most `reserved_concurrency` when that is
    /// set.
    #[serde(default)]
    pub min_warm: u32,
    /// How long an idle execution environment (above `min_warm`) lives; greater than 0.
    #[serde(default = "default_idle_timeout", with = "crate::duration")]
    #[schemars(with = "String")]
    pub idle_timeout: Duration,
}

/// 128: Lambda's default memory size in MB.
pub const fn default_memory_size() -> u32 {
    128
}

/// 10min: an Impulse default (Lambda does not document how long idle environments live).
pub const fn default_idle_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}

impl fmt::Debug for ProcessTargetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessTargetConfig")
            .field("command", &self.command)
            .field("args", &self.args)
            .field("handler", &self.handler)
            .field("environment", &DebugKeys(&self.environment))
            .field("working_dir", &self.working_dir)
            .field("memory_size", &self.memory_size)
            .field("min_warm", &self.min_warm)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

// === execution roles ===

/// An execution role: a named set of secrets given only to the functions that use it, as a
/// Lambda function's execution role decides which credentials its code holds.
///
/// Values are never written in the config file: each names where the broker reads it when it
/// starts (`impulse run`), so `impulse validate` works on a machine without the secrets. A
/// function receives the part of its role its target can use; every part must reach at least
/// one of the role's functions, and every function using a role must receive something (both
/// are validation errors otherwise). Values never appear in logs, errors or `Debug` output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutionRoleConfig {
    /// Environment variables of the execution environments of `process` targets, by name:
    /// names as Lambda's (a letter, then letters, digits and `_`), not one the broker sets
    /// itself (see [`is_reserved_environment`]) nor one the function's own `environment`
    /// sets. `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, which
    /// Lambda's execution role provides, are allowed.
    #[serde(default)]
    pub environment: BTreeMap<String, SecretSource>,
    /// Request headers sent to the endpoints of `http` targets, by name (case-insensitive,
    /// each at most once): valid HTTP header names, not one the invoker sets itself (see
    /// [`is_reserved_header`]), e.g. `Authorization` or `X-Api-Key`.
    #[serde(default)]
    pub headers: BTreeMap<String, SecretSource>,
    /// A client certificate chain (PEM, leaf first) that `http` targets present to their
    /// `https://` endpoints for mutual TLS; requires `client_key`. Read at start, like every
    /// value of a role. A function may not also set its own `target.tls.client_certificate`.
    #[serde(default)]
    pub client_certificate: Option<PathBuf>,
    /// The private key of `client_certificate` (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

impl ExecutionRoleConfig {
    /// Whether the role holds anything an `http` target receives.
    pub fn has_http_part(&self) -> bool {
        !self.headers.is_empty() || self.client_certificate.is_some()
    }
}

/// Where a secret's value is read, once, when the broker starts. Exactly one of `env` and
/// `file`: `{ env = "PAYMENTS_STRIPE_KEY" }` or `{ file = "/run/secrets/db" }`. The value
/// must not be empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SecretSource {
    /// The value of a variable of the broker's own environment.
    Env(String),
    /// The content of a file, without its trailing line breaks; an absolute path.
    File(PathBuf),
}

/// The message for a secret written where its source belongs. It must never quote the value.
const INLINE_SECRET: &str = "a secret cannot be written in the config file; \
                             use { env = \"VARIABLE\" } or { file = \"/absolute/path\" }";

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretSourceVisitor)
    }
}

/// Reads `{ env = … }` or `{ file = … }`. Written by hand rather than derived: serde's own
/// errors quote a mistaken scalar (`invalid type: string "sk_live_…"`), and the likeliest
/// mistake here is the secret itself written in place of its source.
struct SecretSourceVisitor;

impl<'de> serde::de::Visitor<'de> for SecretSourceVisitor {
    type Value = SecretSource;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table with exactly one of `env` and `file`")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<SecretSource, A::Error> {
        use serde::de::Error;
        const FIELDS: &[&str] = &["env", "file"];
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            let source = match key.as_str() {
                "env" => SecretSource::Env(map.next_value()?),
                "file" => SecretSource::File(map.next_value()?),
                other => return Err(A::Error::unknown_field(other, FIELDS)),
            };
            if found.replace(source).is_some() {
                return Err(A::Error::custom("set exactly one of `env` and `file`"));
            }
        }
        found.ok_or_else(|| A::Error::custom("set exactly one of `env` and `file`"))
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<SecretSource, E> {
        Err(E::custom(INLINE_SECRET))
    }

    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<SecretSource, E> {
        Err(E::custom(INLINE_SECRET))
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SecretSource, E> {
        Err(E::custom(INLINE_SECRET))
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SecretSource, E> {
        Err(E::custom(INLINE_SECRET))
    }

    fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<SecretSource, E> {
        Err(E::custom(INLINE_SECRET))
    }

    fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<SecretSource, E> {
        Err(E::custom(INLINE_SECRET))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SecretSource, E> {
        Err(E::custom(INLINE_SECRET))
    }
}

impl fmt::Display for SecretSource {
    /// `environment variable NAME` or `file /path`: where the value comes from, for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(name) => write!(f, "environment variable {name}"),
            Self::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// Whether an execution role may not set environment variable `name`: the variables the broker
/// sets in every execution environment (`AWS_LAMBDA_*`, `_HANDLER`, `AWS_REGION`,
/// `AWS_DEFAULT_REGION`, `AWS_EXECUTION_ENV`, `LAMBDA_TASK_ROOT`, `TZ`), and the rest of
/// Lambda's reserved names (`LAMBDA_RUNTIME_DIR`, `_X_AMZN_TRACE_ID`). Lambda's reserved
/// credential variables are not among them: providing those is what a role is for.
pub fn is_reserved_environment(name: &str) -> bool {
    const RESERVED: &[&str] = &[
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_EXECUTION_ENV",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
        "TZ",
    ];
    name.starts_with("AWS_LAMBDA_") || RESERVED.contains(&name)
}

/// Whether an execution role may not set request header `name` (any case): the headers the
/// invoker sets on every request to an http target (`Content-Type`, `Lambda-Runtime-*`), and
/// those HTTP itself owns (`Host`, `Content-Length`, `Transfer-Encoding`, connection
/// management).
pub fn is_reserved_header(name: &str) -> bool {
    const RESERVED: &[&str] = &[
        "host",
        "content-type",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
    ];
    let name = name.to_ascii_lowercase();
    name.starts_with("lambda-runtime-") || RESERVED.contains(&name.as_str())
}

/// Backoff between asynchronous retries after function errors and timeouts: the n-th retry
/// waits `base × 2^(n-1)`, at most `max`, shortened by up to `jitter` of itself at random.
/// The defaults give Lambda's schedule: 1 minute before the second attempt, 2 before the third.
/// (Throttles and system errors back off on their own schedule, 1 s doubling to 5 min, as
/// Lambda's do, until `max_event_age`.)
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryDelayConfig {
    /// The first retry's delay; default 1 minute (Lambda).
    #[serde(default = "default_retry_base", with = "crate::duration")]
    #[schemars(with = "String")]
    pub base: Duration,
    /// The longest delay; default 5 minutes.
    #[serde(default = "default_retry_max", with = "crate::duration")]
    #[schemars(with = "String")]
    pub max: Duration,
    /// The fraction of each delay that is random, 0 to 1; default 0 (Lambda's fixed delays).
    #[serde(default)]
    pub jitter: f64,
}

impl Default for RetryDelayConfig {
    fn default() -> Self {
        Self {
            base: default_retry_base(),
            max: default_retry_max(),
            jitter: 0.0,
        }
    }
}

/// Lambda waits 1 minute before the second attempt of a failed asynchronous invocation.
pub const fn default_retry_base() -> Duration {
    Duration::from_secs(60)
}

/// The cap on function-error retry delays: 5 minutes, Lambda's cap for throttle backoff.
pub const fn default_retry_max() -> Duration {
    Duration::from_secs(300)
}

/// A token-bucket rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Sustained invocations per second; greater than 0.
    pub per_second: u32,
    /// Invocations allowed at once after an idle period; greater than 0. Unset: `per_second`.
    #[serde(default)]
    pub burst: Option<u32>,
}

// === destinations ===

/// Where invocation records or failed events go, chosen by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DestinationConfig {
    /// `type = "log"`: an embedded append-only log in `queue.data_dir`.
    Log(LogDestinationConfig),
    /// `type = "redis"`: a Redis stream.
    Redis(RedisDestinationConfig),
    /// `type = "kafka"`: a Kafka topic.
    Kafka(KafkaDestinationConfig),
}

/// An embedded log destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogDestinationConfig {
    /// Log name (a file name under `queue.data_dir`): 1 to 64 characters from
    /// `A-Z a-z 0-9 _ -`.
    pub name: String,
}

/// A Redis stream destination.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisDestinationConfig {
    /// `redis://` or `rediss://` URL; `#insecure` is rejected.
    pub url: String,
    /// Stream key.
    pub stream: String,
}

impl fmt::Debug for RedisDestinationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisDestinationConfig")
            .field("url", &DebugUrl(&self.url))
            .field("stream", &self.stream)
            .finish()
    }
}

/// A Kafka topic destination.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaDestinationConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// Topic name.
    pub topic: String,
    /// Extra librdkafka producer properties, passed through. `bootstrap.servers` is set from
    /// `bootstrap_servers` and cannot be set here.
    #[serde(default, deserialize_with = "support::string_map::deserialize")]
    pub librdkafka_options: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaDestinationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaDestinationConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topic", &self.topic)
            .field(
                "librdkafka_options",
                &DebugSecretMap(&self.librdkafka_options),
            )
            .finish()
    }
}

// === triggers ===

/// An event source invoking one function, chosen by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TriggerConfig {
    /// `type = "http"`: an HTTP route (Lambda function URL, payload format 2.0).
    Http(HttpTriggerConfig),
    /// `type = "schedule"`: an EventBridge-style schedule.
    Schedule(ScheduleTriggerConfig),
    /// `type = "kafka"`: Kafka topics (Lambda's Kafka event source mapping).
    Kafka(KafkaTriggerConfig),
    /// `type = "redis"`: a Redis stream read by a consumer group.
    Redis(RedisTriggerConfig),
}

impl TriggerConfig {
    /// The function this trigger names without its qualifier (`orders` for `orders:live`).
    pub fn function_name(&self) -> &str {
        split_qualifier(self.function()).0
    }

    /// The qualifier of the function this trigger names (`live` for `orders:live`), if any.
    pub fn qualifier(&self) -> Option<&str> {
        split_qualifier(self.function()).1
    }

    /// The function this trigger invokes: a name, or `name:qualifier` (a version or alias).
    pub fn function(&self) -> &str {
        match self {
            Self::Http(t) => &t.function,
            Self::Schedule(t) => &t.function,
            Self::Kafka(t) => &t.function,
            Self::Redis(t) => &t.function,
        }
    }

    /// The trigger type: `"http"`, `"schedule"`, `"kafka"` or `"redis"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Http(_) => "http",
            Self::Schedule(_) => "schedule",
            Self::Kafka(_) => "kafka",
            Self::Redis(_) => "redis",
        }
    }

    /// The trigger's own on-failure destination (Kafka and Redis triggers).
    pub fn on_failure(&self) -> Option<&DestinationConfig> {
        match self {
            Self::Kafka(t) => t.on_failure.as_ref(),
            Self::Redis(t) => t.on_failure.as_ref(),
            Self::Http(_) | Self::Schedule(_) => None,
        }
    }
}

/// An HTTP route invoking a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpTriggerConfig {
    /// The function invoked: a name, or `name:qualifier` for a version or an alias.
    pub function: String,
    /// Route path: starts with `/`; a whole segment may be a parameter `{name}`, and the last
    /// segment may be a catch-all `{*rest}`. Paths under `/2015-03-31/` belong to the Invoke API.
    /// Unique across HTTP triggers.
    pub path: String,
    /// Accepted methods (case-insensitive, stored uppercase); empty: any method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// `sync`: reply with the function's response; `async`: reply `202` once the event is queued.
    #[serde(default)]
    pub invocation: InvocationMode,
    /// Largest request body in bytes, at most 6 MB (sync) or 1 MB (async), Lambda's payload
    /// limits; unset: that limit.
    #[serde(default)]
    pub max_body_size: Option<u64>,
    /// Who may call the route, as a function URL's auth type: `NONE` (anyone) or `AWS_IAM`
    /// (a configured principal, by bearer token or SigV4, allowed to invoke the function).
    /// Unset: `NONE` for a webhook, else `AWS_IAM` when `[auth]` configures any principal,
    /// else `NONE`. A webhook with `AWS_IAM` needs both the principal and the signature.
    #[serde(default)]
    pub auth_type: Option<AuthType>,
    /// Cross-origin resource sharing for browsers, as a function URL configures it. Unset: no
    /// CORS headers are added (the function may send its own).
    #[serde(default)]
    pub cors: Option<CorsConfig>,
    /// Verify the sender's webhook signature on every request, over the raw body, before the
    /// function sees it; a bad signature is a `401` and nothing is invoked or queued. Unset: no
    /// verification.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
}

/// A function URL's CORS settings (Lambda's `Cors`). Impulse answers preflight requests
/// itself, without invoking the function or asking for credentials, and sets the CORS headers
/// of every response, replacing any the function sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to call (`https://app.example.com`), or `["*"]` for any.
    #[serde(default)]
    pub allow_origins: Vec<String>,
    /// Methods a preflight may ask for, or `["*"]` for any; empty: none beyond simple requests.
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// Request headers a preflight may ask for, or `["*"]` for any.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers scripts may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Whether browsers may send cookies and credentials; needs explicit origins (not `*`).
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight answer, at most 86400s (Lambda's limit);
    /// unset: no `Access-Control-Max-Age`.
    #[serde(default, with = "crate::duration::option")]
    #[schemars(with = "Option<String>")]
    pub max_age: Option<Duration>,
}

impl HttpTriggerConfig {
    /// The auth type in force: `auth_type`, or its default: `NONE` for a webhook (its
    /// signature authenticates the sender, who cannot hold a principal's credentials), else
    /// `AWS_IAM` when `auth` configures any principal.
    pub fn effective_auth_type(&self, auth: &AuthConfig) -> AuthType {
        self.auth_type
            .unwrap_or(if auth.is_enabled() && self.webhook.is_none() {
                AuthType::AwsIam
            } else {
                AuthType::None
            })
    }

    /// The request body limit in bytes: `max_body_size`, or Lambda's payload limit for the mode
    /// ([`SYNC_PAYLOAD_LIMIT`], [`ASYNC_PAYLOAD_LIMIT`]).
    pub fn body_limit(&self) -> u64 {
        self.max_body_size
            .unwrap_or_else(|| self.invocation.body_limit())
    }
}

/// A function URL's auth type (Lambda's `AuthType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AuthType {
    /// `NONE`: anyone may call; pair it with a webhook signature or the function's own checks.
    #[serde(rename = "NONE")]
    None,
    /// `AWS_IAM`: a configured principal (bearer token or SigV4 access key) whose role may
    /// invoke and whom the function's policy allows.
    #[serde(rename = "AWS_IAM")]
    AwsIam,
}

/// Synchronous or asynchronous invocation (Lambda's `RequestResponse` / `Event`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvocationMode {
    /// Wait for the function and return its response.
    #[default]
    Sync,
    /// Queue the event and return `202 Accepted`; retries and destinations as Lambda's async
    /// invocation.
    Async,
}

impl InvocationMode {
    /// Lambda's payload limit for this mode, in bytes.
    pub const fn body_limit(self) -> u64 {
        match self {
            Self::Sync => SYNC_PAYLOAD_LIMIT as u64,
            Self::Async => ASYNC_PAYLOAD_LIMIT as u64,
        }
    }
}

/// Webhook signature verification on an HTTP trigger (`[triggers.<name>.webhook]`).
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// How the sender signs its requests.
    pub scheme: WebhookScheme,
    /// The signing secret the sender issued, in the form the sender shows it (see
    /// [`WebhookScheme`]). Prefer the environment override `IMPULSE_TRIGGER_<NAME>_WEBHOOK_SECRET`
    /// to writing it in the file; one of the two must set it. Serialised as `"***"`.
    #[serde(
        default,
        serialize_with = "serialize_redacted",
        deserialize_with = "support::secret_string::deserialize"
    )]
    #[schemars(with = "Option<String>")]
    pub secret: Option<SecretString>,
    /// The replay window, 1s to 1h: a signed timestamp further than this from the broker's clock
    /// (either way) is refused, and an accepted delivery is remembered this long so that the same
    /// delivery sent again is refused. Default 5 minutes, the tolerance of the Standard Webhooks
    /// and Stripe libraries.
    #[serde(default = "default_webhook_tolerance", with = "crate::duration")]
    #[schemars(with = "String")]
    pub tolerance: Duration,
}

/// `5m`: the default tolerance of the Standard Webhooks libraries and of Stripe's.
pub const fn default_webhook_tolerance() -> Duration {
    Duration::from_secs(5 * 60)
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("scheme", &self.scheme)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl PartialEq for WebhookConfig {
    fn eq(&self, other: &Self) -> bool {
        let secret = |w: &Self| w.secret.as_ref().map(|s| s.expose_secret().to_owned());
        self.scheme == other.scheme
            && secret(self) == secret(other)
            && self.tolerance == other.tolerance
    }
}

impl Eq for WebhookConfig {}

/// A webhook signature scheme: which headers carry the signature, what is signed, and how the
/// configured secret becomes the HMAC-SHA256 key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookScheme {
    /// `standard-webhooks`: Standard Webhooks v1 (Svix and the senders built on it). Headers
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64> …`; signed content
    /// `{id}.{timestamp}.{body}`. The secret is `whsec_` followed by the base64 of 24 to 64
    /// random bytes, and the key is those decoded bytes.
    StandardWebhooks,
    /// `github`: GitHub's `X-Hub-Signature-256: sha256=<hex>` over the body. The secret is the
    /// one typed into the webhook's settings, at least 16 characters, used as its UTF-8 bytes.
    Github,
    /// `stripe`: `Stripe-Signature: t=<unix time>,v1=<hex>…`; signed content `{t}.{body}`. The
    /// secret is the endpoint's signing secret as Stripe shows it (`whsec_…`), and the key is
    /// that whole string's bytes: Stripe does not base64-decode it.
    Stripe,
}

impl WebhookScheme {
    /// The name used in config files: `standard-webhooks`, `github` or `stripe`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::StandardWebhooks => "standard-webhooks",
            Self::Github => "github",
            Self::Stripe => "stripe",
        }
    }

    /// The HMAC-SHA256 key for `secret` under this scheme; the one place a secret becomes a
    /// key, used by validation and by the verifier alike.
    ///
    /// # Errors
    ///
    /// A message for a user when `secret` is not in the form this scheme's senders issue. It
    /// never contains the secret.
    pub fn signing_key(self, secret: &str) -> Result<Vec<u8>, String> {
        use base64::Engine as _;

        const PREFIX: &str = "whsec_";
        const MIN_CHARS: usize = 16;
        if secret.chars().any(char::is_control) {
            return Err("must not contain control characters (such as a newline)".to_owned());
        }
        match self {
            Self::StandardWebhooks => {
                let Some(encoded) = secret.strip_prefix(PREFIX) else {
                    return Err("must start with `whsec_` (a Standard Webhooks secret)".to_owned());
                };
                let key = STANDARD_WEBHOOKS_BASE64.decode(encoded).map_err(|_| {
                    "after `whsec_`, must be standard base64 (a Standard Webhooks secret)"
                        .to_owned()
                })?;
                if !(24..=64).contains(&key.len()) {
                    return Err(format!(
                        "must encode 24 to 64 bytes after `whsec_` (it encodes {})",
                        key.len()
                    ));
                }
                Ok(key)
            }
            Self::Github => {
                if secret.chars().count() < MIN_CHARS {
                    return Err(format!(
                        "must be at least {MIN_CHARS} characters (e.g. `openssl rand -hex 32`)"
                    ));
                }
                Ok(secret.as_bytes().to_vec())
            }
            Self::Stripe => {
                let Some(rest) = secret.strip_prefix(PREFIX) else {
                    return Err(
                        "must start with `whsec_` (the endpoint's signing secret, not an API key)"
                            .to_owned(),
                    );
                };
                if rest.len() < MIN_CHARS || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(format!(
                        "must be `whsec_` and at least {MIN_CHARS} letters and digits, as Stripe \
                         shows it"
                    ));
                }
                // Stripe's libraries key the HMAC with the whole string, prefix included.
                Ok(secret.as_bytes().to_vec())
            }
        }
    }
}

/// Standard base64 that accepts the secret with or without its trailing `=` padding.
const STANDARD_WEBHOOKS_BASE64: base64::engine::GeneralPurpose =
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );

/// An EventBridge-style schedule. Events go through the async queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTriggerConfig {
    /// The function invoked: a name, or `name:qualifier` for a version or an alias.
    pub function: String,
    /// `rate(5 minutes)`, `cron(0 10 * * ? *)` or `at(2026-12-01T09:00:00)`, with EventBridge's
    /// rules. Rate ticks are aligned to the Unix epoch in UTC. Impulse extension beyond
    /// EventBridge: sub-minute rates, `rate(10 seconds)` down to `rate(1 second)`.
    pub expression: ScheduleExpression,
    /// IANA time zone for `cron()` and `at()`, e.g. `Europe/Berlin`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Spread each fire over a random delay up to this window, 1min to 1440min (EventBridge
    /// Scheduler's `FlexibleTimeWindow`). Unset: fire on the tick.
    #[serde(default, with = "crate::duration::option")]
    #[schemars(with = "Option<String>")]
    pub flexible_window: Option<Duration>,
    /// What to do with ticks missed while no broker was running.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// Most missed ticks fired by `catch_up = "all"`; greater than 0.
    #[serde(default = "default_catch_up_limit")]
    pub catch_up_limit: u32,
    /// What to do when a tick comes while the previous fire's invocation still runs.
    #[serde(default)]
    pub overlap: Overlap,
    /// The event's `detail`; default `{}`.
    #[serde(default)]
    pub input: Option<serde_json::Value>,
}

/// `UTC`: EventBridge Scheduler's default `ScheduleExpressionTimezone`.
pub fn default_timezone() -> String {
    "UTC".to_owned()
}

/// 100: an Impulse default (EventBridge does not catch up).
pub const fn default_catch_up_limit() -> u32 {
    100
}

impl ScheduleTriggerConfig {
    /// The time zone. A loaded config has a valid one; an invalid one reads as UTC.
    pub fn tz(&self) -> Tz {
        self.timezone.parse().unwrap_or(Tz::UTC)
    }

    /// The event's `detail`: `input`, or `{}`.
    pub fn detail(&self) -> serde_json::Value {
        self.input
            .clone()
            .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()))
    }
}

/// Missed-tick policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Skip missed ticks, as EventBridge.
    #[default]
    None,
    /// Fire once for the latest missed tick.
    Latest,
    /// Fire every missed tick, oldest first, up to `catch_up_limit`.
    All,
}

/// Overlap policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Fire anyway, as EventBridge.
    #[default]
    Allow,
    /// Skip the tick (counted in a metric).
    Skip,
}

/// Kafka topics feeding a function, with Lambda's event source mapping settings (SEMANTICS.md §1).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaTriggerConfig {
    /// The function invoked: a name, or `name:qualifier` for a version or an alias.
    pub function: String,
    /// Comma-separated `host:port` list; not empty. Environment override:
    /// `IMPULSE_TRIGGER_<NAME>_BOOTSTRAP_SERVERS`.
    pub bootstrap_servers: String,
    /// Topics read; not empty, valid Kafka topic names.
    pub topics: Vec<String>,
    /// Consumer group. Unset: derived from the trigger name.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Where a group without committed offsets starts.
    #[serde(default)]
    pub starting_position: StartingPosition,
    /// Start time for `starting_position = "at_timestamp"` (RFC 3339); required exactly then.
    #[serde(default, with = "support::timestamp")]
    #[schemars(with = "Option<DateTime<Utc>>")]
    pub starting_timestamp: Option<DateTime<Utc>>,
    /// Most records per invocation, 1 to 10000.
    #[serde(default = "default_kafka_batch_size")]
    pub batch_size: u32,
    /// Longest wait to fill a batch, from its first record; 0s to 300s.
    #[serde(default = "default_batch_window", with = "crate::duration")]
    #[schemars(with = "String")]
    pub batch_window: Duration,
    /// Retries of a failed batch, 0 to 10000. Unset: until it succeeds or its records expire
    /// (Lambda's -1), or 10 once `on_failure` is set (Lambda's default then); see
    /// [`KafkaTriggerConfig::retry_limit`].
    #[serde(default)]
    pub max_retry_attempts: Option<u32>,
    /// Oldest a record may be and still be tried, 60s to 604800s (7 days). Unset: no limit
    /// (Lambda's -1).
    #[serde(default, with = "crate::duration::option")]
    #[schemars(with = "Option<String>")]
    pub max_record_age: Option<Duration>,
    /// Split a failed batch in two and retry the halves.
    #[serde(default)]
    pub bisect_batch_on_error: bool,
    /// Let the function report failed records (`batchItemFailures`) instead of failing the batch.
    #[serde(default)]
    pub report_batch_item_failures: bool,
    /// Ordering guarantee: per partition (Lambda) or per key (several keys of a partition in
    /// parallel).
    #[serde(default)]
    pub ordering: Ordering,
    /// Where a batch goes once retries or record age run out. A Kafka destination on the same
    /// cluster must not be one of `topics`.
    #[serde(default)]
    pub on_failure: Option<DestinationConfig>,
    /// A compacted topic on the trigger's cluster holding retry attempt counts, shared by every
    /// instance of the trigger's group, so that a count survives a restart **or** a rebalance to
    /// another instance (keyed `<group_id>/<topic>-<partition>@<offset>`; several triggers and
    /// groups may share one topic). Created with `cleanup.policy=compact` when missing. Unset:
    /// counts are kept in `queue.data_dir`, which only an instance using the same directory sees.
    #[serde(default)]
    pub attempts_topic: Option<String>,
    /// Extra librdkafka consumer properties, passed through. Properties the broker owns (group,
    /// offsets, commits, bootstrap servers) are rejected.
    #[serde(default, deserialize_with = "support::string_map::deserialize")]
    pub librdkafka_options: BTreeMap<String, String>,
    /// Records passed to the function: up to 5 EventBridge-style patterns, OR-ed (Lambda's
    /// `FilterCriteria`); empty: every record. A pattern is an object with any of `value`, `key`
    /// and `headers` (Lambda filters `value` only), e.g.
    /// `{"value": {"device_ID": [{"prefix": "AB"}]}, "headers": {"tenant": ["acme"]}}`.
    /// Leaves are lists of exact values (string, number, boolean, null) and matchers:
    /// `{"prefix": "s"}`, `{"numeric": [">", 0, "<=", 5]}`, `{"exists": true}`,
    /// `{"anything-but": …}`. An object under `value` or `key` matches fields of JSON bytes; a
    /// list matches the bytes as a whole (as text, and as JSON when they are JSON). Records that
    /// match no pattern are committed without invoking, and counted.
    #[serde(default)]
    #[schemars(with = "Vec<serde_json::Value>")]
    pub filter: crate::filter::FilterCriteria,
}

impl KafkaTriggerConfig {
    /// Retries of a failed batch after its first attempt; `None`: until it succeeds or its
    /// records expire. `max_retry_attempts`, or Lambda's default: unlimited without an
    /// on-failure destination, [`RETRIES_WITH_DESTINATION`] with one.
    pub fn retry_limit(&self) -> Option<u32> {
        self.max_retry_attempts
            .or(self.on_failure.as_ref().map(|_| RETRIES_WITH_DESTINATION))
    }

    /// The consumer group of trigger `trigger`: `group_id`, or `impulse-<trigger>`. Everything
    /// that acts for the group (its consumer, its attempt counts) must use this one name.
    pub fn consumer_group(&self, trigger: &str) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("impulse-{trigger}"))
    }
}

/// Lambda's default `MaximumRetryAttempts` for a stream event source mapping once an on-failure
/// destination is set: 10 instead of unlimited.
pub const RETRIES_WITH_DESTINATION: u32 = 10;

/// 100: Lambda's default `BatchSize` for Kafka.
pub const fn default_kafka_batch_size() -> u32 {
    100
}

/// 500ms: Lambda's default `MaximumBatchingWindowInSeconds` for Kafka.
pub const fn default_batch_window() -> Duration {
    Duration::from_millis(500)
}

impl fmt::Debug for KafkaTriggerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaTriggerConfig")
            .field("function", &self.function)
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topics", &self.topics)
            .field("group_id", &self.group_id)
            .field("starting_position", &self.starting_position)
            .field("starting_timestamp", &self.starting_timestamp)
            .field("batch_size", &self.batch_size)
            .field("batch_window", &self.batch_window)
            .field("max_retry_attempts", &self.max_retry_attempts)
            .field("max_record_age", &self.max_record_age)
            .field("bisect_batch_on_error", &self.bisect_batch_on_error)
            .field(
                "report_batch_item_failures",
                &self.report_batch_item_failures,
            )
            .field("ordering", &self.ordering)
            .field("on_failure", &self.on_failure)
            .field("attempts_topic", &self.attempts_topic)
            .field(
                "librdkafka_options",
                &DebugSecretMap(&self.librdkafka_options),
            )
            .field("filter", &self.filter)
            .finish()
    }
}

/// Lambda's `StartingPosition`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartingPosition {
    /// New records only (`LATEST`).
    #[default]
    Latest,
    /// From the oldest retained record (`TRIM_HORIZON`).
    Earliest,
    /// From `starting_timestamp` (`AT_TIMESTAMP`).
    AtTimestamp,
}

/// Kafka processing order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// One batch in flight per partition, as Lambda.
    #[default]
    Partition,
    /// Several in flight per partition, serialised per record key; commits stay contiguous.
    Key,
}

/// A Redis stream feeding a function through a consumer group, with Lambda's event source
/// mapping settings under the same names as a Kafka trigger's.
///
/// Every instance reads the stream through one consumer group (`group`); each entry goes to
/// one instance, and is acknowledged (`XACK`) only once its outcome is final: the function
/// succeeded, or the entry was written to `on_failure` (or dropped without one, as Lambda
/// does). Entries left pending by a stopped instance are claimed by another once idle for
/// `visibility_timeout`.
///
/// The function receives `{"Records": [{"eventSource": "impulse:redis", "eventSourceARN":
/// "impulse:redis:<stream>", "stream", "group", "id": "<entry id>", "timestamp": <ms of the id>,
/// "encoding": "utf-8" | "base64", "fields": {"<name>": "<value>", …}}, …]}`: names and values
/// as strings when the whole entry is UTF-8, else every one of them in base64.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisTriggerConfig {
    /// The function invoked: a name, or `name:qualifier` for a version or an alias.
    pub function: String,
    /// `redis://` or `rediss://` URL; `#insecure` is rejected. Environment override:
    /// `IMPULSE_TRIGGER_<NAME>_URL`.
    pub url: String,
    /// Stream key.
    pub stream: String,
    /// Consumer group, created (with the stream) when missing. Unset: `impulse-<trigger>`.
    #[serde(default)]
    pub group: Option<String>,
    /// Where a newly created group starts: `latest` (entries added from then on, Lambda's
    /// `LATEST`), `earliest` (every entry in the stream, `TRIM_HORIZON`) or `at_timestamp`
    /// (entries added from `starting_timestamp` on). An existing group keeps its position.
    #[serde(default)]
    pub starting_position: StartingPosition,
    /// Start time for `starting_position = "at_timestamp"` (RFC 3339); required exactly then.
    #[serde(default, with = "support::timestamp")]
    #[schemars(with = "Option<DateTime<Utc>>")]
    pub starting_timestamp: Option<DateTime<Utc>>,
    /// Most entries per invocation, 1 to 10000. A batch also stops short of 6 MB of event.
    #[serde(default = "default_redis_batch_size")]
    pub batch_size: u32,
    /// Longest wait to fill a batch, from its first entry; 0s to 300s. Default 0s: a batch is
    /// what one read returns (Lambda's SQS default).
    #[serde(default, with = "crate::duration")]
    #[schemars(with = "String")]
    pub batch_window: Duration,
    /// Batches of this trigger in flight at once in each instance, 1 to 1000 (Lambda's
    /// `ScalingConfig.MaximumConcurrency`, per instance). 1 keeps each instance's batches in
    /// stream order.
    #[serde(default = "default_maximum_concurrency")]
    pub maximum_concurrency: u32,
    /// How long an entry delivered to an instance stays invisible to the others: a live
    /// instance keeps its entries' leases fresh, so this is how long entries of a stopped one
    /// wait before another instance claims them (`XAUTOCLAIM`). 1s to 12h. Unset: the
    /// function's timeout plus 60s, as SQS advises a visibility timeout above the function's.
    #[serde(default, with = "crate::duration::option")]
    #[schemars(with = "Option<String>")]
    pub visibility_timeout: Option<Duration>,
    /// Retries of a failed batch, 0 to 10000. Unset: until it succeeds or its entries expire,
    /// or 10 once `on_failure` is set (as for Kafka triggers). Counted in Redis (the entry's
    /// delivery count), so the count survives restarts and moves to other instances.
    #[serde(default)]
    pub max_retry_attempts: Option<u32>,
    /// Oldest an entry may be (from the time in its id) and still be tried, 60s to 604800s
    /// (7 days). Unset: no limit.
    #[serde(default, with = "crate::duration::option")]
    #[schemars(with = "Option<String>")]
    pub max_record_age: Option<Duration>,
    /// Split a failed batch in two and retry the halves.
    #[serde(default)]
    pub bisect_batch_on_error: bool,
    /// Let the function report failed entries (`batchItemFailures` with entry ids) instead of
    /// failing the batch.
    #[serde(default)]
    pub report_batch_item_failures: bool,
    /// Where an entry goes once retries or its age run out, with Lambda's failure metadata.
    #[serde(default)]
    pub on_failure: Option<DestinationConfig>,
}

/// 10: Lambda's default `BatchSize` for stream-style queue sources (SQS).
pub const fn default_redis_batch_size() -> u32 {
    10
}

/// 1: one batch in flight per instance, in stream order (an Impulse default; Lambda scales SQS
/// pollers up to 1000).
pub const fn default_maximum_concurrency() -> u32 {
    1
}

impl RedisTriggerConfig {
    /// Retries of a failed batch after its first attempt; `None`: until it succeeds or its
    /// entries expire. As [`KafkaTriggerConfig::retry_limit`].
    pub fn retry_limit(&self) -> Option<u32> {
        self.max_retry_attempts
            .or(self.on_failure.as_ref().map(|_| RETRIES_WITH_DESTINATION))
    }

    /// The consumer group of trigger `trigger`: `group`, or `impulse-<trigger>`.
    pub fn consumer_group(&self, trigger: &str) -> String {
        self.group
            .clone()
            .unwrap_or_else(|| format!("impulse-{trigger}"))
    }

    /// The visibility timeout for a function whose timeout is `function_timeout`.
    pub fn visibility_timeout_for(&self, function_timeout: Duration) -> Duration {
        self.visibility_timeout
            .unwrap_or(function_timeout + Duration::from_secs(60))
    }
}

impl fmt::Debug for RedisTriggerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTriggerConfig")
            .field("function", &self.function)
            .field("url", &DebugUrl(&self.url))
            .field("stream", &self.stream)
            .field("group", &self.group)
            .field("starting_position", &self.starting_position)
            .field("starting_timestamp", &self.starting_timestamp)
            .field("batch_size", &self.batch_size)
            .field("batch_window", &self.batch_window)
            .field("maximum_concurrency", &self.maximum_concurrency)
            .field("visibility_timeout", &self.visibility_timeout)
            .field("max_retry_attempts", &self.max_retry_attempts)
            .field("max_record_age", &self.max_record_age)
            .field("bisect_batch_on_error", &self.bisect_batch_on_error)
            .field(
                "report_batch_item_failures",
                &self.report_batch_item_failures,
            )
            .field("on_failure", &self.on_failure)
            .finish()
    }
}

// === auth ===

/// API authentication: the principals that may call, each with a role. Tokens and access keys
/// share one namespace of principal names (used by function policies).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer tokens by name (same name rules as functions), sent as
    /// `Authorization: Bearer <token>`.
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenConfig>,
    /// AWS access keys by name, for requests signed with AWS Signature Version 4 (boto3, the
    /// AWS CLI and the AWS SDKs with `endpoint_url` set to Impulse).
    #[serde(default)]
    pub access_keys: BTreeMap<String, AccessKeyConfig>,
}

impl AuthConfig {
    /// Whether any principal is configured, which turns authentication on everywhere.
    pub fn is_enabled(&self) -> bool {
        !self.tokens.is_empty() || !self.access_keys.is_empty()
    }
}

/// An AWS access key pair for SigV4-signed requests.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyConfig {
    /// What requests signed with this key may do.
    pub role: Role,
    /// The access key id clients send (`aws_access_key_id`): 16 to 128 letters and digits.
    pub access_key_id: String,
    /// The secret access key (`aws_secret_access_key`): at least 16 visible ASCII characters.
    /// Prefer the environment override `IMPULSE_AUTH_SECRET_ACCESS_KEY_<NAME>` to a file.
    /// Serialised as `"***"`.
    #[serde(
        default,
        serialize_with = "serialize_redacted",
        deserialize_with = "support::secret_string::deserialize"
    )]
    #[schemars(with = "Option<String>")]
    pub secret_access_key: Option<SecretString>,
}

impl fmt::Debug for AccessKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKeyConfig")
            .field("role", &self.role)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

impl PartialEq for AccessKeyConfig {
    fn eq(&self, other: &Self) -> bool {
        let secret = |k: &Self| {
            k.secret_access_key
                .as_ref()
                .map(|s| s.expose_secret().to_owned())
        };
        self.role == other.role
            && self.access_key_id == other.access_key_id
            && secret(self) == secret(other)
    }
}

impl Eq for AccessKeyConfig {}

/// A bearer token. Set exactly one of `token` and `token_sha256`.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// What the token may do.
    pub role: Role,
    /// The token itself: at least 16 visible ASCII characters (e.g. `openssl rand -hex 32`).
    /// Prefer `token_sha256` in files, or the environment override `IMPULSE_AUTH_TOKEN_<NAME>`.
    /// Serialised as `"***"`.
    #[serde(
        default,
        serialize_with = "serialize_redacted",
        deserialize_with = "support::secret_string::deserialize"
    )]
    #[schemars(with = "Option<String>")]
    pub token: Option<SecretString>,
    /// Hex SHA-256 of the token (64 hex digits, stored lowercase).
    #[serde(default)]
    pub token_sha256: Option<String>,
}

fn serialize_redacted<S: Serializer>(
    value: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    value.as_ref().map(|_| "***").serialize(serializer)
}

impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenConfig")
            .field("role", &self.role)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("token_sha256", &self.token_sha256)
            .finish()
    }
}

impl PartialEq for TokenConfig {
    fn eq(&self, other: &Self) -> bool {
        let token = |t: &Self| t.token.as_ref().map(|s| s.expose_secret().to_owned());
        self.role == other.role
            && token(self) == token(other)
            && self.token_sha256 == other.token_sha256
    }
}

impl Eq for TokenConfig {}

/// Token roles, mirroring Lambda's managed policies (SEMANTICS.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// `admin`: everything (`AWSLambda_FullAccess`).
    Admin,
    /// `read-only`: list, get, metrics (`AWSLambda_ReadOnlyAccess`); may not invoke.
    ReadOnly,
    /// `invoker`: invoke only (`AWSLambdaRole`).
    Invoker,
}
