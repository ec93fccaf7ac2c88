//! The example function the quickstart calls: a tiny HTTP function that greets.
//!
//! It answers a function URL event (from an HTTP trigger) with a structured HTTP response,
//! and any other event with `{"message", "event"}`. An event, or an HTTP body, containing
//! `"fail": true` makes it report a function error, to show how failures look.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// Serves the example function on `listen` until SIGTERM or SIGINT.
pub(crate) async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
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
    let http = event.pointer("/requestContext/http").cloned();
    let request_body: Option<Value> = event
        .get("body")
        .and_then(Value::as_str)
        .map(|b| serde_json::from_str(b).unwrap_or_else(|_| Value::String(b.to_owned())));
    let asked_to_fail =
        |v: Option<&Value>| v.and_then(|v| v.get("fail")) == Some(&Value::Bool(true));
    if asked_to_fail(Some(&event)) || asked_to_fail(request_body.as_ref()) {
        let error =
            json!({ "errorType": "ExampleError", "errorMessage": "Failing, as the event asked." });
        return ([("x-amz-function-error", "Unhandled")], axum::Json(error)).into_response();
    }
    let result = match http {
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
    };
    axum::Json(result).into_response()
}
