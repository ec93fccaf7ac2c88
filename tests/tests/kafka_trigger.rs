//! Kafka triggers end to end against the real broker: order, retries, bisect, partial batch
//! responses, dead-lettering to a Kafka topic, crashes and a second instance.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine as _;
use impulse_tests::function::FunctionServer;
use impulse_tests::impulse::{Impulse, Instance};
use impulse_tests::kafka::{
    committed_total, create_topic, orders_trigger_config, produce, producer, read_values,
    wait_for_a_commit,
};
use impulse_tests::services::require_kafka;
use impulse_tests::wait::{eventually, wait_until};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(120);

/// One record as a function saw it.
#[derive(Debug, Clone)]
struct Seen {
    partition: i64,
    offset: i64,
    value: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
}

/// The records of a Lambda Kafka event, in event order.
fn records(event: &Value) -> Vec<Seen> {
    let b64 = |v: &Value| {
        v.as_str().map(|s| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .expect("base64")
        })
    };
    let mut out = Vec::new();
    if let Some(map) = event["records"].as_object() {
        for list in map.values() {
            for r in list.as_array().expect("records list") {
                out.push(Seen {
                    partition: r["partition"].as_i64().expect("partition"),
                    offset: r["offset"].as_i64().expect("offset"),
                    value: b64(&r["value"]),
                    key: b64(&r["key"]),
                });
            }
        }
    }
    out
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

fn trigger_config(endpoint: &str, topic: &str, extra: &str) -> String {
    orders_trigger_config(endpoint, "10s", topic, extra)
}

#[tokio::test]
async fn failures_are_retried_bisected_and_only_poison_records_are_dead_lettered() {
    let bootstrap = require_kafka().await;
    let topic = unique("orders");
    let dlq = format!("{topic}-dlq");
    create_topic(&bootstrap, &topic, 4).await;
    create_topic(&bootstrap, &dlq, 1).await;
    let producer = producer(&bootstrap);
    const N: i64 = 2000;
    let mut poison = BTreeSet::new();
    for i in 0..N {
        let is_poison = i % 100 == 7; // 1 %: fails every time
        if is_poison {
            poison.insert(i);
        }
        let value = json!({ "n": i, "poison": is_poison }).to_string();
        produce(
            &producer,
            &topic,
            (i % 4) as i32,
            &format!("k{}", i % 50),
            value.as_bytes(),
        )
        .await;
    }

    // Delivered records per partition, in delivery order; batches that failed once.
    let delivered: Arc<Mutex<BTreeMap<i64, Vec<i64>>>> = Arc::default();
    let failed_once: Arc<Mutex<BTreeSet<(i64, i64)>>> = Arc::default();
    let (d, f) = (delivered.clone(), failed_once.clone());
    let function = FunctionServer::start(move |event: Value| {
        let batch = records(&event);
        let poisoned = batch.iter().any(|r| {
            let v: Value =
                serde_json::from_slice(r.value.as_deref().unwrap_or_default()).expect("json value");
            v["poison"] == json!(true)
        });
        let first = batch.first().map(|r| (r.partition, r.offset));
        // 20 % of batch starts fail once, transiently.
        let transient = first.is_some_and(|(p, o)| {
            (p * 7919 + o) % 5 == 0 && f.lock().expect("lock").insert((p, o))
        });
        let ok = !poisoned && !transient;
        if ok {
            let mut d = d.lock().expect("lock");
            for r in &batch {
                let v: Value = serde_json::from_slice(r.value.as_deref().unwrap_or_default())
                    .expect("json value");
                d.entry(r.partition)
                    .or_default()
                    .push(v["n"].as_i64().expect("n"));
            }
        }
        async move {
            if ok {
                axum::Json(json!({})).into_response()
            } else {
                (StatusCode::INTERNAL_SERVER_ERROR, "failed").into_response()
            }
        }
    })
    .await;
    let extra = format!(
        r#"batch_size = 100
batch_window = "100ms"
bisect_batch_on_error = true
max_retry_attempts = 2
on_failure = {{ type = "kafka", bootstrap_servers = "{bootstrap}", topic = "{dlq}" }}"#
    );
    let _impulse = Impulse::start(&trigger_config(&function.endpoint(), &topic, &extra)).await;

    let expected_delivered = N as usize - poison.len();
    wait_until("every healthy record", WAIT, || {
        delivered
            .lock()
            .expect("lock")
            .values()
            .map(Vec::len)
            .sum::<usize>()
            >= expected_delivered
    })
    .await;
    let dead = read_values(&bootstrap, &dlq, poison.len(), WAIT).await;
    let mut dead_numbers = BTreeSet::new();
    for record in &dead {
        let record: Value = serde_json::from_slice(record).expect("dlq record is JSON");
        assert_eq!(
            record["requestContext"]["condition"],
            "RetryAttemptsExhausted"
        );
        assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
        for seen in records(&record["payload"]) {
            let v: Value =
                serde_json::from_slice(seen.value.as_deref().unwrap_or_default()).expect("json");
            dead_numbers.insert(v["n"].as_i64().expect("n"));
        }
    }
    assert_eq!(
        dead_numbers, poison,
        "the DLQ holds exactly the permanent failures"
    );

    let delivered = delivered.lock().expect("lock").clone();
    let mut all: BTreeSet<i64> = BTreeSet::new();
    for (partition, numbers) in &delivered {
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "partition {partition} delivered out of order or twice"
        );
        all.extend(numbers);
    }
    let lost: Vec<i64> = (0..N)
        .filter(|n| !all.contains(n) && !poison.contains(n))
        .collect();
    assert!(lost.is_empty(), "lost records: {lost:?}");
}

