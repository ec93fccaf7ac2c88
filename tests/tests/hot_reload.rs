//! Configuration reload end to end (SIGHUP and `impulse reload`) against the real binary,
//! under load: invalid files keep the running configuration, functions are added, changed and
//! removed without failing a request, removals with queued events are refused unless forced,
//! and Kafka triggers keep (or hand over) their partitions without losing a record.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use impulse_tests::function::FunctionServer;
use impulse_tests::impulse::{cli, Impulse, Instance};
use impulse_tests::kafka::{create_topic, produce, producer};
use impulse_tests::services::{self, kafka_bootstrap, require_kafka};
use impulse_tests::wait::{eventually, wait_until};
use serde_json::{json, Value};
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(60);

/// Writes `body` as `instance`'s config file, with the `[server]` table the harness gives it.
fn write_config(instance: &Instance, body: &str) {
    let text = format!(
        "[server]\nlisten = \"{}\"\nadmin_listen = \"{}\"\n\n{body}",
        instance.listen, instance.admin
    );
    std::fs::write(instance.config_path(), text).expect("write config");
}

/// `[queue]` in `instance`'s data directory.
fn queue(instance: &Instance) -> String {
    format!("[queue]\ndata_dir = {:?}\n\n", instance.data_dir())
}

/// Runs `impulse reload` against `impulse` (off the async workers: it blocks).
async fn reload(impulse: &Impulse, force: bool) -> Output {
    let admin_url = impulse.admin_url("");
    tokio::task::spawn_blocking(move || {
        let mut args = vec!["reload", "--admin-url", admin_url.as_str()];
        if force {
            args.push("--force");
        }
        cli(&args)
    })
    .await
    .expect("join")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The value of `series` (name and labels, exactly as exported) on `/metrics`; 0 if absent.
async fn metric(impulse: &Impulse, series: &str) -> f64 {
    impulse.metric(series).await.unwrap_or(0.0)
}

async fn invoke(client: &reqwest::Client, impulse: &Impulse, function: &str) -> (u16, Value) {
    let response = client
        .post(impulse.url(&format!("/2015-03-31/functions/{function}/invocations")))
        .body("{}")
        .send()
        .await
        .expect("invoke");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// A function answering `{"from": name}`.
async fn answering(name: &'static str) -> FunctionServer {
    FunctionServer::start(move |_| async move { axum::Json(json!({ "from": name })) }).await
}

fn http_function(name: &str, endpoint: &str) -> String {
    format!("[functions.{name}]\ntarget = {{ type = \"http\", endpoint = \"{endpoint}\" }}\n\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_config_keeps_the_running_one_and_says_where() {
    let instance = Instance::new();
    let echo = answering("echo").await;
    let config = format!(
        "{}{}",
        queue(&instance),
        http_function("echo", &echo.endpoint())
    );
    let impulse = Impulse::start_in(&instance, &config).await;
    let client = reqwest::Client::new();

    // Line 9 of the file: `target` of a function that has no such field.
    let invalid = format!("{config}[functions.broken]\ntargett = 1\n");
    write_config(&instance, &invalid);
    let out = reload(&impulse, false).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let file = instance.config_path().display().to_string();
    assert!(stderr.contains("invalid"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:12: functions.broken.targett: unknown field"
        )),
        "every error names its file, line and field: {stderr}"
    );
    assert_eq!(
        invoke(&client, &impulse, "echo").await,
        (200, json!({ "from": "echo" }))
    );
    assert_eq!(
        metric(
            &impulse,
            "impulse_config_reloads_total{outcome=\"invalid\"}"
        )
        .await,
        1.0
    );

    // SIGHUP too: logged with file and line, counted, and the old configuration still serves.
    let status = std::process::Command::new("kill")
        .args(["-HUP", &impulse.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    eventually(
        "the SIGHUP reload to be counted",
        WAIT,
        async || match metric(
            &impulse,
            "impulse_config_reloads_total{outcome=\"invalid\"}",
        )
        .await
        {
            2.0 => Ok(()),
            n => Err(format!("{n} invalid reloads")),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", impulse.logs()));
    let logs = impulse.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("Invalid configuration") && l.contains(&format!("{file}:"))),
        "{logs}"
    );
    assert_eq!(
        invoke(&client, &impulse, "echo").await,
        (200, json!({ "from": "echo" }))
    );
    assert_eq!(metric(&impulse, "impulse_config_generation").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn functions_are_added_changed_and_removed_while_calls_run() {
    let instance = Instance::new();
    // `a` before the reload: holds calls marked slow until released.
    let release = Arc::new(Notify::new());
    let held = release.clone();
    let mut old_a = FunctionServer::start(move |event: Value| {
        let held = held.clone();
        async move {
            if event["slow"] == json!(true) {
                held.notified().await;
            }
            axum::Json(json!({ "from": "old" }))
        }
    })
    .await;
    let new_a = answering("new").await;
    let gone = answering("gone").await;
    let before = format!(
        "{}{}{}",
        queue(&instance),
        http_function("a", &old_a.endpoint()),
        http_function("gone", &gone.endpoint())
    );
    let impulse = Arc::new(Impulse::start_in(&instance, &before).await);
    let client = reqwest::Client::new();

    // Load on `a` throughout: every call must succeed, on the old target or the new one.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, impulse, stop, answers) = (
            client.clone(),
            impulse.clone(),
            stop.clone(),
            answers.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let answer = match invoke(&client, &impulse, "a").await {
                    (200, body) => body["from"].as_str().unwrap_or("?").to_owned(),
                    (status, body) => format!("{status} {body}"),
                };
                *answers.lock().expect("lock").entry(answer).or_default() += 1;
            }
        }));
    }
    // One call in flight on the old target across the reload.
    let slow = {
        let (client, impulse) = (client.clone(), impulse.clone());
        tokio::spawn(async move {
            let response = client
                .post(impulse.url("/2015-03-31/functions/a/invocations"))
                .body(r#"{"slow": true}"#)
                .send()
                .await
                .expect("invoke");
            (
                response.status().as_u16(),
                response.json::<Value>().await.expect("json"),
            )
        })
    };
    while old_a.next().await.event["slow"] != json!(true) {}

    let after = format!(
        "{}{}{}",
        queue(&instance),
        http_function("a", &new_a.endpoint()),
        http_function("added", &new_a.endpoint())
    );
    write_config(&instance, &after);
    let out = reload(&impulse, false).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}{stdout}", text(&out.stderr));
    for change in [
        "function a: changed",
        "function added: added",
        "function gone: removed",
    ] {
        assert!(stdout.contains(change), "{change}: {stdout}");
    }
    assert!(stdout.contains("generation 2"), "{stdout}");

    // New calls go to the new target; the added function answers; the removed one is gone.
    eventually(
        "calls to reach the new target",
        WAIT,
        async || match invoke(&client, &impulse, "a").await {
            (200, body) if body["from"] == "new" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        invoke(&client, &impulse, "added").await,
        (200, json!({ "from": "new" }))
    );
    let response = client
        .post(impulse.url("/2015-03-31/functions/gone/invocations"))
        .body("{}")
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.headers()["x-amzn-errortype"],
        "ResourceNotFoundException"
    );

    // The read API lists what is configured now.
    let listed: Value = client
        .get(impulse.url("/2015-03-31/functions"))
        .send()
        .await
        .expect("ListFunctions")
        .json()
        .await
        .expect("json");
    let names: BTreeSet<&str> = listed["Functions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["FunctionName"].as_str())
        .collect();
    assert_eq!(names, BTreeSet::from(["a", "added"]), "{listed}");

    // The call that started before the reload finishes on the target it started with.
    release.notify_one();
    let (status, body) = slow.await.expect("join");
    assert_eq!((status, body), (200, json!({ "from": "old" })));

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("join");
    }
    let answers = answers.lock().expect("lock").clone();
    let failed: Vec<_> = answers
        .keys()
        .filter(|answer| *answer != "old" && *answer != "new")
        .collect();
    assert!(
        failed.is_empty(),
        "calls failed across the reload: {answers:?}"
    );
    assert!(answers.get("new").copied().unwrap_or(0) > 0, "{answers:?}");
    assert_eq!(
        metric(
            &impulse,
            "impulse_config_reloads_total{outcome=\"applied\"}"
        )
        .await,
        1.0
    );
    assert_eq!(metric(&impulse, "impulse_config_generation").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_a_function_with_queued_events_needs_force() {
    let instance = Instance::new();
    let queue = queue(&instance);
    removal_with_queued_events_needs_force(&instance, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_a_function_with_events_on_the_redis_queue_needs_force() {
    let url = services::require_redis().await;
    let instance = Instance::new();
    let stream = format!("impulse-reload-{}", uuid::Uuid::new_v4());
    let queue = format!(
        "[queue]\nbackend = \"redis\"\ndata_dir = {:?}\n\n[queue.redis]\nurl = \"{url}\"\nstream = \"{stream}\"\n\n",
        instance.data_dir()
    );
    removal_with_queued_events_needs_force(&instance, &queue).await;
}

/// Queues 3 events for a function that keeps failing, then removes it with `queue` (a
/// `[queue]` section) as the queue.
async fn removal_with_queued_events_needs_force(instance: &Instance, queue: &str) {
    // Every attempt fails: the events stay queued between retries (a minute apart).
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = attempts.clone();
    let flaky = FunctionServer::start(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response() }
    })
    .await;
    let keep = answering("keep").await;
    let before = format!(
        "{}{}{}",
        queue,
        http_function("flaky", &flaky.endpoint()),
        http_function("keep", &keep.endpoint())
    );
    let impulse = Impulse::start_in(instance, &before).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let response = client
            .post(impulse.url("/2015-03-31/functions/flaky/invocations"))
            .header("x-amz-invocation-type", "Event")
            .body("{}")
            .send()
            .await
            .expect("invoke");
        assert_eq!(response.status(), 202);
    }
    wait_until("every event's first attempt", WAIT, || {
        attempts.load(Ordering::SeqCst) >= 3
    })
    .await;

    let after = format!("{}{}", queue, http_function("keep", &keep.endpoint()));
    write_config(instance, &after);
    let out = reload(&impulse, false).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("functions.flaky: removed, but 3 async events are queued for it")
            && stderr.contains("--force"),
        "{stderr}"
    );
    // Refused: the function is still there.
    let response = client
        .post(impulse.url("/2015-03-31/functions/flaky/invocations"))
        .header("x-amz-invocation-type", "DryRun")
        .body("{}")
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.status(), 204);
    assert_eq!(
        metric(
            &impulse,
            "impulse_config_reloads_total{outcome=\"refused\"}"
        )
        .await,
        1.0
    );

    let out = reload(&impulse, true).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("function flaky: removed"));
    let response = client
        .post(impulse.url("/2015-03-31/functions/flaky/invocations"))
        .body("{}")
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.status(), 404);
    assert_eq!(
        invoke(&client, &impulse, "keep").await,
        (200, json!({ "from": "keep" }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_versions_and_start_only_settings_are_refused() {
    let instance = Instance::new();
    let one = answering("one").await;
    let two = answering("two").await;
    let versioned = |endpoint: &str| {
        format!(
            "{}{}[functions.orders.versions.1]\ntarget = {{ type = \"http\", endpoint = \"{endpoint}\" }}\n\n",
            queue(&instance),
            http_function("orders", &one.endpoint())
        )
    };
    let impulse = Impulse::start_in(&instance, &versioned(&one.endpoint())).await;
    let client = reqwest::Client::new();

    write_config(&instance, &versioned(&two.endpoint()));
    let out = reload(&impulse, false).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("functions.orders.versions.1: a published version is immutable"),
        "{stderr}"
    );
    assert_eq!(
        invoke(&client, &impulse, "orders:1").await,
        (200, json!({ "from": "one" }))
    );

    let moved = versioned(&one.endpoint()).replace(
        &format!("{:?}", instance.data_dir()),
        &format!("{:?}", instance.dir.path().join("elsewhere")),
    );
    write_config(&instance, &moved);
    let out = reload(&impulse, false).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("queue.data_dir: changed, but applies only at start"),
        "{stderr}"
    );
    assert_eq!(
        metric(
            &impulse,
            "impulse_config_reloads_total{outcome=\"refused\"}"
        )
        .await,
        2.0
    );
}

const ADMIN: &str = "admin-reload-token-0123456789";
const CI_BEFORE: &str = "ci-reload-token-before-0123456";
const CI_AFTER: &str = "ci-reload-token-after-01234567";

/// Runs `impulse reload --token TOKEN` against `impulse`.
async fn reload_as(impulse: &Impulse, token: &'static str) -> Output {
    let admin_url = impulse.admin_url("");
    tokio::task::spawn_blocking(move || {
        cli(&["reload", "--admin-url", &admin_url, "--token", token])
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_needs_the_admin_role_and_applies_new_tokens() {
    let instance = Instance::new();
    let echo = answering("echo").await;
    let config = |ci: &str| {
        format!(
            "{}{}[auth.tokens.admin]\nrole = \"admin\"\ntoken = \"{ADMIN}\"\n\n\
             [auth.tokens.ci]\nrole = \"invoker\"\ntoken = \"{ci}\"\n",
            queue(&instance),
            http_function("echo", &echo.endpoint()),
        )
    };
    let impulse = Impulse::start_in(&instance, &config(CI_BEFORE)).await;
    let client = reqwest::Client::new();
    let invoke_as = async |token: &str| {
        client
            .post(impulse.url("/2015-03-31/functions/echo/invocations"))
            .bearer_auth(token)
            .body("{}")
            .send()
            .await
            .expect("invoke")
            .status()
            .as_u16()
    };
    assert_eq!(invoke_as(CI_BEFORE).await, 200);

    write_config(&instance, &config(CI_AFTER));
    // Not without a token, nor as an invoker: the broker answers 401 / 403 (exit code 3).
    let out = reload(&impulse, false).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
    let out = reload_as(&impulse, CI_BEFORE).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("403"), "{}", text(&out.stderr));
    assert_eq!(invoke_as(CI_BEFORE).await, 200, "nothing was reloaded");

    let out = reload_as(&impulse, ADMIN).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(invoke_as(CI_BEFORE).await, 401, "the old token is gone");
    assert_eq!(invoke_as(CI_AFTER).await, 200);
}

/// The config of a Kafka trigger `name` reading `topic` for function `function`.
fn kafka_trigger(name: &str, function: &str, topic: &str, batch_size: u32) -> String {
    format!(
        r#"[triggers.{name}]
type = "kafka"
function = "{function}"
bootstrap_servers = "{bootstrap}"
topics = ["{topic}"]
group_id = "{topic}-group"
starting_position = "earliest"
batch_size = {batch_size}

"#,
        bootstrap = kafka_bootstrap(),
    )
}

/// A function recording the `n` of every Kafka record it receives, by topic.
async fn recording(seen: Arc<Mutex<BTreeMap<String, Vec<i64>>>>) -> FunctionServer {
    FunctionServer::start(move |event: Value| {
        let seen = seen.clone();
        async move {
            use base64::Engine as _;
            let mut seen = seen.lock().expect("lock");
            for records in event["records"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
            {
                for record in records.as_array().into_iter().flatten() {
                    let value = base64::engine::general_purpose::STANDARD
                        .decode(record["value"].as_str().unwrap_or_default())
                        .unwrap_or_default();
                    let n = serde_json::from_slice::<Value>(&value).unwrap_or_default()["n"]
                        .as_i64()
                        .unwrap_or(-1);
                    let topic = record["topic"].as_str().unwrap_or("?").to_owned();
                    seen.entry(topic).or_default().push(n);
                }
            }
            axum::Json(json!({}))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_triggers_keep_or_hand_over_their_partitions_without_losing_records() {
    let bootstrap = require_kafka().await;
    let unique = uuid::Uuid::new_v4();
    let (kept_topic, changed_topic) = (format!("kept-{unique}"), format!("changed-{unique}"));
    create_topic(&bootstrap, &kept_topic, 3).await;
    create_topic(&bootstrap, &changed_topic, 3).await;
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let function = recording(seen.clone()).await;
    let other = answering("other").await;

    let instance = Instance::new();
    let config = |batch_size: u32, extra: &str| {
        format!(
            "{}{}{extra}{}{}",
            queue(&instance),
            http_function("consumer", &function.endpoint()),
            kafka_trigger("kept", "consumer", &kept_topic, 10),
            kafka_trigger("changed", "consumer", &changed_topic, batch_size),
        )
    };
    let impulse = Impulse::start_in(&instance, &config(10, "")).await;

    // Records flow on both topics across the reload.
    const N: i64 = 1500;
    let producing = {
        let (bootstrap, kept_topic, changed_topic) =
            (bootstrap.clone(), kept_topic.clone(), changed_topic.clone());
        tokio::spawn(async move {
            let producer = producer(&bootstrap);
            for n in 0..N {
                let value = json!({ "n": n }).to_string();
                let partition = i32::try_from(n % 3).expect("small");
                produce(&producer, &kept_topic, partition, "k", value.as_bytes()).await;
                produce(&producer, &changed_topic, partition, "k", value.as_bytes()).await;
            }
        })
    };
    let count = |topic: &str| seen.lock().expect("lock").get(topic).map_or(0, Vec::len);
    wait_until("records to flow on both topics", WAIT, || {
        count(&kept_topic) >= 100 && count(&changed_topic) >= 100
    })
    .await;

    // A function added (the limiter is rebuilt) and one trigger's batch size changed.
    write_config(
        &instance,
        &config(50, &http_function("other", &other.endpoint())),
    );
    let out = reload(&impulse, false).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}{stdout}", text(&out.stderr));
    assert!(stdout.contains("trigger changed: restarted"), "{stdout}");
    assert!(!stdout.contains("trigger kept"), "{stdout}");
    assert!(
        count(&kept_topic) < usize::try_from(N).expect("small"),
        "the reload happened while records were still flowing"
    );

    producing.await.expect("join");
    wait_until("every record to arrive", Duration::from_secs(120), || {
        let seen = seen.lock().expect("lock");
        [&kept_topic, &changed_topic].iter().all(|topic| {
            let distinct: BTreeSet<i64> = seen.get(*topic).into_iter().flatten().copied().collect();
            distinct.len() == usize::try_from(N).expect("small")
        })
    })
    .await;
    let seen = seen.lock().expect("lock").clone();
    let kept = &seen[&kept_topic];
    let distinct: BTreeSet<i64> = kept.iter().copied().collect();
    assert_eq!(
        kept.len(),
        distinct.len(),
        "the unchanged trigger delivered records twice"
    );
    let logs = impulse.logs();
    let revoked = |trigger: &str| {
        logs.lines()
            .filter(|l| {
                l.contains("Partitions revoked") && l.contains(&format!("trigger={trigger}"))
            })
            .count()
    };
    assert_eq!(
        revoked("kept"),
        0,
        "the unchanged trigger rebalanced:\n{logs}"
    );
    // The same log line does tell a hand-over: the changed trigger's consumer gave its
    // partitions back once.
    assert_eq!(revoked("changed"), 1, "{logs}");
    assert!(
        logs.lines()
            .any(|l| l.contains("Kafka source stopped") && l.contains("trigger=changed")),
        "the changed trigger was handed over:\n{logs}"
    );
}

/// The config of a Redis trigger `name` reading `stream` for function `consumer`.
fn redis_trigger(name: &str, url: &str, stream: &str, batch_size: u32) -> String {
    format!(
        r#"[triggers.{name}]
type = "redis"
function = "consumer"
url = "{url}"
stream = "{stream}"
group = "{stream}-group"
starting_position = "earliest"
batch_size = {batch_size}

"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_and_schedule_triggers_follow_a_reload_without_losing_entries() {
    let url = services::require_redis().await;
    let unique = uuid::Uuid::new_v4();
    let (kept_stream, changed_stream) = (format!("kept-{unique}"), format!("changed-{unique}"));
    // Entry `n` of each stream, by stream; and the scheduled events.
    let seen = Arc::new(Mutex::new(BTreeMap::<String, Vec<i64>>::new()));
    let ticks = Arc::new(AtomicUsize::new(0));
    let function = {
        let (seen, ticks) = (seen.clone(), ticks.clone());
        FunctionServer::start(move |event: Value| {
            if event["detail"]["job"] == "tick" {
                ticks.fetch_add(1, Ordering::SeqCst);
            }
            let mut seen = seen.lock().expect("lock");
            for record in event["Records"].as_array().into_iter().flatten() {
                let n = record["fields"]["n"]
                    .as_str()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(-1);
                let stream = record["stream"].as_str().unwrap_or("?").to_owned();
                seen.entry(stream).or_default().push(n);
            }
            async { axum::Json(json!({})) }
        })
        .await
    };
    let instance = Instance::new();
    let config = |batch_size: u32, extra: &str| {
        format!(
            "{}{}{}{}{extra}",
            queue(&instance),
            http_function("consumer", &function.endpoint()),
            redis_trigger("kept", &url, &kept_stream, 5),
            redis_trigger("changed", &url, &changed_stream, batch_size),
        )
    };
    let impulse = Impulse::start_in(&instance, &config(5, "")).await;

    // Entries are added at a steady pace until the reload is over and more have arrived.
    let stop = Arc::new(AtomicBool::new(false));
    let adding = {
        let (url, kept_stream, changed_stream) =
            (url.clone(), kept_stream.clone(), changed_stream.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut conn = redis::Client::open(url.as_str())
                .expect("redis url")
                .get_multiplexed_async_connection()
                .await
                .expect("connect to redis");
            let mut pace = tokio::time::interval(Duration::from_millis(2));
            let mut n = 0i64;
            while !stop.load(Ordering::SeqCst) {
                pace.tick().await;
                let mut pipe = redis::pipe();
                pipe.cmd("XADD").arg(&kept_stream).arg("*").arg("n").arg(n);
                pipe.cmd("XADD")
                    .arg(&changed_stream)
                    .arg("*")
                    .arg("n")
                    .arg(n);
                let _: Vec<String> = pipe.query_async(&mut conn).await.expect("XADD");
                n += 1;
            }
            n
        })
    };
    let count = |stream: &str| seen.lock().expect("lock").get(stream).map_or(0, Vec::len);
    wait_until("entries to flow on both streams", WAIT, || {
        count(&kept_stream) >= 50 && count(&changed_stream) >= 50
    })
    .await;

    let schedule = "[triggers.tick]\ntype = \"schedule\"\nfunction = \"consumer\"\n\
                    expression = \"rate(1 second)\"\ninput = { job = \"tick\" }\n";
    write_config(&instance, &config(20, schedule));
    let out = reload(&impulse, false).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}{stdout}", text(&out.stderr));
    for change in ["trigger changed: restarted", "schedules: restarted"] {
        assert!(stdout.contains(change), "{change}: {stdout}");
    }
    assert!(!stdout.contains("trigger kept"), "{stdout}");

    let at_reload = count(&kept_stream).min(count(&changed_stream));
    wait_until("entries to flow after the reload", WAIT, || {
        count(&kept_stream).min(count(&changed_stream)) >= at_reload + 100
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let n = adding.await.expect("join");
    wait_until("every entry to arrive", WAIT, || {
        let seen = seen.lock().expect("lock");
        [&kept_stream, &changed_stream].iter().all(|stream| {
            let distinct: BTreeSet<i64> =
                seen.get(*stream).into_iter().flatten().copied().collect();
            distinct.len() == usize::try_from(n).expect("small")
        })
    })
    .await;
    let kept = seen.lock().expect("lock")[&kept_stream].clone();
    let distinct: BTreeSet<i64> = kept.iter().copied().collect();
    assert_eq!(
        kept.len(),
        distinct.len(),
        "the unchanged trigger delivered entries twice"
    );
    eventually("the added schedule to tick", WAIT, async || {
        match ticks.load(Ordering::SeqCst) {
            0 | 1 => Err("fewer than 2 ticks".to_owned()),
            _ => Ok(()),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", impulse.logs()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_process_function_finishes_its_calls_then_stops_its_environments() {
    let instance = Instance::new();
    let config = |greeting: &str| {
        format!(
            "{}[functions.worker]\ntarget = {{ type = \"process\", command = \"{}\", handler = \
             \"bootstrap\", environment = {{ GREETING = \"{greeting}\" }} }}\ntimeout = \"30s\"\n",
            queue(&instance),
            env!("CARGO_BIN_EXE_lambda_worker"),
        )
    };
    let impulse = Arc::new(
        Impulse::start_in_with_env(
            &instance,
            &config("old"),
            &[("RUST_LOG", "info,impulse_invoker::process=debug")],
        )
        .await,
    );
    let client = reqwest::Client::new();
    let url = impulse.url("/2015-03-31/functions/worker/invocations");
    let call = |event: Value| call_worker(client.clone(), url.clone(), event);
    let old_pid = call(json!({ "pid": true })).await["pid"].clone();

    // A call under way on the old environment across the reload, held until released.
    let release = instance
        .config_path()
        .with_file_name("release-the-held-call");
    let slow = tokio::spawn(call(
        json!({ "hold_until_exists": release, "env": ["GREETING"] }),
    ));
    eventually("the slow call to be running", WAIT, async || match metric(
        &impulse,
        "impulse_concurrent_executions{function=\"worker\"}",
    )
    .await
    {
        1.0 => Ok(()),
        n => Err(format!("{n} running")),
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    write_config(&instance, &config("new"));
    let out = reload(&impulse, false).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}{stdout}", text(&out.stderr));
    assert!(stdout.contains("function worker: changed"), "{stdout}");

    let fresh = call(json!({ "env": ["GREETING"] })).await;
    assert_eq!(fresh["env"]["GREETING"], "new");
    assert_ne!(
        fresh["pid"], old_pid,
        "a new environment for the new configuration"
    );
    std::fs::write(&release, "").expect("release the held call");
    let finished = slow.await.expect("join");
    assert_eq!(finished["env"]["GREETING"], "old", "{finished}");
    assert_eq!(finished["pid"], old_pid);

    // Once its last call ended, the old environment is stopped (well before its idle timeout).
    let old_pid = old_pid.as_u64().expect("a pid");
    eventually("the old environment to exit", WAIT, async || {
        let logs = impulse.logs();
        let exited = logs.lines().any(|line| {
            line.contains("Execution environment exited")
                && line.contains(&format!("pid={old_pid}"))
        });
        if exited {
            Ok(())
        } else {
            Err(format!("no exit of {old_pid} logged"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", impulse.logs()));
    assert!(
        std::fs::read_to_string(format!("/proc/{old_pid}/status"))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound),
        "process {old_pid} is gone"
    );
}

/// Invokes the worker at `url` with `event`; its result.
async fn call_worker(client: reqwest::Client, url: String, event: Value) -> Value {
    let response = client
        .post(url)
        .body(event.to_string())
        .send()
        .await
        .expect("invoke");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}
