//! End-to-end tests of `parse`/`load`: fixtures, error reports, environment overrides, schema.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::ExposeSecret;

use super::*;

const FULL_TOML: &str = include_str!("../tests/fixtures/full.toml");
const FULL_YAML: &str = include_str!("../tests/fixtures/full.yaml");
const BROKEN_TOML: &str = include_str!("../tests/fixtures/broken.toml");
const BROKEN_YAML: &str = include_str!("../tests/fixtures/broken.yaml");

fn no_env() -> HashMap<String, String> {
    HashMap::new()
}

fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn ok(text: &str, format: Format) -> Config {
    parse(text, format, "test", &no_env()).unwrap_or_else(|errors| panic!("{errors}"))
}

fn errors(text: &str, format: Format, file: &str, env: &dyn Env) -> Vec<String> {
    match parse(text, format, file, env) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

// === full configs ===

#[test]
fn full_toml_and_yaml_are_equal() {
    let toml = ok(FULL_TOML, Format::Toml);
    let yaml = ok(FULL_YAML, Format::Yaml);
    assert_eq!(toml, yaml);
}

#[test]
fn full_config_values() {
    let config = ok(FULL_TOML, Format::Toml);
    assert_eq!(
        config.server.listen,
        "0.0.0.0:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.limits.account_concurrency, 500);
    assert_eq!(config.queue.backend, QueueBackend::Redis);
    assert_eq!(config.queue.data_dir, PathBuf::from("/var/lib/impulse"));

    let resize = &config.functions["resize"];
    assert_eq!(resize.timeout, Duration::from_secs(30));
    assert_eq!(resize.max_event_age, Duration::from_secs(3600));
    assert_eq!(resize.reserved_concurrency, Some(50));
    assert_eq!(
        resize.rate,
        Some(RateConfig {
            per_second: 20,
            burst: Some(40)
        })
    );
    assert!(
        matches!(&resize.target, TargetConfig::Http(h) if h.endpoint == "http://localhost:9000/resize")
    );
    assert!(
        matches!(&resize.on_failure, Some(DestinationConfig::Kafka(k)) if k.topic == "resize-dlq")
    );

    let TargetConfig::Process(report) = &config.functions["report"].target else {
        panic!("report is a process function");
    };
    assert_eq!(report.environment["WORKERS"], "4");
    assert_eq!(report.memory_size, 512);
    assert_eq!(report.idle_timeout, Duration::from_secs(300));
    // Defaults.
    assert_eq!(config.functions["report"].timeout, Duration::from_secs(3));
    assert_eq!(config.functions["report"].max_retry_attempts, 2);
    assert_eq!(
        config.functions["report"].max_event_age,
        Duration::from_secs(21_600)
    );

    let TriggerConfig::Http(upload) = &config.triggers["upload"] else {
        panic!("upload is http");
    };
    assert_eq!(upload.methods, ["POST", "PUT"]);
    assert_eq!(upload.body_limit(), 1_000_000);
    assert_eq!(config.triggers["upload"].kind(), "http");

    assert_eq!(resize.execution_role.as_deref(), Some("media"));
    assert_eq!(
        config.functions["report"].execution_role.as_deref(),
        Some("media")
    );
    let media = &config.execution_roles["media"];
    assert_eq!(
        media.environment["AWS_ACCESS_KEY_ID"],
        SecretSource::Env("MEDIA_KEY_ID".into())
    );
    assert_eq!(
        media.environment["AWS_SECRET_ACCESS_KEY"],
        SecretSource::File("/run/secrets/media".into())
    );
    assert_eq!(
        media.headers["Authorization"],
        SecretSource::Env("MEDIA_API_AUTH".into())
    );
    assert_eq!(config.triggers["upload"].function(), "resize");

    let TriggerConfig::Schedule(nightly) = &config.triggers["nightly"] else {
        panic!("nightly is a schedule");
    };
    assert_eq!(nightly.tz(), chrono_tz::Europe::Berlin);
    assert_eq!(nightly.flexible_window, Some(Duration::from_secs(900)));
    assert_eq!(
        nightly.detail(),
        serde_json::json!({"kind": "nightly", "days": 1})
    );
    assert_eq!(nightly.expression.to_string(), "cron(0 2 * * ? *)");

    let TriggerConfig::Kafka(orders) = &config.triggers["orders"] else {
        panic!("orders is kafka");
    };
    assert_eq!(orders.starting_position, StartingPosition::AtTimestamp);
    assert_eq!(
        orders.starting_timestamp.map(|t| t.to_rfc3339()),
        Some("2026-01-01T00:00:00+00:00".to_owned())
    );
    assert_eq!(orders.batch_window, Duration::from_secs(2));
    assert_eq!(orders.librdkafka_options["fetch.max.bytes"], "1048576");
    assert_eq!(orders.ordering, Ordering::Key);
    assert_eq!(orders.attempts_topic.as_deref(), Some("impulse-attempts"));

    let admin = &config.auth.tokens["admin"];
    assert_eq!(admin.role, Role::Admin);
    assert_eq!(
        admin.token_sha256.as_deref(),
        Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
    );
    let ci = &config.auth.tokens["ci"];
    assert_eq!(ci.role, Role::Invoker);
    assert_eq!(
        ci.token.as_ref().map(|t| t.expose_secret()),
        Some("0123456789abcdef0123")
    );
    assert_eq!(config.auth.tokens["grafana"].role, Role::ReadOnly);
}

#[test]
fn derived_deserialize_agrees_with_sectioned() {
    // `Config: Deserialize` stays usable on its own and means the same thing.
    let value: serde_json::Value = toml::from_str(FULL_TOML).expect("valid TOML");
    let mut derived = deser::derived(&value).expect("derived Deserialize");
    normalise(&mut derived);
    assert_eq!(derived, ok(FULL_TOML, Format::Toml));
}

#[test]
fn empty_files_are_all_defaults() {
    let toml = ok("", Format::Toml);
    assert_eq!(toml, Config::default());
    assert_eq!(ok("", Format::Yaml), toml);
    assert_eq!(ok("# nothing\n", Format::Yaml), toml);
    assert_eq!(toml.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(toml.server.admin_listen.to_string(), "127.0.0.1:8081");
    assert_eq!(toml.limits.account_concurrency, 1000);
    assert_eq!(toml.queue.data_dir, PathBuf::from("impulse-data"));
}

#[test]
fn defaults_of_triggers() {
    let config = ok(
        r#"
[functions.f]
target = { type = "http", endpoint = "http://localhost:1" }

[triggers.h]
type = "http"
function = "f"
path = "/"

[triggers.k]
type = "kafka"
function = "f"
bootstrap_servers = "k:9092"
topics = ["t"]

[triggers.r]
type = "redis"
function = "f"
url = "redis://localhost"
stream = "s"

[triggers.s]
type = "schedule"
function = "f"
expression = "rate(1 hour)"
"#,
        Format::Toml,
    );
    let TriggerConfig::Http(h) = &config.triggers["h"] else {
        panic!()
    };
    assert_eq!(h.invocation, InvocationMode::Sync);
    assert_eq!(h.body_limit(), 6 * 1024 * 1024);
    assert!(h.methods.is_empty());
    let TriggerConfig::Kafka(k) = &config.triggers["k"] else {
        panic!()
    };
    assert_eq!(
        (k.batch_size, k.batch_window),
        (100, Duration::from_millis(500))
    );
    assert_eq!(k.max_retry_attempts, None);
    assert_eq!(
        k.attempts_topic, None,
        "counts stay in queue.data_dir by default"
    );
    assert_eq!(k.starting_position, StartingPosition::Latest);
    let TriggerConfig::Redis(r) = &config.triggers["r"] else {
        panic!()
    };
    assert_eq!(r.batch_size, 10);
    let TriggerConfig::Schedule(s) = &config.triggers["s"] else {
        panic!()
    };
    assert_eq!(s.tz(), chrono_tz::Tz::UTC);
    assert_eq!(
        (s.catch_up, s.overlap, s.catch_up_limit),
        (CatchUp::None, Overlap::Allow, 100)
    );
    assert_eq!(s.detail(), serde_json::json!({}));
}

// === broken configs ===

#[test]
fn broken_toml_reports_everything() {
    let found = errors(BROKEN_TOML, Format::Toml, "broken.toml", &no_env());
    let expected = [
        "broken.toml:3: limits.account_concurrency: must be greater than 0",
        "broken.toml:6: functions.resize.target.endpoint: unsupported scheme `localhost`; expected http:// or https://",
        "broken.toml:7: functions.resize.timeout: must be greater than 0 and at most 900s",
        "broken.toml:11: functions.thumb.timeot: unknown field `timeot`, expected one of `target`, `timeout`, `reserved_concurrency`, `rate`, `max_retry_attempts`, `retry_delay`, `max_event_age`, `on_success`, `on_failure`, `policy`, `execution_role`, `versions`, `aliases`",
        "broken.toml:14: triggers.orders.batch_size: must be between 1 and 10000",
        "broken.toml:19: triggers.orders.librdkafka_options.\"enable.auto.commit\": `enable.auto.commit` is owned by the broker: the broker commits offsets itself, only after the function succeeds (at-least-once)",
        "broken.toml:24: triggers.orders.on_failure.topic: \"orders\" is a source topic of this trigger on the same cluster; failed records would be consumed again",
        "broken.toml:29: triggers.tick.expression: invalid rate expression: use the singular unit for a value of 1: rate(1 minute)",
        "broken.toml:33: triggers.hook.function: unknown function \"nope\"",
        "broken.toml:34: triggers.hook.path: duplicate HTTP path \"/hook\" (also used by triggers.hook2)",
        "broken.toml:39: triggers.hook2.path: duplicate HTTP path \"/hook\" (also used by triggers.hook)",
        "broken.toml:42: queue.backend: backend \"redis\" requires a [queue.redis] section with a url",
        "broken.toml:44: auth.tokens.ops: set one of `token` or `token_sha256`",
    ];
    assert_eq!(found, expected);
}

#[test]
fn broken_yaml_reports_everything() {
    let found = errors(BROKEN_YAML, Format::Yaml, "broken.yaml", &no_env());
    let expected = [
        "broken.yaml:3: limits.account_concurrency: must be greater than 0",
        "broken.yaml:6: functions.resize.target.endpoint: unsupported scheme `localhost`; expected http:// or https://",
        "broken.yaml:7: functions.resize.timeout: must be greater than 0 and at most 900s",
        "broken.yaml:12: functions.thumb.target.retries: unknown field `retries`, expected `endpoint` or `tls`",
        "broken.yaml:18: triggers.orders.topics[1]: invalid Kafka topic \"bad topic\": use A-Z, a-z, 0-9, `.`, `_` and `-`",
        "broken.yaml:19: triggers.orders.batch_size: must be between 1 and 10000",
        "broken.yaml:20: triggers.orders.batch_size: duplicate key (first defined on line 19)",
        "broken.yaml:21: triggers.orders.max_record_age: must be between 1m and 7days",
        "broken.yaml:25: triggers.tick.expression: invalid cron expression: `*` cannot be used in both day-of-month and day-of-week; use `?` in one of them",
        "broken.yaml:28: triggers.hook.function: unknown function \"nope\"",
        "broken.yaml:29: triggers.hook.path: must start with `/`",
        "broken.yaml:34: auth.tokens.ops.token: must be at least 16 visible ASCII characters (e.g. `openssl rand -hex 32`)",
    ];
    assert_eq!(found, expected);
}

#[test]
fn unknown_fields_name_the_field_and_line() {
    let toml = "[server]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"\n";
    let found = errors(toml, Format::Toml, "a.toml", &no_env());
    assert_eq!(
        found,
        ["a.toml:3: server.lisen: unknown field `lisen`, expected one of `listen`, `admin_listen`, `tls`, `header_read_timeout`, `idle_timeout`, `max_connections`"]
    );
    let yaml = "triggers:\n  t:\n    type: http\n    function: f\n    path: /\n    method: [GET]\n";
    let found = errors(yaml, Format::Yaml, "a.yaml", &no_env());
    // The trigger did not parse, but its reference to a missing function is still reported.
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(
        found[0],
        "a.yaml:4: triggers.t.function: unknown function \"f\""
    );
    assert!(
        found[1].starts_with("a.yaml:6: triggers.t.method: unknown field `method`"),
        "{found:?}"
    );
    let found = errors("serverr = 1\n", Format::Toml, "a.toml", &no_env());
    assert!(
        found[0].starts_with("a.toml:1: serverr: unknown field `serverr`"),
        "{found:?}"
    );
    // An unknown trigger type points at `type`.
    let found = errors(
        "[triggers.t]\nfunction = \"f\"\ntype = \"kafak\"\n",
        Format::Toml,
        "a.toml",
        &no_env(),
    );
    assert!(
        found
            .iter()
            .any(|e| e.starts_with("a.toml:3: triggers.t.type: unknown variant `kafak`")),
        "{found:?}"
    );
    // A missing field is reported at its table.
    let found = errors(
        "[functions.f]\ntimeout = \"1s\"\n",
        Format::Toml,
        "a.toml",
        &no_env(),
    );
    assert_eq!(found, ["a.toml:1: functions.f: missing field `target`"]);
}

#[test]
fn type_errors_inside_tagged_enums_have_the_field_path() {
    let toml = r#"
[functions.f]
target = { type = "http", endpoint = "http://x" }

[triggers.k]
type = "kafka"
function = "f"
bootstrap_servers = "k:9092"
topics = ["t"]
batch_window = 5
"#;
    let found = errors(toml, Format::Toml, "a.toml", &no_env());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("a.toml:10: triggers.k.batch_window: invalid type: integer `5`, expected a duration string"),
        "{found:?}"
    );
}

#[test]
fn toml_syntax_errors_have_lines() {
    let found = errors(
        "[server]\nlisten = \"127.0.0.1:1\"\nadmin_listen = \n",
        Format::Toml,
        "s.toml",
        &no_env(),
    );
    assert!(found[0].starts_with("s.toml:3: "), "{found:?}");
    let found = errors(
        "[limits]\naccount_concurrency = 1\naccount_concurrency = 2\n",
        Format::Toml,
        "d.toml",
        &no_env(),
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("d.toml:3: ") && found[0].contains("duplicate key"),
        "{found:?}"
    );
}

#[test]
fn yaml_syntax_errors_have_lines() {
    let found = errors(
        "server:\n  listen: [1,\nlimits: 2\n",
        Format::Yaml,
        "s.yaml",
        &no_env(),
    );
    assert_eq!(found, ["s.yaml:2: unclosed bracket '['"]);
    let found = errors("a: 1\n  b: 2\n", Format::Yaml, "i.yaml", &no_env());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("i.yaml:2: "), "{found:?}");
    let found = errors("- a\n- b\n", Format::Yaml, "l.yaml", &no_env());
    assert_eq!(
        found,
        // Where the document starts: every error in a file with lines has one (issue 16).
        ["l.yaml:1: expected a table of settings, found a list"]
    );
}

#[test]
fn cross_field_rules() {
    let toml = r#"
[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:8080"

[limits]
account_concurrency = 100

[functions.a]
target = { type = "http", endpoint = "http://x" }
reserved_concurrency = 60

[functions.b]
target = { type = "process", command = "x", min_warm = 50 }
reserved_concurrency = 41
rate = { per_second = 0, burst = 0 }

[functions."bad name"]
target = { type = "http", endpoint = "http://x" }

[triggers.k]
type = "kafka"
function = "a"
bootstrap_servers = ""
topics = []
starting_position = "at_timestamp"

[triggers.r]
type = "redis"
function = "a"
url = "rediss://:hunter2@cache:6380/0#insecure"
stream = "jobs"
on_failure = { type = "redis", url = "redis://cache:6380/0", stream = "jobs" }

[triggers.s]
type = "schedule"
function = "a"
expression = "at(2026-03-29T02:30:00)"
timezone = "Europe/Berlin"

[triggers.z]
type = "schedule"
function = "a"
expression = "rate(5 minutes)"
timezone = "Mars/Olympus"
catch_up_limit = 0
flexible_window = "30s"
"#;
    let found = errors(toml, Format::Toml, "x.toml", &no_env());
    let expected = [
        "x.toml:4: server.admin_listen: must differ from server.listen (127.0.0.1:8080)",
        "x.toml:14: functions.b.target.min_warm: must not exceed reserved_concurrency (41)",
        "x.toml:15: functions.b.reserved_concurrency: reserved concurrency of all functions (101) exceeds limits.account_concurrency (100)",
        "x.toml:16: functions.b.rate.per_second: must be greater than 0",
        "x.toml:16: functions.b.rate.burst: must be greater than 0",
        "x.toml:18: functions.\"bad name\": invalid function name \"bad name\": use 1 to 64 characters from A-Z, a-z, 0-9, `_` and `-`",
        "x.toml:24: triggers.k.bootstrap_servers: must not be empty",
        "x.toml:25: triggers.k.topics: must list at least one topic",
        "x.toml:21: triggers.k.starting_timestamp: required when starting_position = \"at_timestamp\"",
        "x.toml:31: triggers.r.url: `#insecure` disables TLS certificate verification (redis-rs/redis-rs#549); use rediss:// with a certificate the host trusts",
        "x.toml:33: triggers.r.on_failure.stream: \"jobs\" is this trigger's source stream on the same server; failed entries would be consumed again",
        "x.toml:38: triggers.s.expression: at(2026-03-29T02:30:00) names a local time that does not exist in Europe/Berlin (daylight saving gap)",
        "x.toml:45: triggers.z.timezone: unknown time zone \"Mars/Olympus\"; use an IANA name such as \"Europe/Berlin\"",
        "x.toml:46: triggers.z.catch_up_limit: must be greater than 0",
        "x.toml:47: triggers.z.flexible_window: must be between 1m and 1day",
    ];
    let mut sorted = expected.to_vec();
    sorted.sort_by_key(|line| {
        line.split(':')
            .nth(1)
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    });
    assert_eq!(found, sorted);
    // The Redis password never appears in messages.
    assert!(found.iter().all(|line| !line.contains("hunter2")));
}

#[test]
fn overlap_skip_is_refused_on_the_shared_redis_queue() {
    let toml = r#"
[queue]
backend = "redis"

[queue.redis]
url = "redis://127.0.0.1:6379"

[functions.f]
target = { type = "http", endpoint = "http://x" }

[triggers.every_second]
type = "schedule"
function = "f"
expression = "rate(1 second)"

[triggers.skipping]
type = "schedule"
function = "f"
expression = "rate(10 seconds)"
overlap = "skip"
"#;
    let found = errors(toml, Format::Toml, "x.toml", &no_env());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("x.toml:20: triggers.skipping.overlap: \"skip\" is not supported"),
        "{found:?}"
    );
    // The same schedule is fine on the embedded (single-instance) queue.
    let embedded = toml.replace("backend = \"redis\"", "backend = \"embedded\"");
    if let Err(errors) = parse(&embedded, Format::Toml, "x.toml", &no_env()) {
        panic!("{errors}");
    }
}

#[test]
fn attempts_topic_rules() {
    let toml = r#"
[functions.f]
target = { type = "http", endpoint = "http://x" }

[triggers.ok]
type = "kafka"
function = "f"
bootstrap_servers = "k:9092"
topics = ["t"]
attempts_topic = "impulse.attempts_v1-x"

[triggers.empty]
type = "kafka"
function = "f"
bootstrap_servers = "k:9092"
topics = ["t"]
attempts_topic = ""

[triggers.dots]
type = "kafka"
function = "f"
bootstrap_servers = "k:9092"
topics = ["t"]
attempts_topic = ".."

[triggers.chars]
type = "kafka"
function = "f"
bootstrap_servers = "k:9092"
topics = ["t"]
attempts_topic = "attempts/orders"

[triggers.source]
type = "kafka"
function = "f"
bootstrap_servers = "k:9092"
topics = ["t", "u"]
attempts_topic = "u"

[triggers.dlq]
type = "kafka"
function = "f"
bootstrap_servers = "k:9092"
topics = ["t"]
attempts_topic = "t-dlq"
on_failure = { type = "kafka", bootstrap_servers = "k:9092", topic = "t-dlq" }

[triggers.other_cluster]
type = "kafka"
function = "f"
bootstrap_servers = "k:9092"
topics = ["t"]
attempts_topic = "t-dlq"
on_failure = { type = "kafka", bootstrap_servers = "elsewhere:9092", topic = "t-dlq" }
"#;
    let found = errors(toml, Format::Toml, "a.toml", &no_env());
    let long = "a".repeat(250);
    assert_eq!(
        found,
        [
            "a.toml:17: triggers.empty.attempts_topic: invalid Kafka topic \"\": must be 1 to 249 characters",
            "a.toml:24: triggers.dots.attempts_topic: invalid Kafka topic \"..\"",
            "a.toml:31: triggers.chars.attempts_topic: invalid Kafka topic \"attempts/orders\": use A-Z, a-z, 0-9, `.`, `_` and `-`",
            "a.toml:38: triggers.source.attempts_topic: \"u\" is a source topic of this trigger; attempt counts would be consumed as records",
            "a.toml:45: triggers.dlq.attempts_topic: \"t-dlq\" is this trigger's on_failure topic on the same cluster; use a separate, compacted topic for attempt counts",
        ]
    );
    let too_long = format!(
        "[functions.f]\ntarget = {{ type = \"http\", endpoint = \"http://x\" }}\n\n\
         [triggers.k]\ntype = \"kafka\"\nfunction = \"f\"\nbootstrap_servers = \"k:9092\"\n\
         topics = [\"t\"]\nattempts_topic = \"{long}\"\n"
    );
    let found = errors(&too_long, Format::Toml, "l.toml", &no_env());
    assert_eq!(
        found,
        [format!(
            "l.toml:9: triggers.k.attempts_topic: invalid Kafka topic \"{long}\": must be 1 to 249 characters"
        )]
    );
    // 249 characters is the limit, inclusive.
    let longest = too_long.replace(&long, &long[..249]);
    let TriggerConfig::Kafka(k) = &ok(&longest, Format::Toml).triggers["k"] else {
        panic!("kafka")
    };
    assert_eq!(k.attempts_topic.as_deref().map(str::len), Some(249));
    // YAML: the same rule, with the field's line.
    let yaml = "functions:\n  f:\n    target: {type: http, endpoint: \"http://x\"}\ntriggers:\n  k:\n    type: kafka\n    function: f\n    bootstrap_servers: \"k:9092\"\n    topics: [t]\n    attempts_topic: \".\"\n";
    let found = errors(yaml, Format::Yaml, "a.yaml", &no_env());
    assert_eq!(
        found,
        ["a.yaml:10: triggers.k.attempts_topic: invalid Kafka topic \".\""]
    );
    // Unknown fields next to it are still rejected (`deny_unknown_fields`).
    let typo = "[functions.f]\ntarget = { type = \"http\", endpoint = \"http://x\" }\n\n\
                [triggers.k]\ntype = \"kafka\"\nfunction = \"f\"\nbootstrap_servers = \"k:9092\"\n\
                topics = [\"t\"]\nattempt_topic = \"x\"\n";
    let found = errors(typo, Format::Toml, "t.toml", &no_env());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("t.toml:9: triggers.k.attempt_topic: unknown field `attempt_topic`"),
        "{found:?}"
    );
    assert!(found[0].contains("`attempts_topic`"), "{found:?}");
}

