//! The control plane a Lambda user reaches for besides `Invoke`: event source mappings and
//! account settings with boto3, `LogType: Tail`, and the `impulse invoke` command.

use std::process::Output;

use base64::Engine as _;
use impulse_tests::function::FunctionServer;
use impulse_tests::impulse::Impulse;
use serde_json::{json, Value};

const ADMIN_KEY_ID: &str = "AKIAIMPULSETEST00009";
const ADMIN_SECRET: &str = "sigv4-canary-admin/K7MDENG+bPxRfiCYEXAMPLEKEY";
const CI: &str = "ci-canary-token-invoke-0123456789";

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{prefix}-{nanos}")
}

fn worker() -> &'static str {
    env!("CARGO_BIN_EXE_lambda_worker")
}

#[tokio::test]
async fn boto3_reads_mappings_and_account_settings_and_tails_a_log() {
    let orders = unique("orders");
    let billing = unique("billing");
    let config = format!(
        r#"
[limits]
account_concurrency = 50

[functions.worker]
reserved_concurrency = 5
target = {{ type = "process", command = "{worker}", handler = "bootstrap" }}

[functions.other]
target = {{ type = "http", endpoint = "http://127.0.0.1:1/unused" }}

[triggers.{billing}]
type = "kafka"
function = "other"
bootstrap_servers = "127.0.0.1:9092"
topics = ["{billing}"]

[triggers.{orders}]
type = "kafka"
function = "worker"
bootstrap_servers = "127.0.0.1:9092"
topics = ["{orders}"]
batch_size = 20

[auth.access_keys.ops]
role = "admin"
access_key_id = "{ADMIN_KEY_ID}"
secret_access_key = "{ADMIN_SECRET}"
"#,
        worker = worker(),
    );
    // The Kafka triggers' consumers run against the Kafka of `scripts/services.sh up`.
    let impulse = Impulse::start(&config).await;
    let answer = impulse_tests::python::boto3_script(
        "read_control_plane.py",
        &impulse.url(""),
        (ADMIN_KEY_ID, ADMIN_SECRET),
        &["--function", "worker"],
    )
    .await;
    assert_eq!(answer["error"], Value::Null, "{answer}");

    // Page by page (one per page), in trigger-name order: billing, then orders.
    let mappings = answer["mappings"].as_array().expect("mappings");
    assert_eq!(mappings.len(), 2, "{answer}");
    assert_eq!(mappings[0]["Topics"], json!([billing]));
    let mapping = &mappings[1];
    assert_eq!(mapping["Topics"], json!([orders]));
    assert_eq!(mapping["BatchSize"], 20);
    assert_eq!(mapping["State"], "Enabled");
    assert_eq!(mapping["StartingPosition"], "LATEST");
    assert_eq!(
        mapping["FunctionArn"],
        "arn:aws:lambda:local:000000000000:function:worker"
    );
    assert_eq!(
        mapping["SelfManagedEventSource"]["Endpoints"]["KAFKA_BOOTSTRAP_SERVERS"],
        json!(["127.0.0.1:9092"])
    );
    // boto3 parsed `LastModified` as a timestamp.
    assert!(mapping["LastModified"].as_str().is_some(), "{mapping}");
    assert_eq!(answer["mapping"], mappings[0]);
    assert_eq!(answer["for_function"], json!([mapping["UUID"]]));
    assert_eq!(
        answer["missing"][0], "ResourceNotFoundException",
        "{answer}"
    );

    let account = &answer["account"];
    assert_eq!(account["AccountLimit"]["ConcurrentExecutions"], 50);
    assert_eq!(
        account["AccountLimit"]["UnreservedConcurrentExecutions"],
        45
    );
    assert_eq!(account["AccountUsage"]["FunctionCount"], 2);

    // LogType='Tail': the worker's line of this request between Lambda's START and END.
    let invoke = &answer["invoke"];
    assert_eq!(invoke["status"], 200, "{answer}");
    let request_id = invoke["payload"]["request_id"]
        .as_str()
        .expect("request id");
    let log = invoke["log"].as_str().expect("a LogResult");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines[0],
        format!("START RequestId: {request_id} Version: $LATEST"),
        "{log}"
    );
    assert!(lines.contains(&"hello from the tail"), "{log}");
    let end = format!("END RequestId: {request_id}");
    assert!(lines.contains(&end.as_str()), "{log}");
    let report = lines.last().expect("a REPORT line");
    assert!(
        report.starts_with(&format!("REPORT RequestId: {request_id}\tDuration: ")),
        "{log}"
    );
}

