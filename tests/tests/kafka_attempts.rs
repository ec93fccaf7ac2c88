//! `attempts_topic` end to end against the real broker: a Kafka trigger's retry attempt counts
//! live in a compacted topic shared by the group's instances, so a poison batch gets exactly
//! `max_retry_attempts` retries even when its partition moves to an instance with another data
//! directory (`kill -9`, then a rebalance), and a resolved batch's count is tombstoned.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use impulse_tests::function::FunctionServer;
use impulse_tests::impulse::{Impulse, Instance};
use impulse_tests::kafka::{
    create_topic, create_topic_with, orders_trigger_config, produce, producer, wait_for_a_commit,
};
use impulse_tests::services::require_kafka;
use impulse_tests::wait::{eventually, wait_until};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

/// Bound on waiting for an outcome (a rebalance after `kill -9` takes `session.timeout.ms`).
const WAIT: Duration = Duration::from_secs(90);
/// Bound on one Kafka step of the test itself.
const STEP: Duration = Duration::from_secs(30);

/// One record of a topic: its key and value (`None`: a tombstone).
type Record = (String, Option<String>);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

/// The config of instance `instance`: one Kafka trigger `orders` reading `topic` with group
/// `<topic>-group`, counts in `attempts_topic`, and a short session so that a killed member's
/// partition moves on within seconds.
fn config(instance: &Instance, endpoint: &str, topic: &str, attempts: &str, extra: &str) -> String {
    let trigger = format!(
        r#"batch_size = 10
batch_window = "50ms"
attempts_topic = "{attempts}"
librdkafka_options = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "500" }}
{extra}"#
    );
    format!(
        "[queue]\ndata_dir = {:?}\n{}",
        instance.data_dir(),
        orders_trigger_config(endpoint, "60s", topic, &trigger)
    )
}

/// The attempts key of offset 0 of partition 0 of `topic`, as the trigger's group writes it.
fn count_key(topic: &str) -> String {
    format!("{topic}-group/{topic}-0@0")
}

/// Every record of partition 0 of `topic`, from the beginning to the end it has now.
async fn read_to_end(bootstrap: &str, topic: &str) -> Vec<Record> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            // `assign` needs a group id; this reader never joins or commits.
            .set("group.id", unique("impulse-test-reader"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let (_, high) = consumer
            .fetch_watermarks(&topic, 0, STEP)
            .expect("ListOffsets");
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&topic, 0, Offset::Beginning)
            .expect("partition");
        consumer.assign(&assignment).expect("assign");
        let started = Instant::now();
        let mut records = Vec::new();
        let mut next = 0;
        while next < high {
            assert!(started.elapsed() < STEP, "reading {topic} timed out");
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    next = message.offset() + 1;
                    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                    records.push((
                        message.key().map(text).unwrap_or_default(),
                        message.payload().map(text),
                    ));
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        records
    })
    .await
    .expect("reader thread")
}

