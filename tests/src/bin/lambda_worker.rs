//! A Lambda function built on the official `lambda_runtime` crate, run by `process` targets in
//! tests and benchmarks. Its handler does what the event asks:
//!
//! | event | result |
//! |---|---|
//! | `{"echo": x}` | `{"echo": x, "pid": …}` |
//! | `{"fail": true}` | a function error of type `Handled.TestFailure` |
//! | `{"sleep_ms": n}` | sleeps n ms first (combines with the others) |
//! | `{"hold_until_exists": "path"}` | waits until the file exists first (combines with the others) |
//! | `{"crash": true}` | `std::process::exit(3)` |
//! | `{"pid": true}` | `{"pid": …}` |
//! | `{"context": true}` | the invocation context and the Lambda environment variables |
//! | `{"log": "text"}` | prints `text` to stdout |
//! | `{"env": ["NAME", …]}` | `{"env": {"NAME": value or null, …}}`: any variables, by name |
//!
//! Every result also carries `pid` and `request_id`.
//!
//! Harness mode: with `LAMBDA_WORKER_REPORT_TO=<host:port>` set, it does not run the runtime
//! at all; it connects there, writes its `AWS_LAMBDA_RUNTIME_API` and a newline, and waits for
//! the connection to close. A test then plays the worker itself over the Runtime API.

use std::io::{Read, Write};
use std::time::{Duration, UNIX_EPOCH};

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::{json, Value};

/// The variables `{"context": true}` reports.
const REPORTED_VARIABLES: &[&str] = &[
    "AWS_LAMBDA_RUNTIME_API",
    "_HANDLER",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_EXECUTION_ENV",
    "LAMBDA_TASK_ROOT",
    "TZ",
    "GREETING",
    "CARGO_MANIFEST_DIR",
];

fn main() -> Result<(), lambda_runtime::Error> {
    if let Ok(report_to) = std::env::var("LAMBDA_WORKER_REPORT_TO") {
        return report(&report_to);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(lambda_runtime::run(service_fn(handle)))
}

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
    let (event, context) = event.into_parts();
    if let Some(ms) = event.get("sleep_ms").and_then(Value::as_u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(path) = event.get("hold_until_exists").and_then(Value::as_str) {
        // The test releases the call from another process: the file's existence is the only
        // signal, so it is looked at until it appears.
        while !std::path::Path::new(path).exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    if event.get("crash") == Some(&Value::Bool(true)) {
        eprintln!("crashing as asked");
        std::process::exit(3);
    }
    if event.get("fail") == Some(&Value::Bool(true)) {
        return Err(Diagnostic {
            error_type: "Handled.TestFailure".to_owned(),
            error_message: "the event asked for a failure".to_owned(),
        });
    }
    if let Some(line) = event.get("log").and_then(Value::as_str) {
        println!("{line}");
    }
    let mut result = json!({ "pid": std::process::id(), "request_id": context.request_id });
    if let Some(echo) = event.get("echo") {
        result["echo"] = echo.clone();
    }
    if let Some(names) = event.get("env").and_then(Value::as_array) {
        let variables: serde_json::Map<String, Value> = names
            .iter()
            .filter_map(Value::as_str)
            .map(|name| (name.to_owned(), Value::from(std::env::var(name).ok())))
            .collect();
        result["env"] = Value::Object(variables);
    }
    if event.get("context") == Some(&Value::Bool(true)) {
        let deadline_ms = context
            .deadline()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let variables: serde_json::Map<String, Value> = REPORTED_VARIABLES
            .iter()
            .filter_map(|name| Some((name.to_string(), Value::from(std::env::var(name).ok()?))))
            .collect();
        result["context"] = json!({
            "deadline_ms": deadline_ms,
            "invoked_function_arn": context.invoked_function_arn,
            "xray_trace_id": context.xray_trace_id,
            "client_context": context.client_context,
            "env": variables,
        });
    }
    Ok(result)
}

/// Harness mode: report the Runtime API address, then idle until the test hangs up.
fn report(report_to: &str) -> Result<(), lambda_runtime::Error> {
    let runtime_api = std::env::var("AWS_LAMBDA_RUNTIME_API")?;
    let mut stream = std::net::TcpStream::connect(report_to)?;
    stream.write_all(format!("{runtime_api}\n").as_bytes())?;
    let mut rest = Vec::new();
    // Returns when the test closes its end (or dies); a reset is as good as an end.
    match stream.read_to_end(&mut rest) {
        Ok(_) | Err(_) => Ok(()),
    }
}
