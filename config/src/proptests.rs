//! Property tests of [`parse`] (TOML and YAML, with environment overrides): any text, and a
//! config with every kind of section, its real fields given random values, lines dropped, repeated or cut, never
//! panic, and every error names a line of the file (or the variable it came from).

use std::collections::HashMap;

use impulse_test_support::prop::{check, drawn, Draw};
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;

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

/// The YAML-specific part of [`COMPACT_TOML`]: nesting by indentation, flow and block lists and
/// maps, quoting. (What follows parsing, deserialising and validation, is the same code for both
/// formats, and the TOML property covers every section; half the text halves the time.)
const COMPACT_YAML: &str = r#"server:
  listen: 127.0.0.1:8080
functions:
  hook:
    timeout: 30s
    target: {type: http, endpoint: "http://localhost:9000/hook"}
    on_failure: {type: log, name: hook-dlq}
    policy: {principals: [ci]}
triggers:
  github:
    type: http
    function: hook
    path: "/hooks/{id}"
    methods: [post]
    webhook: {scheme: github, secret: canary-github-secret-0123, tolerance: 5m}
  orders:
    type: kafka
    function: hook
    bootstrap_servers: localhost:9092
    topics:
      - orders
    filter:
      - value: {type: [order], n: [{numeric: [">", 0]}]}
auth:
  tokens:
    ci:
      role: invoker
      token_sha256: 'f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a089'
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
    check("config::any_text", (text, any::<bool>()), |(text, yaml)| {
        let format = if yaml { Format::Yaml } else { Format::Toml };
        assert_located(&text, format, &HashMap::new())
    });
}

/// The edits start from valid configs, so that most cases are near-valid.
#[test]
fn the_bases_are_valid() {
    for (text, format) in [(COMPACT_TOML, Format::Toml), (COMPACT_YAML, Format::Yaml)] {
        if let Err(errors) = parse(text, format, "t", &HashMap::new()) {
            panic!("{errors}");
        }
    }
}