/// Waits until `topic` holds at least `count` records and returns them.
async fn wait_for_records(bootstrap: &str, topic: &str, count: usize) -> Vec<Record> {
    eventually(&format!("{count} records in {topic}"), WAIT, async || {
        let records = read_to_end(bootstrap, topic).await;
        if records.len() >= count {
            Ok(records)
        } else {
            Err(format!("{} records", records.len()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The values written for `key`, in order (`None`: a tombstone).
fn history(records: &[Record], key: &str) -> Vec<Option<String>> {
    records
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client")
}

/// `cleanup.policy` of `topic` (DescribeConfigs).
async fn cleanup_policy(bootstrap: &str, topic: &str) -> String {
    let options = AdminOptions::new().request_timeout(Some(STEP));
    let results = admin(bootstrap)
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await
        .expect("DescribeConfigs");
    let resource = results
        .into_iter()
        .next()
        .expect("one result")
        .expect("the topic's configs");
    resource
        .get("cleanup.policy")
        .and_then(|entry| entry.value.clone())
        .expect("cleanup.policy is set")
}

/// The number of partitions of `topic` (metadata).
async fn partition_count(bootstrap: &str, topic: &str) -> usize {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("consumer");
        let metadata = consumer
            .fetch_metadata(Some(&topic), STEP)
            .expect("metadata");
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len())
    })
    .await
    .expect("metadata thread")
}

/// A poison record, `max_retry_attempts = 3`, so 1 + 3 = 4 counted attempts before the DLQ.
///
/// Instance A (data dir A) owns the partition and makes attempts 1 and 2, which fail, and
/// starts attempt 3, which the function holds; instance B (data dir B, same group) has joined
/// meanwhile, idle, its store opened *before* A wrote any count, so it can only learn A's
/// counts by tailing the topic. A is killed with SIGKILL while attempt 3 is held: the topic
/// then says 2 (`set` runs after an attempt fails, before the backoff and the next attempt).
/// The partition moves to B once A's session expires; B's first attempt is its own attempt
/// "3" (count 2 + 1, so attempt 3 happens twice: once in flight at the kill and never
/// counted, once on B), and its next, "4", exceeds the 3 retries: the record is dead-lettered.
///
/// So the function sees exactly 5 invocations = 4 counted + 1 in flight at the kill (at most
/// one: one batch per partition is in flight at a time, and an attempt is counted after it
/// fails, so the uncounted gap between the function seeing an attempt and the topic recording
/// it is that one attempt). Without a shared count, B would start from zero and make 4 more
/// (7 in all); the counts' history `1, 2, 3, tombstone` shows B went on from A's 2.
#[tokio::test]
async fn retry_count_survives_moving_to_an_instance_with_another_data_dir() {
    let bootstrap = require_kafka().await;
    let topic = unique("attempts-src");
    let dlq = format!("{topic}-dlq");
    let attempts = unique("impulse-attempts");
    create_topic(&bootstrap, &topic, 1).await;
    create_topic(&bootstrap, &dlq, 1).await;
    produce(
        &producer(&bootstrap),
        &topic,
        0,
        "poison",
        br#"{"poison":true}"#,
    )
    .await;

    // The function fails every attempt, but only once the test lets it answer.
    let calls: Arc<Mutex<Vec<i64>>> = Arc::default();
    let gate = Arc::new(Semaphore::new(0));
    let function = FunctionServer::start({
        let (calls, gate) = (calls.clone(), gate.clone());
        move |event: Value| {
            let offsets: Vec<i64> = event["records"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
                .flat_map(|list| list.as_array().cloned().unwrap_or_default())
                .map(|r| r["offset"].as_i64().expect("offset"))
                .collect();
            calls.lock().expect("lock").extend(offsets);
            let gate = gate.clone();
            async move {
                gate.acquire().await.expect("gate").forget();
                (StatusCode::INTERNAL_SERVER_ERROR, "always fails").into_response()
            }
        }
    })
    .await;
    let seen = |calls: &Arc<Mutex<Vec<i64>>>| calls.lock().expect("lock").len();
    let extra = format!(
        "max_retry_attempts = 3\n\
         on_failure = {{ type = \"kafka\", bootstrap_servers = \"{bootstrap}\", topic = \"{dlq}\" }}"
    );
    let (a, b) = (Instance::new(), Instance::new());
    let config_a = config(&a, &function.endpoint(), &topic, &attempts, &extra);
    let config_b = config(&b, &function.endpoint(), &topic, &attempts, &extra);

    let started = Instant::now();
    let mut impulse_a = Impulse::start_in(&a, &config_a).await;
    // The topic is created by the broker, compacted.
    assert_eq!(cleanup_policy(&bootstrap, &attempts).await, "compact");
    assert_eq!(partition_count(&bootstrap, &attempts).await, 1);
    wait_until("A's first attempt", WAIT, || seen(&calls) == 1).await;
    // B joins the group while A owns the (only) partition: B stays idle.
    let impulse_b = Impulse::start_in(&b, &config_b).await;
    assert!(
        history(
            &read_to_end(&bootstrap, &attempts).await,
            &count_key(&topic)
        )
        .is_empty(),
        "B opened its store before any count was written"
    );

    // Attempts 1 and 2 fail; attempt 3 is held at the function.
    gate.add_permits(2);
    wait_until("A's third attempt", WAIT, || seen(&calls) == 3).await;
    let before_kill = read_to_end(&bootstrap, &attempts).await;
    let counted_at_kill = history(&before_kill, &count_key(&topic));
    impulse_a.kill9();
    let seen_by_a = seen(&calls);
    assert_eq!(
        counted_at_kill,
        [Some("1".to_owned()), Some("2".to_owned())],
        "A recorded each failed attempt before the next one"
    );
    let counted = 2;

    // Let every attempt answer from now on; B takes the partition over after A's session.
    gate.add_permits(1000);
    let dead = wait_for_records(&bootstrap, &dlq, 1).await;
    let elapsed = started.elapsed();
    let dead: Value =
        serde_json::from_str(dead[0].1.as_deref().expect("a DLQ value")).expect("JSON");
    assert_eq!(
        dead["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(
        dead["requestContext"]["approximateInvokeCount"],
        json!(4),
        "1 + 3 retries counted across both instances:\n{}",
        impulse_b.logs()
    );
    // Nothing more is invoked once the record is dead-lettered: its offset is committed.
    let group = format!("{topic}-group");
    wait_for_a_commit(
        "the dead-lettered record's commit",
        WAIT,
        (&bootstrap, &group, &topic),
        1,
    )
    .await;
    let total = seen(&calls);
    let seen_by_b = total - seen_by_a;
    let in_flight_at_kill = seen_by_a - counted;
    assert!(
        in_flight_at_kill <= 1,
        "at most one attempt is in flight per partition"
    );
    assert_eq!(
        seen_by_b,
        4 - counted,
        "B made only the remaining attempts (A counted {counted} of 4)"
    );
    assert_eq!(
        total,
        4 + in_flight_at_kill,
        "1 + 3 retries, plus the attempt in flight at the kill"
    );
    assert_eq!(
        total, 5,
        "here exactly one attempt (A's third) was in flight at the kill"
    );
    assert!(
        calls
            .lock()
            .expect("lock")
            .iter()
            .all(|&offset| offset == 0),
        "only the poison record was ever invoked"
    );

    // The count was kept in the topic, not in either data directory, and is tombstoned once
    // the record is dead-lettered (before the DLQ write).
    let records = read_to_end(&bootstrap, &attempts).await;
    assert_eq!(
        history(&records, &count_key(&topic)),
        [
            Some("1".to_owned()),
            Some("2".to_owned()),
            Some("3".to_owned()),
            None
        ],
        "A wrote 1 and 2, B went on with 3, then cleared it"
    );
    for dir in [a.data_dir(), b.data_dir()] {
        assert!(
            !dir.join("kafka/orders-attempts.json").exists(),
            "no attempts file in {}",
            dir.display()
        );
    }
    println!(
        "attempts_topic: {total} invocations ({seen_by_a} on A, {in_flight_at_kill} in flight at \
         the kill, {seen_by_b} on B), dead-lettered after {elapsed:?}"
    );
}

/// A batch that fails twice, then succeeds: counts 1 and 2, then a tombstone once delivered.
/// The topic exists beforehand (compacted, created by an operator) and holds another group's
/// count for the same attempts key, which this group must not read.
#[tokio::test]
async fn a_delivered_batch_tombstones_its_count_and_other_groups_counts_are_ignored() {
    let bootstrap = require_kafka().await;
    let topic = unique("attempts-ok");
    let dlq = format!("{topic}-dlq");
    let attempts = unique("impulse-attempts");
    create_topic(&bootstrap, &topic, 1).await;
    create_topic(&bootstrap, &dlq, 1).await;
    // Compacted and created beforehand, as an operator would.
    create_topic_with(&bootstrap, &attempts, 1, &[("cleanup.policy", "compact")]).await;
    let producer = producer(&bootstrap);
    // Another group's count for the same partition and offset: 9 > max_retry_attempts, which
    // would dead-letter at the first failure if it were read as ours.
    let foreign_key = format!("other-group/{topic}-0@0");
    produce(&producer, &attempts, 0, &foreign_key, b"9").await;
    produce(&producer, &topic, 0, "k", br#"{"n":1}"#).await;

    let calls = Arc::new(Mutex::new(0_u32));
    let function = FunctionServer::start({
        let calls = calls.clone();
        move |_event: Value| {
            let call = {
                let mut calls = calls.lock().expect("lock");
                *calls += 1;
                *calls
            };
            async move {
                if call <= 2 {
                    (StatusCode::INTERNAL_SERVER_ERROR, "transient").into_response()
                } else {
                    axum::Json(json!({})).into_response()
                }
            }
        }
    })
    .await;
    let extra = format!(
        "max_retry_attempts = 5\n\
         on_failure = {{ type = \"kafka\", bootstrap_servers = \"{bootstrap}\", topic = \"{dlq}\" }}"
    );
    let instance = Instance::new();
    let impulse = Impulse::start_in(
        &instance,
        &config(&instance, &function.endpoint(), &topic, &attempts, &extra),
    )
    .await;

    let key = count_key(&topic);
    let records = eventually(&format!("a tombstone for {key}"), WAIT, async || {
        let records = read_to_end(&bootstrap, &attempts).await;
        if history(&records, &key).last() == Some(&None) {
            Ok(records)
        } else {
            Err(format!("{records:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", impulse.logs()));
    assert_eq!(
        history(&records, &key),
        [Some("1".to_owned()), Some("2".to_owned()), None],
        "counted twice, then tombstoned on success"
    );
    assert_eq!(
        history(&records, &foreign_key),
        [Some("9".to_owned())],
        "another group's count is left alone"
    );
    assert_eq!(
        *calls.lock().expect("lock"),
        3,
        "two failures, then success"
    );
    assert!(
        read_to_end(&bootstrap, &dlq).await.is_empty(),
        "nothing was dead-lettered"
    );
    // The operator's topic was used as is (TopicAlreadyExists is fine).
    assert_eq!(cleanup_policy(&bootstrap, &attempts).await, "compact");
}