#[tokio::test]
async fn the_tail_holds_only_this_requests_lines_and_http_functions_get_lambdas_lines() {
    let remote =
        FunctionServer::start(|_event: Value| async { axum::Json(json!({ "ok": true })) }).await;
    let config = format!(
        r#"
[functions.worker]
target = {{ type = "process", command = "{worker}", handler = "bootstrap" }}

[functions.remote]
target = {{ type = "http", endpoint = "{endpoint}" }}
"#,
        worker = worker(),
        endpoint = remote.endpoint(),
    );
    let impulse = Impulse::start(&config).await;
    let client = reqwest::Client::new();
    let invoke = async |function: &str, event: Value, tail: bool| {
        let mut request = client
            .post(impulse.url(&format!("/2015-03-31/functions/{function}/invocations")))
            .body(event.to_string());
        if tail {
            request = request.header("x-amz-log-type", "Tail");
        }
        request.send().await.expect("invoke")
    };
    // An earlier invocation's line must not show in a later tail.
    let first = invoke("worker", json!({ "log": "first request" }), false).await;
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("x-amz-log-result").is_none());
    let long = "x".repeat(3000);
    let second = invoke("worker", json!({ "log": long }), true).await;
    assert_eq!(second.status(), 200);
    let encoded = second
        .headers()
        .get("x-amz-log-result")
        .expect("X-Amz-Log-Result")
        .to_str()
        .expect("ascii")
        .to_owned();
    let log = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64");
    let log = String::from_utf8(log).expect("utf-8");
    assert!(log.contains(&long), "{log}");
    assert!(!log.contains("first request"), "{log}");
    assert!(log.len() <= 4096, "{}", log.len());

    // A function error still carries its tail.
    let failed = invoke("worker", json!({ "fail": true }), true).await;
    assert_eq!(failed.headers()["x-amz-function-error"], "Unhandled");
    assert!(failed.headers().get("x-amz-log-result").is_some());

    // An HTTP function has no log here: Lambda's three lines only.
    let remote = invoke("remote", json!({}), true).await;
    assert_eq!(remote.status(), 200);
    let log = base64::engine::general_purpose::STANDARD
        .decode(remote.headers()["x-amz-log-result"].as_bytes())
        .expect("base64");
    let log = String::from_utf8(log).expect("utf-8");
    let kinds: Vec<&str> = log
        .lines()
        .map(|line| line.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["START", "END", "REPORT"], "{log}");

    // Only `Tail` asks for a tail; other values are `None`.
    let untailed = client
        .post(impulse.url("/2015-03-31/functions/worker/invocations"))
        .header("x-amz-log-type", "tail")
        .body("{}")
        .send()
        .await
        .expect("invoke");
    assert_eq!(untailed.status(), 200);
    assert!(untailed.headers().get("x-amz-log-result").is_none());
}