#[test]
fn execution_role_rules() {
    let toml = r#"
[execution_roles.payments]
environment = { STRIPE_KEY = { env = "PAYMENTS_STRIPE_KEY" }, DB_PASSWORD = { file = "/run/secrets/db" } }
headers = { Authorization = { env = "PAYMENTS_API_AUTH" } }

[execution_roles.bad.environment]
AWS_LAMBDA_FUNCTION_NAME = { env = "X" }
TZ = { env = "X" }
_HANDLER = { env = "X" }
2FA = { env = "X" }
RELATIVE = { file = "secrets/db" }
EMPTY = { env = "" }
AWS_SECRET_ACCESS_KEY = { env = "X" }

[execution_roles.bad.headers]
Content-Type = { env = "X" }
Lambda-Runtime-Deadline-Ms = { env = "X" }
"Bad Header" = { env = "X" }
X-Key = { env = "X" }
x-key = { env = "Y" }

[execution_roles."bad.name"]
headers = { X-Ok = { env = "X" } }

[execution_roles.both]
environment = { KEY = { env = "A", file = "/b" } }

[execution_roles.neither]
environment = { KEY = {} }

[execution_roles.typo]
headers = { X-Key = { environment = "A" } }

[execution_roles.headers_only]
headers = { X-Api-Key = { env = "K" } }

[execution_roles.env_only]
environment = { API_KEY = { env = "K" } }

[functions.pay]
target = { type = "process", command = "x", environment = { STRIPE_KEY = "x", OTHER = "y" } }
execution_role = "payments"

[functions.pay-http]
target = { type = "http", endpoint = "http://user:canary-pw@x" }
execution_role = "payments"

[functions.proc-headers]
target = { type = "process", command = "x" }
execution_role = "headers_only"

[functions.http-env]
target = { type = "http", endpoint = "http://x" }
execution_role = "env_only"

[functions.ghost]
target = { type = "http", endpoint = "http://x" }
execution_role = "nope"

[functions.unparsed-role]
target = { type = "http", endpoint = "http://x" }
execution_role = "both"
"#;
    let found = errors(toml, Format::Toml, "r.toml", &no_env());
    let expected = [
        "r.toml:7: execution_roles.bad.environment.AWS_LAMBDA_FUNCTION_NAME: reserved: the broker sets it in every execution environment",
        "r.toml:8: execution_roles.bad.environment.TZ: reserved: the broker sets it in every execution environment",
        "r.toml:9: execution_roles.bad.environment._HANDLER: reserved: the broker sets it in every execution environment",
        "r.toml:10: execution_roles.bad.environment.2FA: invalid environment variable name: use a letter, then letters, digits and `_` (at least 2 characters)",
        "r.toml:11: execution_roles.bad.environment.RELATIVE.file: must be an absolute path",
        "r.toml:12: execution_roles.bad.environment.EMPTY.env: invalid environment variable name",
        "r.toml:16: execution_roles.bad.headers.Content-Type: reserved: the invoker or HTTP itself sets this header",
        "r.toml:17: execution_roles.bad.headers.Lambda-Runtime-Deadline-Ms: reserved: the invoker or HTTP itself sets this header",
        "r.toml:18: execution_roles.bad.headers.\"Bad Header\": invalid HTTP header name",
        "r.toml:20: execution_roles.bad.headers.x-key: same header as headers.X-Key; header names are case-insensitive",
        "r.toml:22: execution_roles.\"bad.name\": invalid execution role name \"bad.name\": use 1 to 64 characters from A-Z, a-z, 0-9, `_` and `-`",
        "r.toml:26: execution_roles.both.environment.KEY: set exactly one of `env` and `file`",
        "r.toml:29: execution_roles.neither.environment.KEY: set exactly one of `env` and `file`",
        "r.toml:32: execution_roles.typo.headers.X-Key.environment: unknown field `environment`, expected `env` or `file`",
        "r.toml:35: execution_roles.headers_only.headers: no function using this role has an http target, the only kind that receives headers",
        "r.toml:38: execution_roles.env_only.environment: no function using this role has a process target, the only kind that receives environment variables",
        "r.toml:41: functions.pay.target.environment.STRIPE_KEY: also set by execution role \"payments\"; set it in one place",
        "r.toml:45: functions.pay-http.target.endpoint: holds a user name or password (sent as `Authorization`) and execution role \"payments\" sets `Authorization` too; keep one",
        "r.toml:50: functions.proc-headers.execution_role: execution role \"headers_only\" has no `environment`, the part a process target receives",
        "r.toml:54: functions.http-env.execution_role: execution role \"env_only\" has no `headers` or `client_certificate`, the parts an http target receives",
        "r.toml:58: functions.ghost.execution_role: unknown execution role \"nope\"",
    ];
    assert_eq!(found, expected);

    // YAML: the same model, with each problem's line.
    let yaml = "execution_roles:\n  r:\n    headers:\n      Host: {env: X}\nfunctions:\n  f:\n    target: {type: http, endpoint: \"http://x\"}\n    execution_role: r\n";
    let found = errors(yaml, Format::Yaml, "r.yaml", &no_env());
    assert_eq!(
        found,
        ["r.yaml:4: execution_roles.r.headers.Host: reserved: the invoker or HTTP itself sets this header"]
    );
}