#[tokio::test]
async fn records_older_than_max_record_age_go_to_the_dlq_and_their_count_is_cleared() {
    let bootstrap = require_kafka().await;
    let topic = unique("aged");
    let dlq = unique("aged-dlq");
    create_topic(&bootstrap, &topic, 1).await;
    create_topic(&bootstrap, &dlq, 1).await;
    // Stamped 50 s ago: a few failed attempts (0.5, 1, 2, 4, 8 s of back-off) take it past
    // max_record_age (60 s, Lambda's minimum) long before the 10 retries a destination allows.
    let stamped = chrono::Utc::now().timestamp_millis() - 50_000;
    let record = rdkafka::producer::FutureRecord::to(&topic)
        .partition(0)
        .key("k")
        .payload(r#"{"n":1}"#)
        .timestamp(stamped);
    producer(&bootstrap)
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");
    let calls = Arc::new(Mutex::new(0_u32));
    let c = calls.clone();
    let function = FunctionServer::start(move |_event: Value| {
        *c.lock().expect("lock") += 1;
        async { (StatusCode::INTERNAL_SERVER_ERROR, "failed").into_response() }
    })
    .await;
    let extra = format!(
        r#"max_record_age = "60s"
on_failure = {{ type = "kafka", bootstrap_servers = "{bootstrap}", topic = "{dlq}" }}"#
    );
    let instance = Instance::new();
    let config = format!(
        "[queue]\ndata_dir = {:?}\n{}",
        instance.data_dir(),
        trigger_config(&function.endpoint(), &topic, &extra)
    );
    let impulse = Impulse::start_in(&instance, &config).await;

    let dead = read_values(&bootstrap, &dlq, 1, WAIT).await;
    let dead: Value = serde_json::from_slice(&dead[0]).expect("dlq record is JSON");
    assert_eq!(
        dead["requestContext"]["condition"],
        "MaximumRecordAgeExceeded",
        "{dead}\n{}",
        impulse.logs()
    );
    let made = *calls.lock().expect("lock");
    assert!(made >= 1, "the record was attempted before it expired");
    assert_eq!(
        dead["requestContext"]["approximateInvokeCount"],
        json!(made),
        "every failed attempt before the expiry is counted"
    );
    let group = format!("{topic}-group");
    wait_for_a_commit(
        "the expired record's commit",
        WAIT,
        (&bootstrap, &group, &topic),
        1,
    )
    .await;
    // The count of the expired records is gone: it would otherwise stay in the store forever.
    let counts = std::fs::read_to_string(instance.data_dir().join("kafka/orders-attempts.json"))
        .unwrap_or_else(|_| "{}".to_owned());
    assert_eq!(counts.trim(), "{}", "attempt counts left behind");
}

#[tokio::test]
async fn partial_batch_response_retries_from_the_failed_record() {
    let bootstrap = require_kafka().await;
    let topic = unique("partial");
    create_topic(&bootstrap, &topic, 1).await;
    let producer = producer(&bootstrap);
    for i in 0..10 {
        let value: Vec<u8> = match i {
            3 => Vec::new(),             // empty
            4 => vec![0xff, 0x00, 0x7f], // not JSON, not UTF-8
            _ => json!({ "n": i }).to_string().into_bytes(),
        };
        produce(&producer, &topic, 0, &format!("k{i}"), &value).await;
    }
    let calls: Arc<Mutex<Vec<Vec<Seen>>>> = Arc::default();
    let c = calls.clone();
    let function = FunctionServer::start(move |event: Value| {
        let batch = records(&event);
        let mut calls = c.lock().expect("lock");
        calls.push(batch);
        let first = calls.len() == 1;
        async move {
            if first {
                let id = json!({ "batchItemFailures": [ { "itemIdentifier": { "partition": format!("{}-0", event["records"].as_object().and_then(|m| m.keys().next().cloned()).unwrap_or_default().rsplit_once('-').map(|(t, _)| t.to_owned()).unwrap_or_default()), "offset": 6 } } ] });
                axum::Json(id).into_response()
            } else {
                axum::Json(json!({ "batchItemFailures": [] })).into_response()
            }
        }
    })
    .await;
    let extra = "batch_size = 10\nbatch_window = \"2s\"\nreport_batch_item_failures = true";
    let _impulse = Impulse::start(&trigger_config(&function.endpoint(), &topic, extra)).await;
    wait_until("the retry", WAIT, || calls.lock().expect("lock").len() >= 2).await;

    let calls = calls.lock().expect("lock").clone();
    let offsets = |batch: &Vec<Seen>| batch.iter().map(|r| r.offset).collect::<Vec<_>>();
    assert_eq!(offsets(&calls[0]), (0..10).collect::<Vec<_>>());
    assert_eq!(
        offsets(&calls[1]),
        (6..10).collect::<Vec<_>>(),
        "retried from the failed record on"
    );
    // Non-JSON and empty values arrive base64-encoded, bytes intact.
    assert_eq!(calls[0][3].value.as_deref(), Some(&b""[..]));
    assert_eq!(calls[0][4].value.as_deref(), Some(&[0xff, 0x00, 0x7f][..]));
    assert_eq!(calls[0][0].key.as_deref(), Some(&b"k0"[..]));
}

/// Counts deliveries per offset of a single-partition… several-partition topic.
type Deliveries = Arc<Mutex<HashMap<(i64, i64), u32>>>;

fn counting_function_handler(
    deliveries: Deliveries,
) -> impl Fn(Value) -> std::future::Ready<axum::Json<Value>> + Clone {
    move |event: Value| {
        let mut d = deliveries.lock().expect("lock");
        for r in records(&event) {
            *d.entry((r.partition, r.offset)).or_default() += 1;
        }
        std::future::ready(axum::Json(json!({})))
    }
}

#[tokio::test]
async fn kill9_three_times_mid_stream_loses_nothing() {
    let bootstrap = require_kafka().await;
    let topic = unique("crash");
    create_topic(&bootstrap, &topic, 4).await;
    let producer = producer(&bootstrap);
    const N: i64 = 3000;
    for i in 0..N {
        produce(
            &producer,
            &topic,
            (i % 4) as i32,
            "k",
            format!("{{\"n\":{i}}}").as_bytes(),
        )
        .await;
    }
    let deliveries: Deliveries = Arc::default();
    let handler = counting_function_handler(deliveries.clone());
    let function = FunctionServer::start(move |event: Value| {
        let handler = handler.clone();
        async move {
            // Slow enough (about 400 records/s) that each kill lands mid-stream.
            tokio::time::sleep(Duration::from_millis(100)).await;
            handler(event).await
        }
    })
    .await;
    let instance = Instance::new();
    let config = format!(
        "[queue]\ndata_dir = {:?}\n{}",
        instance.data_dir(),
        trigger_config(
            &function.endpoint(),
            &topic,
            // A killed member keeps its partitions until its session times out: keep it short.
            "batch_size = 10\nbatch_window = \"50ms\"\n\
             librdkafka_options = { \"session.timeout.ms\" = \"6000\", \"heartbeat.interval.ms\" = \"500\" }"
        )
    );
    let total = |d: &Deliveries| d.lock().expect("lock").len() as i64;
    let group = format!("{topic}-group");
    for kill in 1..=3 {
        let mut impulse = Impulse::start_in(&instance, &config).await;
        // Kill as soon as this instance has committed progress of its own, so each restart
        // resumes mid-stream rather than from the start.
        let committed_before = committed_total(&bootstrap, &group, &topic, 4).await;
        eventually(
            "a commit while running",
            WAIT,
            async || match committed_total(&bootstrap, &group, &topic, 4).await {
                committed if committed > committed_before => Ok(()),
                committed => Err(format!("{committed} committed")),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("kill {kill}: {e}\n{}", impulse.logs()));
        impulse.kill9();
        assert!(
            total(&deliveries) < N,
            "kill {kill} came after the end of the stream"
        );
    }
    let _final = Impulse::start_in(&instance, &config).await;
    wait_until("every record", WAIT, || total(&deliveries) == N).await;
    let deliveries = deliveries.lock().expect("lock");
    let duplicates: u32 = deliveries.values().map(|n| n - 1).sum();
    // At-least-once: duplicates are what was delivered after the last commit before each
    // kill, never more than the stream itself.
    println!("kill -9 x3: {N} records, 0 lost, {duplicates} duplicates");
    assert!(duplicates < N as u32, "{duplicates} duplicates");
}

#[tokio::test]
async fn a_second_instance_joining_and_leaving_loses_nothing() {
    let bootstrap = require_kafka().await;
    let topic = unique("rebalance");
    create_topic(&bootstrap, &topic, 4).await;
    let deliveries: Deliveries = Arc::default();
    let handler = counting_function_handler(deliveries.clone());
    let function = FunctionServer::start(move |event: Value| {
        let handler = handler.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            handler(event).await
        }
    })
    .await;
    let config = trigger_config(
        &function.endpoint(),
        &topic,
        "batch_size = 20\nbatch_window = \"50ms\"",
    );
    let mut first = Impulse::start(&config).await;

    const N: i64 = 2000;
    let producing = tokio::spawn({
        let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
        async move {
            let producer = producer(&bootstrap);
            for i in 0..N {
                produce(
                    &producer,
                    &topic,
                    (i % 4) as i32,
                    "k",
                    format!("{{\"n\":{i}}}").as_bytes(),
                )
                .await;
                if i % 200 == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    let total = |d: &Deliveries| d.lock().expect("lock").len() as i64;
    wait_until("some progress", WAIT, || total(&deliveries) >= N / 5).await;
    let mut second = Impulse::start(&config).await;
    wait_until("progress with two instances", WAIT, || {
        total(&deliveries) >= N / 2
    })
    .await;
    second.terminate();
    let status = second.wait(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "the second instance exits cleanly:\n{}",
        second.logs()
    );
    producing.await.expect("producer");
    wait_until("every record", WAIT, || total(&deliveries) == N).await;
    // The instance that did most of the work stops cleanly too (it aborted at shutdown once,
    // replaying buffered metrics in a thread-local destructor).
    first.terminate();
    let status = first.wait(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "the first instance exits cleanly:
{}",
        first.logs()
    );
}

#[tokio::test]
async fn a_trigger_whose_consumer_cannot_start_stops_the_process() {
    let bootstrap = require_kafka().await;
    let topic = unique("refused");
    create_topic(&bootstrap, &topic, 1).await;
    // librdkafka accepts both properties one by one but refuses the pair when it creates the
    // consumer: with the KIP-848 protocol the session timeout is the broker's.
    let extra =
        r#"librdkafka_options = { "group.protocol" = "consumer", "session.timeout.ms" = "6000" }"#;
    let instance = Instance::new();
    let config = format!(
        "[server]\nlisten = \"{}\"\nadmin_listen = \"{}\"\n\n[queue]\ndata_dir = {:?}\n{}",
        instance.listen,
        instance.admin,
        instance.data_dir(),
        trigger_config("http://127.0.0.1:9", &topic, extra)
    );
    std::fs::write(instance.config_path(), config).expect("write config");
    let child = tokio::process::Command::new(impulse_tests::impulse::binary())
        .arg("run")
        .arg("--config")
        .arg(instance.config_path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        // A timeout below drops the child: it must not outlive the test.
        .kill_on_drop(true)
        .spawn()
        .expect("spawn impulse");
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("impulse kept running with a trigger that cannot consume")
        .expect("wait for impulse");
    let (status, stderr) = (output.status, String::from_utf8_lossy(&output.stderr));
    assert!(!status.success(), "exit status {status}:\n{stderr}");
    assert!(
        stderr.contains("triggers.orders") && stderr.contains("session.timeout.ms"),
        "the error names neither the trigger nor the refused option:\n{stderr}"
    );
}