#[tokio::test]
async fn mappings_and_account_settings_need_a_reading_role() {
    const ADMIN: &str = "admin-canary-token-0123456789";
    const READER: &str = "reader-canary-token-0123456789";
    let config = format!(
        r#"
[functions.echo]
target = {{ type = "http", endpoint = "http://127.0.0.1:1/unused" }}

[auth.tokens.admin]
role = "admin"
token = "{ADMIN}"

[auth.tokens.reader]
role = "read-only"
token = "{READER}"

[auth.tokens.ci]
role = "invoker"
token = "{CI}"
"#
    );
    let impulse = Impulse::start(&config).await;
    let client = reqwest::Client::new();
    let missing = "/2015-03-31/event-source-mappings/00000000-0000-0000-0000-000000000000";
    for path in [
        "/2015-03-31/event-source-mappings/",
        "/2015-03-31/event-source-mappings/?FunctionName=echo",
        "/2016-08-19/account-settings/",
        missing,
    ] {
        for (who, token, status, error_type) in [
            (
                "nobody",
                None,
                401,
                Some("MissingAuthenticationTokenException"),
            ),
            ("an invoker", Some(CI), 403, Some("AccessDeniedException")),
            ("a reader", Some(READER), 200, None),
            ("an admin", Some(ADMIN), 200, None),
        ] {
            let mut request = client.get(impulse.url(path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("request");
            let (status, error_type) = if path == missing && status == 200 {
                (404, Some("ResourceNotFoundException"))
            } else {
                (status, error_type)
            };
            assert_eq!(response.status(), status, "{who} {path}");
            assert_eq!(
                response
                    .headers()
                    .get("x-amzn-errortype")
                    .and_then(|v| v.to_str().ok()),
                error_type,
                "{who} {path}"
            );
            if status == 200 && path.contains("event-source-mappings") {
                let body: Value = response.json().await.expect("JSON");
                assert_eq!(body, json!({ "EventSourceMappings": [] }));
            }
        }
    }
}

/// Runs `impulse invoke` with `args`, without a token from the environment.
async fn invoke_cli(impulse: &Impulse, args: &[&str]) -> Output {
    tokio::process::Command::new(impulse_tests::impulse::binary())
        .arg("invoke")
        .args(["--broker-url", &impulse.url("")])
        .args(args)
        .env_remove("IMPULSE_TOKEN")
        .env_remove("IMPULSE_BROKER_URL")
        .output()
        .await
        .expect("impulse invoke runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn impulse_invoke_prints_results_and_exits_by_outcome() {
    let data = tempfile::tempdir().expect("tempdir");
    let config = format!(
        r#"
[functions.worker]
target = {{ type = "process", command = "{worker}", handler = "bootstrap" }}

[auth.tokens.ci]
role = "invoker"
token = "{CI}"
"#,
        worker = worker(),
    );
    let impulse = Impulse::start(&config).await;
    let token = ["--token", CI];

    // The result on stdout.
    let out = invoke_cli(
        &impulse,
        &[&token[..], &["worker", "--payload", r#"{"echo": "hi"}"#]].concat(),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).expect("JSON result");
    assert_eq!(result["echo"], "hi");

    // From a file, with the qualifier Lambda calls the unqualified function, and a tail.
    let payload = data.path().join("event.json");
    std::fs::write(&payload, r#"{"log": "from a file"}"#).expect("write the payload");
    let payload = payload.to_str().expect("utf-8 path");
    let out = invoke_cli(
        &impulse,
        &[
            &token[..],
            &[
                "worker:$LATEST",
                "--payload-file",
                payload,
                "--log-type",
                "Tail",
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("START RequestId: "), "{stderr}");
    assert!(stderr.contains("from a file"), "{stderr}");
    assert!(!text(&out.stdout).contains("from a file"));

    // A function error: its type and message on stderr, exit code 1.
    let out = invoke_cli(
        &impulse,
        &[&token[..], &["worker", "--payload", r#"{"fail": true}"#]].concat(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Handled.TestFailure"), "{stderr}");
    assert!(stderr.contains("the event asked for a failure"), "{stderr}");

    // --async: queued (202), its request id printed; the event then runs.
    let out = invoke_cli(
        &impulse,
        &[
            &token[..],
            &["worker", "--async", "--payload", r#"{"log": "queued"}"#],
        ]
        .concat(),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("202"), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).trim().is_empty());

    // --dry-run: nothing runs, 0.
    let out = invoke_cli(&impulse, &[&token[..], &["worker", "--dry-run"]].concat()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());

    // The broker's errors: exit code 3 with Lambda's error type.
    let out = invoke_cli(&impulse, &[&token[..], &["missing"]].concat()).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("404 Not Found ResourceNotFoundException"),
        "{}",
        text(&out.stderr)
    );
    let out = invoke_cli(&impulse, &["worker"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
    let out = invoke_cli(
        &impulse,
        &["worker", "--payload", "not json", "--token", CI],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("InvalidRequestContentException"),
        "{}",
        text(&out.stderr)
    );

    // The token from the environment works as --token does.
    let out = tokio::process::Command::new(impulse_tests::impulse::binary())
        .args([
            "invoke",
            "--broker-url",
            &impulse.url(""),
            "worker",
            "--dry-run",
        ])
        .env("IMPULSE_TOKEN", CI)
        .output()
        .await
        .expect("impulse invoke runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // No broker there: exit code 4.
    let nobody = format!("http://{}", impulse_tests::impulse::free_addr());
    let out = tokio::process::Command::new(impulse_tests::impulse::binary())
        .args(["invoke", "--broker-url", &nobody, "worker"])
        .env_remove("IMPULSE_TOKEN")
        .output()
        .await
        .expect("impulse invoke runs");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains(CI));
}