#[test]
fn execution_role_client_certificate_rules() {
    let toml = r#"
[execution_roles.mtls]
client_certificate = "/nonexistent/client.pem"
client_key = "/nonexistent/client-key.pem"

[execution_roles.half]
client_certificate = "/nonexistent/client.pem"

[execution_roles.unused]
client_certificate = "/c.pem"
client_key = "/k.pem"
environment = { K1 = { env = "K" } }

[functions.ok]
target = { type = "http", endpoint = "https://api.example.com/fn" }
execution_role = "mtls"

[functions.plain]
target = { type = "http", endpoint = "http://api.example.com/fn" }
execution_role = "mtls"

[functions.twice]
target = { type = "http", endpoint = "https://x/fn", tls = { client_certificate = "/c.pem", client_key = "/k.pem" } }
execution_role = "mtls"

[functions.half-user]
target = { type = "http", endpoint = "https://x/fn" }
execution_role = "half"

[functions.proc]
target = { type = "process", command = "x" }
execution_role = "unused"
"#;
    let found = errors(toml, Format::Toml, "c.toml", &no_env());
    let expected = [
        // The files are not read by validation: only the pairing is checked.
        "c.toml:7: execution_roles.half.client_certificate: requires client_key (the certificate's private key)",
        "c.toml:10: execution_roles.unused.client_certificate: no function using this role has an http target, the only kind that presents a client certificate",
        "c.toml:19: functions.plain.target.endpoint: execution role \"mtls\" holds a client certificate, which only https:// endpoints receive",
    ];
    let tls_file_errors: Vec<_> = found
        .iter()
        .filter(|e| e.contains("functions.twice.target.tls."))
        .collect();
    assert!(
        tls_file_errors
            .iter()
            .any(|e| e.contains("execution role \"mtls\" holds the client certificate too")),
        "{found:?}"
    );
    let rest: Vec<_> = found
        .iter()
        .filter(|e| !e.contains("functions.twice.target.tls."))
        .cloned()
        .collect();
    assert_eq!(rest, expected);
}

