//! Kafka helpers for integration tests: topics, producing, and reading a topic to the end.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

/// Bound on each Kafka step.
const STEP: Duration = Duration::from_secs(30);

/// Creates `topic` with `partitions` partitions on `bootstrap`.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(STEP));
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &options,
        )
        .await
        .expect("CreateTopics");
    for result in results {
        result.expect("topic created");
    }
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

/// Reads `topic` from the beginning until `count` records arrived (or `timeout` passed) and
/// returns their values.
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
