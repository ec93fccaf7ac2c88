//! Property tests of [`parse`] (TOML and YAML, with environment overrides): any text, and a
//! config with every kind of section, its real fields given random values, lines dropped, repeated or cut, never
//! panic, and every error names a line of the file (or the variable it came from).

use std::collections::HashMap;

use impulse_test_support::prop::check;
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use proptest::sample::Index;

use super::*;

/// Every kind of section once: the base the edits start from. Smaller than the full fixtures,
/// so that 100,000 cases fit CI's time; `KEYS` brings in the fields it leaves out.
const COMPACT_TOML: &str = r#"[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:8081"

[limits]
account_concurrency = 100

[functions.hook]
timeout = "30s"
max_retry_attempts = 1
target = { type = "http", endpoint = "http://localhost:9000/hook" }
rate = { per_second = 20, burst = 40 }
on_failure = { type = "log", name = "hook-dlq" }
policy = { principals = ["ci"] }

[functions.job]
target = { type = "process", command = "./bootstrap", args = ["--verbose"], memory_size = 512 }
execution_role = "media"

[execution_roles.media]
environment = { KEY_ID = { env = "MEDIA_KEY_ID" } }

[triggers.github]
type = "http"
function = "hook"
path = "/hooks/{id}"
methods = ["post"]
auth_type = "NONE"
cors = { allow_origins = ["https://app.example.com"], max_age = "1h" }
webhook = { scheme = "github", secret = "canary-github-secret-0123", tolerance = "5m" }

[triggers.orders]
type = "kafka"
function = "hook"
bootstrap_servers = "localhost:9092"
topics = ["orders"]
batch_size = 500
batch_window = "2s"
report_batch_item_failures = true
filter = [{ value = { type = ["order"], n = [{ numeric = [">", 0] }] } }]

[triggers.nightly]
type = "schedule"
function = "job"
expression = "cron(0 2 * * ? *)"
timezone = "Europe/Berlin"

[triggers.jobs]
type = "redis"
function = "job"
url = "redis://localhost:6379/1"
stream = "jobs"

[auth.tokens.ci]
role = "invoker"
token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

[auth.access_keys.deploy]
role = "admin"
access_key_id = "AKIAIMPULSEDEPLOY01"
secret_access_key = "canary-secret-access-key"
"#;

/// [`COMPACT_TOML`] in YAML.
const COMPACT_YAML: &str = r#"server:
  listen: 127.0.0.1:8080
  admin_listen: 127.0.0.1:8081
limits:
  account_concurrency: 100
functions:
  hook:
    timeout: 30s
    max_retry_attempts: 1
    target: {type: http, endpoint: "http://localhost:9000/hook"}
    rate: {per_second: 20, burst: 40}
    on_failure: {type: log, name: hook-dlq}
    policy: {principals: [ci]}
  job:
    target:
      type: process
      command: ./bootstrap
      args: [--verbose]
      memory_size: 512
    execution_role: media
execution_roles:
  media:
    environment:
      KEY_ID: {env: MEDIA_KEY_ID}
triggers:
  github:
    type: http
    function: hook
    path: "/hooks/{id}"
    methods: [post]
    auth_type: NONE
    cors: {allow_origins: ["https://app.example.com"], max_age: 1h}
    webhook: {scheme: github, secret: canary-github-secret-0123, tolerance: 5m}
  orders:
    type: kafka
    function: hook
    bootstrap_servers: localhost:9092
    topics: [orders]
    batch_size: 500
    batch_window: 2s
    report_batch_item_failures: true
    filter:
      - value: {type: [order], n: [{numeric: [">", 0]}]}
  nightly:
    type: schedule
    function: job
    expression: "cron(0 2 * * ? *)"
    timezone: Europe/Berlin
  jobs:
    type: redis
    function: job
    url: "redis://localhost:6379/1"
    stream: jobs
auth:
  tokens:
    ci:
      role: invoker
      token_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  access_keys:
    deploy:
      role: admin
      access_key_id: AKIAIMPULSEDEPLOY01
      secret_access_key: canary-secret-access-key
"#;

/// Longest generated text: a config's size is capped at load (`MAX_CONFIG_BYTES`), and what
/// a property needs is shapes, not volume.
const MAX_TEXT: usize = 8192;

#[test]
fn any_text_parses_or_fails_with_located_errors() {
    let text = prop_oneof![
        ".{0,400}",
        // Config-shaped characters, so that more inputs get past the tokenizer.
        "[\\[\\]{}a-z_.=:\"'#\\- \n0-9,]{0,400}",
        proptest::collection::vec(any::<u8>(), 0..400)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
    ];
    check(
        "config::any_text",
        (text, any::<bool>()),
        |(text, yaml)| {
            let format = if yaml { Format::Yaml } else { Format::Toml };
            assert_located(&text, format, &HashMap::new())
        },
    );
}

