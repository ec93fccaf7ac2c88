//! End to end over real sockets: HTTP triggers, the Invoke API, metrics and shutdown.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use impulse_tests::function::FunctionServer;
use impulse_tests::impulse::{Impulse, Instance};
use impulse_tests::wait::eventually;
use serde_json::{json, Value};
use tokio::sync::oneshot;

fn config(endpoint: &str, timeout: &str) -> String {
    format!(
        r#"
[functions.echo]
timeout = "{timeout}"
target = {{ type = "http", endpoint = "{endpoint}" }}

[triggers.orders]
type = "http"
function = "echo"
path = "/orders/{{id}}"
methods = ["POST", "GET"]
"#
    )
}

#[tokio::test]
async fn http_trigger_round_trip_in_function_url_format() {
    let mut function = FunctionServer::start(|_event: Value| async {
        axum::Json(json!({
            "statusCode": 201,
            "headers": { "content-type": "application/json", "x-order": "42" },
            "cookies": ["seen=1; Max-Age=60"],
            "body": "{\"created\":true}",
        }))
    })
    .await;
    let impulse = Impulse::start(&config(&function.endpoint(), "3s")).await;

    let response = reqwest::Client::new()
        .post(impulse.url("/orders/42?verbose=1&tag=a&tag=b"))
        .header("content-type", "application/json")
        .header("cookie", "session=abc")
        .header("x-multi", "one")
        .body(r#"{"qty": 1}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-order"], "42");
    assert_eq!(response.headers()["set-cookie"], "seen=1; Max-Age=60");
    assert!(response.headers().contains_key("x-amzn-requestid"));
    assert_eq!(response.text().await.expect("body"), r#"{"created":true}"#);

    let received = function.next().await;
    let event = received.event;
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["routeKey"], "$default");
    assert_eq!(event["rawPath"], "/orders/42");
    assert_eq!(event["rawQueryString"], "verbose=1&tag=a&tag=b");
    assert_eq!(
        event["queryStringParameters"],
        json!({ "verbose": "1", "tag": "a,b" })
    );
    assert_eq!(event["pathParameters"], json!({ "id": "42" }));
    assert_eq!(event["cookies"], json!(["session=abc"]));
    assert_eq!(event["headers"]["x-multi"], "one");
    assert_eq!(event["headers"]["content-type"], "application/json");
    assert_eq!(event["body"], r#"{"qty": 1}"#);
    assert_eq!(event["isBase64Encoded"], false);
    assert_eq!(event["requestContext"]["http"]["method"], "POST");
    assert_eq!(event["requestContext"]["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(event["requestContext"]["apiId"], "orders");
    let request_id = event["requestContext"]["requestId"]
        .as_str()
        .expect("request id");
    assert_eq!(
        received.headers["lambda-runtime-aws-request-id"],
        request_id
    );
}

#[tokio::test]
async fn http_trigger_maps_plain_json_errors_and_unknown_paths() {
    let function = FunctionServer::start(|event: Value| async move {
        let body = event["body"].as_str().unwrap_or_default().to_owned();
        if body.contains("fail") {
            (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response()
        } else {
            axum::Json(json!({ "echo": body })).into_response()
        }
    })
    .await;
    let impulse = Impulse::start(&config(&function.endpoint(), "3s")).await;
    let client = reqwest::Client::new();

    // JSON without statusCode: 200, application/json, the JSON as the body.
    let ok = client
        .post(impulse.url("/orders/1"))
        .body("hi")
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["content-type"], "application/json");
    assert_eq!(
        ok.json::<Value>().await.expect("json"),
        json!({ "echo": "hi" })
    );

    // A function error is a 502, as on a function URL.
    let failed = client
        .post(impulse.url("/orders/1"))
        .body("fail")
        .send()
        .await
        .expect("request");
    assert_eq!(failed.status(), 502);

    let missing = client
        .post(impulse.url("/nowhere"))
        .send()
        .await
        .expect("request");
    assert_eq!(missing.status(), 404);

    let wrong_method = client
        .delete(impulse.url("/orders/1"))
        .send()
        .await
        .expect("request");
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(wrong_method.headers()["allow"], "POST, GET");

    let too_big = client
        .post(impulse.url("/orders/1"))
        .body(vec![b'x'; 6 * 1024 * 1024 + 1])
        .send()
        .await
        .expect("request");
    assert_eq!(too_big.status(), 413);
}

#[tokio::test]
async fn invoke_api_request_response() {
    let function = FunctionServer::start(|event: Value| async move {
        if event["fail"] == json!(true) {
            (
                [("x-amz-function-error", "Unhandled")],
                axum::Json(json!({ "errorType": "Oops", "errorMessage": "asked to fail" })),
            )
                .into_response()
        } else {
            axum::Json(json!({ "got": event })).into_response()
        }
    })
    .await;
    let impulse = Impulse::start(&config(&function.endpoint(), "3s")).await;
    let client = reqwest::Client::new();
    let invoke = |name: &str| impulse.url(&format!("/2015-03-31/functions/{name}/invocations"));

    let ok = client
        .post(invoke("echo"))
        .header("x-amz-invocation-type", "RequestResponse")
        .body(r#"{"n": 1}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-amz-executed-version"], "$LATEST");
    assert!(!ok.headers().contains_key("x-amz-function-error"));
    assert_eq!(
        ok.json::<Value>().await.expect("json"),
        json!({ "got": { "n": 1 } })
    );

    // A full ARN names the function too.
    let arn = client
        .post(invoke(
            "arn:aws:lambda:us-east-1:123456789012:function:echo",
        ))
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(arn.status(), 200);

    let failed = client
        .post(invoke("echo"))
        .body(r#"{"fail": true}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(failed.status(), 200);
    assert_eq!(failed.headers()["x-amz-function-error"], "Unhandled");
    assert_eq!(
        failed.json::<Value>().await.expect("json"),
        json!({ "errorType": "Oops", "errorMessage": "asked to fail" })
    );

    let missing = client
        .post(invoke("nope"))
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["x-amzn-errortype"],
        "ResourceNotFoundException"
    );
    let body: Value = missing.json().await.expect("json");
    assert_eq!(body["Type"], "User");
    assert_eq!(
        body["Message"],
        "Function not found: arn:aws:lambda:local:000000000000:function:nope"
    );

    let not_json = client
        .post(invoke("echo"))
        .body("{oops")
        .send()
        .await
        .expect("request");
    assert_eq!(not_json.status(), 400);
    assert_eq!(
        not_json.headers()["x-amzn-errortype"],
        "InvalidRequestContentException"
    );

    // Invalid UTF-8 inside a string is not JSON either.
    let not_utf8 = client
        .post(invoke("echo"))
        .body(b"{\"name\": \"caf\xe9\"}".to_vec())
        .send()
        .await
        .expect("request");
    assert_eq!(not_utf8.status(), 400);
    assert_eq!(
        not_utf8.headers()["x-amzn-errortype"],
        "InvalidRequestContentException"
    );
    let body: Value = not_utf8.json().await.expect("json");
    assert!(
        body["Message"]
            .as_str()
            .is_some_and(|m| m.contains("invalid UTF-8 at byte 13")),
        "{body}"
    );

    // Lambda API operations Impulse does not implement are named as such, so an SDK can
    // tell what happened.
    for (method, path) in [
        (reqwest::Method::PATCH, "/2015-03-31/functions/echo"),
        (reqwest::Method::GET, "/2015-03-31/functions/echo/policy"),
        (reqwest::Method::GET, "/2017-03-31/tags/arn"),
    ] {
        let response = client
            .request(method.clone(), impulse.url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 400, "{method} {path}");
        assert_eq!(
            response.headers()["x-amzn-errortype"],
            "UnknownOperationException",
            "{method} {path}"
        );
    }

    // Write operations are refused: the configuration file is the source of truth.
    for (method, path) in [
        (reqwest::Method::DELETE, "/2015-03-31/functions/echo"),
        (reqwest::Method::POST, "/2015-03-31/functions"),
        (reqwest::Method::POST, "/2015-03-31/functions/echo/versions"),
    ] {
        let response = client
            .request(method.clone(), impulse.url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 403, "{method} {path}");
        assert_eq!(
            response.headers()["x-amzn-errortype"],
            "AccessDeniedException",
            "{method} {path}"
        );
    }

    let dry_run = client
        .post(invoke("echo"))
        .header("x-amz-invocation-type", "DryRun")
        .send()
        .await
        .expect("request");
    assert_eq!(dry_run.status(), 204);
}

#[tokio::test]
async fn invoke_api_times_out_like_lambda() {
    let function = FunctionServer::start(|_event: Value| async {
        // Longer than the function's 1 s timeout; Impulse must give up first.
        tokio::time::sleep(Duration::from_secs(30)).await;
        "late"
    })
    .await;
    let impulse = Impulse::start(&config(&function.endpoint(), "1s")).await;
    let response = reqwest::Client::new()
        .post(impulse.url("/2015-03-31/functions/echo/invocations"))
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-amz-function-error"], "Unhandled");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["errorType"], "Sandbox.Timedout");
    let message = body["errorMessage"].as_str().expect("message");
    assert!(
        message.ends_with("Task timed out after 1.00 seconds"),
        "{message}"
    );
}

#[tokio::test]
async fn unreachable_function_is_a_service_error() {
    let closed = impulse_tests::impulse::free_addr();
    let impulse = Impulse::start(&config(&format!("http://{closed}/"), "3s")).await;
    let response = reqwest::Client::new()
        .post(impulse.url("/2015-03-31/functions/echo/invocations"))
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-amzn-errortype"], "ServiceException");
    assert_eq!(
        response.json::<Value>().await.expect("json")["Type"],
        "Service"
    );
}

#[tokio::test]
async fn metrics_health_and_readiness() {
    let function = FunctionServer::start(|_event: Value| async { axum::Json(json!({})) }).await;
    let impulse = Impulse::start(&config(&function.endpoint(), "3s")).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let ok = client
            .post(impulse.url("/2015-03-31/functions/echo/invocations"))
            .body("{}")
            .send()
            .await
            .expect("request");
        assert_eq!(ok.status(), 200);
    }
    let health = client
        .get(impulse.admin_url("/healthz"))
        .send()
        .await
        .expect("request");
    assert_eq!(health.status(), 200);
    let ready = client
        .get(impulse.admin_url("/readyz"))
        .send()
        .await
        .expect("request");
    assert_eq!(ready.status(), 200);
    let metrics = client
        .get(impulse.admin_url("/metrics"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(
            r#"impulse_invocations_total{function="echo",version="$LATEST",trigger="invoke",outcome="success"} 3"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"impulse_invocation_duration_seconds_bucket{function="echo",version="$LATEST",le="0.5"}"#),
        "histogram buckets must be exported, not a summary:\n{metrics}"
    );
    assert!(metrics.contains(
        r#"impulse_invocation_duration_seconds_count{function="echo",version="$LATEST"} 3"#
    ));
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let (entered_tx, entered_rx) = oneshot::channel::<()>();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let entered = std::sync::Mutex::new(Some(entered_tx));
    let release = std::sync::Arc::new(tokio::sync::Mutex::new(Some(release_rx)));
    let function = FunctionServer::start(move |_event: Value| {
        if let Some(tx) = entered.lock().expect("lock").take() {
            tx.send(()).ok();
        }
        let release = release.clone();
        async move {
            if let Some(rx) = release.lock().await.take() {
                rx.await.ok();
            }
            axum::Json(json!({ "finished": true }))
        }
    })
    .await;
    let mut impulse = Impulse::start(&config(&function.endpoint(), "30s")).await;
    let url = impulse.url("/2015-03-31/functions/echo/invocations");
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .body("{}")
            .send()
            .await
            .expect("request")
    });
    entered_rx.await.expect("the function received the request");

    impulse.terminate();
    // While draining, readiness fails so load balancers stop sending.
    let client = reqwest::Client::new();
    eventually(
        "readiness to go down",
        Duration::from_secs(5),
        async || match client.get(impulse.admin_url("/readyz")).send().await {
            Ok(ready) if ready.status() == 503 => Ok(()),
            Ok(ready) => Err(format!("/readyz answered {}", ready.status())),
            Err(e) => Err(e.to_string()),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    release_tx.send(()).expect("the function waits for release");
    let response = in_flight.await.expect("join");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({ "finished": true })
    );
    let status = impulse.wait(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        impulse.logs()
    );
}

/// Opens `n` connections to `addr` that each send half a request header, then nothing.
async fn half_headers(addr: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt as _;
    let addr = addr.trim_start_matches("http://").trim_end_matches('/');
    let mut connections = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"POST /2015-03-31/functions/echo/invocations HTTP/1.1\r\nHost: x\r\nX-Sl")
            .await
            .expect("write");
        connections.push(stream);
    }
    connections
}

/// The value of the sample `series` (name and labels, exactly as exported) in `/metrics`.
async fn sample(impulse: &Impulse, series: &str) -> Option<f64> {
    let text = reqwest::get(impulse.admin_url("/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_never_hold_up_shutdown() {
    use tokio::io::AsyncReadExt as _;
    let function = FunctionServer::start(|event: Value| async move { axum::Json(event) }).await;
    // `start_in` writes `[server]` first: `server` lines land in it.
    let start = async |instance: &Instance, server: &str| {
        let config = format!(
            "{server}\n[queue]\ndata_dir = {:?}\n{}",
            instance.data_dir(),
            config(&function.endpoint(), "30s")
        );
        Impulse::start_in(instance, &config).await
    };

    // A header must arrive within header_read_timeout: 300 slowloris connections are closed.
    let instance = Instance::new();
    let impulse = start(&instance, r#"header_read_timeout = "1s""#).await;
    let slow = half_headers(&impulse.url(""), 300).await;
    let closed = futures::future::join_all(slow.into_iter().map(|mut stream| async move {
        let mut buf = [0u8; 256];
        // EOF (or a reset) once the server gives up on the header.
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }));
    tokio::time::timeout(Duration::from_secs(30), closed)
        .await
        .expect("every slow connection is closed by the server");
    let timed_out = r#"impulse_http_connections_timed_out_total{listener="server",reason="header_read_timeout"}"#;
    eventually(
        "the timeouts to be counted",
        Duration::from_secs(10),
        async || match sample(&impulse, timed_out).await {
            Some(n) if n >= 300.0 => Ok(()),
            other => Err(format!("{timed_out} = {other:?}")),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    drop(impulse);

    // At shutdown they are dropped after a second, not waited for until the grace period (10 s
    // here) ends; the header timeout is long enough not to close them first.
    let instance = Instance::new();
    let mut impulse = start(&instance, r#"header_read_timeout = "300s""#).await;
    let _slow = half_headers(&impulse.url(""), 300).await;
    let open = r#"impulse_http_connections{listener="server"}"#;
    eventually(
        "the slow connections to be open",
        Duration::from_secs(10),
        async || match sample(&impulse, open).await {
            Some(n) if n >= 300.0 => Ok(()),
            other => Err(format!("{open} = {other:?}")),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    impulse.terminate();
    let status = impulse.wait(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        impulse.logs()
    );
}

#[tokio::test]
async fn shutdown_stops_runtime_workers_as_lambda_does() {
    // A `lambda_runtime` worker, warm and polling `/next` when the broker stops.
    let config = format!(
        r#"
[functions.worker]
target = {{ type = "process", command = "{}", handler = "bootstrap" }}
"#,
        env!("CARGO_BIN_EXE_lambda_worker")
    );
    let mut impulse = Impulse::start_with_env(&config, &[("RUST_LOG", "debug")]).await;
    let response = reqwest::Client::new()
        .post(impulse.url("/2015-03-31/functions/worker/invocations"))
        .body("{}")
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.status(), 200);
    impulse.terminate();
    let status = impulse.wait(Duration::from_secs(10)).await;
    let logs = impulse.logs();
    assert!(status.success(), "exit status {status}:\n{logs}");
    // The worker got SIGTERM while its `/next` was pending, not an answer that its runtime
    // client cannot handle.
    assert!(logs.contains("Execution environment exited"), "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
}

#[tokio::test]
async fn the_callers_client_context_reaches_both_kinds_of_function() {
    use base64::Engine as _;
    let mut function = FunctionServer::start(|event: Value| async move { axum::Json(event) }).await;
    let config = format!(
        r#"
[functions.echo]
target = {{ type = "http", endpoint = "{}" }}

[functions.worker]
target = {{ type = "process", command = "{}", handler = "bootstrap" }}
"#,
        function.endpoint(),
        env!("CARGO_BIN_EXE_lambda_worker")
    );
    let impulse = Impulse::start(&config).await;
    let client = reqwest::Client::new();
    // What the AWS SDKs send: base64 of the JSON.
    let context = json!({
        "client": {
            "installation_id": "i-1",
            "app_title": "shop",
            "app_version_name": "1.2",
            "app_version_code": "12",
            "app_package_name": "com.example.shop"
        },
        "custom": { "cart": "42" },
        "env": { "locale": "fr" }
    });
    let encoded = base64::engine::general_purpose::STANDARD.encode(context.to_string());
    let invoke = |name: &str, body: &'static str, header: &str| {
        client
            .post(impulse.url(&format!("/2015-03-31/functions/{name}/invocations")))
            .header("x-amz-client-context", header)
            .body(body)
            .send()
    };

    let response = invoke("echo", "{}", &encoded).await.expect("invoke");
    assert_eq!(response.status(), 200);
    let received = function.next().await;
    let header = received.headers["lambda-runtime-client-context"]
        .to_str()
        .expect("ascii");
    assert_eq!(
        serde_json::from_str::<Value>(header).expect("JSON"),
        context
    );

    // A `lambda_runtime` function reads it as `context.client_context`.
    let response = invoke("worker", r#"{"context": true}"#, &encoded)
        .await
        .expect("invoke");
    assert_eq!(response.status(), 200);
    let result: Value = response.json().await.expect("json");
    assert_eq!(
        result["context"]["client_context"]["custom"]["cart"], "42",
        "{result}"
    );
    assert_eq!(
        // lambda_runtime writes its fields back in camelCase.
        result["context"]["client_context"]["client"]["appTitle"],
        "shop"
    );

    for bad in ["not base64!", "W10=" /* [] */] {
        let response = invoke("echo", "{}", bad).await.expect("invoke");
        assert_eq!(response.status(), 400, "{bad}");
        assert_eq!(
            response.headers()["x-amzn-errortype"],
            "InvalidRequestContentException"
        );
    }
}