#[test]
fn execution_role_values_are_never_read_by_validation() {
    // The secrets may be absent where `validate` runs: no variable, no file.
    let config = ok(
        r#"
[execution_roles.payments]
environment = { STRIPE_KEY = { env = "SURELY_NOT_SET_ANYWHERE" }, DB = { file = "/nonexistent/secret" } }

[functions.pay]
target = { type = "process", command = "x" }
execution_role = "payments"
"#,
        Format::Toml,
    );
    assert_eq!(
        config.functions["pay"].execution_role.as_deref(),
        Some("payments")
    );
}

#[test]
fn a_secret_written_inline_is_refused_without_being_echoed() {
    let toml = r#"
[execution_roles.payments]
environment = { STRIPE_KEY = "sk_live_canary_inline", PIN = 731905 }
headers = { Authorization = ["canary-in-a-list"] }
"#;
    let found = errors(toml, Format::Toml, "i.toml", &no_env());
    assert_eq!(found.len(), 1, "one error per role: {found:?}");
    assert_eq!(
        found[0],
        "i.toml:3: execution_roles.payments.environment.PIN: a secret cannot be written in the config file; use { env = \"VARIABLE\" } or { file = \"/absolute/path\" }"
    );
    let yaml = "execution_roles:\n  payments:\n    headers:\n      Authorization: Bearer canary-yaml-inline\n";
    let found = errors(yaml, Format::Yaml, "i.yaml", &no_env());
    assert_eq!(
        found,
        ["i.yaml:4: execution_roles.payments.headers.Authorization: a secret cannot be written in the config file; use { env = \"VARIABLE\" } or { file = \"/absolute/path\" }"]
    );
    for text in [toml, yaml] {
        for format in [Format::Toml, Format::Yaml] {
            if let Err(errors) = parse(text, format, "x", &no_env()) {
                let all = errors.to_string();
                assert!(!all.contains("canary") && !all.contains("731905"), "{all}");
            }
        }
    }
}

#[test]
fn a_secret_of_the_wrong_type_is_refused_without_being_echoed() {
    // Unquoted digits are a number to TOML and YAML, and serde's own error quotes numbers.
    let toml = r#"
[auth.tokens.ci]
role = "invoker"
token = 98765432109876543

[auth.access_keys.deploy]
role = "invoker"
access_key_id = "AKIAIMPULSECANARY01"
secret_access_key = 12345678901234567.5

[functions.f]
target = { type = "http", endpoint = "http://127.0.0.1:9/" }

[triggers.hook]
type = "http"
function = "f"
path = "/hook"
webhook = { scheme = "github", secret = true }
"#;
    let found = errors(toml, Format::Toml, "s.toml", &no_env());
    assert_eq!(
        found,
        [
            "s.toml:4: auth.tokens.ci.token: invalid type: integer, expected a string (write the secret in quotes)",
            "s.toml:9: auth.access_keys.deploy.secret_access_key: invalid type: floating point number, expected a string (write the secret in quotes)",
            "s.toml:18: triggers.hook.webhook.secret: invalid type: boolean, expected a string (write the secret in quotes)",
        ]
    );
    let yaml = "auth:\n  tokens:\n    ci:\n      role: invoker\n      token: 98765432109876543\n";
    let found = errors(yaml, Format::Yaml, "s.yaml", &no_env());
    assert_eq!(
        found,
        ["s.yaml:5: auth.tokens.ci.token: invalid type: integer, expected a string (write the secret in quotes)"]
    );
    // A null is an absent secret; a string still deserialises.
    let yaml = "auth:\n  tokens:\n    ci:\n      role: invoker\n      token: ~\n      token_sha256: \"e93a81f9356eeea87ba70d564521b57b19e335aafdc78e8f6015402a1983b78e\"\n";
    assert!(ok(yaml, Format::Yaml).auth.tokens["ci"].token.is_none());
}