#[test]
fn the_bases_are_valid_and_equal() {
    let toml = parse(COMPACT_TOML, Format::Toml, "t", &HashMap::new());
    let yaml = parse(COMPACT_YAML, Format::Yaml, "t", &HashMap::new());
    match (toml, yaml) {
        (Ok(toml), Ok(yaml)) => assert_eq!(toml, yaml),
        (toml, yaml) => panic!("{toml:?}\n{yaml:?}"),
    }
}

/// Regression (found by `any_text_parses_or_fails_with_located_errors`): a document that is not
/// a table had no line.
#[test]
fn a_document_that_is_not_a_table_is_reported_where_it_starts() {
    for (text, format, line) in [
        ("0", Format::Yaml, 1),
        ("# a comment\ns", Format::Yaml, 2),
        ("\n[1, 2]\n", Format::Yaml, 2),
    ] {
        let errors = parse(text, format, "t", &HashMap::new()).expect_err("not a table");
        assert!(errors.iter().all(|e| e.line == Some(line)), "{text:?}: {errors}");
    }
}

#[test]
fn mutated_toml_parses_or_fails_with_located_errors() {
    check(
        "config::mutated_toml",
        (mutated(COMPACT_TOML, Format::Toml), overrides()),
        |(text, env)| assert_located(&text, Format::Toml, &env),
    );
}

#[test]
fn mutated_yaml_parses_or_fails_with_located_errors() {
    check(
        "config::mutated_yaml",
        (mutated(COMPACT_YAML, Format::Yaml), overrides()),
        |(text, env)| assert_located(&text, Format::Yaml, &env),
    );
}

/// `parse` returns; each error names the file and a line within it, or the environment
/// variable it came from; an accepted config serialises (the schema round trip the CLI's
/// `config show` relies on).
fn assert_located(text: &str, format: Format, env: &HashMap<String, String>) -> TestCaseResult {
    // Lines as the parsers count them: YAML also breaks lines at a lone carriage return.
    let lines = 1 + text.matches('\n').count() + text.matches('\r').count()
        - text.matches("\r\n").count();
    match parse(text, format, "t", env) {
        Ok(config) => {
            prop_assert!(serde_json::to_value(&config).is_ok());
        }
        Err(errors) => {
            prop_assert!(!errors.0.is_empty());
            for error in &errors {
                if error.file.starts_with("environment variable IMPULSE_") {
                    prop_assert!(error.line.is_none());
                    continue;
                }
                prop_assert_eq!(&error.file, "t");
                let Some(line) = error.line else {
                    return Err(TestCaseError::fail(format!("no line: {error}")));
                };
                // A syntax error at the very end may point past the last line break.
                prop_assert!(
                    (1..=lines + 1).contains(&line),
                    "line {} of {}: {}",
                    line,
                    lines,
                    error
                );
            }
        }
    }
    Ok(())
}

// === generators ===

/// One edit of a fixture, applied line by line.
#[derive(Debug, Clone)]
enum Edit {
    /// Gives the line's key a new value (`key = value` or `key: value`).
    Value(Index, String),
    /// Inserts `key = value` (or `key: value`, indented like the line) before the line.
    Insert(Index, &'static str, String),
    Delete(Index),
    Repeat(Index),
    /// Cuts the text at a byte (a file truncated mid-write).
    Truncate(Index),
    /// Replaces one byte with another printable one.
    Byte(Index, char),
}

/// The fixture with one to six edits.
fn mutated(base: &'static str, format: Format) -> impl Strategy<Value = String> {
    proptest::collection::vec(edit(), 1..6).prop_map(move |edits| {
        let mut lines: Vec<String> = base.lines().map(str::to_owned).collect();
        let mut cut = None;
        for edit in edits {
            apply(&mut lines, &mut cut, edit, format);
        }
        let mut text = lines.join("\n");
        if let Some(at) = cut {
            let mut at = at.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.truncate(at);
        }
        text.truncate(floor_boundary(&text, MAX_TEXT));
        text
    })
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<Index>(), value()).prop_map(|(i, v)| Edit::Value(i, v)),
        2 => (any::<Index>(), key(), value()).prop_map(|(i, k, v)| Edit::Insert(i, k, v)),
        1 => any::<Index>().prop_map(Edit::Delete),
        1 => any::<Index>().prop_map(Edit::Repeat),
        1 => any::<Index>().prop_map(Edit::Truncate),
        1 => (any::<Index>(), proptest::char::range(' ', '~')).prop_map(|(i, c)| Edit::Byte(i, c)),
    ]
}

