//! The validation pass: one walk over the whole config collecting every problem.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::LocalResult;
use chrono::TimeZone as _;
use chrono_tz::Tz;
use secrecy::ExposeSecret;

use crate::deser::FieldError;
use crate::locate::FieldPath;
use crate::model::{
    Config, DestinationConfig, FunctionConfig, HttpTriggerConfig, InvocationMode,
    KafkaTriggerConfig, QueueBackend, RedisTriggerConfig, ScheduleTriggerConfig, StartingPosition,
    TargetConfig, TokenConfig, TriggerConfig,
};
use crate::schedule::ScheduleExpression;

/// Path prefix of the Lambda Invoke API, which HTTP triggers cannot use.
const INVOKE_API_PREFIX: &str = "/2015-03-31";

/// Consumer properties the broker sets itself, and why.
const KAFKA_CONSUMER_OWNED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set `bootstrap_servers` instead"),
    ("metadata.broker.list", "set `bootstrap_servers` instead"),
    ("group.id", "set `group_id` instead"),
    (
        "enable.auto.commit",
        "the broker commits offsets itself, only after the function succeeds (at-least-once)",
    ),
    (
        "auto.commit.interval.ms",
        "the broker commits offsets itself, only after the function succeeds (at-least-once)",
    ),
    (
        "enable.auto.offset.store",
        "the broker stores offsets itself, only for processed records (at-least-once)",
    ),
    ("auto.offset.reset", "set `starting_position` instead"),
    (
        "enable.partition.eof",
        "the broker's consumer loop depends on its setting",
    ),
];

/// Most patterns in a Kafka trigger's `filter` (Lambda's `FilterCriteria` limit).
const MAX_FILTER_PATTERNS: usize = 5;

/// Producer properties the broker sets itself for Kafka destinations.
const KAFKA_PRODUCER_OWNED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set `bootstrap_servers` instead"),
    ("metadata.broker.list", "set `bootstrap_servers` instead"),
];

/// Process environment variables the broker sets for Runtime-API workers.
const RESERVED_ENVIRONMENT: &[(&str, &str)] = &[
    (
        "AWS_LAMBDA_RUNTIME_API",
        "the broker sets it to the worker's Runtime API address",
    ),
    ("_HANDLER", "set `handler` instead"),
];

/// Validates `config`. `broken_functions` failed to deserialise: triggers naming them are not
/// reported again. `broken_triggers` (name → function) failed to deserialise too, but their
/// function references are still checked, so one mistake does not hide another.
pub(crate) fn validate(
    config: &Config,
    broken_functions: &BTreeSet<String>,
    broken_triggers: &BTreeMap<String, String>,
) -> Vec<FieldError> {
    let mut v = Validator::default();
    v.server(config);
    if config.limits.account_concurrency == 0 {
        v.error(
            FieldPath::keys(["limits", "account_concurrency"]),
            "must be greater than 0",
        );
    }
    v.queue(config);
    for (name, function) in &config.functions {
        v.function(name, function);
    }
    v.reserved_concurrency(config);
    for (name, function) in broken_triggers {
        if !config.functions.contains_key(function) && !broken_functions.contains(function) {
            v.error(
                FieldPath::keys(["triggers", name, "function"]),
                format!("unknown function \"{function}\""),
            );
        }
    }
    let mut http_paths: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (name, trigger) in &config.triggers {
        let path = FieldPath::keys(["triggers", name]);
        v.name(&path, "trigger", name);
        let function = trigger.function();
        if !config.functions.contains_key(function) && !broken_functions.contains(function) {
            v.error(
                path.key("function"),
                format!("unknown function \"{function}\""),
            );
        }
        match trigger {
            TriggerConfig::Http(http) => {
                if let Some(route) = v.http(&path, http) {
                    http_paths.entry(route).or_default().push(name);
                }
            }
            TriggerConfig::Schedule(schedule) => v.schedule(&path, schedule),
            TriggerConfig::Kafka(kafka) => v.kafka(&path, kafka),
            TriggerConfig::Redis(redis) => v.redis_trigger(&path, redis),
        }
    }
    for names in http_paths.values().filter(|names| names.len() > 1) {
        for name in names {
            let others: Vec<String> = names
                .iter()
                .filter(|other| *other != name)
                .map(|other| format!("triggers.{}", FieldPath::root().key(other)))
                .collect();
            let path = match config.triggers.get(*name) {
                Some(TriggerConfig::Http(http)) => http.path.as_str(),
                _ => "",
            };
            v.error(
                FieldPath::keys(["triggers", name, "path"]),
                format!(
                    "duplicate HTTP path \"{path}\" (also used by {})",
                    others.join(", ")
                ),
            );
        }
    }
    v.auth(config);
    v.errors
}

