//! Asynchronous invocation end to end: durable 202s, retries, destinations, crash safety,
//! limits and schedules, against the real binary (and real Redis for the redis backend).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use futures::StreamExt as _;
use impulse_tests::function::FunctionServer;
use impulse_tests::impulse::{cli, Impulse, Instance};
use impulse_tests::services;
use impulse_tests::wait::{eventually, wait_until};
use serde_json::{json, Value};

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

fn invoke_url(impulse: &Impulse, function: &str) -> String {
    impulse.url(&format!("/2015-03-31/functions/{function}/invocations"))
}

async fn invoke_event(client: &reqwest::Client, url: &str, body: String) -> String {
    let response = client
        .post(url)
        .header("x-amz-invocation-type", "Event")
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 202);
    response.headers()["x-amzn-requestid"]
        .to_str()
        .expect("ascii")
        .to_owned()
}

/// Polls `impulse dlq show` until the record of `id` is in `function`'s destination.
async fn destination_record(
    config: &std::path::Path,
    function: &str,
    which: &str,
    id: &str,
) -> Value {
    let config = config.to_str().expect("utf-8 path");
    eventually(
        &format!("the {which} record of {id}"),
        TEST_TIMEOUT,
        async || {
            let out = cli(&[
                "dlq",
                "show",
                "--config",
                config,
                "--function",
                function,
                "--destination",
                which,
                id,
            ]);
            if out.status.success() {
                Ok(serde_json::from_slice(&out.stdout).expect("the record is JSON"))
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn event_invocation_is_accepted_then_delivered_with_a_success_record() {
    let mut function =
        FunctionServer::start(|event: Value| async move { axum::Json(json!({ "seen": event })) })
            .await;
    let instance = Instance::new();
    let config = format!(
        r#"
[queue]
data_dir = {data:?}

[functions.echo]
target = {{ type = "http", endpoint = "{endpoint}" }}
on_success = {{ type = "log", name = "successes" }}
"#,
        data = instance.data_dir(),
        endpoint = function.endpoint()
    );
    let impulse = Impulse::start_in(&instance, &config).await;
    let client = reqwest::Client::new();
    let id = invoke_event(&client, &invoke_url(&impulse, "echo"), r#"{"n": 7}"#.into()).await;

    let received = function.next().await;
    assert_eq!(received.event, json!({ "n": 7 }));
    assert_eq!(
        received.headers["lambda-runtime-aws-request-id"],
        id.as_str()
    );

    let record = destination_record(&instance.config_path(), "echo", "on-success", &id).await;
    assert_eq!(record["requestContext"]["condition"], "Success");
    assert_eq!(record["requestContext"]["requestId"], id.as_str());
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 1);
    assert_eq!(record["requestPayload"], json!({ "n": 7 }));
    assert_eq!(record["responsePayload"], json!({ "seen": { "n": 7 } }));
}

#[tokio::test]
async fn failing_event_is_retried_with_the_configured_delays_then_dead_lettered() {
    let mut function = FunctionServer::start(|_event: Value| async {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({ "errorType": "Boom", "errorMessage": "always" })),
        )
    })
    .await;
    let instance = Instance::new();
    let config = format!(
        r#"
[queue]
data_dir = {data:?}

[functions.flaky]
target = {{ type = "http", endpoint = "{endpoint}" }}
max_retry_attempts = 2
retry_delay = {{ base = "300ms" }}
on_failure = {{ type = "log", name = "dlq" }}
"#,
        data = instance.data_dir(),
        endpoint = function.endpoint()
    );
    let impulse = Impulse::start_in(&instance, &config).await;
    let client = reqwest::Client::new();
    let id = invoke_event(
        &client,
        &invoke_url(&impulse, "flaky"),
        r#"{"order": 1}"#.into(),
    )
    .await;

    let mut times = Vec::new();
    for _ in 0..3 {
        let received = function.next().await;
        assert_eq!(
            received.headers["lambda-runtime-aws-request-id"],
            id.as_str()
        );
        times.push(received.at);
    }
    // Lambda's shape, scaled down: base, then twice the base. (The queue keeps due times in
    // whole milliseconds: allow one.)
    let base = Duration::from_millis(300) - Duration::from_millis(1);
    assert!(times[1] - times[0] >= base, "{:?}", times[1] - times[0]);
    assert!(times[2] - times[1] >= 2 * base, "{:?}", times[2] - times[1]);

    let record = destination_record(&instance.config_path(), "flaky", "on-failure", &id).await;
    assert_eq!(record["version"], "1.0");
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(
        record["requestContext"]["functionArn"],
        "arn:aws:lambda:local:000000000000:function:flaky:$LATEST"
    );
    assert_eq!(record["requestPayload"], json!({ "order": 1 }));
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    assert_eq!(record["responseContext"]["executedVersion"], "$LATEST");
    assert_eq!(
        record["responsePayload"],
        json!({ "errorType": "Boom", "errorMessage": "always" })
    );

    // Exactly three attempts: nothing more arrives.
    let extra = tokio::time::timeout(Duration::from_secs(2), function.next()).await;
    assert!(extra.is_err(), "a fourth attempt arrived");
}

#[tokio::test]
async fn disabled_function_sends_async_events_straight_to_its_destination() {
    let function = FunctionServer::start(|_event: Value| async { axum::Json(json!({})) }).await;
    let instance = Instance::new();
    let config = format!(
        r#"
[queue]
data_dir = {data:?}

[functions.off]
target = {{ type = "http", endpoint = "{endpoint}" }}
reserved_concurrency = 0
on_failure = {{ type = "log", name = "dlq" }}
"#,
        data = instance.data_dir(),
        endpoint = function.endpoint()
    );
    let impulse = Impulse::start_in(&instance, &config).await;
    let client = reqwest::Client::new();
    let sync = client
        .post(invoke_url(&impulse, "off"))
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(sync.status(), 429);
    assert_eq!(
        sync.json::<Value>().await.expect("json")["Reason"],
        "ReservedFunctionConcurrentInvocationLimitExceeded"
    );

    let id = invoke_event(&client, &invoke_url(&impulse, "off"), "{}".into()).await;
    let record = destination_record(&instance.config_path(), "off", "on-failure", &id).await;
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 0);
}

#[tokio::test]
async fn synchronous_overflow_gets_429_at_once() {
    let (entered_tx, mut entered_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let release = Arc::new(tokio::sync::Notify::new());
    let release_fn = release.clone();
    let function = FunctionServer::start(move |_event: Value| {
        let entered = entered_tx.clone();
        let release = release_fn.clone();
        async move {
            entered.send(()).ok();
            release.notified().await;
            axum::Json(json!({}))
        }
    })
    .await;
    let impulse = Impulse::start(&format!(
        r#"
[functions.single]
target = {{ type = "http", endpoint = "{}" }}
reserved_concurrency = 1
timeout = "30s"
"#,
        function.endpoint()
    ))
    .await;
    let client = reqwest::Client::new();
    let url = invoke_url(&impulse, "single");
    let first = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .post(url)
                .body("{}")
                .send()
                .await
                .expect("request")
                .status()
        }
    });
    entered_rx.recv().await.expect("the first call is running");

    let started = Instant::now();
    let second = client.post(&url).body("{}").send().await.expect("request");
    assert_eq!(second.status(), 429);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a sync overflow must not wait"
    );
    assert_eq!(
        second.headers()["x-amzn-errortype"],
        "TooManyRequestsException"
    );
    let body: Value = second.json().await.expect("json");
    assert_eq!(
        body["Reason"],
        "ReservedFunctionConcurrentInvocationLimitExceeded"
    );
    assert_eq!(body["Message"], "Rate Exceeded.");

    release.notify_waiters();
    assert_eq!(first.await.expect("join"), 200);
    let metrics = client
        .get(impulse.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"impulse_throttles_total{function="single",limit="concurrency"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn async_http_trigger_answers_202_after_queueing() {
    let mut function = FunctionServer::start(|_event: Value| async { axum::Json(json!({})) }).await;
    let impulse = Impulse::start(&format!(
        r#"
[functions.hook]
target = {{ type = "http", endpoint = "{}" }}

[triggers.hook]
type = "http"
function = "hook"
path = "/hook"
invocation = "async"
"#,
        function.endpoint()
    ))
    .await;
    let response = reqwest::Client::new()
        .post(impulse.url("/hook"))
        .body("payload")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.expect("json")["requestId"]
        .as_str()
        .expect("id")
        .to_owned();
    let received = function.next().await;
    assert_eq!(received.event["body"], "payload");
    assert_eq!(received.event["requestContext"]["requestId"], id.as_str());
}

