//! The example function the quickstart calls: a tiny function that greets.
//!
//! It runs in either of the two ways Impulse calls functions: as a Runtime-API worker when
//! `AWS_LAMBDA_RUNTIME_API` is set (a `process` target starts it that way), or as an HTTP
//! endpoint (`--listen`, for an `http` target). It answers a function URL event (from an HTTP
//! trigger) with a structured HTTP response, and any other event with `{"message", "event"}`.
//! An event, or an HTTP body, containing `"fail": true` makes it report a function error, to
//! show how failures look.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// Runs the example function: a Runtime-API worker when `AWS_LAMBDA_RUNTIME_API` is set,
/// otherwise an HTTP endpoint on `listen`, until SIGTERM or SIGINT.
pub(crate) async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    match std::env::var("AWS_LAMBDA_RUNTIME_API") {
        Ok(api) if !api.is_empty() => {
            tokio::select! {
                result = worker(&api) => result,
                () = crate::shutdown::signal() => Ok(()),
            }
        }
        _ => serve(listen).await,
    }
}

/// The Runtime API loop: take the next event, answer it, repeat.
async fn worker(api: &str) -> anyhow::Result<()> {
    let base = format!("http://{api}/2018-06-01/runtime");
    // The invoker's client: it builds even where the system has no CA certificates.
    let client = impulse_invoker::http::HttpFunction::default_client();
    loop {
        let next = client
            .get(format!("{base}/invocation/next"))
            .send()
            .await
            .context("the Runtime API is unreachable")?;
        if !next.status().is_success() {
            // The environment is being shut down.
            return Ok(());
        }
        let request_id = next
            .headers()
            .get("lambda-runtime-aws-request-id")
            .and_then(|v| v.to_str().ok())
            .context("no request id from the Runtime API")?
            .to_owned();
        let body = next.bytes().await?;
        let (path, payload) = match serde_json::from_slice::<Value>(&body) {
            Ok(event) => match respond(&event) {
                Ok(result) => ("response", result),
                Err(error) => ("error", error),
            },
            Err(_) => ("error", failure("InvalidEvent", "The event is not JSON.")),
        };
        client
            .post(format!("{base}/invocation/{request_id}/{path}"))
            .json(&payload)
            .send()
            .await?;
    }
}

/// Serves the example function over HTTP on `listen`.
async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "Example function listening.");
    let app = Router::new()
        .route("/", post(handle))
        .route("/{*path}", post(handle));
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::shutdown::signal())
        .await?;
    Ok(())
}

async fn handle(body: Bytes) -> Response {
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "The event is not JSON.").into_response();
    };
    match respond(&event) {
        Ok(result) => axum::Json(result).into_response(),
        Err(error) => ([("x-amz-function-error", "Unhandled")], axum::Json(error)).into_response(),
    }
}

/// The function itself: a result, or Lambda's error document.
fn respond(event: &Value) -> Result<Value, Value> {
    let http = event.pointer("/requestContext/http");
    let request_body: Option<Value> = event
        .get("body")
        .and_then(Value::as_str)
        .map(|b| serde_json::from_str(b).unwrap_or_else(|_| Value::String(b.to_owned())));
    let asked_to_fail =
        |v: Option<&Value>| v.and_then(|v| v.get("fail")) == Some(&Value::Bool(true));
    if asked_to_fail(Some(event)) || asked_to_fail(request_body.as_ref()) {
        return Err(failure("ExampleError", "Failing, as the event asked."));
    }
    Ok(match http {
        Some(http) => {
            let greeting = json!({
                "message": "Hello from Impulse!",
                "method": http.get("method"),
                "path": http.get("path"),
                "body": request_body,
            });
            json!({
                "statusCode": 200,
                "headers": { "content-type": "application/json" },
                "body": greeting.to_string(),
            })
        }
        None => json!({ "message": "Hello from Impulse!", "event": event }),
    })
}

fn failure(error_type: &str, message: &str) -> Value {
    json!({ "errorType": error_type, "errorMessage": message })
}