#[test]
fn token_rules() {
    let toml = r#"
[auth.tokens.both]
role = "admin"
token = "0123456789abcdef0123"
token_sha256 = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"

[auth.tokens.hash]
role = "invoker"
token_sha256 = "abc"

[auth.tokens.spaces]
role = "invoker"
token = "has spaces in the token"

[auth.tokens.twin]
role = "read-only"
token_sha256 = "2C26B46B68FFC68FF99B453C1D30413413422D706483BFA0F98A5E886266E7AE"

[auth.tokens.twin2]
role = "admin"
token_sha256 = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"

[auth.tokens.badrole]
role = "superuser"
token = "0123456789abcdef0123"
"#;
    let found = errors(toml, Format::Toml, "t.toml", &no_env());
    assert_eq!(found.len(), 5, "{found:?}");
    assert_eq!(
        found[0],
        "t.toml:2: auth.tokens.both: set one of `token` and `token_sha256`, not both"
    );
    assert_eq!(
        found[1],
        "t.toml:9: auth.tokens.hash.token_sha256: must be 64 hexadecimal digits"
    );
    assert!(
        found[2].starts_with("t.toml:13: auth.tokens.spaces.token: must be at least 16 visible"),
        "{found:?}"
    );
    assert_eq!(
        found[3],
        "t.toml:19: auth.tokens.twin2: same token as auth.tokens.twin; each token needs one role"
    );
    assert_eq!(found[4], "t.toml:24: auth.tokens.badrole.role: unknown variant `superuser`, expected one of `admin`, `read-only`, `invoker`");
}

#[test]
fn access_key_rules() {
    let toml = r#"
[auth.tokens.deploy]
role = "admin"
token = "0123456789abcdef0123"

[auth.access_keys.deploy]
role = "invoker"
access_key_id = "AKIAIMPULSEEXAMPLE1"
secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

[auth.access_keys.short]
role = "invoker"
access_key_id = "AKIA-NOT-VALID"
secret_access_key = "too short"

[auth.access_keys.twin]
role = "read-only"
access_key_id = "AKIAIMPULSEEXAMPLE1"

[auth.access_keys.ok]
role = "read-only"
access_key_id = "AKIAIMPULSEEXAMPLE2"
secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
"#;
    let found = errors(toml, Format::Toml, "t.toml", &no_env());
    assert_eq!(
        found,
        [
            "t.toml:6: auth.access_keys.deploy: auth.tokens.deploy has the same name; tokens and \
             access keys share one namespace of principal names",
            "t.toml:13: auth.access_keys.short.access_key_id: must be 16 to 128 letters and \
             digits, like AWS's access key ids",
            "t.toml:14: auth.access_keys.short.secret_access_key: must be at least 16 visible \
             ASCII characters (e.g. `openssl rand -hex 32`)",
            "t.toml:16: auth.access_keys.twin: set `secret_access_key` (or \
             IMPULSE_AUTH_SECRET_ACCESS_KEY_<NAME>)",
            "t.toml:18: auth.access_keys.twin.access_key_id: same access_key_id as \
             auth.access_keys.deploy; each key id needs one role",
        ]
    );

    // The secret may come from the environment alone, and never shows in Debug or JSON.
    let vars = env(&[(
        "IMPULSE_AUTH_SECRET_ACCESS_KEY_TWIN",
        "canary-secret-access-key",
    )]);
    let toml = r#"
[auth.access_keys.twin]
role = "read-only"
access_key_id = "AKIAIMPULSEEXAMPLE1"
"#;
    let config = parse(toml, Format::Toml, "t.toml", &vars).unwrap_or_else(|e| panic!("{e}"));
    let key = &config.auth.access_keys["twin"];
    assert_eq!(
        key.secret_access_key.as_ref().map(|s| s.expose_secret()),
        Some("canary-secret-access-key")
    );
    assert!(config.auth.is_enabled());
    let debug = format!("{config:?}");
    let json = serde_json::to_string(&config).expect("serialisable");
    assert!(
        !debug.contains("canary") && !json.contains("canary"),
        "{debug} {json}"
    );
}

#[test]
fn policy_and_auth_type_rules() {
    let toml = r#"
[functions.orders]
target = { type = "http", endpoint = "http://localhost:9000" }
policy = { principals = ["ci", "ghost"], triggers = ["checkout", "nope", "other-hook"] }

[functions.other]
target = { type = "http", endpoint = "http://localhost:9001" }

[triggers.checkout]
type = "http"
function = "orders"
path = "/checkout"

[triggers.refund]
type = "http"
function = "orders"
path = "/refund"

[triggers.other-hook]
type = "http"
function = "other"
path = "/other"
auth_type = "AWS_IAM"

[auth.tokens.ci]
role = "invoker"
token = "0123456789abcdef0123"
"#;
    let found = errors(toml, Format::Toml, "t.toml", &no_env());
    assert_eq!(
        found,
        [
            "t.toml:4: functions.orders.policy.principals[1]: unknown principal \"ghost\": name \
             one of auth.tokens or auth.access_keys",
            "t.toml:4: functions.orders.policy.triggers[1]: unknown trigger \"nope\"",
            "t.toml:4: functions.orders.policy.triggers[2]: trigger \"other-hook\" invokes \
             \"other\", not this function",
            "t.toml:16: triggers.refund.function: function \"orders\"'s policy does not allow \
             this trigger; add \"refund\" to functions.orders.policy.triggers",
        ]
    );

    // AWS_IAM with no principal anywhere could never be called.
    let toml = r#"
[functions.f]
target = { type = "http", endpoint = "http://localhost:9000" }

[triggers.hook]
type = "http"
function = "f"
path = "/hook"
auth_type = "AWS_IAM"
"#;
    let found = errors(toml, Format::Toml, "t.toml", &no_env());
    assert_eq!(
        found,
        [
            "t.toml:9: triggers.hook.auth_type: AWS_IAM needs a principal: configure auth.tokens \
          or auth.access_keys"
        ]
    );
}

#[test]
fn connection_limit_rules() {
    let toml = r#"
[server]
header_read_timeout = "0s"
idle_timeout = "2h"
max_connections = 0
"#;
    let found = errors(toml, Format::Toml, "s.toml", &no_env());
    assert_eq!(
        found,
        [
            "s.toml:3: server.header_read_timeout: must be between 1s and 5m",
            "s.toml:4: server.idle_timeout: must be between 1s and 1h",
            "s.toml:5: server.max_connections: must be between 1 and 1000000",
        ]
    );
    let config = ok("[server]\nheader_read_timeout = \"2s\"\n", Format::Toml);
    assert_eq!(config.server.header_read_timeout, Duration::from_secs(2));
    assert_eq!(config.server.idle_timeout, Duration::from_secs(120));
    assert_eq!(config.server.max_connections, 10_000);
}

#[test]
fn cors_rules() {
    let toml = r#"
[functions.f]
target = { type = "http", endpoint = "http://localhost:9000" }

[triggers.app]
type = "http"
function = "f"
path = "/app"
[triggers.app.cors]
allow_origins = ["*", "https://app.example.com/path", "app.example.com"]
allow_methods = ["GET", "PO ST"]
allow_headers = ["*"]
expose_headers = ["*"]
allow_credentials = true
max_age = "2d"

[triggers.empty]
type = "http"
function = "f"
path = "/empty"
cors = {}
"#;
    let found = errors(toml, Format::Toml, "t.toml", &no_env());
    assert_eq!(
        found,
        [
            "t.toml:10: triggers.app.cors.allow_origins[1]: invalid origin \
             \"https://app.example.com/path\": use scheme://host[:port] with no path, or \"*\"",
            "t.toml:10: triggers.app.cors.allow_origins[2]: invalid origin \"app.example.com\": \
             use scheme://host[:port] with no path, or \"*\"",
            "t.toml:11: triggers.app.cors.allow_methods[1]: invalid name \"PO ST\"",
            "t.toml:14: triggers.app.cors.allow_credentials: browsers refuse credentials with the \
             origin \"*\"; list the origins instead",
            "t.toml:15: triggers.app.cors.max_age: must be at most 86400s (Lambda's limit)",
            "t.toml:21: triggers.empty.cors.allow_origins: name at least one origin (e.g. \
             \"https://app.example.com\") or \"*\"",
        ]
    );
}

#[test]
fn http_auth_type_defaults_follow_auth() {
    let open = ok(
        r#"
[functions.f]
target = { type = "http", endpoint = "http://localhost:9000" }
[triggers.hook]
type = "http"
function = "f"
path = "/hook"
"#,
        Format::Toml,
    );
    let TriggerConfig::Http(hook) = &open.triggers["hook"] else {
        panic!("an http trigger")
    };
    assert_eq!(hook.effective_auth_type(&open.auth), AuthType::None);

    let guarded = ok(
        r#"
[functions.f]
target = { type = "http", endpoint = "http://localhost:9000" }
[triggers.hook]
type = "http"
function = "f"
path = "/hook"
[triggers.public]
type = "http"
function = "f"
path = "/public"
auth_type = "NONE"
[auth.tokens.ci]
role = "invoker"
token = "0123456789abcdef0123"
"#,
        Format::Toml,
    );
    let auth_type = |name: &str| match &guarded.triggers[name] {
        TriggerConfig::Http(http) => http.effective_auth_type(&guarded.auth),
        _ => panic!("an http trigger"),
    };
    assert_eq!(auth_type("hook"), AuthType::AwsIam);
    assert_eq!(auth_type("public"), AuthType::None);
}