#[derive(Default)]
struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    fn error(&mut self, path: FieldPath, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }

    fn name(&mut self, path: &FieldPath, what: &str, name: &str) {
        if !is_valid_name(name) {
            self.error(
                path.clone(),
                format!(
                    "invalid {what} name \"{name}\": use 1 to 64 characters from A-Z, a-z, 0-9, \
                     `_` and `-`"
                ),
            );
        }
    }

    fn range_u32(&mut self, path: FieldPath, value: u32, min: u32, max: u32) {
        if !(min..=max).contains(&value) {
            self.error(path, format!("must be between {min} and {max}"));
        }
    }

    fn positive(&mut self, path: FieldPath, value: u32) {
        if value == 0 {
            self.error(path, "must be greater than 0");
        }
    }

    fn duration(&mut self, path: FieldPath, value: Duration, min: Duration, max: Duration) {
        if !(min..=max).contains(&value) {
            self.error(
                path,
                format!(
                    "must be between {} and {}",
                    crate::duration::format(min),
                    crate::duration::format(max)
                ),
            );
        }
    }

    fn not_empty(&mut self, path: FieldPath, value: &str) {
        if value.trim().is_empty() {
            self.error(path, "must not be empty");
        }
    }

    fn server(&mut self, config: &Config) {
        // Port 0 asks the OS for any free port, so two of them never clash.
        if config.server.listen == config.server.admin_listen && config.server.listen.port() != 0 {
            self.error(
                FieldPath::keys(["server", "admin_listen"]),
                format!("must differ from server.listen ({})", config.server.listen),
            );
        }
    }

    fn queue(&mut self, config: &Config) {
        let queue = &config.queue;
        let path = FieldPath::root().key("queue");
        if queue.data_dir.as_os_str().is_empty() {
            self.error(path.key("data_dir"), "must not be empty");
        }
        match &queue.redis {
            Some(redis) => {
                let path = path.key("redis");
                self.redis_url(path.key("url"), &redis.url);
                self.not_empty(path.key("stream"), &redis.stream);
            }
            None if queue.backend == QueueBackend::Redis => self.error(
                path.key("backend"),
                "backend \"redis\" requires a [queue.redis] section with a url",
            ),
            None => {}
        }
    }

    fn function(&mut self, name: &str, function: &FunctionConfig) {
        let path = FieldPath::keys(["functions", name]);
        self.name(&path, "function", name);
        let target = path.key("target");
        match &function.target {
            TargetConfig::Http(http) => {
                if let Err(message) = check_http_url(&http.endpoint) {
                    self.error(target.key("endpoint"), message);
                }
            }
            TargetConfig::Process(process) => {
                self.not_empty(target.key("command"), &process.command);
                if process
                    .handler
                    .as_deref()
                    .is_some_and(|h| h.trim().is_empty())
                {
                    self.error(target.key("handler"), "must not be empty when set");
                }
                for key in process.environment.keys() {
                    let key_path = target.key("environment").key(key);
                    if key.is_empty() || key.contains(['=', '\0']) {
                        self.error(key_path, "invalid environment variable name");
                    } else if let Some((_, why)) =
                        RESERVED_ENVIRONMENT.iter().find(|(k, _)| k == key)
                    {
                        self.error(key_path, format!("reserved: {why}"));
                    }
                }
                self.range_u32(target.key("memory_size"), process.memory_size, 128, 10_240);
                if process.idle_timeout.is_zero() {
                    self.error(target.key("idle_timeout"), "must be greater than 0");
                }
                if let Some(reserved) = function.reserved_concurrency {
                    if process.min_warm > reserved {
                        self.error(
                            target.key("min_warm"),
                            format!("must not exceed reserved_concurrency ({reserved})"),
                        );
                    }
                }
            }
        }
        if function.timeout.is_zero() || function.timeout > Duration::from_secs(900) {
            self.error(
                path.key("timeout"),
                "must be greater than 0 and at most 900s",
            );
        }
        if let Some(rate) = &function.rate {
            self.positive(path.key("rate").key("per_second"), rate.per_second);
            if let Some(burst) = rate.burst {
                self.positive(path.key("rate").key("burst"), burst);
            }
        }
        let delay = &function.retry_delay;
        let delay_path = path.key("retry_delay");
        if delay.base.is_zero() {
            self.error(delay_path.key("base"), "must be greater than 0");
        }
        if delay.max < delay.base {
            self.error(
                delay_path.key("max"),
                "must not be less than retry_delay.base",
            );
        }
        if !(0.0..=1.0).contains(&delay.jitter) {
            self.error(delay_path.key("jitter"), "must be between 0 and 1");
        }
        self.range_u32(
            path.key("max_retry_attempts"),
            function.max_retry_attempts,
            0,
            2,
        );
        self.duration(
            path.key("max_event_age"),
            function.max_event_age,
            Duration::from_secs(60),
            Duration::from_secs(6 * 3600),
        );
        if let Some(destination) = &function.on_success {
            self.destination(&path.key("on_success"), destination);
        }
        if let Some(destination) = &function.on_failure {
            self.destination(&path.key("on_failure"), destination);
        }
    }

    fn reserved_concurrency(&mut self, config: &Config) {
        let account = u64::from(config.limits.account_concurrency);
        let total: u64 = config
            .functions
            .values()
            .filter_map(|f| f.reserved_concurrency)
            .map(u64::from)
            .sum();
        if total <= account {
            return;
        }
        // Report it once, at the function whose reservation crosses the limit.
        let mut running = 0;
        for (name, function) in &config.functions {
            running += u64::from(function.reserved_concurrency.unwrap_or(0));
            if running > account {
                self.error(
                    FieldPath::keys(["functions", name, "reserved_concurrency"]),
                    format!(
                        "reserved concurrency of all functions ({total}) exceeds \
                         limits.account_concurrency ({account})"
                    ),
                );
                return;
            }
        }
    }

    fn destination(&mut self, path: &FieldPath, destination: &DestinationConfig) {
        match destination {
            DestinationConfig::Log(log) => {
                if !is_valid_name(&log.name) {
                    self.error(
                        path.key("name"),
                        format!(
                            "invalid log name \"{}\": use 1 to 64 characters from A-Z, a-z, 0-9, \
                             `_` and `-`",
                            log.name
                        ),
                    );
                }
            }
            DestinationConfig::Redis(redis) => {
                self.redis_url(path.key("url"), &redis.url);
                self.not_empty(path.key("stream"), &redis.stream);
            }
            DestinationConfig::Kafka(kafka) => {
                self.bootstrap_servers(path.key("bootstrap_servers"), &kafka.bootstrap_servers);
                if let Err(message) = check_topic(&kafka.topic) {
                    self.error(path.key("topic"), message);
                }
                self.owned_options(
                    &path.key("librdkafka_options"),
                    &kafka.librdkafka_options,
                    KAFKA_PRODUCER_OWNED,
                );
            }
        }
    }

    fn redis_url(&mut self, path: FieldPath, url: &str) {
        if let Err(message) = check_redis_url(url) {
            self.error(path, message);
        }
    }

    fn bootstrap_servers(&mut self, path: FieldPath, servers: &str) {
        if servers.trim().is_empty() {
            self.error(path, "must not be empty");
        } else if servers.split(',').any(|s| s.trim().is_empty()) {
            self.error(path, "empty entry in the comma-separated broker list");
        }
    }

    fn owned_options(
        &mut self,
        path: &FieldPath,
        options: &BTreeMap<String, String>,
        owned: &[(&str, &str)],
    ) {
        for key in options.keys() {
            if let Some((_, why)) = owned.iter().find(|(k, _)| *k == key.trim()) {
                self.error(
                    path.key(key),
                    format!("`{}` is owned by the broker: {why}", key.trim()),
                );
            }
        }
    }

    /// Validates an HTTP trigger; returns its route with parameter names erased, for the
    /// duplicate check (axum cannot hold `/a/{x}` and `/a/{y}` together).
    fn http(&mut self, path: &FieldPath, http: &HttpTriggerConfig) -> Option<String> {
        for (i, method) in http.methods.iter().enumerate() {
            if method.is_empty() || !method.bytes().all(is_tchar) {
                self.error(
                    path.key("methods").index(i),
                    format!("invalid HTTP method \"{method}\""),
                );
            }
        }
        if let Some(size) = http.max_body_size {
            let limit = http.invocation.body_limit();
            if size == 0 || size > limit {
                let mode = match http.invocation {
                    InvocationMode::Sync => "sync",
                    InvocationMode::Async => "async",
                };
                self.error(
                    path.key("max_body_size"),
                    format!("must be between 1 and {limit} (Lambda's {mode} payload limit)"),
                );
            }
        }
        match route_key(&http.path) {
            Ok(route) => Some(route),
            Err(message) => {
                self.error(path.key("path"), message);
                None
            }
        }
    }

    fn schedule(&mut self, path: &FieldPath, schedule: &ScheduleTriggerConfig) {
        match schedule.timezone.parse::<Tz>() {
            Ok(tz) => {
                if let ScheduleExpression::At(local) = &schedule.expression {
                    if matches!(tz.from_local_datetime(local), LocalResult::None) {
                        self.error(
                            path.key("expression"),
                            format!(
                                "{} names a local time that does not exist in {tz} \
                                 (daylight saving gap)",
                                schedule.expression
                            ),
                        );
                    }
                }
            }
            Err(_) => self.error(
                path.key("timezone"),
                format!(
                    "unknown time zone \"{}\"; use an IANA name such as \"Europe/Berlin\"",
                    schedule.timezone
                ),
            ),
        }
        if let Some(window) = schedule.flexible_window {
            self.duration(
                path.key("flexible_window"),
                window,
                Duration::from_secs(60),
                Duration::from_secs(1440 * 60),
            );
        }
        self.positive(path.key("catch_up_limit"), schedule.catch_up_limit);
    }

    fn kafka(&mut self, path: &FieldPath, kafka: &KafkaTriggerConfig) {
        self.bootstrap_servers(path.key("bootstrap_servers"), &kafka.bootstrap_servers);
        if kafka.topics.is_empty() {
            self.error(path.key("topics"), "must list at least one topic");
        }
        for (i, topic) in kafka.topics.iter().enumerate() {
            if let Err(message) = check_topic(topic) {
                self.error(path.key("topics").index(i), message);
            }
        }
        if kafka
            .group_id
            .as_deref()
            .is_some_and(|g| g.trim().is_empty())
        {
            self.error(path.key("group_id"), "must not be empty when set");
        }
        match (kafka.starting_position, kafka.starting_timestamp) {
            (StartingPosition::AtTimestamp, None) => self.error(
                path.key("starting_timestamp"),
                "required when starting_position = \"at_timestamp\"",
            ),
            (StartingPosition::Latest | StartingPosition::Earliest, Some(_)) => self.error(
                path.key("starting_timestamp"),
                "only allowed with starting_position = \"at_timestamp\"",
            ),
            _ => {}
        }
        self.range_u32(path.key("batch_size"), kafka.batch_size, 1, 10_000);
        self.duration(
            path.key("batch_window"),
            kafka.batch_window,
            Duration::ZERO,
            Duration::from_secs(300),
        );
        if let Some(retries) = kafka.max_retry_attempts {
            self.range_u32(path.key("max_retry_attempts"), retries, 0, 10_000);
        }
        if let Some(age) = kafka.max_record_age {
            self.duration(
                path.key("max_record_age"),
                age,
                Duration::from_secs(60),
                Duration::from_secs(604_800),
            );
        }
        if let Some(destination) = &kafka.on_failure {
            let dest_path = path.key("on_failure");
            self.destination(&dest_path, destination);
            if let DestinationConfig::Kafka(dest) = destination {
                if kafka.topics.contains(&dest.topic)
                    && same_cluster(&kafka.bootstrap_servers, &dest.bootstrap_servers)
                {
                    self.error(
                        dest_path.key("topic"),
                        format!(
                            "\"{}\" is a source topic of this trigger on the same cluster; \
                             failed records would be consumed again",
                            dest.topic
                        ),
                    );
                }
            }
        }
        if let Some(topic) = &kafka.attempts_topic {
            self.attempts_topic(path.key("attempts_topic"), kafka, topic);
        }
        self.owned_options(
            &path.key("librdkafka_options"),
            &kafka.librdkafka_options,
            KAFKA_CONSUMER_OWNED,
        );
        self.kafka_filter(&path.key("filter"), &kafka.filter);
    }

    /// `attempts_topic`: a valid topic name on the trigger's cluster that holds nothing else
    /// the trigger reads or writes (its records are compacted by key, and a source topic would
    /// be consumed as events).
    fn attempts_topic(&mut self, path: FieldPath, kafka: &KafkaTriggerConfig, topic: &str) {
        if let Err(message) = check_topic(topic) {
            self.error(path, message);
            return;
        }
        if kafka.topics.iter().any(|t| t == topic) {
            self.error(
                path,
                format!(
                    "\"{topic}\" is a source topic of this trigger; attempt counts would be \
                     consumed as records"
                ),
            );
        } else if let Some(DestinationConfig::Kafka(dest)) = &kafka.on_failure {
            if dest.topic == topic
                && same_cluster(&kafka.bootstrap_servers, &dest.bootstrap_servers)
            {
                self.error(
                    path,
                    format!(
                        "\"{topic}\" is this trigger's on_failure topic on the same cluster; \
                         use a separate, compacted topic for attempt counts"
                    ),
                );
            }
        }
    }

    /// Filter patterns (EventBridge subset). The Kafka source compiles them with the same
    /// rules (`connectors::kafka::KafkaFilter`); keep the two in step.
    fn kafka_filter(&mut self, path: &FieldPath, patterns: &[serde_json::Value]) {
        use serde_json::Value;
        if patterns.len() > MAX_FILTER_PATTERNS {
            self.error(
                path.clone(),
                format!(
                    "at most {MAX_FILTER_PATTERNS} patterns, found {}",
                    patterns.len()
                ),
            );
        }
        for (i, pattern) in patterns.iter().enumerate() {
            let path = path.index(i);
            let Value::Object(fields) = pattern else {
                self.error(path, "a pattern must be an object");
                continue;
            };
            if fields.is_empty() {
                self.error(path, "a pattern must name `value`, `key` or `headers`");
                continue;
            }
            for (field, sub) in fields {
                let sub_path = path.key(field);
                match (field.as_str(), sub) {
                    ("value" | "key", _) => self.filter_node(&sub_path, sub),
                    ("headers", Value::Object(headers)) if !headers.is_empty() => {
                        for (name, node) in headers {
                            self.filter_node(&sub_path.key(name), node);
                        }
                    }
                    ("headers", Value::Object(_)) => {
                        self.error(sub_path, "must name at least one header");
                    }
                    ("headers", _) => self.error(sub_path, "must map header names to patterns"),
                    (other, _) => self.error(
                        sub_path,
                        format!("unknown field `{other}`: use `value`, `key` or `headers`"),
                    ),
                }
            }
        }
    }

    fn filter_node(&mut self, path: &FieldPath, node: &serde_json::Value) {
        use serde_json::Value;
        match node {
            Value::Array(matchers) if matchers.is_empty() => {
                self.error(path.clone(), "must list at least one value or matcher");
            }
            Value::Array(matchers) => {
                for (i, matcher) in matchers.iter().enumerate() {
                    self.filter_matcher(&path.index(i), matcher);
                }
            }
            Value::Object(fields) if fields.is_empty() => {
                self.error(path.clone(), "must name at least one field");
            }
            Value::Object(fields) => {
                for (name, sub) in fields {
                    self.filter_node(&path.key(name), sub);
                }
            }
            _ => self.error(
                path.clone(),
                "must be a list of values and matchers, or an object of fields",
            ),
        }
    }

    fn filter_matcher(&mut self, path: &FieldPath, matcher: &serde_json::Value) {
        use serde_json::Value;
        let is_scalar = |v: &Value| !matches!(v, Value::Array(_) | Value::Object(_));
        if is_scalar(matcher) {
            return;
        }
        let Value::Object(map) = matcher else {
            self.error(
                path.clone(),
                "must be a string, number, boolean, null or matcher object",
            );
            return;
        };
        let mut entries = map.iter();
        let (Some((name, arg)), None) = (entries.next(), entries.next()) else {
            self.error(
                path.clone(),
                "a matcher object has exactly one of `prefix`, `numeric`, `exists`, \
                 `anything-but`",
            );
            return;
        };
        let arg_path = path.key(name);
        match (name.as_str(), arg) {
            ("prefix", Value::String(_)) | ("exists", Value::Bool(_)) => {}
            ("prefix", _) => self.error(arg_path, "must be a string"),
            ("exists", _) => self.error(arg_path, "must be true or false"),
            ("numeric", Value::Array(items))
                if !items.is_empty() && items.len() <= 4 && items.len() % 2 == 0 =>
            {
                for (i, pair) in items.chunks(2).enumerate() {
                    if !matches!(pair[0].as_str(), Some("<" | "<=" | "=" | ">" | ">=")) {
                        self.error(
                            arg_path.index(2 * i),
                            "must be one of \"<\", \"<=\", \"=\", \">\", \">=\"",
                        );
                    }
                    if pair[1].as_f64().is_none() {
                        self.error(arg_path.index(2 * i + 1), "must be a number");
                    }
                }
            }
            ("numeric", _) => self.error(
                arg_path,
                "must hold one or two comparisons, such as [\">\", 0, \"<=\", 5]",
            ),
            ("anything-but", Value::Array(values)) if values.is_empty() => {
                self.error(arg_path, "must list at least one value");
            }
            ("anything-but", Value::Array(values)) => {
                for (i, value) in values.iter().enumerate() {
                    if !is_scalar(value) {
                        self.error(
                            arg_path.index(i),
                            "must be a string, number, boolean or null",
                        );
                    }
                }
            }
            ("anything-but", Value::Object(inner)) => match (inner.len(), inner.get("prefix")) {
                (1, Some(Value::String(_))) => {}
                (1, Some(_)) => self.error(arg_path.key("prefix"), "must be a string"),
                _ => self.error(
                    arg_path,
                    "only `{\"prefix\": …}` may be nested in `anything-but`",
                ),
            },
            ("anything-but", _) => {}
            (other, _) => self.error(
                arg_path,
                format!(
                    "unknown matcher `{other}`: use `prefix`, `numeric`, `exists` or \
                     `anything-but`"
                ),
            ),
        }
    }

    fn redis_trigger(&mut self, path: &FieldPath, redis: &RedisTriggerConfig) {
        self.redis_url(path.key("url"), &redis.url);
        self.not_empty(path.key("stream"), &redis.stream);
        if redis.group.as_deref().is_some_and(|g| g.trim().is_empty()) {
            self.error(path.key("group"), "must not be empty when set");
        }
        self.range_u32(path.key("batch_size"), redis.batch_size, 1, 10_000);
        if let Some(retries) = redis.max_retry_attempts {
            self.range_u32(path.key("max_retry_attempts"), retries, 0, 10_000);
        }
        if let Some(destination) = &redis.on_failure {
            let dest_path = path.key("on_failure");
            self.destination(&dest_path, destination);
            if let DestinationConfig::Redis(dest) = destination {
                if dest.stream == redis.stream && same_redis(&dest.url, &redis.url) {
                    self.error(
                        dest_path.key("stream"),
                        format!(
                            "\"{}\" is this trigger's source stream on the same server; \
                             failed entries would be consumed again",
                            dest.stream
                        ),
                    );
                }
            }
        }
    }

    fn auth(&mut self, config: &Config) {
        let mut plain: BTreeMap<&str, &str> = BTreeMap::new();
        let mut hashed: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, token) in &config.auth.tokens {
            let path = FieldPath::keys(["auth", "tokens", name]);
            self.name(&path, "token", name);
            self.token(&path, token);
            let duplicate = match (&token.token, &token.token_sha256) {
                (Some(secret), None) => plain.insert(secret.expose_secret(), name),
                (None, Some(sha)) => hashed.insert(sha.as_str(), name),
                _ => None,
            };
            if let Some(first) = duplicate {
                self.error(
                    path,
                    format!(
                        "same token as auth.tokens.{}; each token needs one role",
                        FieldPath::root().key(first)
                    ),
                );
            }
        }
    }

    fn token(&mut self, path: &FieldPath, token: &TokenConfig) {
        match (&token.token, &token.token_sha256) {
            (Some(_), Some(_)) => {
                self.error(
                    path.clone(),
                    "set one of `token` and `token_sha256`, not both",
                );
            }
            (None, None) => self.error(path.clone(), "set one of `token` or `token_sha256`"),
            (Some(secret), None) => {
                // Never echo the token itself.
                let secret = secret.expose_secret();
                if secret.len() < 16 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
                    self.error(
                        path.key("token"),
                        "must be at least 16 visible ASCII characters (e.g. `openssl rand -hex 32`)",
                    );
                }
            }
            (None, Some(sha)) => {
                if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                    self.error(path.key("token_sha256"), "must be 64 hexadecimal digits");
                }
            }
        }
    }
}