/// A document that is not a table is reported with a line too, where it starts.
#[test]
fn a_document_that_is_not_a_table_is_reported_where_it_starts() {
    for (text, format, line) in [
        ("0", Format::Yaml, 1),
        ("# a comment\ns", Format::Yaml, 2),
        ("\n[1, 2]\n", Format::Yaml, 2),
    ] {
        let errors = parse(text, format, "t", &HashMap::new()).expect_err("not a table");
        assert!(
            errors.iter().all(|e| e.line == Some(line)),
            "{text:?}: {errors}"
        );
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
    let lines =
        1 + text.matches('\n').count() + text.matches('\r').count() - text.matches("\r\n").count();
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

/// The base text with one to six edits drawn from `d`: a real key given a random value, a key
/// inserted, a line dropped or repeated, a byte changed, the text cut short (a file truncated
/// mid-write).
fn mutated(base: &'static str, format: Format) -> impl Strategy<Value = String> {
    drawn(256, move |d| {
        let mut lines: Vec<String> = base.lines().map(str::to_owned).collect();
        let mut cut = None;
        for _ in 0..1 + d.below(6) {
            edit(d, &mut lines, &mut cut, format);
        }
        let mut text = lines.join("\n");
        if let Some(at) = cut {
            text.truncate(floor_boundary(&text, at));
        }
        text.truncate(floor_boundary(&text, MAX_TEXT));
        text
    })
}

fn edit(d: &mut Draw<'_>, lines: &mut Vec<String>, cut: &mut Option<usize>, format: Format) {
    if lines.is_empty() {
        return;
    }
    let at = (usize::from(d.byte()) << 8 | usize::from(d.byte())) % lines.len();
    let (separator, split) = match format {
        Format::Toml => (" = ", lines[at].find(" = ").map(|i| i + 3)),
        Format::Yaml => (": ", lines[at].find(": ").map(|i| i + 2)),
    };
    match d.below(10) {
        0..=3 => {
            if let Some(split) = split {
                let value = value(d, 2);
                lines[at].truncate(split);
                lines[at].push_str(&value);
            }
        }
        4 | 5 => {
            let indent: String = lines[at].chars().take_while(|c| *c == ' ').collect();
            let line = format!("{indent}{}{separator}{}", d.pick(KEYS), value(d, 2));
            lines.insert(at, line);
        }
        6 => {
            lines.remove(at);
        }
        7 => {
            let line = lines[at].clone();
            lines.insert(at, line);
        }
        8 => *cut = Some(usize::from(d.byte()) * 16 + usize::from(d.byte() % 16)),
        _ => {
            let line = &mut lines[at];
            if !line.is_empty() {
                let i = floor_boundary(line, d.below(line.len()));
                let end = i + line[i..].chars().next().map_or(0, char::len_utf8);
                let c = char::from(b' ' + d.byte() % 95);
                line.replace_range(i..end, &c.to_string());
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
    "listen",
    "admin_listen",
    "account_concurrency",
    "backend",
    "data_dir",
    "url",
    "stream",
    "timeout",
    "reserved_concurrency",
    "max_retry_attempts",
    "max_event_age",
    "target",
    "endpoint",
    "command",
    "args",
    "handler",
    "environment",
    "memory_size",
    "min_warm",
    "idle_timeout",
    "execution_role",
    "rate",
    "per_second",
    "burst",
    "on_success",
    "on_failure",
    "type",
    "function",
    "path",
    "methods",
    "invocation",
    "max_body_size",
    "auth_type",
    "cors",
    "webhook",
    "scheme",
    "secret",
    "tolerance",
    "expression",
    "timezone",
    "flexible_window",
    "catch_up",
    "catch_up_limit",
    "overlap",
    "input",
    "bootstrap_servers",
    "topics",
    "topic",
    "group_id",
    "starting_position",
    "starting_timestamp",
    "batch_size",
    "batch_window",
    "max_record_age",
    "bisect_batch_on_error",
    "report_batch_item_failures",
    "ordering",
    "attempts_topic",
    "librdkafka_options",
    "filter",
    "group",
    "role",
    "token",
    "token_sha256",
    "access_key_id",
    "secret_access_key",
    "principals",
    "triggers",
    "tls",
    "ca_file",
    "certificate",
    "key",
    "headers",
    "name",
    "policy",
    "allow_origins",
    "max_age",
    "value",
];

/// Words real values are made of.
const WORDS: &[&str] = &[
    "http",
    "process",
    "kafka",
    "redis",
    "schedule",
    "log",
    "embedded",
    "sync",
    "async",
    "NONE",
    "AWS_IAM",
    "admin",
    "invoker",
    "read-only",
    "standard-webhooks",
    "github",
    "stripe",
    "latest",
    "earliest",
    "trim_horizon",
    "key",
    "partition",
    "skip",
    "all",
    "http://localhost:9000/x",
    "https://[::1]:8443/",
    "redis://localhost:6379/0",
    "rediss://u:p@h/1#insecure",
    "localhost:9092",
    "0.0.0.0:8080",
    "127.0.0.1:0",
    "[::]:80",
    "/var/lib/impulse",
    "./bootstrap",
    "rate(1 hour)",
    "rate(0 minutes)",
    "rate(5 minute)",
    "cron(0 2 * * ? *)",
    "cron(0/5 * ? * MON-FRI *)",
    "cron(0 0 L * ? *)",
    "cron(0 0 ? * 6#3 *)",
    "at(2026-01-01T00:00:00)",
    "Europe/Berlin",
    "Mars/Olympus",
    "UTC",
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "/hooks/{id}",
    "/{a}/{a}",
    "/*rest",
    "POST",
    "get",
    "TRACE",
    "*",
    "https://app.example.com",
];

/// A value as a config holds them: real words, durations with any unit, edge numbers, dates,
/// random text; lists and inline tables of them (TOML syntax; in YAML a flow value is close).
fn value(d: &mut Draw<'_>, depth: usize) -> String {
    let kinds = if depth == 0 { 8 } else { 10 };
    match d.below(kinds) {
        0 => format!("\"{}\"", d.pick(WORDS)),
        1 => format!(
            "\"{}{}\"",
            d.u64() >> (d.byte() % 64),
            d.pick(&["ms", "s", "m", "h", "d", "", " s", "min", "µs", "x"])
        ),
        2 => (d.u64() as i64 >> (d.byte() % 64)).to_string(),
        3 => d
            .pick(&[
                "0",
                "1",
                "-1",
                "10000",
                "10001",
                "18446744073709551615",
                "1e400",
                "nan",
                "inf",
            ])
            .to_owned(),
        4 => d.pick(&["true", "false"]).to_owned(),
        5 => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            d.byte() as u32 * 40,
            d.byte() % 14,
            d.byte() % 33,
            d.byte() % 25,
            d.byte() % 61,
            d.byte() % 61
        ),
        6 => format!("\"{}\"", d.string(24).replace(['"', '\\', '\n', '\r'], "")),
        7 => d.string(12),
        8 => {
            let items: Vec<String> = (0..d.below(4)).map(|_| value(d, depth - 1)).collect();
            format!("[{}]", items.join(", "))
        }
        _ => {
            let entries: Vec<String> = (0..d.below(4))
                .map(|_| format!("{} = {}", d.pick(KEYS), value(d, depth - 1)))
                .collect();
            format!("{{ {} }}", entries.join(", "))
        }
    }
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
    proptest::collection::hash_map(proptest::sample::select(VARS), value, 0..3)
        .prop_map(|vars| vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}