// === environment overrides ===

const SMALL: &str = r#"
[functions.resize-images]
target = { type = "http", endpoint = "http://localhost:9000" }

[functions.worker]
target = { type = "process", command = "./bootstrap" }

[triggers.orders]
type = "kafka"
function = "resize-images"
bootstrap_servers = "localhost:9092"
topics = ["orders"]

[triggers.jobs]
type = "redis"
function = "worker"
url = "redis://localhost:6379"
stream = "jobs"

[auth.tokens.ci]
role = "invoker"
token_sha256 = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
"#;

#[test]
fn env_overrides_apply() {
    let vars = env(&[
        (IMPULSE_LISTEN, "0.0.0.0:9999"),
        (IMPULSE_ADMIN_LISTEN, "0.0.0.0:9998"),
        (IMPULSE_DATA_DIR, "/data"),
        (IMPULSE_ISOLATION_MODE, "required"),
        (IMPULSE_QUEUE_REDIS_URL, "rediss://queue:6380"),
        (
            "IMPULSE_FUNCTION_RESIZE_IMAGES_ENDPOINT",
            "https://resize.internal/run",
        ),
        (
            "IMPULSE_TRIGGER_ORDERS_BOOTSTRAP_SERVERS",
            "kafka-1:9092,kafka-2:9092",
        ),
        ("IMPULSE_TRIGGER_JOBS_URL", "redis://other:6379/2"),
        ("IMPULSE_AUTH_TOKEN_CI", "a-very-long-ci-token-value"),
        // Not implied by the config: ignored.
        ("IMPULSE_FUNCTION_GHOST_ENDPOINT", "nonsense"),
    ]);
    let config = parse(SMALL, Format::Toml, "small.toml", &vars).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:9999");
    assert_eq!(config.server.admin_listen.to_string(), "0.0.0.0:9998");
    assert_eq!(config.queue.data_dir, PathBuf::from("/data"));
    assert_eq!(config.isolation.mode, IsolationMode::Required);
    let redis = config
        .queue
        .redis
        .as_ref()
        .expect("created by the override");
    assert_eq!(
        (redis.url.as_str(), redis.stream.as_str()),
        ("rediss://queue:6380", "impulse:async")
    );
    assert!(matches!(
        &config.functions["resize-images"].target,
        TargetConfig::Http(h) if h.endpoint == "https://resize.internal/run"
    ));
    assert!(matches!(
        &config.triggers["orders"],
        TriggerConfig::Kafka(k) if k.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    ));
    assert!(
        matches!(&config.triggers["jobs"], TriggerConfig::Redis(r) if r.url == "redis://other:6379/2")
    );
    let ci = &config.auth.tokens["ci"];
    assert_eq!(
        ci.token.as_ref().map(|t| t.expose_secret()),
        Some("a-very-long-ci-token-value")
    );
    assert_eq!(ci.token_sha256, None);
}

#[test]
fn env_override_errors_name_the_variable() {
    let vars = env(&[
        (IMPULSE_LISTEN, "localhost"),
        ("IMPULSE_FUNCTION_WORKER_ENDPOINT", "http://x"),
        ("IMPULSE_TRIGGER_JOBS_BOOTSTRAP_SERVERS", "k:9092"),
        ("IMPULSE_TRIGGER_ORDERS_URL", "redis://x"),
        ("IMPULSE_AUTH_TOKEN_CI", "short"),
        (IMPULSE_QUEUE_REDIS_URL, "redis://:hunter2@queue#insecure"),
        (IMPULSE_ISOLATION_MODE, "strict"),
    ]);
    let found = errors(SMALL, Format::Toml, "small.toml", &vars);
    let expected = [
        "environment variable IMPULSE_LISTEN: server.listen: invalid socket address \"localhost\": invalid socket address syntax; expected an IP address and port, e.g. 0.0.0.0:8080",
        "environment variable IMPULSE_ISOLATION_MODE: isolation.mode: unknown mode \"strict\"; expected auto, required or off",
        "environment variable IMPULSE_FUNCTION_WORKER_ENDPOINT: functions.worker.target: function \"worker\" has a process target; only http targets take an endpoint",
        "environment variable IMPULSE_TRIGGER_JOBS_BOOTSTRAP_SERVERS: triggers.jobs: trigger \"jobs\" is a redis trigger; only kafka triggers take bootstrap_servers",
        "environment variable IMPULSE_TRIGGER_ORDERS_URL: triggers.orders: trigger \"orders\" is a kafka trigger; only redis triggers take a url",
        "environment variable IMPULSE_QUEUE_REDIS_URL: queue.redis.url: `#insecure` disables TLS certificate verification (redis-rs/redis-rs#549); use rediss:// with a certificate the host trusts",
        "environment variable IMPULSE_AUTH_TOKEN_CI: auth.tokens.ci.token: must be at least 16 visible ASCII characters (e.g. `openssl rand -hex 32`)",
    ];
    assert_eq!(found, expected);
    assert!(found.iter().all(|line| !line.contains("hunter2")));
}

#[test]
fn isolation_ranges_are_checked() {
    let toml = "[isolation]\nmode = \"required\"\nfirst_uid = 0\nuid_count = 0\n";
    let found = errors(toml, Format::Toml, "i.toml", &no_env());
    assert_eq!(
        found,
        [
            "i.toml:3: isolation.first_uid: must not be 0: the range would contain root",
            "i.toml:4: isolation.uid_count: must be greater than 0",
        ]
    );
    let toml = "[isolation]\nfirst_uid = 4294967000\nuid_count = 1000\n";
    let found = errors(toml, Format::Toml, "i.toml", &no_env());
    assert_eq!(
        found,
        ["i.toml:3: isolation.uid_count: first_uid + uid_count must be below 4294967295"]
    );
    let config = parse("", Format::Toml, "empty.toml", &no_env()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.isolation.mode, IsolationMode::Auto);
    assert_eq!(config.isolation.first_uid, 200_000);
}

#[test]
fn env_names_that_collide_are_errors() {
    let toml = r#"
[functions.a-b]
target = { type = "http", endpoint = "http://x" }
[functions.a_b]
target = { type = "http", endpoint = "http://y" }
"#;
    assert!(parse(toml, Format::Toml, "c.toml", &no_env()).is_ok());
    let vars = env(&[("IMPULSE_FUNCTION_A_B_ENDPOINT", "http://z")]);
    let found = errors(toml, Format::Toml, "c.toml", &vars);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].contains("ambiguous: functions \"a-b\" and \"a_b\""),
        "{found:?}"
    );
}

// === load ===

// === TLS ===

const FAKE_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";
const FAKE_KEY: &str = "-----BEGIN PRIVATE KEY-----\nAQID\n-----END PRIVATE KEY-----\n";

/// A directory with PEM files (validation parses PEM, not the DER inside) and a file that is
/// not PEM. TOML literal strings ('…') keep the paths as written.
fn pem_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp dir");
    for (name, contents) in [
        ("ca.pem", FAKE_CERTIFICATE),
        ("client.pem", FAKE_CERTIFICATE),
        ("client-key.pem", FAKE_KEY),
        ("notes.txt", "canary-not-pem\n"),
    ] {
        std::fs::write(dir.path().join(name), contents).expect("writable");
    }
    dir
}

#[test]
fn tls_settings_parse_and_validate() {
    let dir = pem_dir();
    let d = dir.path().display();
    let toml = format!(
        r#"
[server.tls]
certificate = '{d}/client.pem'
key = '{d}/client-key.pem'

[functions.f.target]
type = "http"
endpoint = "https://orders.internal:8443/invoke"

[functions.f.target.tls]
ca_file = '{d}/ca.pem'
client_certificate = '{d}/client.pem'
client_key = '{d}/client-key.pem'
"#
    );
    let config = ok(&toml, Format::Toml);
    let server = config.server.tls.as_ref().expect("server.tls");
    assert_eq!(server.key, dir.path().join("client-key.pem"));
    let TargetConfig::Http(http) = &config.functions["f"].target else {
        panic!("an http target");
    };
    let tls = http.tls.as_ref().expect("target.tls");
    assert_eq!(tls.ca_file, Some(dir.path().join("ca.pem")));
    assert_eq!(tls.client_certificate, Some(dir.path().join("client.pem")));

    // The same in YAML.
    let yaml = format!(
        "server:\n  tls: {{certificate: '{d}/client.pem', key: '{d}/client-key.pem'}}\n\
         functions:\n  f:\n    target:\n      type: http\n      \
         endpoint: https://orders.internal:8443/invoke\n      \
         tls: {{ca_file: '{d}/ca.pem', client_certificate: '{d}/client.pem', \
         client_key: '{d}/client-key.pem'}}\n"
    );
    assert_eq!(ok(&yaml, Format::Yaml), config);
}