/// Lambda's function-name charset: `^[A-Za-z0-9_-]{1,64}$`.
pub(crate) fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// RFC 9110 `tchar`: the characters of an HTTP method token.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks an HTTP trigger path; returns it with parameter names erased.
fn route_key(path: &str) -> Result<String, String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("must start with `/`".to_owned());
    };
    if path == INVOKE_API_PREFIX || path.starts_with(&format!("{INVOKE_API_PREFIX}/")) {
        return Err(format!(
            "paths under {INVOKE_API_PREFIX}/ are reserved for the Lambda Invoke API"
        ));
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    let mut params = BTreeSet::new();
    let mut route = String::new();
    for (i, segment) in segments.iter().enumerate() {
        route.push('/');
        if !segment.contains(['{', '}']) {
            if segment.is_empty() && i != last {
                return Err("empty path segment (`//`)".to_owned());
            }
            if let Some(c) = segment.chars().find(|c| !is_path_char(*c)) {
                return Err(format!("invalid character {c:?} in path"));
            }
            route.push_str(segment);
            continue;
        }
        let (name, catch_all) = match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(inner) => match inner.strip_prefix('*') {
                Some(name) => (name, true),
                None => (inner, false),
            },
            None => {
                return Err(format!(
                    "segment `{segment}`: a parameter must be a whole segment, `{{name}}` or \
                     `{{*rest}}`"
                ))
            }
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!(
                "segment `{segment}`: parameter names use A-Z, a-z, 0-9 and `_`"
            ));
        }
        if catch_all && i != last {
            return Err(format!(
                "segment `{segment}`: a catch-all parameter must be the last segment"
            ));
        }
        if !params.insert(name) {
            return Err(format!("parameter `{name}` appears twice"));
        }
        route.push_str(if catch_all { "{*}" } else { "{}" });
    }
    Ok(route)
}

