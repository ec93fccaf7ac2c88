//! Kafka helpers for integration tests: topics, producing, and reading a topic to the end.

use std::time::Duration;

pub use impulse_test_support::kafka::{create_topic, create_topic_with};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

/// Bound on each Kafka step.
const STEP: Duration = Duration::from_secs(30);

/// The config of one `http` function `consumer` at `endpoint` (with `timeout`, e.g. `"10s"`)
/// and one Kafka trigger `orders` reading `topic` from the earliest offset with the group
/// `<topic>-group`, on the broker of `scripts/services.sh`; `extra` lines end the trigger's
/// table.
pub fn orders_trigger_config(endpoint: &str, timeout: &str, topic: &str, extra: &str) -> String {
    format!(
        r#"
[functions.consumer]
target = {{ type = "http", endpoint = "{endpoint}" }}
timeout = "{timeout}"

[triggers.orders]
type = "kafka"
function = "consumer"
bootstrap_servers = "{bootstrap}"
topics = ["{topic}"]
group_id = "{topic}-group"
starting_position = "earliest"
{extra}
"#,
        bootstrap = crate::services::kafka_bootstrap(),
    )
}

/// An idempotent `acks=all` producer.
pub fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", STEP.as_millis().to_string())
        .create()
        .expect("producer")
}

/// Produces `value` with `key` to `partition` of `topic`, waiting for the delivery report.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &str,
    value: &[u8],
) {
    let record = FutureRecord::to(topic)
        .partition(partition)
        .key(key)
        .payload(value);
    producer
        .send(record, STEP)
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");
}

/// Reads `topic` from the beginning (waiting for it to exist) until `count` records arrived
/// (or `timeout` passed) and returns their values.
pub async fn read_values(
    bootstrap: &str,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Vec<Vec<u8>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("impulse-test-reader-{}", uuid::Uuid::new_v4()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut values = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while values.len() < count {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => values.push(message.payload().unwrap_or_default().to_vec()),
            // A topic that a producer has yet to create: librdkafka reports it once and keeps
            // the subscription, so wait for it until the deadline.
            Ok(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition))) => {}
            Ok(Err(err)) => panic!("reading {topic}: {err}"),
            Err(_) => break,
        }
    }
    values
}

/// The sum over `topic`'s partitions of the offsets `group` has committed (0 for none).
/// Reads with a consumer that never joins the group.
pub async fn committed_total(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    let (bootstrap, group, topic) = (bootstrap.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", &group)
            .create()
            .expect("consumer");
        let mut list = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition(&topic, p);
        }
        let committed = consumer.committed_offsets(list, STEP).expect("OffsetFetch");
        committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                rdkafka::Offset::Offset(n) => n,
                _ => 0,
            })
            .sum()
    })
    .await
    .expect("join")
}

/// Waits until `group` has committed an offset on one of the first `partitions` partitions of
/// `topic`; panics, naming `what`, after `timeout`.
pub async fn wait_for_a_commit(
    what: &str,
    timeout: Duration,
    (bootstrap, group, topic): (&str, &str, &str),
    partitions: i32,
) {
    crate::wait::eventually(what, timeout, async || {
        match committed_total(bootstrap, group, topic, partitions).await {
            0 => Err("nothing committed".to_owned()),
            _ => Ok(()),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}