#[test]
fn tls_rules() {
    let dir = pem_dir();
    let d = dir.path().display();
    let toml = format!(
        r#"
[server.tls]
certificate = '{d}/missing.pem'
key = '{d}/ca.pem'

[functions.plain.target]
type = "http"
endpoint = "http://svc:canary-pw@orders.internal/invoke"
tls = {{ ca_file = '{d}/ca.pem' }}

[functions.half.target]
type = "http"
endpoint = "https://orders.internal/invoke"
tls = {{ client_certificate = '{d}/client.pem' }}

[functions.other_half.target]
type = "http"
endpoint = "https://orders.internal/invoke"
tls = {{ client_key = '{d}/client-key.pem' }}

[functions.wrong_files.target]
type = "http"
endpoint = "https://orders.internal/invoke"

[functions.wrong_files.target.tls]
ca_file = '{d}/notes.txt'
client_certificate = '{d}/client-key.pem'
client_key = '{d}/client.pem'
"#
    );
    let found = errors(&toml, Format::Toml, "t.toml", &no_env());
    let expected = [
        format!("t.toml:3: server.tls.certificate: cannot read {d}/missing.pem: No such file or directory (os error 2)"),
        format!("t.toml:4: server.tls.key: {d}/ca.pem holds no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC)"),
        "t.toml:9: functions.plain.target.tls: TLS settings apply to https:// endpoints only; this endpoint is not https://".to_owned(),
        "t.toml:14: functions.half.target.tls.client_certificate: requires client_key (the certificate's private key)".to_owned(),
        "t.toml:19: functions.other_half.target.tls.client_key: requires client_certificate (the key's certificate chain)".to_owned(),
        format!("t.toml:26: functions.wrong_files.target.tls.ca_file: {d}/notes.txt holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        format!("t.toml:27: functions.wrong_files.target.tls.client_certificate: {d}/client-key.pem holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        format!("t.toml:28: functions.wrong_files.target.tls.client_key: {d}/client.pem holds no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC)"),
    ];
    assert_eq!(found, expected);
    for line in &found {
        assert!(
            !line.contains("canary"),
            "a secret or file content leaked: {line}"
        );
    }
}

#[test]
fn endpoint_credentials_are_accepted_and_never_shown() {
    let toml = r#"
[functions.f]
target = { type = "http", endpoint = "https://svc:canary-endpoint-pw@orders.internal/invoke" }

[functions.g]
target = { type = "http", endpoint = "https://svc:canary-endpoint-pw@orders internal/invoke" }
"#;
    let found = errors(toml, Format::Toml, "c.toml", &no_env());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("c.toml:6: functions.g.target.endpoint: invalid URL"),
        "{found:?}"
    );
    assert!(!found[0].contains("canary"), "{found:?}");

    let config = ok(
        &toml.replace("orders internal", "orders.internal"),
        Format::Toml,
    );
    let debug = format!("{config:?}");
    assert!(!debug.contains("canary"), "{debug}");
    assert!(
        debug.contains("https://svc:***@orders.internal/invoke"),
        "{debug}"
    );

    // From the environment too.
    let vars = env(&[(
        "IMPULSE_FUNCTION_F_ENDPOINT",
        "https://svc:canary-env-pw@orders internal/",
    )]);
    let found = errors(toml, Format::Toml, "c.toml", &vars);
    assert!(
        found.iter().all(|line| !line.contains("canary")),
        "{found:?}"
    );
}

#[test]
fn oversized_and_non_utf8_files_are_refused_with_a_line() {
    let dir = tempfile::tempdir().expect("a temp dir");
    // Huge: refused from its size, before anything is parsed.
    let huge = dir.path().join("huge.toml");
    let file = std::fs::File::create(&huge).expect("create");
    file.set_len(50 * 1024 * 1024)
        .expect("a sparse 50 MiB file");
    let err = load_with_env(&huge, &no_env()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: the config file has 52428800 bytes; at most 4194304 (4 MiB) are accepted",
            huge.display()
        )
    );
    // Invalid UTF-8: the line and column of the first bad byte.
    let latin1 = dir.path().join("latin1.yaml");
    std::fs::write(&latin1, b"functions:\n  caf\xe9:\n    target: {}\n").expect("write");
    let err = load_with_env(&latin1, &no_env()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2: invalid UTF-8 at column 6 (byte 16): a config file is UTF-8 text",
            latin1.display()
        )
    );
}