/// RFC 3986 `pchar` (unreserved, sub-delims, `:`, `@`, and `%` for escapes).
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@%".contains(c)
}

fn check_http_url(endpoint: &str) -> Result<(), String> {
    let url = url::Url::parse(endpoint.trim()).map_err(|err| {
        format!("invalid URL ({err}); expected an absolute http:// or https:// URL")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "unsupported scheme `{}`; expected http:// or https://",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    Ok(())
}

/// Checks a Redis URL without echoing it (it may hold a password).
fn check_redis_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw.trim())
        .map_err(|err| format!("invalid URL ({err}); expected redis:// or rediss://"))?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err(format!(
            "unsupported scheme `{}`; expected redis:// or rediss://",
            url.scheme()
        ));
    }
    match url.fragment() {
        Some("insecure") => {
            return Err(
                "`#insecure` disables TLS certificate verification (redis-rs/redis-rs#549); \
                 use rediss:// with a certificate the host trusts"
                    .to_owned(),
            )
        }
        Some(_) => return Err("the URL must not have a `#` fragment".to_owned()),
        None => {}
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    Ok(())
}

/// Kafka's topic-name rules: 1 to 249 characters from `A-Z a-z 0-9 . _ -`, not `.` or `..`.
fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 249 {
        return Err(format!(
            "invalid Kafka topic \"{topic}\": must be 1 to 249 characters"
        ));
    }
    if topic == "." || topic == ".." {
        return Err(format!("invalid Kafka topic \"{topic}\""));
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "invalid Kafka topic \"{topic}\": use A-Z, a-z, 0-9, `.`, `_` and `-`"
        ));
    }
    Ok(())
}