#[tokio::test]
async fn schedule_at_fires_once_with_the_eventbridge_shape() {
    let mut function = FunctionServer::start(|_event: Value| async { axum::Json(json!({})) }).await;
    // Build the binary first: `at` must still be in the future once impulse has started.
    impulse_tests::impulse::binary();
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let at = at.format("%Y-%m-%dT%H:%M:%S").to_string();
    let impulse = Impulse::start(&format!(
        r#"
[functions.tick]
target = {{ type = "http", endpoint = "{}" }}

[triggers.nightly]
type = "schedule"
function = "tick"
expression = "at({at})"
input = {{ job = "report" }}
"#,
        function.endpoint()
    ))
    .await;
    let event = function.next().await.event;
    assert_eq!(event["detail-type"], "Scheduled Event");
    assert_eq!(event["source"], "aws.events");
    assert_eq!(event["time"], format!("{at}Z"));
    assert_eq!(event["detail"], json!({ "job": "report" }));
    assert!(event["id"].as_str().is_some_and(|id| !id.is_empty()));
    drop(impulse);
}

/// Sends 1,000 `Event` invocations, kills `impulse` with SIGKILL right after the last `202`,
/// restarts it on the same queue, and checks every accepted event is invoked.
async fn no_event_lost_across_kill9(queue: &str) {
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let seen_fn = seen.clone();
    let function = FunctionServer::start(move |event: Value| {
        let seen = seen_fn.clone();
        async move {
            if let Some(id) = event["id"].as_str() {
                seen.lock().expect("lock").insert(id.to_owned());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            axum::Json(json!({})).into_response()
        }
    })
    .await;
    let instance = Instance::new();
    let config = format!(
        r#"
{queue}

[functions.sink]
target = {{ type = "http", endpoint = "{endpoint}" }}
reserved_concurrency = 4
"#,
        endpoint = function.endpoint()
    );
    let mut impulse = Impulse::start_in(&instance, &config).await;
    let client = reqwest::Client::new();
    let url = invoke_url(&impulse, "sink");
    let accepted: Vec<String> = futures::stream::iter(0..1000)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                invoke_event(&client, &url, json!({ "id": format!("e{i}") }).to_string()).await;
                format!("e{i}")
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    impulse.kill9();
    let before = seen.lock().expect("lock").len();

    let _restarted = Impulse::start_in(&instance, &config).await;
    eventually("every accepted event at the function", TEST_TIMEOUT, async || {
        let seen = seen.lock().expect("lock");
        match accepted.iter().filter(|id| !seen.contains(*id)).count() {
            0 => Ok(()),
            missing => Err(format!(
                "{missing} of {} accepted events never reached the function ({before} before the kill)",
                accepted.len()
            )),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn embedded_queue_loses_nothing_across_kill9() {
    let dir = tempfile::tempdir().expect("tempdir");
    no_event_lost_across_kill9(&format!("[queue]\ndata_dir = {:?}\n", dir.path())).await;
}

#[tokio::test]
async fn redis_queue_loses_nothing_across_kill9() {
    let url = services::require_redis().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let stream = format!("impulse-test-{}", uuid::Uuid::new_v4());
    no_event_lost_across_kill9(&format!(
        "[queue]\nbackend = \"redis\"\ndata_dir = {:?}\n\n[queue.redis]\nurl = \"{url}\"\nstream = \"{stream}\"\n",
        dir.path()
    ))
    .await;
}

#[tokio::test]
async fn dead_letters_can_be_listed_and_replayed() {
    // Fails while `failing` is set, then succeeds: the replayed event must get through.
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let failing_fn = failing.clone();
    let mut function = FunctionServer::start(move |_event: Value| {
        let failing = failing_fn.load(std::sync::atomic::Ordering::SeqCst);
        async move {
            if failing {
                (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response()
            } else {
                axum::Json(json!({ "ok": true })).into_response()
            }
        }
    })
    .await;
    let instance = Instance::new();
    let config = format!(
        r#"
[queue]
data_dir = {data:?}

[functions.orders]
target = {{ type = "http", endpoint = "{endpoint}" }}
max_retry_attempts = 0
on_failure = {{ type = "log", name = "orders-dlq" }}
"#,
        data = instance.data_dir(),
        endpoint = function.endpoint()
    );
    let impulse = Impulse::start_in(&instance, &config).await;
    let client = reqwest::Client::new();
    let id = invoke_event(
        &client,
        &invoke_url(&impulse, "orders"),
        r#"{"order": 42}"#.into(),
    )
    .await;
    function.next().await;
    destination_record(&instance.config_path(), "orders", "on-failure", &id).await;

    let config_path = instance.config_path();
    let config_arg = config_path.to_str().expect("utf-8 path");
    let list = cli(&[
        "dlq",
        "list",
        "--config",
        config_arg,
        "--function",
        "orders",
    ]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(
        listing.contains(&id) && listing.contains("RetriesExhausted"),
        "{listing}"
    );
    assert!(listing.contains("1 records"), "{listing}");

    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let replay = cli(&[
        "dlq",
        "replay",
        "--config",
        config_arg,
        "--function",
        "orders",
        "--id",
        &id,
    ]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let replayed = function.next().await;
    assert_eq!(replayed.event, json!({ "order": 42 }));
}

#[tokio::test]
async fn async_concurrency_never_exceeds_reserved_under_10x_overload() {
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (f, p, d) = (in_flight.clone(), peak.clone(), done.clone());
    let function = FunctionServer::start(move |_event: Value| {
        let (f, p, d) = (f.clone(), p.clone(), d.clone());
        async move {
            use std::sync::atomic::Ordering::SeqCst;
            let now = f.fetch_add(1, SeqCst) + 1;
            p.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            f.fetch_sub(1, SeqCst);
            d.fetch_add(1, SeqCst);
            axum::Json(json!({}))
        }
    })
    .await;
    let impulse = Impulse::start(&format!(
        r#"
[functions.capped]
target = {{ type = "http", endpoint = "{}" }}
reserved_concurrency = 3
"#,
        function.endpoint()
    ))
    .await;
    let client = reqwest::Client::new();
    let url = invoke_url(&impulse, "capped");
    for i in 0..30 {
        invoke_event(&client, &url, json!({ "i": i }).to_string()).await;
    }
    wait_until("every event to run", TEST_TIMEOUT, || {
        done.load(std::sync::atomic::Ordering::SeqCst) >= 30
    })
    .await;
    let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        peak <= 3,
        "{peak} invocations ran at once with reserved_concurrency = 3"
    );
    assert_eq!(peak, 3, "the cap is used, not undershot");
    let metrics = client
        .get(impulse.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"impulse_throttles_total{function="capped",limit="concurrency"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_damaged_queue_file_stops_the_broker_until_it_is_salvaged() {
    let mut function = FunctionServer::start(|event: Value| async move { axum::Json(event) }).await;
    let instance = Instance::new();
    let config = format!(
        r#"
[queue]
data_dir = {data:?}

[functions.orders]
target = {{ type = "http", endpoint = "{endpoint}" }}
"#,
        data = instance.data_dir(),
        endpoint = function.endpoint()
    );
    // A queue file emptied outside Impulse (a failed disk, a careless `>`): redb would start
    // afresh in it, losing its events without a word.
    std::fs::create_dir_all(instance.data_dir()).expect("data dir");
    let queue_file = instance.data_dir().join("queue.redb");
    std::fs::write(&queue_file, b"").expect("an empty queue file");
    std::fs::write(
        instance.config_path(),
        format!(
            "[server]\nlisten = \"{}\"\nadmin_listen = \"{}\"\n{config}",
            impulse_tests::impulse::free_addr(),
            impulse_tests::impulse::free_addr()
        ),
    )
    .expect("config");
    let config_path = instance.config_path();
    let config_arg = config_path.to_str().expect("utf-8 path");
    let run = tokio::time::timeout(
        TEST_TIMEOUT,
        tokio::process::Command::new(impulse_tests::impulse::binary())
            .args(["run", "--config", config_arg])
            .output(),
    )
    .await
    .expect("run gives up at once")
    .expect("impulse runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(
        stderr.contains("exists but is empty (0 bytes)")
            && stderr.contains("impulse queue salvage"),
        "{stderr}"
    );

    let salvage = cli(&["queue", "salvage", "--config", config_arg]);
    let out = String::from_utf8_lossy(&salvage.stdout);
    assert!(
        salvage.status.success(),
        "{}",
        String::from_utf8_lossy(&salvage.stderr)
    );
    assert!(
        out.starts_with("0 events and 0 quarantined records copied"),
        "{out}"
    );
    let kept: Vec<_> = std::fs::read_dir(instance.data_dir())
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("queue.redb.damaged-")
        })
        .collect();
    assert_eq!(kept.len(), 1, "the damaged file is kept");

    // The broker starts on the fresh file and delivers.
    let impulse = Impulse::start_in(&instance, &config).await;
    let client = reqwest::Client::new();
    invoke_event(
        &client,
        &invoke_url(&impulse, "orders"),
        r#"{"n": 1}"#.into(),
    )
    .await;
    assert_eq!(function.next().await.event, json!({ "n": 1 }));
}
