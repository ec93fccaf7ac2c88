//! The command line: `validate`, `schema`, and the shipped example configuration.

use impulse_tests::impulse::cli;

fn workspace_file(path: &str) -> String {
    format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn validate_accepts_the_quickstart() {
    let out = cli(&[
        "validate",
        "--config",
        &workspace_file("examples/quickstart.toml"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 functions, 1 triggers)"));
}

#[test]
fn validate_prints_every_error_with_file_line_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        r#"[limits]
account_concurrency = 0

[functions.hello]
timeout = "forever"
target = { type = "http", endpoint = "http://127.0.0.1:9100/" }

[triggers.orders]
type = "kafka"
function = "hello"
bootstrap_servers = "127.0.0.1:9092"
topics = ["orders"]
batch_size = 0

[triggers.tick]
type = "schedule"
function = "nope"
expression = "rate(5 minute)"
"#,
    )
    .expect("write");
    let out = cli(&["validate", "--config", path.to_str().expect("utf-8 path")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "broken.toml:2: limits.account_concurrency:",
        "broken.toml:5: functions.hello.timeout:",
        "broken.toml:13: triggers.orders.batch_size: must be between 1 and 10000",
        "broken.toml:17: triggers.tick.function: unknown function \"nope\"",
        "broken.toml:18: triggers.tick.expression:",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn validate_reports_unknown_fields_in_yaml_with_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.yaml");
    std::fs::write(
        &path,
        "functions:\n  hello:\n    timeout: 3s\n    tiemout: 4s\n    target:\n      type: http\n      endpoint: http://127.0.0.1:9100/\n",
    )
    .expect("write");
    let out = cli(&["validate", "--config", path.to_str().expect("utf-8 path")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.yaml:"), "{stderr}");
    assert!(stderr.contains("tiemout"), "{stderr}");
}

#[test]
fn schema_is_json_schema_of_the_config() {
    let out = cli(&["schema"]);
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(schema["properties"]["functions"].is_object(), "{schema}");
    assert!(schema["properties"]["triggers"].is_object(), "{schema}");
}

#[test]
fn run_refuses_features_this_version_lacks_and_names_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("future.toml");
    std::fs::write(
        &path,
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[functions.worker]
target = { type = "process", command = "/bin/true" }

[triggers.orders]
type = "redis"
function = "worker"
url = "redis://127.0.0.1:6379"
stream = "orders"
"#,
    )
    .expect("write");
    let out = cli(&["run", "--config", path.to_str().expect("utf-8 path")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("functions.worker.target: process targets"),
        "{stderr}"
    );
    assert!(
        stderr.contains("triggers.orders: redis triggers"),
        "{stderr}"
    );
}