fn brokers(servers: &str) -> BTreeSet<String> {
    servers
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Two bootstrap lists sharing a broker address name the same cluster.
fn same_cluster(a: &str, b: &str) -> bool {
    !brokers(a).is_disjoint(&brokers(b))
}

/// Two Redis URLs pointing at the same host, port and database.
fn same_redis(a: &str, b: &str) -> bool {
    let key = |raw: &str| {
        url::Url::parse(raw.trim()).ok().map(|u| {
            (
                u.host_str().map(str::to_ascii_lowercase),
                u.port_or_known_default().or(Some(6379)),
                u.path().trim_matches('/').to_owned(),
            )
        })
    };
    match (key(a), key(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a.trim() == b.trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_valid_name("resize-images_v2"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("has space"));
        assert!(!is_valid_name("dot.name"));
        assert!(!is_valid_name(&"x".repeat(65)));
    }

    #[test]
    fn routes() {
        assert_eq!(route_key("/"), Ok("/".to_owned()));
        assert_eq!(route_key("/orders/{id}"), Ok("/orders/{}".to_owned()));
        assert_eq!(route_key("/orders/{other}"), Ok("/orders/{}".to_owned()));
        assert_eq!(route_key("/files/{*rest}"), Ok("/files/{*}".to_owned()));
        assert!(route_key("orders").is_err());
        assert!(route_key("/2015-03-31/functions/x/invocations").is_err());
        assert!(route_key("/2015-03-31").is_err());
        assert!(route_key("/2015-03-310").is_ok());
        assert!(route_key("/a/{*rest}/b").is_err());
        assert!(route_key("/a/x{id}").is_err());
        assert!(route_key("/a/{id}/{id}").is_err());
        assert!(route_key("/a//b").is_err());
        assert!(route_key("/a b").is_err());
        assert!(route_key("/a?b").is_err());
    }

    #[test]
    fn urls() {
        assert!(check_http_url("http://localhost:9000/fn").is_ok());
        assert!(check_http_url("https://example.com").is_ok());
        assert!(check_http_url("ftp://example.com").is_err());
        assert!(check_http_url("localhost:9000").is_err());
        assert!(check_http_url("/relative").is_err());
        assert!(check_redis_url("redis://localhost:6379/0").is_ok());
        assert!(check_redis_url("rediss://:pw@host").is_ok());
        let err = check_redis_url("rediss://:secretpw@host#insecure").unwrap_err();
        assert!(
            err.contains("#insecure") && !err.contains("secretpw"),
            "{err}"
        );
        assert!(check_redis_url("http://host").is_err());
        assert!(same_redis("redis://h:6379/0", "redis://H/0"));
        assert!(!same_redis("redis://h/0", "redis://h/1"));
    }

    #[test]
    fn kafka_filters() {
        let config = |filter: &str| {
            format!(
                r#"
[functions.f]
target = {{ type = "http", endpoint = "http://localhost:1" }}

[triggers.k]
type = "kafka"
function = "f"
bootstrap_servers = "k:9092"
topics = ["t"]
filter = {filter}
"#
            )
        };
        let env: std::collections::HashMap<String, String> = Default::default();
        let good = config(
            r#"[
  { value = { device_ID = [{ prefix = "AB" }], reading = [{ numeric = [">", 0, "<=", 5] }] } },
  { key = ["order-42", { anything-but = { prefix = "test-" } }] },
  { headers = { tenant = ["acme", { exists = true }], ctx = { region = [{ anything-but = ["eu", 1] }] } } },
]"#,
        );
        let parsed = crate::parse(&good, crate::Format::Toml, "ok.toml", &env).expect("valid");
        let crate::TriggerConfig::Kafka(k) = &parsed.triggers["k"] else {
            panic!("kafka")
        };
        assert_eq!(k.filter.len(), 3);
        assert_eq!(
            k.filter[0]["value"]["device_ID"][0]["prefix"],
            serde_json::json!("AB")
        );

        let bad = config(
            r#"[
  { value = { a = [{ prefix = 1 }], b = [{ numeric = ["~", "x"] }], c = [] } },
  { body = ["x"] },
  { headers = { h = [{ suffix = "x" }] } },
  { key = [{ anything-but = {} }] },
  { key = "x" },
  { key = ["a"] },
]"#,
        );
        let errors = crate::parse(&bad, crate::Format::Toml, "bad.toml", &env)
            .expect_err("invalid filters")
            .0
            .into_iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>();
        let expected = [
            "triggers.k.filter: at most 5 patterns, found 6",
            "triggers.k.filter[0].value.a[0].prefix: must be a string",
            "triggers.k.filter[0].value.b[0].numeric[0]: must be one of",
            "triggers.k.filter[0].value.b[0].numeric[1]: must be a number",
            "triggers.k.filter[0].value.c: must list at least one value or matcher",
            "triggers.k.filter[1].body: unknown field `body`",
            "triggers.k.filter[2].headers.h[0].suffix: unknown matcher `suffix`",
            "triggers.k.filter[3].key[0].anything-but: only `{\"prefix\": …}`",
            "triggers.k.filter[4].key: must be a list of values and matchers",
        ];
        for needle in expected {
            assert!(
                errors.iter().any(|e| e.contains(needle)),
                "no error containing {needle:?} in {errors:#?}"
            );
        }
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    }

    #[test]
    fn topics_and_clusters() {
        assert!(check_topic("orders.v1_x-y").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("..").is_err());
        assert!(check_topic("a/b").is_err());
        assert!(same_cluster("k1:9092, k2:9092", "K2:9092"));
        assert!(!same_cluster("k1:9092", "k3:9092"));
    }
}