fn apply(lines: &mut Vec<String>, cut: &mut Option<Index>, edit: Edit, format: Format) {
    if lines.is_empty() {
        return;
    }
    let separator = match format {
        Format::Toml => " = ",
        Format::Yaml => ": ",
    };
    match edit {
        Edit::Value(i, value) => {
            let at = i.index(lines.len());
            let line = &mut lines[at];
            let split = match format {
                Format::Toml => line.find(" = ").map(|at| at + 3),
                Format::Yaml => line.find(": ").map(|at| at + 2),
            };
            if let Some(at) = split {
                line.truncate(at);
                line.push_str(&value);
            }
        }
        Edit::Insert(i, key, value) => {
            let at = i.index(lines.len());
            let indent: String = lines[at].chars().take_while(|c| *c == ' ').collect();
            lines.insert(at, format!("{indent}{key}{separator}{value}"));
        }
        Edit::Delete(i) => {
            lines.remove(i.index(lines.len()));
        }
        Edit::Repeat(i) => {
            let at = i.index(lines.len());
            let line = lines[at].clone();
            lines.insert(at, line);
        }
        Edit::Truncate(i) => *cut = Some(i),
        Edit::Byte(i, c) => {
            let at = i.index(lines.len());
            let line = &mut lines[at];
            if !line.is_empty() {
                let at = floor_boundary(line, i.index(line.len()));
                let end = at + line[at..].chars().next().map_or(0, char::len_utf8);
                line.replace_range(at..end, &c.to_string());
            }
        }
    }
}

fn floor_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Keys the model has, in any section (a key in the wrong section is a case too).
const KEYS: &[&str] = &[
    "listen", "admin_listen", "account_concurrency", "backend", "data_dir", "url", "stream",
    "timeout", "reserved_concurrency", "max_retry_attempts", "max_event_age", "target",
    "endpoint", "command", "args", "handler", "environment", "memory_size", "min_warm",
    "idle_timeout", "execution_role", "rate", "per_second", "burst", "on_success", "on_failure",
    "type", "function", "path", "methods", "invocation", "max_body_size", "auth_type", "cors",
    "webhook", "scheme", "secret", "tolerance", "expression", "timezone", "flexible_window",
    "catch_up", "catch_up_limit", "overlap", "input", "bootstrap_servers", "topics", "topic",
    "group_id", "starting_position", "starting_timestamp", "batch_size", "batch_window",
    "max_record_age", "bisect_batch_on_error", "report_batch_item_failures", "ordering",
    "attempts_topic", "librdkafka_options", "filter", "group", "role", "token", "token_sha256",
    "access_key_id", "secret_access_key", "principals", "triggers", "tls", "ca_file",
    "certificate", "key", "headers", "name", "policy",
];

fn key() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(KEYS)
}

/// Values as a config holds them: real shapes (durations, addresses, URLs, expressions, names),
/// edge numbers, and random text; quoted for both formats (a YAML flow value is TOML-like).
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        prop_oneof![Just(0u64), Just(1), Just(10_000), Just(10_001), Just(u64::MAX)]
            .prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        "[0-9]{1,20}(ms|s|m|h|d|)".prop_map(|d| format!("\"{d}\"")),
        "(-?[0-9.]{1,6}) ?(ms|s|min|h|days|µs|ns)".prop_map(|d| format!("\"{d}\"")),
        "(http|https|redis|rediss|kafka|ftp)://[a-z0-9.:@/%#?-]{0,30}".prop_map(|u| format!("\"{u}\"")),
        "[0-9.:\\[\\]a-f]{0,30}".prop_map(|a| format!("\"{a}\"")),
        "(rate|cron|at)\\([0-9a-z ?*/,#LW-]{0,30}\\)".prop_map(|e| format!("\"{e}\"")),
        "(http|process|kafka|redis|schedule|log|embedded|sync|async|NONE|AWS_IAM|admin|invoker|standard_webhooks|github|stripe|latest|earliest|key|partition)"
            .prop_map(|v| format!("\"{v}\"")),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z",
        "[^\"\\\\\n]{0,40}".prop_map(|s| format!("\"{s}\"")),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            proptest::collection::vec((key(), inner), 0..4).prop_map(|entries| {
                let entries: Vec<String> =
                    entries.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", entries.join(", "))
            }),
        ]
    })
}

/// Environment overrides the fixtures imply, with real and random values.
fn overrides() -> impl Strategy<Value = HashMap<String, String>> {
    const VARS: &[&str] = &[
        IMPULSE_LISTEN,
        IMPULSE_ADMIN_LISTEN,
        IMPULSE_DATA_DIR,
        IMPULSE_QUEUE_REDIS_URL,
        "IMPULSE_FUNCTION_HOOK_ENDPOINT",
        "IMPULSE_FUNCTION_JOB_ENDPOINT",
        "IMPULSE_TRIGGER_ORDERS_BOOTSTRAP_SERVERS",
        "IMPULSE_TRIGGER_JOBS_URL",
        "IMPULSE_TRIGGER_GITHUB_WEBHOOK_SECRET",
        "IMPULSE_AUTH_SECRET_ACCESS_KEY_DEPLOY",
        "IMPULSE_AUTH_TOKEN_CI",
        "IMPULSE_AUTH_TOKEN_NOBODY",
    ];
    let value = prop_oneof![
        "[0-9.:]{0,24}",
        "(http|redis)://[a-z0-9.:/]{0,20}",
        ".{0,24}",
    ];
    proptest::collection::hash_map(proptest::sample::select(VARS), value, 0..3).prop_map(|vars| {
        vars.into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    })
}

