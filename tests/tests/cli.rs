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

#[tokio::test]
async fn quickstart_runs_the_example_function_as_a_process() {
    // The quickstart as shipped, with this build's binary and free ports.
    let quickstart =
        std::fs::read_to_string(workspace_file("examples/quickstart.toml")).expect("read");
    let binary = impulse_tests::impulse::binary()
        .to_str()
        .expect("utf-8 path")
        .to_owned();
    let body = quickstart
        .split("[functions.hello]")
        .nth(1)
        .expect("the quickstart has a hello function")
        .replace("target/release/impulse", &binary);
    let impulse = impulse_tests::impulse::Impulse::start(&format!("[functions.hello]{body}")).await;
    let response = reqwest::Client::new()
        .post(impulse.url("/hello"))
        .body(r#"{"name": "you"}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "{}", impulse.logs());
    let greeting: serde_json::Value = response.json().await.expect("json");
    assert_eq!(greeting["message"], "Hello from Impulse!");
    assert_eq!(greeting["body"], serde_json::json!({ "name": "you" }));
    assert_eq!(greeting["path"], "/hello");
}