#[test]
fn load_picks_the_format_by_extension() {
    let toml = load_with_env(&fixture("full.toml"), &no_env()).unwrap_or_else(|e| panic!("{e}"));
    let yaml = load_with_env(&fixture("full.yaml"), &no_env()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(toml, yaml);

    let err = load_with_env(Path::new("impulse.json"), &no_env()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "impulse.json: unsupported config file extension; use .toml, .yaml or .yml"
    );
    let err = load_with_env(&fixture("missing.toml"), &no_env()).unwrap_err();
    assert!(
        err.to_string()
            .contains("missing.toml: cannot read the config file"),
        "{err}"
    );

    let err = load_with_env(&fixture("broken.toml"), &no_env()).unwrap_err();
    let first = err.0.first().expect("errors");
    assert!(first.file.ends_with("broken.toml"));
    assert_eq!(first.line, Some(3));
    assert_eq!(first.path, "limits.account_concurrency");
}

// === secrets and schema ===

#[test]
fn debug_output_redacts_secrets() {
    let toml = r#"
[queue.redis]
url = "redis://user:canary-redis-pw@localhost"

[functions.f]
target = { type = "process", command = "x", environment = { API_KEY = "canary-env" } }

[triggers.k]
type = "kafka"
function = "f"
bootstrap_servers = "k:9092"
topics = ["t"]
librdkafka_options = { "sasl.password" = "canary-sasl", "fetch.max.bytes" = "100" }

[auth.tokens.t]
role = "admin"
token = "canary-token-0123456789"

[execution_roles.r]
environment = { API_KEY = { env = "ROLE_VAR" } }
"#;
    let config = ok(toml, Format::Toml);
    let debug = format!("{config:?}");
    for canary in [
        "canary-redis-pw",
        "canary-env",
        "canary-sasl",
        "canary-token",
    ] {
        assert!(!debug.contains(canary), "{canary} leaked: {debug}");
    }
    // A role holds where its secrets are, not the secrets: its source may show.
    assert!(debug.contains("ROLE_VAR"), "{debug}");
    assert!(debug.contains("fetch.max.bytes"));
    let serialized = serde_json::to_string(&config).expect("serialisable");
    assert!(!serialized.contains("canary-token"), "{serialized}");
}

#[test]
fn json_schema_describes_the_model() {
    let schema = json_schema();
    assert!(schema.is_object());
    assert!(schema["properties"]["functions"].is_object(), "{schema}");
    assert!(schema["properties"]["triggers"].is_object());
    let text = schema.to_string();
    // Doc comments become descriptions.
    assert!(text.contains("Lambda"), "descriptions missing");
    assert!(text.contains("ScheduleExpression"));
    assert!(
        text.contains("attempts_topic") && text.contains("compacted topic"),
        "attempts_topic is documented in the schema"
    );
    assert!(
        schema["properties"]["execution_roles"].is_object(),
        "{schema}"
    );
    assert!(
        text.contains("Where a secret's value is read"),
        "SecretSource is documented"
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let depth = 100_000;
    let toml = format!("a = {}{}\n", "[".repeat(depth), "]".repeat(depth));
    let found = errors(&toml, Format::Toml, "d.toml", &no_env());
    assert!(found[0].starts_with("d.toml:1: "), "{found:?}");
    let yaml = format!("a: {}{}\n", "[".repeat(depth), "]".repeat(depth));
    let found = errors(&yaml, Format::Yaml, "d.yaml", &no_env());
    assert!(found[0].starts_with("d.yaml:1: "), "{found:?}");
}

#[test]
fn versions_and_aliases() {
    let good = r#"
[functions.orders]
target = { type = "http", endpoint = "http://127.0.0.1:9/latest" }
timeout = "5s"

[functions.orders.versions.1]
target = { type = "http", endpoint = "http://127.0.0.1:9/v1" }
timeout = "2s"

[functions.orders.versions.2]
target = { type = "process", command = "worker", memory_size = 256 }

[functions.orders.aliases.live]
version = "1"
routing = { "2" = 0.1 }

[triggers.hook]
type = "http"
path = "/hook"
function = "orders:live"
"#;
    let config = ok(good, Format::Toml);
    let orders = &config.functions["orders"];
    assert_eq!(
        orders.timeout_of(orders.versions.get("1")),
        Duration::from_secs(2)
    );
    // A version inherits what it does not set: here the function's timeout.
    assert_eq!(
        orders.timeout_of(orders.versions.get("2")),
        Duration::from_secs(5)
    );
    assert_eq!(orders.aliases["live"].routing["2"], 0.1);
    assert_eq!(config.triggers["hook"].function_name(), "orders");
    assert_eq!(config.triggers["hook"].qualifier(), Some("live"));

    let bad = r#"
[functions.orders]
target = { type = "http", endpoint = "http://127.0.0.1:9/latest" }

[functions.orders.versions.1]
target = { type = "http", endpoint = "ftp://127.0.0.1:9/v1" }
timeout = "901s"

[functions.orders.versions.01]
target = { type = "http", endpoint = "http://127.0.0.1:9/v01" }

[functions.orders.aliases.live]
version = "3"
routing = { "1" = 1.5, "4" = 0.2 }

[functions.orders.aliases.half]
version = "1"
routing = { "1" = 0.5 }

[functions.orders.aliases.7]
version = "1"

[triggers.hook]
type = "http"
path = "/hook"
function = "orders:canary"
"#;
    let found = errors(bad, Format::Toml, "v.toml", &no_env());
    let expected = [
        "v.toml:6: functions.orders.versions.1.target.endpoint: unsupported scheme `ftp`; expected http:// or https://",
        "v.toml:7: functions.orders.versions.1.timeout: must be greater than 0 and at most 900s",
        "v.toml:9: functions.orders.versions.01: invalid version \"01\": versions are numbered 1, 2, … (a positive integer without leading zeros)",
        "v.toml:13: functions.orders.aliases.live.version: unknown version \"3\" (declared: 01, 1)",
        "v.toml:14: functions.orders.aliases.live.routing.1: weight must be between 0 and 1",
        "v.toml:14: functions.orders.aliases.live.routing.4: unknown version \"4\" (declared: 01, 1)",
        "v.toml:18: functions.orders.aliases.half.routing.1: is the alias's own version; route to another version",
        "v.toml:20: functions.orders.aliases.7: alias \"7\" looks like a version number; give it a name",
        "v.toml:26: triggers.hook.function: function \"orders\" has no version or alias \"canary\"",
    ];
    assert_eq!(found, expected);

    let latest = r#"
[functions.f]
target = { type = "http", endpoint = "http://127.0.0.1:9/" }
[functions.f.versions."$LATEST"]
target = { type = "http", endpoint = "http://127.0.0.1:9/" }
[functions.f.aliases."$LATEST"]
version = "$LATEST"
[functions.f.aliases.split]
version = "$LATEST"
routing = { "$LATEST" = 0.5 }
"#;
    let found = errors(latest, Format::Toml, "l.toml", &no_env());
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found[0].contains("versions.\"$LATEST\": `$LATEST` is reserved"),
        "{found:?}"
    );
    assert!(
        found[1].contains("aliases.\"$LATEST\": `$LATEST` is reserved"),
        "{found:?}"
    );
    assert!(
        found[2].contains("routing.\"$LATEST\": routing goes to published versions only"),
        "{found:?}"
    );

    let sum = r#"
[functions.f]
target = { type = "http", endpoint = "http://127.0.0.1:9/" }
[functions.f.versions.1]
target = { type = "http", endpoint = "http://127.0.0.1:9/1" }
[functions.f.versions.2]
target = { type = "http", endpoint = "http://127.0.0.1:9/2" }
[functions.f.versions.3]
target = { type = "http", endpoint = "http://127.0.0.1:9/3" }
[functions.f.aliases.split]
version = "1"
routing = { "2" = 0.6, "3" = 0.5 }
"#;
    let found = errors(sum, Format::Toml, "s.toml", &no_env());
    assert_eq!(
        found,
        ["s.toml:12: functions.f.aliases.split.routing: weights sum to 1.1; the sum must be at most 1"]
    );
}

#[test]
fn redis_trigger_settings_are_validated_where_they_are_written() {
    let toml = r#"
[functions.a]
target = { type = "http", endpoint = "http://x" }

[triggers.r]
type = "redis"
function = "a"
url = "redis://cache:6379"
stream = "jobs"
starting_position = "latest"
starting_timestamp = "2026-01-01T00:00:00Z"
batch_window = "301s"
maximum_concurrency = 0
visibility_timeout = "500ms"
max_record_age = "59s"
"#;
    let found = errors(toml, Format::Toml, "r.toml", &no_env());
    assert_eq!(
        found,
        [
            "r.toml:11: triggers.r.starting_timestamp: only allowed with starting_position = \"at_timestamp\"",
            "r.toml:12: triggers.r.batch_window: must be between 0s and 5m",
            "r.toml:13: triggers.r.maximum_concurrency: must be between 1 and 1000",
            "r.toml:14: triggers.r.visibility_timeout: must be between 1s and 12h",
            "r.toml:14: triggers.r.visibility_timeout: must exceed the function's timeout (3s), or entries still being processed are claimed and delivered again; unset, it is the timeout plus 60s",
            "r.toml:15: triggers.r.max_record_age: must be between 1m and 7days",
        ]
    );
    // Any version may run the entries: the longest timeout counts.
    let short = r#"
[functions.a]
target = { type = "http", endpoint = "http://x" }
timeout = "10s"

[functions.a.versions.1]
target = { type = "http", endpoint = "http://x/v1" }
timeout = "30s"

[triggers.r]
type = "redis"
function = "a"
url = "redis://cache:6379"
stream = "jobs"
visibility_timeout = "20s"
"#;
    assert_eq!(
        errors(short, Format::Toml, "v.toml", &no_env()),
        ["v.toml:15: triggers.r.visibility_timeout: must exceed the function's timeout (30s), or entries still being processed are claimed and delivered again; unset, it is the timeout plus 60s"]
    );
    let config = ok(
        r#"
[functions.a]
target = { type = "http", endpoint = "http://x" }
timeout = "20s"

[triggers.r]
type = "redis"
function = "a"
url = "redis://cache:6379"
stream = "jobs"
on_failure = { type = "log", name = "failed" }
"#,
        Format::Toml,
    );
    let TriggerConfig::Redis(redis) = &config.triggers["r"] else {
        panic!("a redis trigger");
    };
    assert_eq!(redis.consumer_group("r"), "impulse-r");
    let shared_group = r#"
[functions.a]
target = { type = "http", endpoint = "http://x" }

[triggers.r1]
type = "redis"
function = "a"
url = "redis://cache:6379"
stream = "jobs"
group = "workers"

[triggers.r2]
type = "redis"
function = "a"
url = "redis://cache"
stream = "jobs"
group = "workers"
"#;
    assert_eq!(
        errors(shared_group, Format::Toml, "g.toml", &no_env()),
        ["g.toml:17: triggers.r2.group: \"workers\" on stream \"jobs\" is also read by triggers.r1; each trigger needs a group of its own, or they split the entries"]
    );
    assert_eq!(redis.retry_limit(), Some(RETRIES_WITH_DESTINATION));
    assert_eq!(redis.maximum_concurrency, 1);
    assert_eq!(redis.batch_window, Duration::ZERO);
    assert_eq!(
        redis.visibility_timeout_for(Duration::from_secs(20)),
        Duration::from_secs(80),
        "the function's timeout plus 60s"
    );
}

#[test]
fn cluster_limits_need_the_redis_queue() {
    let toml = r#"
[limits]
scope = "cluster"
lease_time = "500ms"
"#;
    assert_eq!(
        errors(toml, Format::Toml, "x.toml", &no_env()),
        [
            "x.toml:3: limits.scope: scope \"cluster\" requires the Redis queue ([queue] backend = \"redis\" with [queue.redis]), which the instances of the cluster share",
            "x.toml:4: limits.lease_time: must be between 1s and 10m",
        ]
    );
    let config = ok(
        r#"
[limits]
scope = "cluster"
on_redis_unavailable = "local"

[queue]
backend = "redis"
redis = { url = "redis://127.0.0.1:6379" }
"#,
        Format::Toml,
    );
    assert_eq!(config.limits.scope, LimitsScope::Cluster);
    assert_eq!(
        config.limits.on_redis_unavailable,
        OnRedisUnavailable::Local
    );
    assert_eq!(config.limits.lease_time, Duration::from_secs(10));
}
